"""Modes and operator commands against a running receiver: approve (with the CLI), observe in check mode,
pause/resume, and a resolved alert cancelling a run that waits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from receiver_e2e import (
    Pager,
    Receiver,
    on_host,
    probe_files,
    start_receiver,
    wait_for,
    webhook_alert,
    webhook_payload,
)


@pytest.fixture
def receiver(lab_host: str, tmp_path: Path, pager: Pager) -> Iterator[Receiver]:
    rec = start_receiver(tmp_path / "receiver", lab_host, notify_url=pager.url, rules=[
        {"name": "gated", "when": "labels.alertname == 'Gated'", "playbook": "receiver_probe.yml",
         "mode": "approve", "approval_ttl": 600, "cooldown": 0},
        {"name": "dry", "when": "labels.alertname == 'Dry'", "playbook": "receiver_probe.yml",
         "mode": "observe", "observe": "check", "cooldown": 0},
        {"name": "auto", "when": "labels.alertname == 'Auto'", "playbook": "receiver_probe.yml", "cooldown": 0},
        {"name": "slow", "when": "labels.alertname == 'Slow'", "playbook": "receiver_probe.yml", "cooldown": 0,
         "vars": {"probe_sleep": "labels.probe_sleep"}},
    ])
    yield rec
    rec.stop()


def post(receiver: Receiver, name: str, fingerprint: str, host: str, status: str = "firing", **labels: str) -> None:
    alert = dict(webhook_alert(fingerprint, status=status), labels={"alertname": name, "instance": host, **labels})
    assert receiver.post(webhook_payload(alert))[0] == 202


def test_approve_mode_waits_for_the_cli(receiver: Receiver, lab_host: str, pager: Pager) -> None:
    post(receiver, "Gated", "a1", lab_host)
    waiting = wait_for(lambda: receiver.last_run("gated"), 10, "the run awaiting approval")
    assert waiting["status"] == "awaiting_approval"
    page = wait_for(lambda: pager.of_kind("approval_needed"), 10, "the approval page")[0]
    assert page["details"]["run"] == waiting["id"]
    assert probe_files(lab_host) == []
    approved = receiver.cli("approve", waiting["id"])
    assert approved.returncode == 0, approved.stderr
    done = wait_for(lambda: receiver.last_run("gated", finished=True), 60,
                    "the approved run")
    assert done["status"] == "successful" and done["reason"].startswith("approved by")
    assert probe_files(lab_host) == [waiting["id"]]


def test_a_resolved_alert_cancels_the_run_waiting_for_approval(receiver: Receiver, lab_host: str) -> None:
    post(receiver, "Gated", "b2", lab_host)
    waiting = wait_for(lambda: receiver.last_run("gated"), 10, "the run awaiting approval")
    post(receiver, "Gated", "b2", lab_host, status="resolved")
    canceled = wait_for(lambda: receiver.last_run("gated", finished=True), 10, "the cancellation")
    assert canceled["status"] == "canceled"
    assert canceled["id"] == waiting["id"] and canceled["reason"] == "alert resolved before the run started"
    assert receiver.cli("approve", waiting["id"]).returncode == 1


def test_observe_mode_runs_in_check_mode_and_changes_nothing(receiver: Receiver, lab_host: str) -> None:
    post(receiver, "Dry", "c3", lab_host)
    done = wait_for(lambda: receiver.last_run("dry", finished=True), 60,
                    "the check-mode run")
    assert (done["status"], done["check_mode"]) == ("successful", 1)
    assert probe_files(lab_host) == [], "check mode wrote a file on the host"
    changed = receiver.journal("SELECT data FROM run_events WHERE run_id=? AND event='runner_on_ok'", (done["id"],))
    assert any(json.loads(e["data"])["res"].get("changed") for e in changed), "check mode should report the change"


def test_pause_holds_runs_and_resume_releases_nothing_stale(receiver: Receiver, lab_host: str,
                                                            pager: Pager) -> None:
    assert receiver.cli("pause", "--reason", "maintenance window").returncode == 0
    post(receiver, "Auto", "d4", lab_host)
    decision = wait_for(lambda: receiver.journal("SELECT * FROM decisions WHERE rule='auto'"), 10, "the decision")[0]
    assert decision["outcome"] == "paused" and "maintenance window" in decision["reason"]
    assert wait_for(lambda: pager.of_kind("paused"), 10, "the pause notice")
    status, health = receiver.get("/healthz")
    assert status == 200 and "maintenance window" in health["paused"]
    assert receiver.cli("resume").returncode == 0
    post(receiver, "Auto", "d4", lab_host)
    done = wait_for(lambda: receiver.last_run("auto", finished=True), 60,
                    "the run after resume")
    assert done["status"] == "successful"
    assert len(receiver.journal("SELECT * FROM runs WHERE rule='auto'")) == 1


def test_cancel_stops_a_running_playbook(receiver: Receiver, lab_host: str) -> None:
    post(receiver, "Slow", "e5", lab_host, probe_sleep="120")

    def sleeping() -> dict[str, Any] | None:
        run = receiver.last_run("slow")
        started = run and receiver.journal("SELECT 1 FROM run_events WHERE run_id=? AND event="
                                           "'playbook_on_task_start' AND task LIKE 'Take a while%'", (run["id"],))
        return run if started else None

    run = wait_for(sleeping, 60, "the slow task to start on the lab host")
    wait_for(lambda: on_host(lab_host, "pgrep", "-f", "sleep 120").returncode == 0, 30, "the task on the lab host")
    canceled = receiver.cli("cancel", run["id"], "--reason", "wrong fix")
    assert canceled.returncode == 0, canceled.stderr
    done = wait_for(lambda: receiver.last_run("slow", finished=True), 30, "the canceled run to end")
    assert (done["id"], done["status"]) == (run["id"], "canceled")
    assert done["reason"].startswith("canceled by ") and done["reason"].endswith(": wrong fix")
    # The dispatcher forgets the request on its next pass after the run ended.
    wait_for(lambda: receiver.journal("SELECT * FROM state WHERE key LIKE 'cancel:%'") == [], 10,
             "the cancel request to be forgotten")
    assert receiver.cli("cancel", run["id"]).returncode == 1  # nothing left to cancel
