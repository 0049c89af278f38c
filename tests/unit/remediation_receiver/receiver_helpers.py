"""Helpers for the receiver unit tests: a real journal, a real inventory and a config file in a temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediation_receiver.config import Config, load_config
from remediation_receiver.dispatcher import Dispatcher
from remediation_receiver.executor import Executor
from remediation_receiver.journal import Journal, RunRecord
from remediation_receiver.metrics import Metrics
from remediation_receiver.notify import Notifier
from remediation_receiver.redact import Redactor

REPO = Path(__file__).resolve().parents[3]
PLAYBOOKS = REPO / "tests" / "integration" / "playbooks"
TOKEN = "unit-test-token-0123456789"
# The journal write_config names: the SQLite file by default; a PostgreSQL URL while a test runs on that backend
# (the journal_backend fixture in conftest.py sets it).
JOURNAL: str | None = None

INVENTORY = f"""
[web]
web1 ansible_host=192.0.2.10
web2
web-dup-a ansible_host=shared.example
web-dup-b ansible_host=shared.example
v6host ansible_host=2001:db8::7

[db]
db1

[ctl]
ctl1 ansible_connection=local ansible_python_interpreter={sys.executable}
"""


def write_config(tmp: Path, rules: list[dict[str, Any]] | None = None, **extra: Any) -> Config:
    (tmp / "token").write_text(TOKEN + "\n")
    (tmp / "inventory.ini").write_text(INVENTORY)
    data: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "auth": {"token_file": "token"},
        "journal": JOURNAL or "state/journal.sqlite",
        "artifacts": {"dir": "state/runs", "keep_runs": 20},
        "inventory": "inventory.ini",
        "project_dir": str(PLAYBOOKS),
        "executor": {"workers": 2, "job_timeout": 60, "idle_timeout": 60,
                     "envvars": {"ANSIBLE_HOME": str(tmp / "ansible-home")}},
        "rules": rules or [{"name": "probe", "when": "labels.alertname == 'ReceiverProbe'",
                            "playbook": "receiver_probe.yml",
                            "vars": {"probe_sleep": "labels.probe_sleep", "probe_fail": "labels.probe_fail"}}],
    }
    data.update(extra)
    path = tmp / "config.yml"
    path.write_text(yaml.safe_dump(data))
    return load_config(str(path))


def alert(name: str = "ReceiverProbe", instance: str | None = "web1:9100", status: str = "firing",
          fingerprint: str = "f00d", starts_at: str = "2026-11-21T10:00:00Z", **labels: str) -> dict[str, Any]:
    all_labels = {"alertname": name, **labels}
    if instance is not None:
        all_labels["instance"] = instance
    return {"status": status, "labels": all_labels, "annotations": {"summary": "disk almost full"},
            "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
            "fingerprint": fingerprint}


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "groupKey": "{}:{alertname=\"ReceiverProbe\"}", "truncatedAlerts": 0,
            "status": "firing", "receiver": "remediation", "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": list(alerts)}


os.environ.setdefault("ANSIBLE_LOCAL_TEMP", "/tmp/ansible-local-unit")


class RecordingExecutor(Executor):
    """The real executor's claims, leases and bookkeeping, without starting ansible-runner: `started` lists the runs
    it was asked to launch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[str] = []

    def launch(self, run: RunRecord) -> None:
        self.started.append(run.id)


def recording_receiver(cfg: Config) -> tuple[Dispatcher, Journal, RecordingExecutor]:
    """A receiver on `cfg` as `serve` wires one (dispatcher, journal, executor), with a RecordingExecutor."""
    journal = Journal(cfg.journal)
    executor = RecordingExecutor(cfg, journal, Redactor([]), on_finished=lambda run_id: None)
    return Dispatcher(cfg, journal, executor, Notifier(cfg, journal), Metrics()), journal, executor


@contextmanager
def small_filesystem(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of its own (root only): a full disk for the SQLite journal, produced for real."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "pmr-pgfault-journalfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last byte; the returned file frees it when removed."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    try:
        while True:
            os.write(fd, b"\0")
    except OSError:
        pass
    os.close(fd)
    return filler


def unique_run_id(base: str) -> str:
    """A run id of this test process: the executor and recovery find a run's processes (and the probe playbook its
    /tmp file) by run id across the whole machine, so two test runs at once must never share one."""
    return f"{base}-{os.getpid():x}"


def add_probe_run(journal: Any, base: str, **extravars: Any) -> str:
    """A queued run of receiver_probe.yml on ctl1 under a run id of this test process (see unique_run_id)."""
    run_id = unique_run_id(base)
    journal.add_run({"id": run_id, "rule": "probe", "playbook": "receiver_probe.yml", "host": "ctl1",
                     "fingerprint": "f", "starts_at": "s", "dedup_key": f"k-{run_id}", "attempt": 1,
                     "mode": "auto", "status": "queued",
                     "extravars": {"remediation_run_id": run_id, "remediation_alert": {"labels": {"a": "b"}},
                                   **extravars}})
    return run_id

