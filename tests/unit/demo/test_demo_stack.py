"""The demo's configurations are the shipped examples with the demo's addresses: the routing of
docs/alertmanager.example.yml sends the collection's alerts to the receiver, the rest to the humans."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from demo import stack as st  # noqa: E402
from demo.settings import Ports, Settings  # noqa: E402

PORTS = Ports(19390, 19391, 19392, 19393)


def amtool_route(config: Path, *labels: str) -> str:
    st.ensure_packages()
    proc = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={config}", *labels],
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.mark.parametrize(("labels", "receiver"), [
    # Every alert of the collection that has a playbook carries remediate=<playbook name>.
    (("alertname=DockerDiskPressure", "remediate=disk_pressure", "instance=ci-1"), "remediation"),
    (("alertname=MirrorSyncRefused", "remediate=mirror_sync", "instance=mirror-1"), "remediation"),
    # No playbook for it: a human.
    (("alertname=DockerSignalsStale", "instance=ci-1"), "oncall"),
    (("alertname=DockerSignalsStale", "remediate=", "instance=ci-1"), "oncall"),
])
def test_example_routing(labels: tuple[str, ...], receiver: str) -> None:
    assert amtool_route(REPO / "docs/alertmanager.example.yml", *labels) == receiver


def test_demo_alertmanager_config_keeps_the_routing(tmp_path: Path) -> None:
    token = tmp_path / "token"
    config = st.alertmanager_config(PORTS, token)
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    subprocess.run(["amtool", "check-config", str(path)], check=True, capture_output=True)
    assert amtool_route(path, "alertname=DockerDiskPressure", "remediate=disk_pressure") == "remediation"
    assert amtool_route(path, "alertname=DockerSignalsStale") == "oncall"
    hooks = {r["name"]: r["webhook_configs"][0] for r in config["receivers"]}
    assert hooks["remediation"]["url"] == "http://127.0.0.1:19392/alerts"
    assert hooks["remediation"]["http_config"]["authorization"]["credentials_file"] == str(token)
    assert hooks["oncall"]["url"] == "http://127.0.0.1:19393/oncall"


def test_demo_receiver_config_takes_the_example_rules(tmp_path: Path) -> None:
    settings = Settings(state=tmp_path)
    config = st.receiver_config(settings, PORTS)
    example = yaml.safe_load((REPO / "docs/receiver.example.yml").read_text())
    kept = [r for r in example["rules"] if (REPO / "playbooks" / r["playbook"]).is_file()]
    assert config["rules"] == kept and kept
    assert config["listen"] == {"host": "127.0.0.1", "port": 19392}
    assert config["notify"]["webhooks"] == [{"url": "http://127.0.0.1:19393/escalations"}]


def test_prometheus_scrapes_each_host_as_its_inventory_name(tmp_path: Path) -> None:
    config = st.prometheus_config(Settings(), PORTS, {"pmr-demo-1": 40001, "pmr-demo-2": 40002}, tmp_path / "r.yml")
    [node] = [job for job in config["scrape_configs"] if job["job_name"] == "node"]
    assert node["static_configs"] == [{"targets": ["127.0.0.1:40001"], "labels": {"instance": "pmr-demo-1"}},
                                      {"targets": ["127.0.0.1:40002"], "labels": {"instance": "pmr-demo-2"}}]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19391"]
