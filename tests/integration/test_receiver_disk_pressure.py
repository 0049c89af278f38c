"""The collection's own remediation, end to end: Alertmanager -> receiver -> playbooks/remediate/disk_pressure.yml
on a lab host; a fix that works closes quietly, a fix that cannot meet its target escalates to a human."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import receiver_e2e
from receiver_e2e import (
    REPO,
    Alertmanager,
    Receiver,
    free_port,
    on_host,
    require_tools,
    wait_for,
    write_receiver_config,
)

lab_host = receiver_e2e.lab_host  # the session fixture, registered in this module

FINAL = ("successful", "failed", "timeout", "canceled", "interrupted", "error")


class Pager(BaseHTTPRequestHandler):
    """The human at the end of the escalation webhook."""

    pages: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        self.pages.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def pager() -> Iterator[str]:
    Pager.pages = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pager)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/page"
    server.shutdown()
    server.server_close()


def stopped_containers(host: str) -> list[str]:
    out = on_host(host, "docker", "ps", "-a", "--filter", "label=pmr.e2e=leftover", "--format", "{{.Names}}").stdout
    return sorted(out.split())


def test_disk_pressure_remediation_and_escalation(lab_host: str, tmp_path: Path, pager: str) -> None:
    require_tools()
    assert (REPO / "playbooks/remediate/disk_pressure.yml").exists()
    on_host(lab_host, "sh", "-c", "docker rm -f $(docker ps -aq --filter label=pmr.e2e=leftover) 2>/dev/null; true")
    for i in range(3):
        # Created, never started: a stopped container to the reclaim tier (and independent of the image's contents).
        on_host(lab_host, "docker", "create", "--name", f"leftover-{i}", "--label", "pmr.e2e=leftover",
                "pmr-workload:latest", "sh")
    assert stopped_containers(lab_host) == ["leftover-0", "leftover-1", "leftover-2"]

    port = free_port()
    config = write_receiver_config(tmp_path / "receiver", port, hosts=[lab_host], notify_url=pager, rules=[{
        "name": "disk_pressure", "when": "labels.alertname == 'DockerDiskPressure'",
        "playbook": "remediate/disk_pressure.yml", "cooldown": 0,
        "vars": {"disk_pressure_target_free": "labels.target_free",
                 "disk_pressure_tiers": "`[\"stopped_containers\"]`"}}], project_dir=str(REPO / "playbooks"))
    receiver = Receiver(config, port).start()
    alertmanager = Alertmanager(tmp_path / "alertmanager", port, config.parent / "token")
    try:
        # Unreachable target: every allowed tier runs, the check still fails, a human is paged.
        alertmanager.post_alerts([{"labels": {"alertname": "DockerDiskPressure", "instance": f"{lab_host}:9323",
                                              "target_free": "99%"}}])
        [run] = wait_for(lambda: [r for r in receiver.runs() if r["status"] in FINAL], 120, "the remediation run")
        assert (run["status"], run["host"]) == ("failed", lab_host), run["reason"]
        assert stopped_containers(lab_host) == [], "the stopped_containers tier did not reclaim"
        page = wait_for(lambda: [p for p in Pager.pages if p["kind"] == "run_failed"], 30, "the escalation page")[0]
        assert page["details"]["run"]["id"] == run["id"]
        messages = json.dumps(page["details"]["failed_events"])
        assert "DISK PRESSURE NOT RESOLVED" in messages
        [note] = receiver.journal("SELECT * FROM notifications WHERE kind='run_failed'")
        assert (note["status"], note["attempts"]) == ("sent", 1)

        # A reachable target: the run succeeds and nobody is paged.
        alertmanager.post_alerts([{"labels": {"alertname": "DockerDiskPressure", "instance": f"{lab_host}:9323",
                                              "target_free": "1M"}}])
        runs = wait_for(lambda: receiver.finished_runs(2), 120, "the second run")
        assert runs[1]["status"] == "successful", runs[1]["reason"]
        assert [p["kind"] for p in Pager.pages] == ["run_failed"]
    finally:
        alertmanager.stop()
        receiver.stop()
