"""A storm: the same alert 100 times and a burst of 1,000 different alerts, delivered concurrently.

One run per dedup key, no timeout towards the sender (Alertmanager's own floor is 10 s), every delivery stored.
"""

from __future__ import annotations

import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from receiver_e2e import (
    probe_files,
    start_receiver,
    wait_for,
    webhook_alert,
    webhook_payload,
)

SENDER_TIMEOUT = 10.0


def test_storm(lab_host: str, tmp_path: Path) -> None:
    receiver = start_receiver(tmp_path / "receiver", lab_host, [
        {"name": "probe", "when": "labels.alertname == 'ReceiverProbe'", "playbook": "receiver_probe.yml"},
        {"name": "storm", "when": "labels.alertname == 'ReceiverStorm'", "playbook": "receiver_probe.yml",
         "cooldown": 0, "max_runs_per_hour": 3},
    ])
    same = webhook_payload(webhook_alert("5a4e", instance=f"{lab_host}:9100"))
    bodies = [same] * 100 + [
        webhook_payload(dict(webhook_alert(f"{i:04x}", instance=f"{lab_host}:9100", shard=str(i)),
                             labels={"alertname": "ReceiverStorm", "instance": f"{lab_host}:9100", "shard": str(i)}))
        for i in range(1000)]
    random.Random(5).shuffle(bodies)

    def send(body: bytes) -> tuple[int, float]:
        started = time.perf_counter()
        status = receiver.post(body, timeout=SENDER_TIMEOUT)[0]
        return status, time.perf_counter() - started

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=64) as pool:
            results = list(pool.map(send, bodies))
        wall = time.perf_counter() - started
        latencies = sorted(result[1] for result in results)
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"\nstorm: 1100 deliveries in {wall:.2f}s, ack p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
              f"max {latencies[-1] * 1000:.1f} ms")
        assert [result[0] for result in results] == [202] * 1100
        assert latencies[-1] < SENDER_TIMEOUT

        # Every delivery stored, every alert decided.
        assert receiver.journal("SELECT COUNT(*) AS n FROM deliveries")[0]["n"] == 1100
        wait_for(lambda: receiver.journal("SELECT COUNT(*) AS n FROM alerts WHERE decided_at IS NULL")[0]["n"] == 0,
                 60, "every alert to be decided")
        outcomes = {(r["rule"], r["outcome"]): r["n"] for r in receiver.journal(
            "SELECT rule, outcome, COUNT(*) AS n FROM decisions GROUP BY rule, outcome")}
        assert outcomes == {("probe", "run"): 1, ("probe", "deduplicated"): 99,
                            ("storm", "run"): 3, ("storm", "budget"): 997}

        runs = wait_for(receiver.finished_runs, 120, "the runs to finish")
        assert len(runs) == 4
        keys = [r["dedup_key"] for r in runs]
        assert len(keys) == len(set(keys)), "more than one run for a dedup key"
        assert all(r["status"] == "successful" for r in runs), [(r["id"], r["reason"]) for r in runs]
        assert sorted(probe_files(lab_host)) == sorted(r["id"] for r in runs)
        # The budget hold reached a human once, not 997 times.
        assert [n["kind"] for n in receiver.journal("SELECT kind FROM notifications")] == ["held"]
    finally:
        receiver.stop()
