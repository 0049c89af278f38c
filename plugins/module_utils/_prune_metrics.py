# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# The node_exporter textfile metrics of the prune timer's runs (docker_prune_*), rendered as one text; the file is
# written with write_atomically (_files.py). Part of the rules in _prune_policy.py; copied beside the prune timer's
# script with them. Standard library only: it runs on managed hosts.

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

METRIC_PREFIX = "docker_prune"


def render_metrics(run: dict[str, Any]) -> str:
    """Prometheus text exposition for one timer run (a dict: timestamp, success, skipped, duration, tiers...)."""
    lines = []

    def gauge(name: str, help_text: str, samples: Iterable[tuple[tuple[tuple[str, Any], ...], float]]) -> None:
        lines.append("# HELP %s_%s %s" % (METRIC_PREFIX, name, help_text))
        lines.append("# TYPE %s_%s gauge" % (METRIC_PREFIX, name))
        for labels, value in samples:
            label_text = ""
            if labels:
                label_text = "{%s}" % ",".join('%s="%s"' % (k, str(v).replace('"', "'")) for k, v in labels)
            lines.append("%s_%s%s %s" % (METRIC_PREFIX, name, label_text, _number(value)))

    gauge("last_run_timestamp_seconds", "Unix time the last run ended.", [((), run["timestamp"])])
    gauge("last_run_success", "1 when the last run finished without error (a skipped run counts as success).",
          [((), 1 if run["success"] else 0)])
    if run.get("last_success_timestamp") is not None:
        gauge("last_success_timestamp_seconds", "Unix time of the last successful run.",
              [((), run["last_success_timestamp"])])
    gauge("last_run_skipped", "1 when the last run was skipped, with the reason.",
          [((("reason", run.get("skip_reason") or "none"),), 1 if run.get("skipped") else 0)])
    gauge("last_run_duration_seconds", "How long the last run took.", [((), run.get("duration", 0))])
    tiers = run.get("tiers") or {}
    gauge("reclaimed_bytes", "Bytes the last run freed on the data-root filesystem, per kind.",
          [((("kind", k),), v.get("reclaimed_bytes", 0)) for k, v in sorted(tiers.items())])
    gauge("removed_objects", "Objects the last run removed, per kind.",
          [((("kind", k),), v.get("removed", 0)) for k, v in sorted(tiers.items())])
    gauge("failed_objects", "Objects the last run could not remove, per kind.",
          [((("kind", k),), v.get("failed", 0)) for k, v in sorted(tiers.items())])
    if run.get("free_bytes") is not None:
        gauge("filesystem_free_bytes", "Free bytes on the Docker data-root filesystem after the last run.",
              [((), run["free_bytes"])])
        gauge("filesystem_size_bytes", "Size of the Docker data-root filesystem.", [((), run["size_bytes"])])
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return "%.3f" % value
    return "%d" % int(value)
