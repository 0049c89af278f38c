"""The collection's own remediation, end to end: Alertmanager -> receiver -> playbooks/remediate/disk_pressure.yml
on a lab host; a fix that works closes quietly, a fix that cannot meet its target escalates to a human."""

from __future__ import annotations

import json
from pathlib import Path

from receiver_e2e import (
    FINAL,
    REPO,
    Alertmanager,
    Pager,
    Receiver,
    free_port,
    on_host,
    require_tools,
    wait_for,
    write_receiver_config,
)


def stopped_containers(host: str) -> list[str]:
    out = on_host(host, "docker", "ps", "-a", "--filter", "label=pmr.e2e=leftover", "--format", "{{.Names}}").stdout
    return sorted(out.split())


def test_disk_pressure_remediation_and_escalation(lab_host: str, tmp_path: Path, pager: Pager) -> None:
    require_tools()
    assert (REPO / "playbooks/remediate/disk_pressure.yml").exists()
    on_host(lab_host, "sh", "-c", "docker rm -f $(docker ps -aq --filter label=pmr.e2e=leftover) 2>/dev/null; true")
    for i in range(3):
        # Created, never started: a stopped container to the reclaim tier (and independent of the image's contents).
        on_host(lab_host, "docker", "create", "--name", f"leftover-{i}", "--label", "pmr.e2e=leftover",
                "pmr-workload:latest", "sh")
    assert stopped_containers(lab_host) == ["leftover-0", "leftover-1", "leftover-2"]

    port = free_port()
    config = write_receiver_config(tmp_path / "receiver", port, hosts=[lab_host], notify_url=pager.url, rules=[{
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
        page = wait_for(lambda: pager.of_kind("run_failed"), 30, "the escalation page")[0]
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
        assert pager.kinds() == ["run_failed"]
    finally:
        alertmanager.stop()
        receiver.stop()
