"""Scheduling: one run per host, the global cap and pause hold queued runs (recorded); approvals expire."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from receiver_helpers import RecordingExecutor, recording_receiver, write_config

from remediation_receiver.dispatcher import Dispatcher
from remediation_receiver.journal import Journal


def setup(tmp_path: Path, cap: int = 2) -> tuple[Dispatcher, Journal, RecordingExecutor]:
    return recording_receiver(write_config(tmp_path, guards={"max_concurrent_runs": cap}))


def queue(journal: Journal, run_id: str, host: str, status: str = "queued", **extra: Any) -> None:
    journal.add_run({"id": run_id, "rule": "probe", "playbook": "receiver_probe.yml", "host": host,
                     "fingerprint": run_id, "starts_at": "s", "dedup_key": run_id, "attempt": 1, "mode": "auto",
                     "status": status, "extravars": {}, **extra})


def test_one_run_per_host_and_the_global_cap(tmp_path: Path) -> None:
    dispatcher, journal, executor = setup(tmp_path, cap=2)
    for run_id, host in (("r1", "web1"), ("r2", "web1"), ("r3", "web2"), ("r4", "db1")):
        queue(journal, run_id, host)
        time.sleep(0.002)
    dispatcher.schedule()
    assert executor.started == ["r1", "r3"]
    held = {r.id: r.held for r in journal.runs_in(("queued",))}
    assert held["r2"].startswith("host_busy: run r1 is running on web1")
    assert held["r4"].startswith("concurrency_cap: 2 runs already running")
    assert [e["event"] for e in journal.run_events("r2")] == ["held"]
    dispatcher.schedule()  # still held: recorded once, not on every pass
    assert [e["event"] for e in journal.run_events("r2")] == ["held"]


def test_pause_holds_queued_runs(tmp_path: Path) -> None:
    dispatcher, journal, executor = setup(tmp_path)
    queue(journal, "r1", "web1")
    journal.set_state("paused", "maintenance")
    dispatcher.schedule()
    assert executor.started == []
    [run] = journal.runs_in(("queued",))
    assert run.held == "paused: the receiver is paused"
    journal.set_state("paused", None)
    dispatcher.schedule()
    assert executor.started == ["r1"]


def test_an_unapproved_run_expires_and_says_so(tmp_path: Path) -> None:
    dispatcher, journal, _executor = setup(tmp_path)
    queue(journal, "late", "web1", status="awaiting_approval")
    queue(journal, "timely", "web2", status="awaiting_approval")
    journal.set_run_status("late", "awaiting_approval", approve_by=time.time() - 1)
    journal.set_run_status("timely", "awaiting_approval", approve_by=time.time() + 600)
    dispatcher.expire_approvals()
    statuses = {r.id: r.status for r in journal.list_runs()}
    assert statuses == {"late": "expired", "timely": "awaiting_approval"}
    assert [n["kind"] for n in journal.notifications()] == ["approval_expired"]


def test_failed_runs_are_escalated_once(tmp_path: Path) -> None:
    dispatcher, journal, _executor = setup(tmp_path)
    queue(journal, "bad", "web1")
    queue(journal, "good", "web2")
    journal.set_run_status("bad", "failed", reason="playbook failed (rc 2)", finished_at=time.time())
    journal.set_run_status("good", "successful", finished_at=time.time())
    dispatcher.handle_finished()
    dispatcher.handle_finished()
    assert [n["kind"] for n in journal.notifications()] == ["run_failed"]
    assert all(r.handled for r in journal.list_runs())


def test_finished_runs_feed_the_duration_histogram(tmp_path: Path) -> None:
    dispatcher, journal, _executor = setup(tmp_path)
    queue(journal, "quick", "web1")
    queue(journal, "slow", "web2")
    queue(journal, "never-started", "db1")
    now = time.time()
    journal.set_run_status("quick", "successful", started_at=now - 3, finished_at=now)
    journal.set_run_status("slow", "timeout", started_at=now - 700, finished_at=now)
    journal.set_run_status("never-started", "canceled", finished_at=now)
    dispatcher.handle_finished()
    text = dispatcher.metrics.render()
    assert 'remediation_receiver_run_duration_seconds_bucket{le="5"} 1' in text
    assert 'remediation_receiver_run_duration_seconds_bucket{le="600"} 1' in text
    assert 'remediation_receiver_run_duration_seconds_bucket{le="900"} 2' in text
    assert "remediation_receiver_run_duration_seconds_count 2" in text
    assert 'remediation_receiver_runs_finished_total{status="canceled"} 1' in text


def test_an_alert_that_cannot_be_decided_is_recorded_and_does_not_block_the_next(tmp_path: Path) -> None:
    dispatcher, journal, _executor = setup(tmp_path)
    inventory = Path(dispatcher.cfg.inventory)
    good_text = inventory.read_text()
    inventory.write_text("[broken\nthis is not an inventory ::: [\n")
    from receiver_helpers import alert

    journal.store_delivery(remote="127.0.0.1", payload={}, raw_sha256="x", alerts=[alert(fingerprint="a1")])
    dispatcher.step()
    [decision] = journal.query("SELECT outcome, reason FROM decisions")
    assert decision["outcome"] == "error" and decision["reason"].startswith("could not decide")
    assert [n["kind"] for n in journal.notifications()] == ["decision_error"]
    inventory.write_text(good_text)
    journal.store_delivery(remote="127.0.0.1", payload={}, raw_sha256="y", alerts=[alert(fingerprint="a2")])
    dispatcher.step()
    assert [d["outcome"] for d in journal.query("SELECT outcome FROM decisions ORDER BY id")] == ["error", "run"]
    assert journal.counts()["undecided"]["all"] == 0


def test_a_cancel_request_reaches_the_running_run_and_is_forgotten_once_it_ends(tmp_path: Path) -> None:
    dispatcher, journal, executor = setup(tmp_path)
    queue(journal, "r1", "web1")
    queue(journal, "r2", "web2")
    dispatcher.schedule()
    assert executor.started == ["r1", "r2"]
    journal.set_state("cancel:r1", "canceled by ops: wrong host")
    dispatcher.apply_cancel_requests()
    assert executor._cancel == {"r1": "canceled by ops: wrong host"}  # what the run's cancel_callback reads
    journal.set_run_status("r1", "canceled", reason="canceled by ops: wrong host", finished_at=time.time())
    dispatcher.apply_cancel_requests()
    assert journal.states("cancel:") == {}


def test_an_interrupted_run_an_operator_canceled_is_not_run_again(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, rules=[{"name": "probe", "when": "labels.x", "playbook": "receiver_probe.yml",
                                         "on_interrupted": "rerun"}])
    dispatcher, journal, _executor = recording_receiver(cfg)
    queue(journal, "r1", "web1", status="running")
    journal.set_state("cancel:r1", "canceled by ops")
    assert dispatcher.recover() == ["r1"]
    assert [r.status for r in journal.list_runs()] == ["interrupted"]
    [note] = journal.notifications()
    assert note["kind"] == "run_interrupted" and "an operator asked to cancel it" in note["payload"]


def test_an_alert_the_database_refuses_to_decide_is_recorded_and_does_not_block_the_others(
        tmp_path: Path, journal_backend: str) -> None:
    """A stored alert whose run the database refuses (PostgreSQL: a startsAt too long for the runs' dedup index,
    sent by whoever holds the token): that alert is decided as an error and escalated (its writes are rolled back to
    their savepoint, the chunk's transaction goes on), and the alerts of the same chunk are decided."""
    import secrets

    from receiver_helpers import alert

    dispatcher, journal, executor = setup(tmp_path)
    huge = "2026-11-30T10:00:00Z" + secrets.token_hex(4000)  # random: PostgreSQL cannot compress it under the limit
    journal.store_delivery(remote="127.0.0.1", payload={}, raw_sha256="x",
                           alerts=[alert(fingerprint="a0", instance="web2:9100"),
                                   alert(fingerprint="a1", starts_at=huge),
                                   alert(fingerprint="a2", instance="db1:9100")])
    dispatcher.step()
    dispatcher.step()
    assert journal.undecided_alerts() == []
    outcomes = {d["fingerprint"]: d["outcome"] for d in journal.query(
        "SELECT a.fingerprint, d.outcome FROM decisions d JOIN alerts a ON a.id = d.alert_id")}
    if journal_backend == "postgresql":
        assert outcomes == {"a0": "run", "a1": "error", "a2": "run"}
        assert [n["kind"] for n in journal.notifications()] == ["decision_error"]
    else:  # SQLite stores any length
        assert outcomes == {"a0": "run", "a1": "run", "a2": "run"}
    assert len(journal.list_runs()) == len([o for o in outcomes.values() if o == "run"])
    assert executor.started, "the runs decided after the refused alert start"


def test_an_expiry_whose_notification_cannot_be_queued_is_not_committed(tmp_path: Path, journal_backend: str) -> None:
    """The database refuses the approval_expired notification (a trigger or constraint of the test's: a real refusal
    by the database): the run stays awaiting approval, and the next pass, once the database accepts, expires it and
    says so. (Before: the expiry was committed first; the notice, lost, was never tried again.)"""
    dispatcher, journal, _executor = setup(tmp_path)
    queue(journal, "late", "web1", status="awaiting_approval")
    journal.set_run_status("late", "awaiting_approval", approve_by=time.time() - 1)
    if journal_backend == "postgresql":
        refuse = "ALTER TABLE notifications ADD CONSTRAINT pmr_refuse CHECK (kind <> 'approval_expired')"
        accept = "ALTER TABLE notifications DROP CONSTRAINT pmr_refuse"
    else:
        refuse = ("CREATE TRIGGER pmr_refuse BEFORE INSERT ON notifications WHEN NEW.kind = 'approval_expired'"
                  " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        accept = "DROP TRIGGER pmr_refuse"
    with journal._write() as db:  # type: ignore[attr-defined]
        db.execute(refuse)
    with pytest.raises(journal.errors):
        dispatcher.expire_approvals()
    assert journal.get_run("late").status == "awaiting_approval"
    with journal._write() as db:  # type: ignore[attr-defined]
        db.execute(accept)
    dispatcher.expire_approvals()
    assert journal.get_run("late").status == "expired"
    assert [n["kind"] for n in journal.notifications()] == ["approval_expired"]
