"""Guards: whether a matched, targeted alert may become a run now. Every hold is a recorded decision.

Admission guards (here) run once per alert and rule, in this order: pause, dedup (fingerprint, startsAt, rule)
with the attempt budget, fleet breaker, cooldown per (host, rule), runs per hour per rule. Scheduling guards (one
run per host, the global concurrency cap, pause) hold queued runs in the dispatcher until they pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .config import Rule
from .journal import ACTIVE, WAITING, Journal

PAUSE_KEY = "paused"
# `cancel:<run id>` -> reason: an operator asked to stop a run that has started (`remediation-receiver cancel`).
CANCEL_PREFIX = "cancel:"
# A re-delivery this soon after a finished run is Alertmanager catching up, not proof the fix failed.
RECHECK_AFTER = 120.0
NOT_ATTEMPTS = ("canceled", "expired")


@dataclass
class Verdict:
    outcome: str  # admit | paused | deduplicated | exhausted | breaker | cooldown | budget
    reason: str
    attempt: int = 1
    parent_run: str | None = None
    escalate: str | None = None  # notification kind, when the hold must reach a human

    @property
    def admitted(self) -> bool:
        return self.outcome == "admit"


def dedup_key(fingerprint: str, starts_at: str, rule: str) -> str:
    return f"{fingerprint}|{starts_at}|{rule}"


def is_paused(journal: Journal) -> bool:
    return journal.get_state(PAUSE_KEY) is not None


def evaluate(journal: Journal, rule: Rule, host: str, fingerprint: str, starts_at: str,
             now: float | None = None, recheck_after: float = RECHECK_AFTER) -> Verdict:
    now = time.time() if now is None else now
    if is_paused(journal):
        return Verdict("paused", f"the receiver is paused ({journal.get_state(PAUSE_KEY)}): no new runs")

    key = dedup_key(fingerprint, starts_at, rule.name)
    previous = [r for r in journal.runs_for_dedup_key(key) if r.status not in NOT_ATTEMPTS]
    attempt, parent = 1, None
    if previous:
        last = previous[-1]
        if last.status in WAITING or last.status in ACTIVE or (last.status == "interrupted" and not last.handled):
            return Verdict("deduplicated", f"run {last.id} for this firing is already {last.status}")
        finished = last.finished_at or last.created_at
        if now - finished < recheck_after:
            return Verdict("deduplicated", f"run {last.id} for this firing finished {now - finished:.0f}s ago "
                                           f"({last.status}); waiting {recheck_after:.0f}s before re-checking")
        if len(previous) >= rule.max_attempts:
            return Verdict("exhausted", f"still firing after {len(previous)} attempt(s) (last run {last.id}: "
                                        f"{last.status}); max_attempts={rule.max_attempts}",
                           escalate="still_firing")
        attempt, parent = len(previous) + 1, last.id

    if rule.mode != "observe":
        hosts = journal.hosts_alerting(rule.name, now - rule.fleet_breaker.window) | {host}
        if len(hosts) > rule.fleet_breaker.max_hosts:
            return Verdict("breaker", f"fleet breaker open: {len(hosts)} hosts alerting for rule {rule.name} within "
                                      f"{rule.fleet_breaker.window:.0f}s (max {rule.fleet_breaker.max_hosts})",
                           escalate="breaker_open")

        last_run = journal.last_run_for(host, rule.name)
        if last_run is not None and now - last_run.created_at < rule.cooldown:
            return Verdict("cooldown", f"run {last_run.id} on {host} for rule {rule.name} started "
                                       f"{now - last_run.created_at:.0f}s ago (cooldown {rule.cooldown:.0f}s)",
                           escalate="held")

        if journal.count_runs_since(rule.name, now - 3600) >= rule.max_runs_per_hour:
            return Verdict("budget", f"rule {rule.name} already ran {rule.max_runs_per_hour} times in the last hour",
                           escalate="held")
    return Verdict("admit", "guards passed", attempt=attempt, parent_run=parent)
