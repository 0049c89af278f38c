"""Deciding: rules, modes, guards and resolution, against a real journal and a real inventory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from receiver_helpers import alert, write_config

from remediation_receiver import guards
from remediation_receiver.config import Config
from remediation_receiver.dispatcher import plan_alert
from remediation_receiver.journal import AlertRecord, Journal
from remediation_receiver.targets import InventoryCache

RULE = {"name": "probe", "when": "labels.alertname == 'ReceiverProbe'", "playbook": "receiver_probe.yml",
        "vars": {"mount": "labels.mountpoint", "summary": "annotations.summary"}}


def setup(tmp_path: Path, **rule: Any) -> tuple[Config, Journal, InventoryCache]:
    cfg = write_config(tmp_path, rules=[{**RULE, **rule}])
    return cfg, Journal(cfg.journal), InventoryCache(cfg.inventory)


def stored(journal: Journal, *alerts: dict[str, Any]) -> list[AlertRecord]:
    journal.store_delivery(remote="127.0.0.1", payload={"receiver": "r"}, raw_sha256="x", alerts=list(alerts))
    return journal.undecided_alerts()


def decide(cfg: Config, journal: Journal, inventory: InventoryCache, record: AlertRecord,
           now: float | None = None) -> list[dict[str, Any]]:
    plan = plan_alert(cfg, journal, inventory, record, now=now)
    journal.record_decisions(record.id, plan.decisions, plan.runs, plan.cancel)
    return plan.decisions


@pytest.mark.parametrize(("labels", "outcome", "reason"), [
    ({"alertname": "Other", "instance": "web1"}, "no_rule", "no rule matches"),
    ({"alertname": "ReceiverProbe"}, "refused", "no 'instance' label"),
    ({"alertname": "ReceiverProbe", "instance": "all"}, "refused", "group pattern"),
    ({"alertname": "ReceiverProbe", "instance": "*"}, "refused", "not a plain host name"),
    ({"alertname": "ReceiverProbe", "instance": "web1,web2"}, "refused", "not a plain host name"),
    ({"alertname": "ReceiverProbe", "instance": "web1:&db"}, "refused", "host:port"),
    ({"alertname": "ReceiverProbe", "instance": "localhost"}, "refused", "implicit localhost"),
    ({"alertname": "ReceiverProbe", "instance": "web1:9100"}, "run", "queued as run"),
])
def test_each_alert_is_decided_with_a_reason(tmp_path: Path, labels: dict[str, str], outcome: str,
                                             reason: str) -> None:
    cfg, journal, inventory = setup(tmp_path)
    [record] = stored(journal, dict(alert(), labels=labels))
    [decision] = decide(cfg, journal, inventory, record)
    assert decision["outcome"] == outcome
    assert reason in decision["reason"]
    assert len(journal.list_runs()) == (1 if outcome == "run" else 0)


def test_alert_values_reach_the_run_as_data(tmp_path: Path) -> None:
    cfg, journal, inventory = setup(tmp_path)
    hostile = "{{ lookup('pipe', 'touch /tmp/pwned') }}"
    [record] = stored(journal, dict(alert(mountpoint="/var/lib/docker"), annotations={"summary": hostile}))
    decide(cfg, journal, inventory, record)
    [run] = journal.list_runs()
    assert run.host == "web1"
    assert run.extravars["mount"] == "/var/lib/docker"
    assert run.extravars["summary"] == hostile
    assert run.extravars["remediation_alert"]["labels"]["instance"] == "web1:9100"
    assert run.dedup_key == "f00d|2026-11-21T10:00:00Z|probe"


def test_a_variable_whose_label_is_absent_is_not_passed(tmp_path: Path) -> None:
    # The playbook's `| default(...)` must apply: a null extra var would override it (disk_pressure_target_free).
    cfg, journal, inventory = setup(tmp_path)
    [record] = stored(journal, alert())  # no mountpoint label
    decide(cfg, journal, inventory, record)
    [run] = journal.list_runs()
    assert "mount" not in run.extravars
    assert run.extravars["summary"] == "disk almost full"


@pytest.mark.parametrize(("mode", "observe", "outcome", "status", "check_mode"), [
    ("auto", "record", "run", "queued", False),
    ("observe", "record", "observed", None, None),
    ("observe", "check", "run", "queued", True),
    ("approve", "record", "awaiting_approval", "awaiting_approval", False),
])
def test_modes(tmp_path: Path, mode: str, observe: str, outcome: str, status: str | None,
               check_mode: bool | None) -> None:
    cfg, journal, inventory = setup(tmp_path, mode=mode, observe=observe)
    [record] = stored(journal, alert())
    plan = plan_alert(cfg, journal, inventory, record)
    journal.record_decisions(record.id, plan.decisions, plan.runs)
    assert plan.decisions[0]["outcome"] == outcome
    runs = journal.list_runs()
    assert [r.status for r in runs] == ([status] if status else [])
    if runs:
        assert runs[0].check_mode is check_mode
    if mode == "approve":
        assert runs[0].approve_by is not None and runs[0].approve_by > time.time() + 3000
        assert [n[0] for n in plan.notes] == ["approval_needed"]


def test_duplicates_make_one_run_and_survive_a_reopened_journal(tmp_path: Path) -> None:
    cfg, journal, inventory = setup(tmp_path)
    for record in stored(journal, *[alert()] * 5):
        decide(cfg, journal, inventory, record)
    journal.close()
    reopened = Journal(cfg.journal)
    for record in stored(reopened, alert()):
        [decision] = decide(cfg, reopened, inventory, record)
        assert decision["outcome"] == "deduplicated"
    outcomes = [r["outcome"] for r in reopened.query("SELECT outcome FROM decisions ORDER BY id")]
    assert outcomes == ["run"] + ["deduplicated"] * 5
    assert len(reopened.list_runs()) == 1


def finish(journal: Journal, status: str = "successful", ago: float = 0.0) -> None:
    for run in journal.runs_in(("queued",)):
        journal.set_run_status(run.id, status, finished_at=time.time() - ago)


@pytest.mark.parametrize(("max_attempts", "outcomes"), [
    (1, ["run", "deduplicated", "exhausted"]),
    (2, ["run", "deduplicated", "run"]),
])
def test_still_firing_after_the_run_retries_then_escalates(tmp_path: Path, max_attempts: int,
                                                           outcomes: list[str]) -> None:
    cfg, journal, inventory = setup(tmp_path, max_attempts=max_attempts, cooldown=0)
    got = []
    [record] = stored(journal, alert())
    got += [d["outcome"] for d in decide(cfg, journal, inventory, record)]
    finish(journal, ago=5)
    [record] = stored(journal, alert())
    got += [d["outcome"] for d in decide(cfg, journal, inventory, record)]
    for run in journal.list_runs():
        journal.set_run_status(run.id, "successful", finished_at=time.time() - guards.RECHECK_AFTER - 1)
    [record] = stored(journal, alert())
    plan = plan_alert(cfg, journal, inventory, record)
    got += [d["outcome"] for d in plan.decisions]
    assert got == outcomes
    if max_attempts == 1:
        assert plan.notes[0][0] == "still_firing" and "after 1 attempt" in plan.notes[0][1]
    else:
        assert plan.runs[0]["attempt"] == 2


@pytest.mark.parametrize(("guard", "rule", "prior", "outcome", "why"), [
    ("cooldown", {"cooldown": 600}, [("f1", "web1")], "cooldown", "cooldown 600s"),
    ("cooldown elapsed", {"cooldown": 0}, [("f1", "web1")], "run", "queued"),
    ("budget", {"max_runs_per_hour": 2, "cooldown": 0}, [("f1", "web1"), ("f2", "web2")], "budget",
     "already ran 2 times"),
    ("breaker", {"fleet_breaker": {"max_hosts": 2, "window": 600}}, [("f1", "web2"), ("f2", "db1")], "breaker",
     "3 hosts alerting"),
    ("breaker quiet", {"fleet_breaker": {"max_hosts": 3, "window": 600}}, [("f1", "web2"), ("f2", "db1")], "run",
     "queued"),
])
def test_guards_hold_runs_back_and_say_why(tmp_path: Path, guard: str, rule: dict[str, Any],
                                           prior: list[tuple[str, str]], outcome: str, why: str) -> None:
    cfg, journal, inventory = setup(tmp_path, **rule)
    for fingerprint, host in prior:
        [record] = stored(journal, alert(fingerprint=fingerprint, instance=host))
        decide(cfg, journal, inventory, record)
        finish(journal)
    [record] = stored(journal, alert(fingerprint="f9", instance="web1"))
    [decision] = decide(cfg, journal, inventory, record)
    assert (decision["outcome"], guard) == (outcome, guard)
    assert why in decision["reason"]


def test_pause_holds_every_new_run(tmp_path: Path) -> None:
    cfg, journal, inventory = setup(tmp_path)
    journal.set_state(guards.PAUSE_KEY, "maintenance")
    [record] = stored(journal, alert())
    [decision] = decide(cfg, journal, inventory, record)
    assert decision["outcome"] == "paused" and "maintenance" in decision["reason"]
    assert journal.list_runs() == []


def test_resolved_alert_cancels_waiting_runs_of_its_fingerprint_only(tmp_path: Path) -> None:
    cfg, journal, inventory = setup(tmp_path, mode="approve")
    for record in stored(journal, alert(fingerprint="a1"), alert(fingerprint="b2", instance="web2")):
        decide(cfg, journal, inventory, record)
    [record] = stored(journal, alert(fingerprint="a1", status="resolved"))
    [decision] = decide(cfg, journal, inventory, record)
    assert decision["outcome"] == "resolved" and "1 queued or waiting run(s) canceled" in decision["reason"]
    statuses = {r.fingerprint: (r.status, r.reason) for r in journal.list_runs()}
    assert statuses["a1"] == ("canceled", "alert resolved before the run started")
    assert statuses["b2"][0] == "awaiting_approval"


def test_a_firing_delivered_after_its_resolution_starts_nothing(tmp_path: Path) -> None:
    cfg, journal, inventory = setup(tmp_path)
    [record] = stored(journal, alert(fingerprint="e5", status="resolved"))
    decide(cfg, journal, inventory, record)
    # An HA peer or a retry delivers the same firing (same startsAt) late: no run.
    [record] = stored(journal, alert(fingerprint="e5"))
    [decision] = decide(cfg, journal, inventory, record)
    assert decision["outcome"] == "stale" and "already resolved" in decision["reason"]
    assert journal.list_runs() == []
    # The alert firing again later is a new firing (a new startsAt): it runs.
    [record] = stored(journal, alert(fingerprint="e5", starts_at="2026-11-21T11:00:00Z"))
    [decision] = decide(cfg, journal, inventory, record)
    assert decision["outcome"] == "run"
    assert len(journal.list_runs()) == 1


def test_a_broken_condition_is_recorded_not_raised(tmp_path: Path) -> None:
    cfg, journal, inventory = setup(tmp_path, when="abs(labels.alertname) > `3`")
    [record] = stored(journal, alert())
    [decision] = decide(cfg, journal, inventory, record)
    assert decision["outcome"] == "rule_error"
    assert "rule probe: condition failed" in decision["reason"]
    assert journal.list_runs() == []


def test_resolved_alerts_close_their_records_and_leave_the_fleet_count(tmp_path: Path) -> None:
    cfg, journal, inventory = setup(tmp_path, fleet_breaker={"max_hosts": 2, "window": 600}, mode="observe")
    for fingerprint, host in (("h1", "web1"), ("h2", "web2")):
        [record] = stored(journal, alert(fingerprint=fingerprint, instance=host))
        decide(cfg, journal, inventory, record)
    assert journal.hosts_alerting("probe", 0) == {"web1", "web2"}
    [record] = stored(journal, alert(fingerprint="h1", instance="web1", status="resolved"))
    plan = plan_alert(cfg, journal, inventory, record)
    journal.record_decisions(record.id, plan.decisions, plan.runs, plan.cancel, close=plan.close)
    closed = journal.query("SELECT fingerprint, status FROM alerts WHERE closed_at IS NOT NULL ORDER BY id")
    assert closed == [{"fingerprint": "h1", "status": "firing"}, {"fingerprint": "h1", "status": "resolved"}]
    assert journal.hosts_alerting("probe", 0) == {"web2"}


def backdate(journal: Journal, days: float) -> None:
    """Make everything in the journal `days` older (what a long-firing alert looks like after that long)."""
    shift = days * 86400
    with journal.transaction() as db:
        db.execute("UPDATE alerts SET received_at = received_at - ?, decided_at = decided_at - ?", (shift, shift))
        db.execute("UPDATE decisions SET created_at = created_at - ?", (shift,))
        db.execute("UPDATE deliveries SET received_at = received_at - ?", (shift,))
        db.execute("UPDATE notifications SET created_at = created_at - ?", (shift,))
        db.execute("UPDATE runs SET created_at = created_at - ?, finished_at = finished_at - ?", (shift, shift))


def test_retention_keeps_the_runs_of_a_firing_that_is_still_delivered(tmp_path: Path) -> None:
    """Firing for longer than the retention period (same startsAt): still no fresh attempt, and one escalation."""
    cfg, journal, inventory = setup(tmp_path, max_attempts=1, cooldown=0)
    cfg.journal_retention_days = 1
    [record] = stored(journal, alert(fingerprint="long"))
    assert [d["outcome"] for d in decide(cfg, journal, inventory, record)] == ["run"]
    [record] = stored(journal, alert(fingerprint="gone"))  # a firing Alertmanager stopped sending
    assert [d["outcome"] for d in decide(cfg, journal, inventory, record)] == ["run"]
    for run in journal.list_runs():
        journal.set_run_status(run.id, "successful", finished_at=time.time(), handled=1)
    backdate(journal, 2)
    [record] = stored(journal, alert(fingerprint="long"))  # Alertmanager's repeat_interval re-send
    plan = plan_alert(cfg, journal, inventory, record)
    assert [d["outcome"] for d in plan.decisions] == ["exhausted"]
    journal.record_decisions(record.id, plan.decisions, plan.runs)
    journal.add_notification(plan.notes[0][0], {}, dedup=f"{plan.notes[0][3]}#0")
    journal.update_notification(1, status="sent")
    backdate(journal, 2)
    [record] = stored(journal, alert(fingerprint="long"))  # and again, two days later
    journal.prune(time.time() - cfg.journal_retention_days * 86400)

    assert sorted(r.fingerprint for r in journal.list_runs()) == ["long"]  # "gone" is forgotten
    plan = plan_alert(cfg, journal, inventory, record)
    assert [d["outcome"] for d in plan.decisions] == ["exhausted"], plan.decisions
    assert not journal.add_notification(plan.notes[0][0], {}, dedup=f"{plan.notes[0][3]}#0"), \
        "the still_firing escalation would be sent a second time"


@pytest.mark.parametrize(("rule", "days"), [
    ({}, 1.0),
    ({"cooldown": 3 * 86400}, 3.0),
    ({"fleet_breaker": {"max_hosts": 3, "window": 5 * 86400}}, 5.0),
])
def test_retention_never_cuts_into_a_guard_window(tmp_path: Path, rule: dict[str, Any], days: float) -> None:
    from remediation_receiver.dispatcher import retention_cutoff

    cfg = setup(tmp_path, **rule)[0]
    cfg.journal_retention_days = 1
    assert retention_cutoff(cfg, 1e9) == 1e9 - days * 86400
