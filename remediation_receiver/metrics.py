"""Prometheus text exposition: process counters plus gauges read from the journal at scrape time."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Playbook runs take seconds to tens of minutes (job_timeout defaults to 900 s).
RUN_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
HELP = {
    "remediation_receiver_deliveries_total": ("counter", "Deliveries stored and acknowledged with 202."),
    "remediation_receiver_deliveries_refused_total": ("counter", "Requests refused, by HTTP status."),
    "remediation_receiver_alerts_received_total": ("counter", "Alerts received in stored deliveries."),
    "remediation_receiver_ack_seconds": ("histogram", "Time from the request line to the acknowledgement sent."),
    "remediation_receiver_connections_cut_total": ("counter", "Connections the server ended: request deadline, "
                                                              "idle, evicted when full, refused when busy."),
    "remediation_receiver_decisions_total": ("counter", "Decisions taken since start, by outcome."),
    "remediation_receiver_runs_finished_total": ("counter", "Runs finished since start, by status."),
    "remediation_receiver_run_duration_seconds": ("histogram", "Playbook run time, from start to outcome."),
}

Labels = dict[str, str]


def _key(labels: Labels | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((labels or {}).items()))


def _fmt_labels(key: tuple[tuple[str, str], ...]) -> str:
    if not key:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._hist: dict[str, tuple[tuple[float, ...], list[int], list[float]]] = {}
        self._gauges: list[Callable[[], list[tuple[str, Labels, float, str]]]] = []

    def inc(self, name: str, labels: Labels | None = None, value: float = 1.0) -> None:
        with self._lock:
            series = self._counters.setdefault(name, {})
            key = _key(labels)
            series[key] = series.get(key, 0.0) + value

    def observe(self, name: str, seconds: float, buckets: tuple[float, ...] = BUCKETS) -> None:
        with self._lock:
            bounds, counts, total = self._hist.setdefault(name, (buckets, [0] * (len(buckets) + 1), [0.0]))
            counts[bisect.bisect_left(bounds, seconds)] += 1
            total[0] += seconds

    def add_gauges(self, source: Callable[[], list[tuple[str, Labels, float, str]]]) -> None:
        """`source` returns (name, labels, value, help) tuples at scrape time."""
        self._gauges.append(source)

    def counter(self, name: str, labels: Labels | None = None) -> float:
        with self._lock:
            return self._counters.get(name, {}).get(_key(labels), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._counters):
                kind, text = HELP.get(name, ("counter", name))
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for key, value in sorted(self._counters[name].items()):
                    lines.append(f"{name}{_fmt_labels(key)} {value:g}")
            for name in sorted(self._hist):
                bounds, counts, total = self._hist[name]
                kind, text = HELP.get(name, ("histogram", name))
                lines += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
                running = 0
                for bound, count in zip(bounds, counts, strict=False):
                    running += count
                    lines.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
                running += counts[-1]
                lines += [f'{name}_bucket{{le="+Inf"}} {running}', f"{name}_sum {total[0]:.6f}",
                          f"{name}_count {running}"]
        seen: set[str] = set()
        for source in self._gauges:
            for name, labels, value, text in source():
                if name not in seen:
                    lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
                    seen.add(name)
                lines.append(f"{name}{_fmt_labels(_key(labels))} {value:g}")
        return "\n".join(lines) + "\n"
