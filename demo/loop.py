"""Drive one incident through the loop and record its timeline: symptom, alert firing, run started, fix verified,
alert resolved, and what the pager received."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from .incidents import CONTAINED, FIXED, Incident, playbooks_missing, rules_missing
from .procs import wait_for
from .sink import read_pages
from .stack import Stack

FINAL = ("successful", "failed", "timeout", "canceled", "interrupted", "error", "expired")
FIRE_TIMEOUT = 240
RUN_TIMEOUT = 420
RESOLVE_TIMEOUT = 240


@dataclass
class Timeline:
    incident: Incident
    available: bool = True
    reason: str = ""
    symptom: float | None = None
    fired: float | None = None
    fired_alerts: list[str] = field(default_factory=list)
    run_started: float | None = None
    verified: float | None = None
    resolved: float | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)
    check: str = ""
    operator: str = ""
    ok: bool = False
    verdict: str = ""

    def since(self, moment: float | None) -> str:
        if moment is None or self.symptom is None:
            return "-"
        return f"+{moment - self.symptom:.0f}s"


def say(message: str) -> None:
    """Print at once; a line starting with [demo] gets the time of day (UTC), to see where the minutes go."""
    if message.startswith("[demo]"):
        message = f"[demo {time.strftime('%H:%M:%S', time.gmtime())}]{message[6:]}"
    print(message, flush=True)


def clock(moment: float | None) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(moment)) if moment else "--:--:--"


class Loop:
    """What the demo observes: Prometheus's alerts, the receiver's journal (through its CLI), the pager's file."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def active_alerts(self, host: str, names: tuple[str, ...], states: tuple[str, ...] = ("pending", "firing")
                      ) -> list[dict[str, Any]]:
        return [a for a in self.stack.prometheus.alerts()
                if a["labels"].get("instance") == host and a["labels"].get("alertname") in names
                and a["state"] in states]

    def runs(self, host: str, since: float) -> list[dict[str, Any]]:
        proc = self.stack.receiver_cli("runs", "--json", "--limit", "200")
        if proc.returncode != 0:
            return []
        return sorted((r for r in json.loads(proc.stdout) if r["host"] == host and r["created_at"] >= since),
                      key=lambda r: r["created_at"])

    def pages(self, since: float) -> list[dict[str, Any]]:
        return [p for p in read_pages(self.stack.pages_file) if p["received_at"] >= since]

    def drive(self, incident: Incident) -> Timeline:
        tl = Timeline(incident)
        missing = rules_missing(incident, self.stack.alerts)
        absent = playbooks_missing(incident)
        if missing or absent:
            tl.available = False
            tl.reason = "; ".join(filter(None, [
                f"no alert rule {', '.join(missing)} in the shipped rules file" if missing else "",
                f"no playbook {', '.join(absent)}" if absent else ""]))
            tl.verdict = "not available"
            say(f"  not available: {tl.reason}")
            return tl
        begin = time.time()
        try:
            self._drive(incident, tl, begin)
        except (TimeoutError, RuntimeError) as exc:
            tl.ok = False
            tl.verdict = tl.verdict or f"FAILED: {exc}"
            say(f"  {tl.verdict}")
        finally:
            tl.pages = [self._describe_page(p) for p in self.pages(begin)]
            try:
                incident.cleanup()
            except Exception as exc:  # the next incident still runs; the table says what happened here
                say(f"  cleanup on {incident.host} failed: {exc}")
        return tl

    def _drive(self, incident: Incident, tl: Timeline, begin: float) -> None:
        host = incident.host
        incident.prepare()
        tl.symptom = incident.inject(lambda h, names: bool(self.active_alerts(h, names)))
        say(f"  {clock(tl.symptom)}  symptom began on {host}")

        firing = wait_for(lambda: self.active_alerts(host, incident.alerts, ("firing",)), FIRE_TIMEOUT,
                          f"{' or '.join(incident.alerts)} to fire for {host}", interval=1)
        tl.fired = time.time()
        tl.fired_alerts = sorted({a["labels"]["alertname"] for a in firing})  # type: ignore[union-attr]
        say(f"  {clock(tl.fired)}  alert firing: {', '.join(tl.fired_alerts)} ({tl.since(tl.fired)})")

        run = wait_for(lambda: [r for r in self.runs(host, begin) if r["started_at"]], RUN_TIMEOUT,
                       f"the receiver to start a run on {host}", interval=1)[0]  # type: ignore[index]
        tl.run_started = run["started_at"]
        say(f"  {clock(tl.run_started)}  run {run['id']} started: {run['playbook']} on {host} "
            f"({tl.since(tl.run_started)})")
        runs = wait_for(lambda: self._finished(host, begin), RUN_TIMEOUT, f"the runs on {host} to finish", interval=1)
        tl.runs = runs  # type: ignore[assignment]
        for r in tl.runs:
            say(f"  {clock(r['finished_at'])}  run {r['id']} {r['status']} ({r['rule']}, rc {r['rc']}) "
                f"{r['reason']}".rstrip())

        if incident.expected == FIXED:
            self._fixed(incident, tl)
        else:
            self._contained(incident, tl, begin)

    def _finished(self, host: str, since: float) -> list[dict[str, Any]] | None:
        runs = self.runs(host, since)
        return runs if runs and all(r["status"] in FINAL for r in runs) else None

    def _fixed(self, incident: Incident, tl: Timeline) -> None:
        successful = [r for r in tl.runs if r["status"] == "successful"]
        if not successful:
            tl.verdict = f"FAILED: no successful run ({', '.join(r['status'] for r in tl.runs)})"
            return
        tl.verified = max(r["finished_at"] for r in successful)
        check = incident.verify()
        tl.check = check.detail
        say(f"  {clock(tl.verified)}  fix verified by the playbook; the demo's own check: {check.detail}")
        tl.resolved = self._wait_resolved(incident, tl)
        say(f"  {clock(tl.resolved)}  alert resolved ({tl.since(tl.resolved)})")
        tl.ok = check.ok and tl.resolved is not None
        tl.verdict = "resolved by a successful run" if tl.ok else f"FAILED: {check.detail}"

    def _contained(self, incident: Incident, tl: Timeline, begin: float) -> None:
        failed = [r for r in tl.runs if r["status"] == "failed"]
        check = incident.verify()
        tl.check = check.detail
        tl.verified = time.time()
        say(f"  {clock(tl.verified)}  the demo's own check: {check.detail}")
        run_ids = {r["id"] for r in failed}
        paged = wait_for(lambda: [p for p in self.pages(begin) if p["path"] == "/escalations"
                                  and p["body"].get("kind") == "run_failed"
                                  and p["body"].get("details", {}).get("run", {}).get("id") in run_ids],
                         60, "the escalation page") if failed else []
        for page in paged:  # type: ignore[union-attr]
            say(f"  {clock(page['received_at'])}  paged: {self._describe_page(page)}")
        tl.operator = incident.operator_fix()
        say(f"  {clock(time.time())}  the human paged: {tl.operator}")
        tl.resolved = self._wait_resolved(incident, tl)
        say(f"  {clock(tl.resolved)}  alert resolved ({tl.since(tl.resolved)})")
        tl.ok = bool(failed) and bool(paged) and check.ok
        if tl.ok:
            tl.verdict = "refused: nothing deleted, contained, paged"
        else:
            reasons = [] if failed else ["the containment run did not fail to escalate"]
            reasons += [] if paged else ["nobody was paged"]
            reasons += [] if check.ok else [check.detail]
            tl.verdict = "FAILED: " + "; ".join(reasons)

    def _wait_resolved(self, incident: Incident, tl: Timeline) -> float:
        """Wait until none of the incident's alerts is pending or firing; then take the times from Prometheus's
        own record (ALERTS, to the evaluation interval): when the first fired, which fired, when the last ended."""
        wait_for(lambda: not self.active_alerts(incident.host, incident.alerts), RESOLVE_TIMEOUT,
                 f"{' and '.join(incident.alerts)} on {incident.host} to resolve", interval=1)
        resolved = time.time()
        names = "|".join(incident.alerts)
        series = self.stack.prometheus.query_range(
            f'ALERTS{{instance="{incident.host}",alertname=~"{names}"}}', tl.symptom or resolved - 900, resolved, 1)
        firing: dict[str, float] = {}
        ends: list[float] = []
        for item in series:
            stamps = [float(t) for t, _ in item["values"]]
            if item["metric"].get("alertstate") == "firing":
                firing[item["metric"]["alertname"]] = min(stamps[0], firing.get(item["metric"]["alertname"], 1e12))
            # Resolved when the last of its alerts ended, pending included (a scrape gap makes firing pending again).
            ends.append(stamps[-1] + 1)
        if ends:
            resolved = max(ends)
        if firing:
            tl.fired_alerts = sorted(firing, key=lambda name: firing[name])
            tl.fired = min(firing.values())
        return resolved

    @staticmethod
    def _describe_page(page: dict[str, Any]) -> str:
        body = page["body"] if isinstance(page["body"], dict) else {}
        if page["path"] == "/escalations":
            # The playbook's own verdict (LOG GROWTH NOT RESOLVED..., MIRROR SYNC CONTAINED...) when it has one.
            verdicts = [str(e.get("data", {}).get("res", {}).get("msg", ""))
                        for e in body.get("details", {}).get("failed_events", []) if isinstance(e, dict)]
            words = next((v for v in verdicts if v[:1].isupper()), body.get("summary"))
            return f"{body.get('kind')}: {str(words)[:200]}"
        alerts = body.get("alerts", [])
        return f"oncall ({body.get('status')}): {', '.join(a['labels'].get('alertname', '?') for a in alerts)}"


def table(timelines: list[Timeline]) -> str:
    """The summary table: one row per incident, times relative to when its symptom began."""
    head = ("incident", "host", "alert", "fired", "run", "verified", "resolved", "paged", "outcome")
    rows = []
    for tl in timelines:
        inc = tl.incident
        paged = "; ".join(p.split(":")[0] for p in tl.pages) or "nothing"
        rows.append((inc.title, inc.host, ", ".join(tl.fired_alerts) or ", ".join(inc.alerts[:1]),
                     tl.since(tl.fired), tl.since(tl.run_started), tl.since(tl.verified), tl.since(tl.resolved),
                     paged if tl.available else "-",
                     ("ok: " if tl.ok else "") + (tl.verdict if tl.available else f"not available: {tl.reason}")))
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    widths[-1] = min(widths[-1], 70)
    line = "  ".join("{:<" + str(w) + "}" for w in widths)
    out = [line.format(*head), line.format(*("-" * w for w in widths))]
    out += [line.format(*(str(c)[:w] for c, w in zip(r, widths, strict=True))) for r in rows]
    return "\n".join(out)


EXPECTED = {FIXED: "resolved by a successful run", CONTAINED: "refused: nothing deleted, contained, paged"}
