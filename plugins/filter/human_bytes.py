# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""human_bytes: a byte count as the modules print it (1.5 GiB, 84.0 MiB, 512 B); one implementation with them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.postmortem.remediation.plugins.module_utils._prune_policy import human_bytes as _human_bytes


def human_bytes(value: Any) -> str:
    try:
        return _human_bytes(int(value))
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError("human_bytes: %r is not a number of bytes" % (value,)) from exc


class FilterModule(object):
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"human_bytes": human_bytes}
