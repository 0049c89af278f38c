"""The path from a stored alert to its run (issue 13: alert to first task within the bare ansible_runner.run() of the
same playbook + 50 ms): the dispatcher is woken by the delivery, not by a poll; nothing slow waits inside the
decision's transaction; every run records when it passed each stage (its 'stages' event)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from receiver_helpers import TOKEN, RecordingExecutor, add_probe_run, alert, payload, recording_receiver, write_config

from remediation_receiver import dispatcher as dispatcher_module
from remediation_receiver import targets
from remediation_receiver.executor import Executor
from remediation_receiver.ingress import Ingress
from remediation_receiver.journal import Journal, RunRecord, SQLiteJournal
from remediation_receiver.metrics import Metrics
from remediation_receiver.notify import Notifier
from remediation_receiver.redact import Redactor

HANG = 60.0  # bounds a hang only: every assertion is on what happened, in which order, never on how fast


class LaunchSignal(RecordingExecutor):
    """Records launches (never starts ansible-runner) and what the dispatcher stamped on each run before it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.launched = threading.Event()
        self.stamped: dict[str, dict[str, float]] = {}

    def launch(self, run: RunRecord) -> None:
        with self._lock:
            self.stamped[run.id] = dict(self._stages.get(run.id, {}))
        super().launch(run)
        self.launched.set()


def deliver(ingress: Ingress, *alerts: dict[str, Any]) -> None:
    import json

    reply = ingress.accept("127.0.0.1", json.dumps(payload(*alerts)).encode())
    assert reply.status == 202, reply.body


class WatchedEvent(threading.Event):
    """The dispatcher's wake-up event, telling when the dispatcher is blocked waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        try:
            return super().wait(timeout)
        finally:
            self.waiting.clear()


def test_a_stored_alert_wakes_the_dispatcher_without_a_poll_interval(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With the idle wait an hour long, a run still starts: only the ingress's wake-up can have started it."""
    monkeypatch.setattr(dispatcher_module, "IDLE_WAIT", 3600.0)
    cfg = write_config(tmp_path)
    journal = Journal(cfg.journal)
    executor = LaunchSignal(cfg, journal, Redactor([]), on_finished=lambda run_id: None)
    dispatcher = dispatcher_module.Dispatcher(cfg, journal, executor, Notifier(cfg, journal), Metrics())
    wake = dispatcher.wake = WatchedEvent()
    # Wired as Service wires them: a committed delivery wakes the dispatcher.
    ingress = Ingress(journal, TOKEN, cfg.max_body_bytes, Metrics(), on_stored=dispatcher.wake.set)
    dispatcher.start()
    try:
        for number, instance in enumerate(("web1:9100", "web2:9100"), start=1):
            # Blocked in its hour-long wait, after a pass that found nothing: only a wake-up can start the run.
            wait_for(lambda: wake.waiting.is_set(), "the dispatcher to wait")
            executor.launched.clear()
            deliver(ingress, alert(instance=instance, fingerprint=f"a{number}"))
            assert executor.launched.wait(HANG), f"alert {number}'s run waited for a poll interval"
            assert len(executor.started) == number
    finally:
        dispatcher.stop()
    if isinstance(journal, SQLiteJournal):
        # The dispatcher's thread warmed its connection and the group commit's before the first alert.
        assert journal.query("SELECT value FROM meta WHERE key='last_start'"), "the journal was not warmed"
    stamps = executor.stamped[executor.started[1]]
    # Stamped before the launch: when the alert was stored, when the pass that took it began, picked it up and
    # committed its decision, in that order.
    assert stamps["received"] <= stamps["woke"] <= stamps["picked"] <= stamps["committed"], stamps


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + HANG
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_the_inventory_is_parsed_at_start_and_never_inside_a_decision(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The first alert a rule matched paid Ansible's inventory import and parse (about 300 ms) inside the
    transaction that decides it, holding back its run and the deliveries behind it; an edited inventory did the
    same on the next alert."""
    monkeypatch.setattr(dispatcher_module, "IDLE_WAIT", 3600.0)
    cfg = write_config(tmp_path)
    dispatcher, journal, executor = recording_receiver(cfg)
    parsed_in_transaction: list[bool] = []
    real_load = targets.load_inventory

    def load(path: str) -> targets.Inventory:
        parsed_in_transaction.append(bool(getattr(journal._local, "in_tx", False)))
        return real_load(path)

    def decide(instance: str, fingerprint: str) -> None:
        journal.store_delivery(remote="127.0.0.1", payload={"receiver": "r"}, raw_sha256=fingerprint,
                               alerts=[alert(instance=instance, fingerprint=fingerprint)])
        dispatcher.wake.set()
        wait_for(lambda: not journal.undecided_alerts(), f"the alert on {instance} to be decided")

    monkeypatch.setattr(targets, "load_inventory", load)
    dispatcher.start()
    try:
        assert parsed_in_transaction == [False], "the inventory was not parsed at start"
        decide("web1:9100", "a1")
        assert parsed_in_transaction == [False], "the first matching alert parsed the inventory again"
        inventory = Path(cfg.inventory)
        inventory.write_text(inventory.read_text() + "\n[extra]\nweb3\n")
        later = time.time() + 5
        os.utime(inventory, (later, later))
        decide("web3:9100", "c3")
    finally:
        dispatcher.stop()
    assert parsed_in_transaction == [False, False], "the edited inventory was parsed inside the decision"
    decisions = journal.query("SELECT outcome, host FROM decisions ORDER BY id")
    assert [(d["outcome"], d["host"]) for d in decisions] == [("run", "web1"), ("run", "web3")], decisions
    assert len(executor.started) == 2


def test_an_unreadable_inventory_at_start_is_reported_at_decision_time(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    Path(cfg.inventory).unlink()
    dispatcher, journal, executor = recording_receiver(cfg)
    dispatcher.load_inventory(at_start=True)  # a warning, not a failure: the receiver still stores and decides
    journal.store_delivery(remote="127.0.0.1", payload={"receiver": "r"}, raw_sha256="x", alerts=[alert()])
    dispatcher.step()
    assert executor.started == []
    decisions = journal.query("SELECT outcome, reason FROM decisions")
    assert [d["outcome"] for d in decisions] == ["error"] and "does not exist" in decisions[0]["reason"]


def test_a_run_records_its_stages_with_its_first_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real ansible-runner run: the 'stages' event holds the dispatcher's stamps and the executor's, in order,
    and is written with the first task's start (no commit of its own). 'running' is written once ansible-playbook
    runs, not in the spawn's path."""
    cfg = write_config(tmp_path)
    cfg.envvars["ANSIBLE_LOCAL_TEMP"] = str(tmp_path / "ansible-tmp")
    journal = Journal(cfg.journal)
    running_written: list[float] = []
    set_run_status = journal.set_run_status

    def recording_set_run_status(run_id: str, status: str, **kwargs: Any) -> bool:
        if status == "running":
            running_written.append(time.time())
        return set_run_status(run_id, status, **kwargs)

    monkeypatch.setattr(journal, "set_run_status", recording_set_run_status)
    done = threading.Event()
    executor = Executor(cfg, journal, Redactor([]), on_finished=lambda run_id: done.set())
    run_id = add_probe_run(journal, "staged")
    run = journal.get_run(run_id)
    assert run is not None
    executor.stamp(run_id, received=1.0, woke=2.0, picked=3.0, committed=4.0, ignored=None)
    try:
        assert executor.submit(run)
        assert done.wait(120), "the run did not finish"
    finally:
        executor.shutdown(0)
    final = journal.get_run(run_id, with_events=True)
    assert final is not None and final.status == "successful", final
    names = [e["event"] for e in final.events]
    assert names.count("stages") == 1, names
    first_task = names.index("playbook_on_task_start")
    assert names[first_task + 1] == "stages", names
    stages = final.events[first_task + 1]["data"]
    assert "ignored" not in stages
    order = ["received", "woke", "picked", "committed", "worker", "prepared", "runner_called", "starting",
             "spawning", "first_event", "task_start_seen", "written"]
    assert [stages[k] for k in order] == sorted(stages[k] for k in order), stages
    # ansible-playbook's own clock: it started the playbook, then the task, after it was spawned.
    assert stages["spawning"] <= stages["playbook_start"] <= stages["task_start"] <= stages["task_start_seen"]
    assert executor._stages == {}
    assert len(running_written) == 1 and stages["first_event"] <= running_written[0], (running_written, stages)
