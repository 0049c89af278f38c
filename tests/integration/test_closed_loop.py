"""The closed loop end to end, with the demo's own code (demo/): a real incident on a lab host, its real
node_exporter metrics, Prometheus with the shipped rules (shorter `for:`), Alertmanager with the shipped routing,
the receiver with the shipped rules, ansible-runner running the remediation playbook, and the alert resolved."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab_names import lab_prefix  # noqa: E402

from demo import stack as st  # noqa: E402
from demo.cli import alert_history, down, prepare_hosts  # noqa: E402
from demo.incidents import all_incidents  # noqa: E402
from demo.loop import Loop  # noqa: E402
from demo.settings import Settings  # noqa: E402

# The cheapest incident: one lab host, no fill, one playbook run.
INCIDENT = "daemon"


def test_closed_loop_daemon_config_rejected(tmp_path: Path) -> None:
    settings = dataclasses.replace(Settings.from_env({}), prefix=lab_prefix("demo-e2e"), state=tmp_path / "demo",
                                   keep=False)
    down(settings)  # what a killed earlier run of this test left
    try:
        st.ensure_packages()
        [host] = st.lab_up(settings, 1)
        [incident] = [i for i in all_incidents(settings.prefix) if i.key == INCIDENT]
        incident.host = host
        assert prepare_hosts(settings, [incident]) == "", "the collection has no docker_signals role"
        stack = st.start_stack(settings, [host])
        start = time.time()

        timeline = Loop(stack).drive(incident)

        assert timeline.available, timeline.reason
        assert timeline.ok, timeline.verdict
        assert timeline.symptom and timeline.fired and timeline.run_started and timeline.verified and timeline.resolved
        assert timeline.symptom < timeline.fired < timeline.run_started < timeline.verified
        # The alert may resolve before the run ends: the playbook checks its own result after the fix.
        assert timeline.run_started < timeline.resolved
        assert set(timeline.fired_alerts) <= set(incident.alerts) and timeline.fired_alerts
        [run] = [r for r in timeline.runs if r["status"] == "successful"]
        assert (run["host"], run["playbook"]) == (host, "remediate/docker_daemon.yml")
        # DockerDaemonDown may follow while dockerd comes back; its run is canceled when it resolves first.
        assert all(r["status"] == "successful" or (r["status"], r["reason"]) == (
            "canceled", "alert resolved before the run started") for r in timeline.runs), timeline.runs
        assert not [p for p in timeline.pages if p.startswith("run_")], timeline.pages
        listed = stack.receiver_cli("runs")
        assert run["id"] in listed.stdout and "successful" in listed.stdout, listed.stdout + listed.stderr
        # Prometheus's own record: the alert fired, then resolved.
        history = [line for line in alert_history(stack, start) if host in line]
        assert history and all(line.endswith("then resolved") for line in history), history
        assert any(name in line for line in history for name in timeline.fired_alerts), history
    finally:
        down(settings)
