# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.postmortem.remediation.plugins.module_utils._textfile_metrics import (
    MetricsError,
    guard_families,
    parse_max_age,
    render,
)


def guard_metrics(outcome: Any, timestamp: float | str | None = None) -> str:
    """The pmr_guard_* text of one guarded job's outcome, as safe_sync and guarded_cleanup write it."""
    if not isinstance(outcome, dict):
        raise AnsibleFilterError("guard_metrics expects a dict, got %s" % type(outcome).__name__)
    try:
        families = guard_families(
            outcome.get("guard"), str(outcome.get("name") or ""), str(outcome.get("unit") or ""),
            time.time() if timestamp is None else float(timestamp), bool(outcome.get("refused", True)),
            int(outcome.get("planned", 0)), int(outcome.get("deleted", 0)), outcome.get("reference_healthy"),
            failed=bool(outcome.get("failed", False)), max_age=parse_max_age(outcome.get("max_age"), "max_age"))
    except (MetricsError, TypeError, ValueError) as exc:
        raise AnsibleFilterError("guard_metrics: %s" % exc) from exc
    return render(families)


class FilterModule(object):
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"guard_metrics": guard_metrics}
