"""Dispatcher: reads undecided alerts from the journal, decides (rules -> target -> guards), queues runs,
starts them when the scheduling guards allow, expires approvals, recovers after a crash and escalates.

It is the only writer of decisions and the only caller of the executor, so guard checks never race each other.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import guards
from .config import Config, Rule, receiver_id
from .executor import Executor, kill_run_processes
from .journal import ACTIVE, AlertRecord, Journal, RunRecord
from .metrics import RUN_BUCKETS, Metrics
from .notify import Notifier
from .rules import match_rules
from .targets import InventoryCache, TargetError, resolve

log = logging.getLogger("remediation_receiver.dispatcher")
# While alerts keep arriving, the dispatcher waits this long between passes so that one commit decides several.
BATCH_WINDOW = 0.02
# With nothing to do, the dispatcher sleeps this long at most: a stored delivery and a finished run wake it at once
# (Ingress.on_stored, Executor.on_finished); the timeout only paces housekeeping (approvals that expire, takeovers).
IDLE_WAIT = 0.5


def new_run_id(now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now or time.time()))
    return f"{stamp}-{secrets.token_hex(4)}"


@dataclass
class Planned:
    """What deciding one alert produces: decisions, runs, runs to cancel, notifications."""

    decisions: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    cancel: list[tuple[str, str]]
    notes: list[tuple[str, str, dict[str, Any], str | None]]
    close: str | None = None


def retention_cutoff(cfg: Config, now: float) -> float:
    """What finished before this may leave the journal: the retention period, but never less than the longest
    window a guard looks back over (cooldown, fleet breaker window, the hour of the run budget)."""
    longest = max([3600.0, *(max(rule.cooldown, rule.fleet_breaker.window) for rule in cfg.rules)])
    return now - max(cfg.journal_retention_days * 86400, longest)


def alert_vars(alert: AlertRecord) -> dict[str, Any]:
    return {"status": alert.status, "labels": alert.labels, "annotations": alert.annotations,
            "fingerprint": alert.fingerprint, "startsAt": alert.starts_at, "generatorURL": alert.generator_url}


def plan_alert(cfg: Config, journal: Journal, inventory: InventoryCache, alert: AlertRecord,
               now: float | None = None) -> Planned:
    """Decide one alert without writing anything (also what `replay` prints)."""
    now = time.time() if now is None else now
    plan = Planned([], [], [], [])
    if alert.status == "resolved":
        waiting = journal.firing_runs_for_fingerprint(alert.fingerprint)
        plan.cancel = [(r.id, "alert resolved before the run started") for r in waiting]
        plan.close = alert.fingerprint
        plan.decisions.append({"outcome": "resolved", "reason": f"alert resolved; {len(waiting)} queued or waiting "
                                                                f"run(s) canceled"})
        return plan

    if journal.was_resolved(alert.fingerprint, alert.starts_at):
        # Alertmanager HA peers and retries can deliver a firing after its resolution; a new firing has a new startsAt.
        plan.decisions.append({"outcome": "stale", "reason": f"this firing (startsAt {alert.starts_at}) was already "
                                                             "resolved: a late or repeated delivery starts nothing"})
        return plan

    matched, errors = match_rules(cfg.rules, alert.as_data())
    for error in errors:
        plan.decisions.append({"outcome": "rule_error", "reason": error})
    if not matched:
        if not errors:
            plan.decisions.append({"outcome": "no_rule", "reason": "no rule matches this alert"})
        return plan

    hosts = inventory.get()  # an unreadable inventory is an error for the operator, not a refusal
    for match in matched:
        rule = match.rule
        label = rule.target_label or cfg.target_label
        try:
            host = resolve(alert.labels, label, hosts)
        except TargetError as exc:
            plan.decisions.append({"rule": rule.name, "outcome": "refused", "reason": f"target: {exc}"})
            continue
        verdict = guards.evaluate(journal, rule, host, alert.fingerprint, alert.starts_at, now=now)
        decision: dict[str, Any] = {"rule": rule.name, "host": host, "outcome": verdict.outcome,
                                    "reason": verdict.reason}
        if not verdict.admitted:
            plan.decisions.append(decision)
            _note_hold(plan, rule, host, alert, verdict, now)
            continue
        if rule.mode == "observe" and rule.observe == "record":
            decision.update(outcome="observed", reason=f"observe mode: would run {rule.playbook} on {host}")
            plan.decisions.append(decision)
            continue
        run_id = new_run_id(now)
        extravars = {**match.vars, "remediation_run_id": run_id, "remediation_rule": rule.name,
                     "remediation_target": host, "remediation_attempt": verdict.attempt,
                     "remediation_alert": alert_vars(alert)}
        run = {"id": run_id, "rule": rule.name, "playbook": rule.playbook, "host": host,
               "fingerprint": alert.fingerprint, "starts_at": alert.starts_at,
               "dedup_key": guards.dedup_key(alert.fingerprint, alert.starts_at, rule.name),
               "attempt": verdict.attempt, "parent_run": verdict.parent_run, "mode": rule.mode,
               "check_mode": rule.mode == "observe", "status": "queued", "extravars": extravars}
        if rule.mode == "approve":
            run.update(status="awaiting_approval", approve_by=now + rule.approval_ttl)
            decision.update(outcome="awaiting_approval",
                            reason=f"approve mode: run {run_id} waits for `remediation-receiver approve {run_id}` "
                                   f"(expires in {rule.approval_ttl:.0f}s)")
            plan.notes.append(("approval_needed", f"approval needed: {rule.playbook} on {host} (run {run_id})",
                               {"run": run_id, "rule": rule.name, "host": host, "alert": alert_vars(alert),
                                "approve_by": now + rule.approval_ttl}, f"approval|{run_id}"))
        else:
            check = " in check mode" if rule.mode == "observe" else ""
            decision.update(outcome="run", reason=f"queued{check} as run {run_id} (attempt {verdict.attempt})")
        decision["run_id"] = run_id
        plan.decisions.append(decision)
        plan.runs.append(run)
    return plan


def _note_hold(plan: Planned, rule: Rule, host: str, alert: AlertRecord, verdict: guards.Verdict,
               now: float) -> None:
    if not verdict.escalate:
        return
    key = {
        "breaker_open": f"breaker|{rule.name}|{int(now // rule.fleet_breaker.window)}",
        "still_firing": f"still_firing|{guards.dedup_key(alert.fingerprint, alert.starts_at, rule.name)}",
        "held": f"held|{rule.name}|{host}|{verdict.outcome}|{int(now // 3600)}",
    }.get(verdict.escalate)
    plan.notes.append((verdict.escalate, f"{rule.name} on {host}: {verdict.reason}",
                       {"rule": rule.name, "host": host, "outcome": verdict.outcome, "alert": alert_vars(alert)}, key))


class Dispatcher:
    def __init__(self, cfg: Config, journal: Journal, executor: Executor, notifier: Notifier,
                 metrics: Metrics) -> None:
        self.cfg = cfg
        self.journal = journal
        self.executor = executor
        self.notifier = notifier
        self.metrics = metrics
        self.inventory = InventoryCache(cfg.inventory)
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_loop = time.time()
        self.woke = time.time()  # when the loop last started a pass (a run's 'woke' stage)
        self._last_prune = 0.0
        self._last_decided = 0.0
        self.owner = receiver_id(cfg)
        self._last_takeover = 0.0

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self.load_inventory(at_start=True)
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        try:
            self.journal.warm()  # on this thread's connection
        except Exception:
            log.exception("journal warm-up failed (the first alert pays it)")
        while not self._stop.is_set():
            self.last_loop = time.time()
            try:
                self.step()
            except Exception:
                log.exception("dispatcher step failed")
                self.metrics.inc("remediation_receiver_errors_total", {"stage": "dispatcher"})
            self.wake.wait(timeout=IDLE_WAIT)
            self.wake.clear()
            self.woke = time.time()
            if time.monotonic() - self._last_decided < 2 * BATCH_WINDOW:
                # Deliveries are streaming in: let a few more arrive so one commit decides them all (deciding each
                # alert as it lands cost an fsync per alert, competing with the deliveries' own). A lone alert is
                # decided at once.
                self._stop.wait(BATCH_WINDOW)

    def step(self) -> None:
        while not self._stop.is_set():
            batch = self.journal.undecided_alerts(limit=200)
            if not batch:
                break
            # Decide in small transactions: one fsync per chunk, and ingress waits at most one chunk.
            for start in range(0, len(batch), 25):
                self.decide_chunk(batch[start:start + 25])
                if self.journal.shared and time.monotonic() - self._last_takeover > 1.0:
                    self.take_over()  # a storm must not delay taking over a dead receiver's runs
        self.apply_cancel_requests()
        self.expire_approvals()
        if self.journal.shared:
            # Several receivers: take over the runs of a receiver whose lease expired, then handle every
            # interrupted run once (under the dispatchers' lock), and claim queued runs the same way.
            self.take_over()
            self._last_takeover = time.monotonic()
            if self.journal.unhandled(("successful", "failed", "timeout", "error", "canceled")):
                with self.journal.transaction():
                    self.handle_finished()
            if self.journal.runs_in(("queued",)):
                self.decide_chunk([])
        else:
            self.handle_finished()
            self.schedule()
        if self.journal.checkpoint_due():
            self.journal.checkpoint()
        if time.time() - self._last_prune > 3600:
            self._last_prune = time.time()
            if self.journal.shared:  # receivers prune one at a time (two DELETE passes could deadlock)
                with self.journal.transaction():
                    removed = self.journal.prune(retention_cutoff(self.cfg, time.time()))
            else:
                removed = self.journal.prune(retention_cutoff(self.cfg, time.time()))
            if any(removed.values()):
                log.info("journal retention (%.0f days): removed %s", self.cfg.journal_retention_days, removed)

    # -- deciding --------------------------------------------------------------------------------------------
    def load_inventory(self, at_start: bool = False) -> None:
        """Parse the inventory when it is new or changed, outside any journal transaction: at start (the first
        alert a rule matched paid Ansible's inventory import and parse, about 300 ms, inside its decision's
        transaction, delaying its run and every delivery behind it) and before each chunk of alerts (an edited
        inventory). A failure here is not fatal: deciding an alert that needs the inventory records it."""
        try:
            self.inventory.get()
        except Exception as exc:
            if at_start:
                log.warning("inventory %s could not be loaded: %s (alerts a rule matches are decided as errors "
                            "until it can)", self.cfg.inventory, exc)

    def decide_chunk(self, alerts: list[AlertRecord]) -> None:
        """Decide `alerts` and claim the runs that may start now in one durable commit, then start them: an alert
        reaches ansible-runner after two fsyncs (its delivery, this commit), and a crash leaves either the alert
        undecided or its run decided and claimed ('starting', which recovery handles)."""
        claimed: list[RunRecord] = []
        picked = time.time()
        if any(alert.status == "firing" for alert in alerts):
            self.load_inventory()
        try:
            with self.journal.transaction():
                # Another receiver may have decided some of them since they were read (a shared journal).
                still = self.journal.lock_undecided([alert.id for alert in alerts])
                for alert in alerts:
                    if alert.id in still:
                        self.decide_or_record(alert)
                self.schedule(claimed)
        except BaseException:
            for run in claimed:
                self.executor.release(run)
            raise
        self._last_decided = time.monotonic()
        committed = time.time()
        received = {alert.id: alert.received_at for alert in alerts}
        for run in claimed:
            self.executor.stamp(run.id, received=received.get(run.alert_id or 0), woke=self.woke, picked=picked,
                                committed=committed)
            self.executor.launch(run)

    def decide_or_record(self, alert: AlertRecord) -> None:
        """Decide one alert; an unexpected failure (an unreadable inventory, a bug) is recorded as the decision and
        escalated, so one alert can never block the ones behind it."""
        try:
            with self.journal.transaction():
                self.decide(alert)
        except Exception as exc:
            log.exception("alert %d could not be decided", alert.id)
            reason = f"could not decide: {type(exc).__name__}: {exc}"[:1000]
            self.journal.record_decisions(alert.id, [{"outcome": "error", "reason": reason}], [])
            self.metrics.inc("remediation_receiver_decisions_total", {"outcome": "error"})
            self.notifier.notify("decision_error", f"alert {alert.labels.get('alertname')} could not be decided: "
                                 f"{reason}", {"alert": alert_vars(alert)}, dedup=f"decision_error|{alert.id}")

    def decide(self, alert: AlertRecord) -> None:
        plan = plan_alert(self.cfg, self.journal, self.inventory, alert)
        self.journal.record_decisions(alert.id, plan.decisions, plan.runs, plan.cancel, close=plan.close)
        for decision in plan.decisions:
            self.metrics.inc("remediation_receiver_decisions_total", {"outcome": decision["outcome"]})
            log.info("alert %d (%s %s): %s %s", alert.id, alert.labels.get("alertname"), alert.status,
                     decision["outcome"], decision["reason"])
        for run_id, reason in plan.cancel:
            self.executor.cancel(run_id, reason)
        if any(d["outcome"] == "paused" for d in plan.decisions):
            pause = self.journal.get_state(guards.PAUSE_KEY) or ""
            plan.notes.append(("paused", "the receiver is paused: alerts are recorded, nothing runs",
                               {"pause": pause}, f"paused|{pause}"))
        for kind, summary, details, dedup in plan.notes:
            self.notifier.notify(kind, summary, details, dedup=dedup)

    # -- scheduling ------------------------------------------------------------------------------------------
    def schedule(self, claimed: list[RunRecord] | None = None) -> None:
        """Start the queued runs the scheduling guards allow. Given a list, only claim them and append them to it
        (inside the caller's transaction): the caller launches them after its commit, or releases them."""
        queued = self.journal.claimable_runs()
        if not queued:
            return
        if guards.is_paused(self.journal):
            for run in queued:
                self._hold(run, "paused: the receiver is paused")
            return
        active = self.journal.runs_in(ACTIVE)
        busy = {run.host: run.id for run in active}
        for run_id, host in self.executor.active().items():
            busy.setdefault(host, run_id)
        # On a shared journal the cap counts every receiver's runs (the journal's), not only this one's.
        running = len(active) if self.journal.shared else 0
        for run in queued:
            if run.host in busy:
                self._hold(run, f"host_busy: run {busy[run.host]} is running on {run.host}")
                continue
            if not self.executor.has_capacity() or running >= self.cfg.max_concurrent_runs:
                cap = self.cfg.max_concurrent_runs if running >= self.cfg.max_concurrent_runs else \
                    self.executor.capacity
                self._hold(run, f"concurrency_cap: {cap} runs already running")
                continue
            if claimed is None:
                if self.executor.submit(run):
                    busy[run.host] = run.id
                    running += 1
            elif self.executor.claim(run):
                busy[run.host] = run.id
                running += 1
                claimed.append(run)

    def apply_cancel_requests(self) -> None:
        """Hand `remediation-receiver cancel` requests for started runs to the executor; forget them once final."""
        for key, reason in self.journal.states(guards.CANCEL_PREFIX).items():
            run_id = key[len(guards.CANCEL_PREFIX):]
            run = self.journal.get_run(run_id)
            if run is None or run.status not in ACTIVE:
                self.journal.set_state(key, None)
            else:
                self.executor.cancel(run_id, reason)

    def _hold(self, run: RunRecord, reason: str) -> None:
        kind = reason.split(":", 1)[0]
        if (run.held or "").split(":", 1)[0] == kind:
            return
        with self.journal.transaction():
            self.journal.set_run_held(run.id, reason)
            self.journal.add_run_events(run.id, [{"event": "held", "data": {"reason": reason}}])
        self.metrics.inc("remediation_receiver_holds_total", {"guard": kind})

    def expire_approvals(self) -> None:
        now = time.time()
        for run in self.journal.runs_in(("awaiting_approval",)):
            if run.approve_by is None or run.approve_by >= now:
                continue
            # The expiry and its notice commit together: an expiry whose notice could not be queued is undone, and
            # the next pass tries both again (committed alone, the notice would be lost for good).
            with self.journal.transaction():
                if self.journal.set_run_status(run.id, "expired", reason="approval not given before the TTL",
                                               finished_at=now, handled=1, expect=("awaiting_approval",)):
                    self.notifier.notify("approval_expired", f"approval for run {run.id} ({run.rule} on "
                                         f"{run.host}) expired", {"run": run.id, "rule": run.rule, "host": run.host},
                                         dedup=f"expired|{run.id}")

    # -- outcomes --------------------------------------------------------------------------------------------
    def on_finished(self, run_id: str) -> None:
        self.wake.set()

    def handle_finished(self) -> None:
        """Escalate what finished badly; mark every finished run handled (once)."""
        for run in self.journal.unhandled(("successful", "failed", "timeout", "error", "canceled")):
            self.metrics.inc("remediation_receiver_runs_finished_total", {"status": run.status})
            if run.started_at is not None and run.finished_at is not None:
                self.metrics.observe("remediation_receiver_run_duration_seconds", run.finished_at - run.started_at,
                                     buckets=RUN_BUCKETS)
            if run.status in ("failed", "timeout", "error"):
                events = [e for e in self.journal.run_events(run.id) if e["event"] in
                          ("runner_on_failed", "runner_on_unreachable", "runner_item_on_failed")]
                self.notifier.notify(f"run_{run.status}", f"remediation {run.rule} on {run.host} {run.status}: "
                                     f"{run.reason}", {"run": run.summary(), "failed_events": events[-5:]},
                                     dedup=f"outcome|{run.id}")
            self.journal.mark_handled(run.id)

    # -- recovery --------------------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Runs found 'starting'/'running' at start were cut off by a crash: mark them interrupted, stop what they
        left behind, then handle every unhandled interrupted run by its rule (escalate or run again)."""
        for run in self.journal.orphaned_runs(self.owner):
            leftovers = kill_run_processes(run.id)
            reason = "the receiver stopped during the run (found running at start)"
            if leftovers:
                reason += f"; stopped {len(leftovers)} leftover process(es)"
            if self.journal.set_run_status(run.id, "interrupted", reason=reason, finished_at=time.time(),
                                           expect=ACTIVE):
                self.journal.add_run_events(run.id, [{"event": "interrupted", "data": {"reason": reason}}])
        return self.handle_interrupted()

    def handle_interrupted(self) -> list[str]:
        """Handle every unhandled interrupted run by its rule, once: on a shared journal under the dispatchers' lock,
        so two receivers never both re-run one."""
        if not self.journal.shared:
            return [self._handle_interrupted(run) for run in self.journal.unhandled(("interrupted",))]
        if not self.journal.unhandled(("interrupted",)):
            return []
        with self.journal.transaction():
            return [self._handle_interrupted(run) for run in self.journal.unhandled(("interrupted",))]

    def take_over(self) -> list[str]:
        """A shared journal: the runs whose lease expired (their receiver died, or lost the journal and stopped them)
        become interrupted here and are handled by their rule (re-run or escalate)."""
        reason = "lease expired: its receiver stopped renewing it (it died or lost the journal); taken over by " \
                 f"{self.owner}"
        self._last_takeover = time.monotonic()
        taken = self.journal.take_over_expired(self.owner, reason, keep=list(self.executor.active()))
        for run in taken:
            leftovers = kill_run_processes(run.id)  # what it left behind, when it ran on this machine
            log.warning("run %s (%s on %s): lease expired, taken over as interrupted%s", run.id, run.rule, run.host,
                        f"; stopped {len(leftovers)} leftover process(es)" if leftovers else "")
            self.journal.add_run_events(run.id, [{"event": "interrupted", "data": {"reason": reason,
                                                                                   "leftovers": leftovers}}])
        return self.handle_interrupted()

    def _handle_interrupted(self, run: RunRecord) -> str:
        rule = self.cfg.rule(run.rule)
        resolved = self.journal.query(
            "SELECT 1 FROM alerts WHERE fingerprint=? AND status='resolved' AND received_at>? LIMIT 1",
            (run.fingerprint, run.created_at))
        interrupted_before = [r for r in self.journal.runs_for_dedup_key(run.dedup_key)
                              if r.status == "interrupted" and r.id != run.id]
        canceled = self.journal.get_state(guards.CANCEL_PREFIX + run.id)
        action = rule.on_interrupted if rule else "escalate"
        if action == "rerun" and (resolved or interrupted_before or canceled):
            action = "escalate"
        if action == "rerun":
            new_id = new_run_id()
            extravars = dict(run.extravars, remediation_run_id=new_id, remediation_attempt=run.attempt + 1)
            self.journal.add_run({"id": new_id, "alert_id": run.alert_id, "rule": run.rule,
                                  "playbook": run.playbook, "host": run.host, "fingerprint": run.fingerprint,
                                  "starts_at": run.starts_at, "dedup_key": run.dedup_key, "attempt": run.attempt + 1,
                                  "parent_run": run.id, "mode": run.mode, "check_mode": run.check_mode,
                                  "status": "queued", "reason": f"rerun of interrupted run {run.id}",
                                  "extravars": extravars})
            self.journal.add_run_events(run.id, [{"event": "recovered", "data": {"action": "rerun",
                                                                                 "new_run": new_id}}])
            log.warning("run %s was interrupted: queued run %s again (rule %s)", run.id, new_id, run.rule)
        else:
            why = "alert resolved since" if resolved else "an operator asked to cancel it" if canceled else (
                "interrupted twice" if interrupted_before else f"rule {run.rule} says escalate")
            self.notifier.notify("run_interrupted", f"remediation {run.rule} on {run.host} was interrupted "
                                 f"({why})", {"run": run.summary()}, dedup=f"interrupted|{run.id}")
            self.journal.add_run_events(run.id, [{"event": "recovered", "data": {"action": "escalate",
                                                                                 "why": why}}])
            log.warning("run %s was interrupted: escalated (%s)", run.id, why)
        self.journal.mark_handled(run.id)
        return run.id
