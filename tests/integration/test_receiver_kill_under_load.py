"""SIGKILL the receiver while deliveries pour in over kept-alive connections: every delivery it acknowledged is in
the journal afterwards, and the restarted receiver decides them all (issue 13: the commit path was cut to what
durability needs; this is what it needs)."""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
from pathlib import Path

from receiver_e2e import TOKEN, Receiver, free_port, wait_for, write_receiver_config

SENDERS = 6


def body(fingerprint: str) -> bytes:
    alert = {"status": "firing", "labels": {"alertname": "KillLoad", "instance": "web1:9100"},
             "annotations": {}, "startsAt": "2026-11-21T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint}
    return json.dumps({"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
                       "receiver": "r", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                       "externalURL": "http://alertmanager", "alerts": [alert]}).encode()


def test_every_acknowledged_delivery_survives_a_sigkill(tmp_path: Path) -> None:
    port = free_port()
    config = write_receiver_config(tmp_path / "receiver", port, hosts=[], rules=[
        {"name": "never", "when": "labels.alertname == 'NeverSent'", "playbook": "receiver_probe.yml"}])
    receiver = Receiver(config, port).start()
    acked: list[str] = []
    cut: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        sent = 0
        while not stop.is_set():
            fingerprint = f"{index:02d}{sent:014x}"
            sent += 1
            try:
                conn.request("POST", "/alerts", body=body(fingerprint),
                             headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    cut.append(f"{type(exc).__name__}")
                return
            assert response.status == 202, response.status
            with lock:
                acked.append(fingerprint)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(acked) >= 300, 60, "300 acknowledged deliveries")
        receiver.kill()  # SIGKILL while every sender has a request in flight
        for thread in threads:
            thread.join(timeout=30)
        stop.set()
        assert len(cut) == SENDERS, f"every sender should have lost its connection to the kill: {cut}"

        journal = config.parent / "state" / "journal.sqlite"
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
            stored = {row[0] for row in db.execute("SELECT fingerprint FROM alerts")}
        lost = sorted(set(acked) - stored)
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged deliveries are not in the journal: {lost[:5]}"

        receiver.start()
        wait_for(lambda: receiver.get("/healthz")[1]["undecided_alerts"] == 0, 120,
                 "the restarted receiver to decide every stored alert")
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
            decided = {row[0] for row in db.execute(
                "SELECT a.fingerprint FROM alerts a JOIN decisions d ON d.alert_id = a.id")}
        assert set(acked) <= decided
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        receiver.stop()
