"""Executor: real ansible-runner runs (local connection), outcomes, timeouts, cancellation, scrubbed artifacts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
import receiver_helpers
from receiver_helpers import TOKEN, add_probe_run, fill, small_filesystem, unique_run_id, write_config

from remediation_receiver.dispatcher import Dispatcher
from remediation_receiver.executor import (
    Executor,
    dump_extravars,
    find_run_processes,
    prune_artifacts,
    scrub_artifacts,
    summarise_event,
)
from remediation_receiver.ingress import Ingress
from remediation_receiver.journal import Journal, RunRecord
from remediation_receiver.metrics import Metrics
from remediation_receiver.notify import Notifier
from remediation_receiver.redact import MASK, Redactor


def _strings(value: Any) -> Iterator[Any]:
    """Every string in a loaded structure, mapping keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.mark.parametrize("value", [
    {"a": "1"},
    {"a": "true", "b": "null", "c": "0x10", "d": "2026-11-21"},
    {"a": "{{ lookup('pipe','id') }}"},
    {"a": {"b": ["{% for %}", "x", "1"]}},
    {"a": {"{{ lookup('pipe','id') }}": "v", "{# c #}": {"{% x %}": ["y"]}}},
    {"n": 3, "f": None, "e": {}, "l": []},
])
def test_extravars_reach_ansible_as_untrusted_data(tmp_path: Path, value: dict[str, Any]) -> None:
    """What `ansible-playbook -e @env/extravars` loads: the same data, and no string (key or value) to template."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import is_trusted_as_template

    path = tmp_path / "extravars"
    path.write_text(dump_extravars(value))
    loaded = DataLoader().load_from_file(str(path), trusted_as_template=True)
    assert loaded == value
    assert [s for s in _strings(loaded) if is_trusted_as_template(s)] == []


@pytest.mark.parametrize(("text", "secrets", "expected"), [
    ("token=abc123secret", [], f"token={MASK}"),
    ('"password": "hunter2hunter2"', [], f'"password": "{MASK}"'),
    ("Authorization: Bearer abcdefgh", [], f"Authorization: {MASK}"),
    (f"header {TOKEN} leaked", [TOKEN], f"header {MASK} leaked"),
    ("nothing to hide", [TOKEN], "nothing to hide"),
])
def test_redaction(text: str, secrets: list[str], expected: str) -> None:
    assert Redactor(secrets).text(text) == expected


def test_redaction_of_mappings_masks_secret_keys() -> None:
    data = Redactor([]).data({"db_password": "x1y2z3", "user": "app", "nested": [{"api_key": "k-123456"}]})
    assert data == {"db_password": MASK, "user": "app", "nested": [{"api_key": MASK}]}


def test_scrub_removes_the_environment_and_redacts(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts" / "r1"
    (artifacts / "job_events").mkdir(parents=True)
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "envvars").write_text(f"SECRET_TOKEN: {TOKEN}\n")
    (artifacts / "command").write_text(json.dumps({"command": ["ansible-playbook"], "env": {"T": TOKEN}}))
    (artifacts / "stdout").write_text(f"ok: token is {TOKEN}\n")
    (artifacts / "job_events" / "1.json").write_text(json.dumps({"stdout": TOKEN}))
    scrub_artifacts(str(tmp_path), Redactor([TOKEN]))
    assert not (tmp_path / "env" / "envvars").exists()
    everything = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert TOKEN not in everything
    assert json.loads((artifacts / "command").read_text())["command"] == ["ansible-playbook"]


def test_a_scrub_that_cannot_write_removes_the_secret_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """A real write failure: the child may write no file larger than a few bytes (RLIMIT_FSIZE, as on a full disk).

    Before: the unredacted artifact stayed in place beside a half-written `.scrub` copy.
    """
    artifacts = tmp_path / "artifacts" / "r1"
    artifacts.mkdir(parents=True)
    (artifacts / "stdout").write_text(f"ok: token is {TOKEN} and a line long enough to exceed the limit\n")
    (artifacts / "status").write_text("successful")
    child = f"""
import resource, signal, sys
from remediation_receiver.executor import scrub_artifacts
from remediation_receiver.redact import Redactor
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))
try:
    scrub_artifacts({str(tmp_path)!r}, Redactor([{TOKEN!r}]))
except OSError as exc:
    print("refused:", exc)
    sys.exit(3)
"""
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=False,
                         cwd=str(Path(__file__).resolve().parents[3]))
    assert run.returncode == 3, run.stdout + run.stderr
    assert "could not scrub 1 artifact file(s)" in run.stdout
    assert sorted(p.name for p in artifacts.iterdir()) == ["status"]
    everything = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert TOKEN not in everything


def test_retention_keeps_the_newest_and_never_an_active_run(tmp_path: Path) -> None:
    for i in range(6):
        (tmp_path / f"run{i}").mkdir()
        os.utime(tmp_path / f"run{i}", (1000 + i, 1000 + i))
    removed = prune_artifacts(str(tmp_path), keep=2, max_age_days=36500, active={"run0"})
    assert sorted(removed) == ["run1", "run2", "run3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run0", "run4", "run5"]


@pytest.mark.parametrize(("event", "kept"), [
    ({"event": "verbose", "event_data": {}}, None),
    ({"event": "runner_on_ok", "counter": 3, "event_data": {"task": "T", "host": "h", "res": {
        "changed": True, "stdout": "x" * 5000, "ansible_facts": {"big": 1}}}}, "runner_on_ok"),
])
def test_events_are_summarised(event: dict[str, Any], kept: str | None) -> None:
    summary = summarise_event(event)
    if kept is None:
        assert summary is None
        return
    assert summary is not None and summary["event"] == kept
    assert "ansible_facts" not in summary["data"]["res"]
    assert len(summary["data"]["res"]["stdout"]) < 4100


def make_run(journal: Journal, run_id: str, **extravars: Any) -> RunRecord:
    run = journal.get_run(add_probe_run(journal, run_id, **extravars))
    assert run is not None
    return run


def run_and_wait(executor: Executor, journal: Journal, run: RunRecord, timeout: float = 60) -> RunRecord:
    done = threading.Event()
    executor.on_finished = lambda run_id: done.set()
    assert executor.submit(run)
    assert done.wait(timeout), "run did not finish"
    final = journal.get_run(run.id, with_events=True)
    assert final is not None
    return final


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition (the deadline only bounds a hang; the test never depends on how fast the machine is)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.1)


def task_completed(run: RunRecord, task: str) -> bool:
    return any(e["event"] == "runner_on_ok" and task in (e["task"] or "") for e in run.events)


@pytest.fixture
def executor(tmp_path: Path) -> tuple[Executor, Journal, Any]:
    cfg = write_config(tmp_path, executor={"workers": 2, "job_timeout": 60, "idle_timeout": 60,
                                           "envvars": {"ANSIBLE_HOME": str(tmp_path / "ansible-home"),
                                                       "MY_SECRET_TOKEN": "do-not-store-me-123"}})
    cfg.envvars["ANSIBLE_LOCAL_TEMP"] = str(tmp_path / "ansible-tmp")
    journal = Journal(cfg.journal)
    ex = Executor(cfg, journal, Redactor([TOKEN, "do-not-store-me-123"]), on_finished=lambda run_id: None)
    yield ex, journal, cfg
    ex.shutdown(0)


def test_a_successful_run_streams_events_and_leaves_no_secret_on_disk(executor: Any) -> None:
    ex, journal, cfg = executor
    probe_file = Path(f"/tmp/receiver-probe-{unique_run_id('r-ok')}")
    probe_file.unlink(missing_ok=True)
    os.environ["SOME_API_TOKEN"] = TOKEN
    try:
        run = run_and_wait(ex, journal, make_run(journal, "r-ok", probe_note=TOKEN))
    finally:
        os.environ.pop("SOME_API_TOKEN")
    assert (run.status, run.rc) == ("successful", 0), run.reason
    assert run.stats is not None and run.stats["changed"] == {"ctl1": 1}
    events = [e["event"] for e in run.events]
    assert events[0] == "playbook_on_start" and events[-1] == "playbook_on_stats"
    assert "runner_on_ok" in events
    assert probe_file.exists()
    probe_file.unlink()
    pdd = Path(cfg.artifacts_dir) / run.id
    everything = "".join(p.read_text(errors="replace") for p in pdd.rglob("*") if p.is_file())
    assert TOKEN not in everything and "do-not-store-me-123" not in everything
    assert TOKEN not in json.dumps(run.events)


@pytest.mark.parametrize(("extravars", "settings", "status", "reason"), [
    ({"probe_fail": "yes"}, {}, "failed", "playbook failed (rc 2)"),
    ({"probe_sleep": "30"}, {"job_timeout": 2}, "timeout", "timed out (job 2s"),
])
def test_failures_and_timeouts_are_recorded(executor: Any, extravars: dict[str, str], settings: dict[str, Any],
                                            status: str, reason: str) -> None:
    ex, journal, cfg = executor
    for key, value in settings.items():
        setattr(cfg, key, value)
    run = run_and_wait(ex, journal, make_run(journal, f"r-{status}", **extravars))
    assert run.status == status and reason in run.reason
    # Judged by what happened, not by the clock (a loaded machine starts Ansible slowly): the 30 s task never
    # completed, so the job timeout cut it off.
    assert not task_completed(run, "Take a while"), "the slow task ran to its end: no timeout"
    assert not find_run_processes(run.id), "the playbook left processes behind"


def test_cancel_stops_a_running_playbook(executor: Any) -> None:
    ex, journal = executor[0], executor[1]
    run = make_run(journal, "r-cancel", probe_sleep="60")
    done = threading.Event()
    ex.on_finished = lambda run_id: done.set()
    assert ex.submit(run)

    def sleeping() -> bool:
        return any(e["event"] == "playbook_on_task_start" and "Take a while" in (e["task"] or "")
                   for e in journal.run_events(run.id))

    # Cancel only once the slow task has started: the cancel must stop a running playbook, not a starting one.
    wait_until(lambda: sleeping() or done.is_set(), 60, "the slow task to start")
    assert not done.is_set(), "the run ended before the slow task started"
    ex.cancel(run.id, "alert resolved while running")
    assert done.wait(60), "the canceled run did not finish"
    final = journal.get_run(run.id, with_events=True)
    assert final is not None
    assert (final.status, final.reason) == ("canceled", "alert resolved while running")
    assert not task_completed(final, "Take a while"), "the slow task ran to its end: the cancel did not stop it"
    assert not find_run_processes(run.id), "the canceled playbook left processes behind"


def test_alert_names_and_values_reach_a_real_playbook_as_data(tmp_path: Path) -> None:
    """A label or annotation *name* that holds a lookup stays text, however the playbook iterates over it."""
    markers = [tmp_path / f"marker-{i}" for i in range(4)]
    lookups = [f"{{{{ lookup('pipe', 'touch {m}') }}}}" for m in markers]
    labels = {"alertname": "ReceiverData", "target": "ctl1", "n": "1", "flag": "true",
              lookups[0]: "x", "plain": lookups[1], "{% if lookup('pipe', 'touch " + str(markers[2]) + "') %}x"
              "{% endif %}": "y"}
    annotations = {lookups[3]: "z", "summary": "s"}
    data_out = tmp_path / "seen.json"
    cfg = write_config(tmp_path, rules=[{"name": "data", "when": "labels.alertname == 'ReceiverData'",
                                         "playbook": "receiver_alert_data.yml", "target_label": "target",
                                         "vars": {"alert_labels": "labels", "data_out": f"`\"{data_out}\"`"}}])
    cfg.envvars["ANSIBLE_LOCAL_TEMP"] = str(tmp_path / "ansible-tmp")
    journal = Journal(cfg.journal)
    ingress = Ingress(journal, TOKEN, 64 * 1024, Metrics())
    delivery = {"version": "4", "status": "firing", "receiver": "r", "groupKey": "g", "truncatedAlerts": 0,
                "alerts": [{"status": "firing", "labels": labels, "annotations": annotations,
                            "startsAt": "2026-11-21T10:00:00Z", "fingerprint": "da7a"}]}
    assert ingress.accept("127.0.0.1", json.dumps(delivery).encode()).status == 202
    ex = Executor(cfg, journal, Redactor([TOKEN]), on_finished=lambda run_id: None)
    dispatcher = Dispatcher(cfg, journal, ex, Notifier(cfg, journal), Metrics())
    try:
        [record] = journal.undecided_alerts()
        dispatcher.decide(record)
        [run] = journal.list_runs()
        run = run_and_wait(ex, journal, run)
    finally:
        ex.shutdown(0)
    assert run.status == "successful", run.reason
    assert [m.name for m in markers if m.exists()] == [], "a lookup written in alert data ran on the controller"
    seen = json.loads(data_out.read_text())
    assert {i["key"]: i["value"] for i in seen["labels"]} == labels
    assert {i["key"]: i["value"] for i in seen["rule_var"]} == labels
    assert sorted(seen["annotation_names"]) == sorted(annotations)


def test_a_journal_fault_during_a_run_neither_stops_watching_the_playbook_nor_loses_its_end(
        tmp_path: Path, journal_backend: str, caplog: Any) -> None:
    """The journal fails while a playbook runs: SQLite's disk fills up until the playbook has ended; PostgreSQL
    terminates the executor's backend. Events are a record: the run goes on being watched, its events and its final
    status reach the journal once it can be written again, and no process outlives the recorded end. (Before: the
    event handler's error escaped into ansible-runner, which stopped watching a playbook that went on running; the
    run was recorded as an executor error, or, on a full disk, stayed 'running' for good.)"""
    with ExitStack() as stack:
        journal_path = None
        if journal_backend == "sqlite":
            journal_path = str(stack.enter_context(small_filesystem(tmp_path / "fs")) / "journal.sqlite")
        extra = {"journal": journal_path} if journal_path else {}
        cfg = write_config(tmp_path, **extra)
        cfg.envvars["ANSIBLE_LOCAL_TEMP"] = str(tmp_path / "ansible-tmp")
        journal = Journal(cfg.journal)
        ex = Executor(cfg, journal, Redactor([]), on_finished=lambda run_id: None)
        try:
            run = make_run(journal, "r-fault", probe_sleep="4")
            done = threading.Event()
            ex.on_finished = lambda run_id: done.set()
            assert ex.submit(run)
            wait_until(lambda: any("Take a while" in (e["task"] or "") for e in journal.run_events(run.id))
                       or done.is_set(), 60, "the slow task to start")
            assert not done.is_set(), "the run ended before the slow task started"
            if journal_backend == "sqlite":
                filler = fill(tmp_path / "fs")
                caplog.set_level(logging.WARNING, logger="remediation_receiver.executor")
                # The playbook ends while the disk is full: its last events and its end cannot be written.
                wait_until(lambda: not find_run_processes(run.id), 60, "the playbook to end")
                wait_until(lambda: any(run.id in r.getMessage() and "status" in r.getMessage()
                                       for r in caplog.records) or done.is_set(), 60,
                           "the executor to meet the full disk with the run's end")
                filler.unlink()
            else:
                [pid] = [db.conn.info.backend_pid for thread, db in journal._owned.values()  # type: ignore[attr-defined]
                         if thread.name.startswith("runner")]
                with psycopg.connect(receiver_helpers.JOURNAL or "", autocommit=True) as admin:
                    assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
            assert done.wait(60), "the run did not finish"
            final = journal.get_run(run.id, with_events=True)
            assert final is not None
            assert (final.status, final.rc) == ("successful", 0), final.reason
            assert task_completed(final, "Take a while"), "the events of the slow task were lost"
            assert final.events[-1]["event"] == "playbook_on_stats"
            assert not find_run_processes(run.id)
        finally:
            ex.shutdown(0)
            journal.close()
