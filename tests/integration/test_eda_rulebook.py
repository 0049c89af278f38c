"""The EDA rulebook (extensions/eda/rulebooks/postmortem_remediation.yml) driven by a real ansible-rulebook 1.3.2
from PyPI (installed into build/rulebook-venv as bench/bench_receiver.py does; Java 17): an alert runs its
remediation playbook on the one lab host its `instance` names; an alert without `instance`, or a resolved one, runs
nothing. The webhook listens on 127.0.0.1; the lab host is reached through the docker connection only."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_names import lab_prefix
from receiver_e2e import free_port, on_host, wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from bench_receiver import JAVA_HOME, RULEBOOK_VENV, ensure_rulebook  # noqa: E402

RULEBOOK = REPO / "extensions" / "eda" / "rulebooks" / "postmortem_remediation.yml"
PREFIX = lab_prefix("eda")
HOST = f"{PREFIX}-1"
TOKEN = "eda-test-token-0123456789abcdef"
SITE_PACKAGES = REPO / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


@pytest.fixture(scope="module")
def eda_host() -> Iterator[str]:
    subprocess.run(["bash", str(REPO / "tests/lab/lab.sh"), "up", "1", PREFIX], check=True, cwd=REPO)
    yield HOST
    if not os.environ.get("RECEIVER_KEEP_LAB"):
        subprocess.run(["bash", str(REPO / "tests/lab/lab.sh"), "down", PREFIX], check=False, cwd=REPO)


class Rulebook:
    """ansible-rulebook as a real process, with the shipped rulebook and a webhook on 127.0.0.1."""

    def __init__(self, workdir: Path, inventory: Path) -> None:
        self.binary = ensure_rulebook()
        self.port = free_port()
        self.log = workdir / "rulebook.log"
        variables = workdir / "vars.yml"
        variables.write_text(json.dumps({"eda_webhook_port": self.port, "eda_webhook_token": TOKEN,
                                         "eda_playbooks_dir": str(REPO / "playbooks")}))
        env = dict(os.environ, JAVA_HOME=JAVA_HOME, PATH=f"{RULEBOOK_VENV / 'bin'}:{os.environ['PATH']}",
                   ANSIBLE_HOME=str(workdir / "ansible-home"), ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-tmp"),
                   # The collection, and community.docker for the docker connection (from the test venv).
                   ANSIBLE_COLLECTIONS_PATH=f"{REPO / 'build' / 'collections'}:{SITE_PACKAGES}",
                   ANSIBLE_FORCE_COLOR="false", ANSIBLE_NOCOLOR="1")
        handle = open(self.log, "wb")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen([str(self.binary), "--rulebook", str(RULEBOOK), "-i", str(inventory),
                                      "--vars", str(variables), "-vv"],  # -vv: one "call_action" line per action
                                     stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        wait_for(self.listening, 120, f"ansible-rulebook on port {self.port}")

    def listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"ansible-rulebook exited with {self.proc.returncode}: {self.text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
        except OSError:
            return False
        return True

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def post(self, alerts: list[dict[str, Any]], token: str = TOKEN) -> int:
        body = json.dumps({"version": "4", "status": "firing", "receiver": "eda", "groupKey": "{}:{}",
                           "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                           "externalURL": "http://127.0.0.1:9093", "truncatedAlerts": 0, "alerts": alerts})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("POST", "/alerts", body=body, headers={"Content-Type": "application/json",
                                                            "Authorization": f"Bearer {token}"})
        status = conn.getresponse().status
        conn.close()
        return status

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": "DockerDiskPressure", "severity": "critical",
                                         "remediate": "disk_pressure", **labels},
            "annotations": {"summary": "test"}, "startsAt": "2026-11-30T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": f"{abs(hash(json.dumps(labels, sort_keys=True))):016x}"}


def leftovers(host: str) -> list[str]:
    out = on_host(host, "docker", "ps", "-a", "--filter", "label=pmr.eda=leftover", "--format", "{{.Names}}").stdout
    return sorted(out.split())


def test_an_alert_runs_its_playbook_on_its_one_host_and_none_without_instance(eda_host: str, tmp_path: Path) -> None:
    for i in range(2):  # created, never started: what the stopped_containers tier removes
        on_host(eda_host, "docker", "create", "--name", f"leftover-{i}", "--label", "pmr.eda=leftover",
                "pmr-workload:latest", "sh")
    assert leftovers(eda_host) == ["leftover-0", "leftover-1"]
    inventory = tmp_path / "inventory.ini"
    # web1 and web2 do not exist: a run that reached them would fail loudly in the log.
    inventory.write_text(f"[lab]\n{eda_host}\n[web]\nweb1\nweb2\n[all:vars]\n"
                         "ansible_connection=community.docker.docker\nansible_python_interpreter=/usr/bin/python3\n")
    rulebook = Rulebook(tmp_path, inventory)
    try:
        assert rulebook.post([alert(target_free="99%")], token="wrong-token") == 401
        # One delivery, as Alertmanager groups them: no instance, an empty one, and a resolved alert: nothing runs.
        assert rulebook.post([alert(target_free="99%"), alert(instance="", target_free="99%"),
                              alert("resolved", instance=eda_host, target_free="99%")]) == 200
        # Then the real one. Events are handled in order, so once its run is over the others were decided.
        assert rulebook.post([alert(instance=eda_host, target_free="99%")]) == 200
        wait_for(lambda: f"\n{eda_host}" in [*rulebook.text().split("PLAY RECAP", 1), ""][1], 300,
                 f"the end of the playbook run (log {rulebook.log})")
        time.sleep(3)
        log = rulebook.text()
        # 99 % free cannot be met: every allowed tier ran on the host, then the playbook's own check escalates.
        assert f"DISK PRESSURE NOT RESOLVED on {eda_host}" in log, log[-4000:]
        assert leftovers(eda_host) == [], "the playbook did not run on the lab host"
        # The recap names the lab host only (a failed run's output is logged twice: streamed, then in the error).
        recaps = {line.split()[0] for line in log.splitlines() if "ok=" in line and "unreachable=" in line}
        assert recaps == {eda_host}, recaps
        assert "web1" not in log and "web2" not in log
        assert log.count("call_action run_playbook") == 1, "an alert without instance (or resolved) ran a playbook"
    finally:
        rulebook.stop()
