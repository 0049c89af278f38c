# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# The decisions of playbooks/rollout_storage_driver.yml over the per-host records it writes on the controller:
# whether an earlier batch stops the rollout, and the summary. Plain functions, unit-tested without Ansible; the
# playbook only calls them (a Jinja loop that renders nothing is None under ansible-core 2.19, a Python list is not).

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# An outcome in this list stops the rollout before the next batch.
STOP_OUTCOMES = ("refused", "rolled_back", "rollback_failed", "failed", "interrupted")
# Summary key -> the outcomes it lists, in the order an operator reads them.
SUMMARY_GROUPS = (
    ("changed", ("changed",)),
    ("unchanged", ("unchanged",)),
    ("planned", ("planned",)),
    ("refused", ("refused",)),
    ("rolled_back", ("rolled_back",)),
    ("failed", ("failed", "rollback_failed", "interrupted")),
)


def _records(records: Any) -> list[dict[str, Any]]:
    """Only the records that name a host; anything else (a stray file) is ignored."""
    return [r for r in (records or []) if isinstance(r, dict) and r.get("host")]


def rollout_stopped_by(records: Any) -> list[str]:
    """The hosts whose outcome stops the rollout, sorted: empty lets the next batch go ahead."""
    return sorted(r["host"] for r in _records(records) if r.get("outcome", "interrupted") in STOP_OUTCOMES)


def rollout_summary(records: Any, targets: list[str] | None, run: str, driver: str | None = None) -> dict[str, Any]:
    """What a rollout did to each host, from its records: the lists by outcome, untouched hosts, messages.

    `driver` is the one this run was started for (its run record); without it the records name it. A record with no
    outcome is a host that was being changed when the run stopped: failed (interrupted).
    """
    records = _records(records)
    summary: dict[str, Any] = dict(run=run)
    named = [r["driver"] for r in records if r.get("driver")]
    summary["driver"] = driver or (named[0] if named else "?")
    for key, outcomes in SUMMARY_GROUPS:
        summary[key] = sorted(r["host"] for r in records if r.get("outcome", "interrupted") in outcomes)
    seen = set(r["host"] for r in records)
    summary["untouched"] = [host for host in (targets or []) if host not in seen]
    summary["messages"] = dict((r["host"], r["message"]) for r in records if r.get("message"))
    summary["succeeded"] = not (summary["refused"] or summary["rolled_back"] or summary["failed"]
                                or summary["untouched"])
    return summary


class FilterModule(object):
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "rollout_stopped_by": rollout_stopped_by,
            "rollout_summary": rollout_summary,
        }
