"""End to end: a real Alertmanager posts to the receiver, which runs a real playbook on a lab host."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

from receiver_e2e import (
    FINAL,
    REPO,
    Alertmanager,
    ensure_alertmanager,
    on_host,
    probe_files,
    start_receiver,
    wait_for,
)


def test_the_documented_alertmanager_configuration_is_valid() -> None:
    ensure_alertmanager()
    checked = subprocess.run(["amtool", "check-config", str(REPO / "docs" / "alertmanager.example.yml")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 receivers" in checked.stdout


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def test_alert_through_alertmanager_runs_the_playbook_on_the_lab_host(lab_host: str, tmp_path: Path) -> None:
    receiver = start_receiver(tmp_path / "receiver", lab_host, [{
        "name": "probe", "when": "labels.alertname == 'ReceiverProbe' && labels.severity == 'page'",
        "playbook": "receiver_probe.yml", "vars": {"probe_note": "annotations.summary"}}])
    alertmanager = Alertmanager(tmp_path / "alertmanager", receiver.port, receiver.config.parent / "token")
    labels = {"alertname": "ReceiverProbe", "instance": f"{lab_host}:9100", "severity": "page"}
    try:
        alertmanager.post_alerts([{"labels": labels, "annotations": {"summary": "{{ probe via alertmanager }}"},
                                   "generatorURL": "http://127.0.0.1:9090/graph"}])
        [run] = wait_for(lambda: [r for r in receiver.runs() if r["status"] in FINAL], 90, "the run to finish")
        assert (run["status"], run["host"], run["rule"]) == ("successful", lab_host, "probe"), run["reason"]

        # The playbook really ran on the lab host, with the alert as data (the braces were not templated).
        assert probe_files(lab_host) == [run["id"]]
        written = json.loads(on_host(lab_host, "cat", f"/tmp/receiver-probe-{run['id']}").stdout)
        assert written == {"alert": labels, "note": "{{ probe via alertmanager }}"}

        # The journal holds delivery -> alert -> decision -> run -> events -> outcome.
        [delivery] = receiver.journal("SELECT * FROM deliveries")
        assert delivery["receiver"] == "remediation" and "ReceiverProbe" in delivery["group_key"]
        [alert] = receiver.journal("SELECT * FROM alerts")
        assert alert["status"] == "firing" and alert["delivery_id"] == delivery["id"]
        [decision] = receiver.journal("SELECT * FROM decisions")
        assert (decision["outcome"], decision["run_id"], decision["host"]) == ("run", run["id"], lab_host)
        assert json.loads(run["stats"])["ok"][lab_host] >= 1
        status, detail = receiver.get(f"/runs/{run['id']}")
        assert status == 200
        events = [e["event"] for e in detail["events"]]
        assert events[0] == "playbook_on_start" and events[-1] == "playbook_on_stats"
        assert any(e["event"] == "runner_on_ok" and e["host"] == lab_host for e in detail["events"])
        metrics = receiver.get("/metrics")[1]
        assert 'remediation_receiver_journal_runs{status="successful"} 1' in metrics

        # Resolving the alert reaches the receiver too, and closes the alert's record.
        alertmanager.post_alerts([{"labels": labels, "annotations": {"summary": "{{ probe via alertmanager }}"},
                                   "endsAt": iso(dt.datetime.now(dt.UTC))}])
        resolved = wait_for(lambda: receiver.journal("SELECT * FROM alerts WHERE status='resolved'"), 40,
                            "the resolved notification")
        assert resolved[0]["fingerprint"] == alert["fingerprint"]
        wait_for(lambda: receiver.journal("SELECT * FROM decisions WHERE outcome='resolved'"), 10,
                 "the resolved decision")
        [closed] = receiver.journal("SELECT closed_at FROM alerts WHERE id=?", (alert["id"],))
        assert closed["closed_at"] is not None, "the resolved alert did not close the firing record"
        assert len(receiver.runs()) == 1
    finally:
        alertmanager.stop()
        assert receiver.stop() == 0
