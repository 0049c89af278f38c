"""Recovery: a run found running at start is interrupted, its leftovers stopped, then handled by its rule."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from receiver_helpers import unique_run_id, write_config

from remediation_receiver.dispatcher import Dispatcher
from remediation_receiver.executor import RUN_MARKER, Executor, find_run_processes
from remediation_receiver.journal import Journal
from remediation_receiver.metrics import Metrics
from remediation_receiver.notify import Notifier
from remediation_receiver.redact import Redactor


def dispatcher_for(tmp_path: Path, on_interrupted: str) -> tuple[Dispatcher, Journal]:
    cfg = write_config(tmp_path, rules=[{"name": "probe", "when": "labels.x", "playbook": "receiver_probe.yml",
                                         "on_interrupted": on_interrupted}])
    journal = Journal(cfg.journal)
    executor = Executor(cfg, journal, Redactor([]), on_finished=lambda run_id: None)
    return Dispatcher(cfg, journal, executor, Notifier(cfg, journal), Metrics()), journal


def crashed_run(journal: Journal, run_id: str, status: str = "running") -> None:
    journal.add_run({"id": run_id, "rule": "probe", "playbook": "receiver_probe.yml", "host": "web1",
                     "fingerprint": "f", "starts_at": "s", "dedup_key": "f|s|probe", "attempt": 1, "mode": "auto",
                     "status": status, "extravars": {"remediation_run_id": run_id}})


@pytest.mark.parametrize(("on_interrupted", "new_runs", "notification"), [
    ("rerun", 1, None),
    ("escalate", 0, "run_interrupted"),
])
def test_a_run_found_running_is_interrupted_and_handled_by_its_rule(
        tmp_path: Path, on_interrupted: str, new_runs: int, notification: str | None) -> None:
    dispatcher, journal = dispatcher_for(tmp_path, on_interrupted)
    crashed = unique_run_id("r-crashed")
    crashed_run(journal, crashed)
    # What the killed receiver left behind: a process group carrying the run's marker.
    orphan = subprocess.Popen(["sleep", "300"], env={**os.environ, RUN_MARKER: crashed},
                              start_new_session=True)
    try:
        # Found once the kernel shows its environment (on a loaded machine not always at the first look).
        deadline = time.time() + 10
        while find_run_processes(crashed) != [orphan.pid] and orphan.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert orphan.poll() is None, f"the orphan ended before recovery (returncode {orphan.returncode})"
        assert find_run_processes(crashed) == [orphan.pid]
        assert dispatcher.recover() == [crashed]
        assert orphan.wait(timeout=10) is not None
    finally:
        if orphan.poll() is None:
            orphan.kill()
    run = journal.get_run(crashed)
    assert run is not None and run.status == "interrupted" and run.handled
    assert "stopped 1 leftover process" in run.reason
    others = [r for r in journal.list_runs() if r.id != crashed]
    assert len(others) == new_runs
    if new_runs:
        assert (others[0].status, others[0].attempt, others[0].parent_run) == ("queued", 2, crashed)
        assert others[0].extravars["remediation_run_id"] == others[0].id
    kinds = [n["kind"] for n in journal.notifications()]
    assert kinds == ([notification] if notification else [])
    # Handled once: a second start changes nothing.
    assert dispatcher.recover() == []


def test_a_run_interrupted_twice_is_escalated_not_rerun_again(tmp_path: Path) -> None:
    dispatcher, journal = dispatcher_for(tmp_path, "rerun")
    crashed_run(journal, "r-first")
    dispatcher.recover()
    [second] = journal.runs_in(("queued",))
    journal.set_run_status(second.id, "running")
    time.sleep(0.01)
    dispatcher.recover()
    assert journal.runs_in(("queued",)) == []
    assert [n["kind"] for n in journal.notifications()] == ["run_interrupted"]
