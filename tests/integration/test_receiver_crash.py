"""Kill the receiver in the middle of a run, start it again: no delivery lost, the interrupted run handled."""

from __future__ import annotations

import re
import time
from pathlib import Path

from receiver_e2e import (
    FINAL,
    Alertmanager,
    probe_files,
    start_receiver,
    wait_for,
)

from remediation_receiver.executor import find_run_processes


def test_kill_mid_run_then_restart(lab_host: str, tmp_path: Path) -> None:
    receiver = start_receiver(tmp_path / "receiver", lab_host, [
        {"name": "slow", "when": "labels.alertname == 'ReceiverSlow'", "playbook": "receiver_probe.yml",
         "vars": {"probe_sleep": "labels.probe_sleep"}, "on_interrupted": "rerun", "cooldown": 0},
        {"name": "probe", "when": "labels.alertname == 'ReceiverProbe'", "playbook": "receiver_probe.yml"},
    ])
    alertmanager = Alertmanager(tmp_path / "alertmanager", receiver.port, receiver.config.parent / "token",
                                group_interval="10s")
    try:
        alertmanager.post_alerts([{"labels": {"alertname": "ReceiverSlow", "instance": lab_host,
                                              "probe_sleep": "8"}}])

        def sleeping_run() -> str | None:
            rows = receiver.journal("SELECT run_id FROM run_events WHERE event='playbook_on_task_start'"
                                    " AND task LIKE 'Take a while%'")
            return rows[0]["run_id"] if rows else None

        first = wait_for(sleeping_run, 60, "the slow run to reach its sleeping task")
        receiver.kill()
        # ansible-playbook outlives a SIGKILLed parent: the restart must find and stop it.
        assert find_run_processes(first), "expected the killed receiver's playbook to be still running"

        # While the receiver is down, Alertmanager gets a new alert and cannot deliver it (it will retry).
        alertmanager.post_alerts([{"labels": {"alertname": "ReceiverProbe", "instance": f"{lab_host}:9100"}}])
        wait_for(lambda: "connection refused" in alertmanager.log.read_text(), 30,
                 "Alertmanager to fail a delivery to the stopped receiver")
        time.sleep(1)

        receiver.start()
        interrupted = wait_for(lambda: receiver.journal("SELECT * FROM runs WHERE id=? AND handled=1 AND"
                                                        " status='interrupted'", (first,)), 30,
                               "the interrupted run to be handled")[0]
        assert re.search(r"stopped \d+ leftover process", interrupted["reason"]), interrupted["reason"]
        assert not find_run_processes(first)

        def all_finished() -> list[dict[str, str]]:
            runs = receiver.runs()
            done = [r for r in runs if r["status"] in FINAL]
            return runs if len(runs) == 3 and len(done) == 3 else []

        runs = wait_for(all_finished, 120, "the rerun and the delayed alert's run to finish")
        by_rule = {(r["rule"], r["attempt"]): r for r in runs}
        rerun = by_rule[("slow", 2)]
        assert (rerun["status"], rerun["parent_run"]) == ("successful", first)
        assert by_rule[("probe", 1)]["status"] == "successful"
        # One run at a time on the host: the delayed alert's run waited for the rerun, and that was recorded.
        assert by_rule[("probe", 1)]["started_at"] >= rerun["finished_at"] - 0.5 or \
            by_rule[("probe", 1)]["finished_at"] <= rerun["started_at"] + 0.5
        # No delivery lost: both alerts are in the journal, the second one delivered by Alertmanager's retry.
        names = sorted(a["alertname"] for a in receiver.journal("SELECT alertname FROM alerts WHERE status='firing'"))
        assert set(names) == {"ReceiverSlow", "ReceiverProbe"}
        assert sorted(probe_files(lab_host)) == sorted([first, rerun["id"], by_rule[("probe", 1)]["id"]])
        events = [e["event"] for e in receiver.journal("SELECT event FROM run_events WHERE run_id=?", (first,))]
        assert "interrupted" in events and "recovered" in events
    finally:
        alertmanager.stop()
        receiver.stop()
