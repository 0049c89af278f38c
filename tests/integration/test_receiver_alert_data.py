"""Alert data is data: a lookup written in a label or annotation *name* never runs, however a playbook reads it.

A real receiver process, a real delivery over HTTP, ansible-runner running the playbook on the lab host; the
lookups would run on the controller (this machine), so their marker files are looked for here.
"""

from __future__ import annotations

import json
from pathlib import Path

from receiver_e2e import (
    FINAL,
    Receiver,
    free_port,
    on_host,
    require_tools,
    wait_for,
    webhook_payload,
    write_receiver_config,
)


def test_label_and_annotation_names_reach_the_playbook_as_text(lab_host: str, tmp_path: Path) -> None:
    require_tools()
    markers = [tmp_path / f"marker-{i}" for i in range(3)]
    labels = {"alertname": "ReceiverData", "instance": f"{lab_host}:9100", "n": "1",
              f"{{{{ lookup('pipe', 'touch {markers[0]}') }}}}": "x",
              f"{{% if lookup('pipe', 'touch {markers[1]}') %}}{{% endif %}}": "y"}
    annotations = {f"{{{{ lookup('pipe', 'touch {markers[2]}') }}}}": "z"}
    seen = "/tmp/receiver-alert-data.json"
    on_host(lab_host, "rm", "-f", seen)
    port = free_port()
    config = write_receiver_config(tmp_path / "receiver", port, hosts=[lab_host], rules=[
        {"name": "data", "when": "labels.alertname == 'ReceiverData'", "playbook": "receiver_alert_data.yml",
         "vars": {"alert_labels": "labels", "data_out": f"`\"{seen}\"`"}}])
    receiver = Receiver(config, port).start()
    try:
        status, reply = receiver.post(webhook_payload({
            "status": "firing", "labels": labels, "annotations": annotations, "startsAt": "2026-11-21T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": "da7a"}))
        assert status == 202, reply
        run = wait_for(lambda: receiver.last_run("data", finished=True), 120, "the run")
    finally:
        receiver.stop()
    assert run["status"] in FINAL and run["status"] == "successful", run["reason"]
    assert [m.name for m in markers if m.exists()] == [], "a lookup written in an alert name ran on the controller"
    recorded = json.loads(on_host(lab_host, "cat", seen).stdout)
    assert {i["key"]: i["value"] for i in recorded["labels"]} == labels
    assert {i["key"]: i["value"] for i in recorded["rule_var"]} == labels
    assert recorded["annotation_names"] == list(annotations)
    on_host(lab_host, "rm", "-f", seen)
