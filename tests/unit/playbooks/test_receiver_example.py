"""docs/receiver.example.yml as a new user would use it: `remediation-receiver check` passes on it (with its paths
made real in a temporary directory, the playbooks where the role puts them), and every alert of the contract that
has a remediation playbook is matched by exactly one rule that runs that playbook, with the alert's variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from remediation_receiver.config import parse_config
from remediation_receiver.rules import extract_vars, matches

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "docs" / "receiver.example.yml"
BIN = Path(sys.executable).parent

# alertname -> the `remediate` label of the shipped rules, i.e. playbooks/remediate/<remediate>.yml (issue 9 contract).
ALERTS = {
    "DockerDiskPressure": "disk_pressure",
    "DockerDataRootFillingUp": "disk_pressure",
    "ContainerLogGrowth": "log_growth",
    "DockerDaemonDown": "docker_daemon",
    "DockerDaemonConfigRejected": "docker_daemon",
    "DockerStorageDriverUnexpected": "storage_driver",
    "DockerPruneTimerStale": "prune_timer",
    "DockerPruneTimerFailing": "prune_timer",
    "MirrorSyncRefused": "mirror_sync",
    "BackupCleanupRefused": "backup_cleanup",
    "BackupReferenceUnhealthy": "backup_cleanup",
}


def made_real(tmp_path: Path) -> Path:
    """The example with /etc/remediation-receiver and /var/lib/remediation-receiver moved under tmp_path."""
    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    text = EXAMPLE.read_text().replace("/etc/remediation-receiver/", f"{etc}/")
    text = text.replace("/var/lib/remediation-receiver/", f"{var}/")
    (etc / "token").write_text("example-token-0123456789abcdef\n")
    (etc / "notify.token").write_text("notify-token-0123456789\n")
    (etc / "inventory.ini").write_text("[docker_hosts]\nweb-1 ansible_connection=local\n")
    # What the remediation_receiver role does: copy the collection's playbooks/ into project_dir.
    (etc / "playbooks").symlink_to(REPO / "playbooks")
    config = etc / "config.yml"
    config.write_text(text)
    return config


def test_check_passes_on_the_example(tmp_path: Path) -> None:
    config = made_real(tmp_path)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"))
    result = subprocess.run([str(BIN / "remediation-receiver"), "check", "--config", str(config)],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load(EXAMPLE.read_text())["rules"]
    for rule in rules:
        assert f"ok: rule {rule['name']}: mode {rule.get('mode', 'auto')}, playbook {rule['playbook']}" in result.stdout


def test_check_fails_when_a_playbook_is_missing(tmp_path: Path) -> None:
    # The check the example passes can fail: the example as it was (naming playbooks that did not exist) failed it.
    config = made_real(tmp_path)
    config.write_text(config.read_text().replace("remediate/log_growth.yml", "remediate/no_such_playbook.yml"))
    result = subprocess.run([str(BIN / "remediation-receiver"), "check", "--no-syntax-check", "--config",
                             str(config)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "no_such_playbook.yml does not exist" in result.stderr


@pytest.mark.parametrize(("alertname", "remediate"), sorted(ALERTS.items()))
def test_every_alert_runs_its_playbook_through_exactly_one_rule(alertname: str, remediate: str) -> None:
    cfg = parse_config(yaml.safe_load(EXAMPLE.read_text()), str(EXAMPLE))
    alert = {"labels": {"alertname": alertname, "severity": "critical", "remediate": remediate, "instance": "web-1",
                        "container": "api", "unit": "job.service"},
             "annotations": {"description": "what the guard said"}}
    matched = [rule for rule in cfg.rules if matches(rule, alert)]
    assert len(matched) == 1, [r.name for r in matched]
    assert matched[0].playbook == f"remediate/{remediate}.yml"
    assert (REPO / "playbooks" / matched[0].playbook).is_file()
    carried = extract_vars(matched[0], alert)
    if remediate in ("mirror_sync", "backup_cleanup"):
        assert carried[f"{remediate}_unit"] == "job.service"  # the timer to stop comes from the alert
    if remediate == "log_growth":
        assert carried["log_growth_container"] == "api"


def test_modes_follow_the_risk() -> None:
    cfg = parse_config(yaml.safe_load(EXAMPLE.read_text()), str(EXAMPLE))
    modes = {rule.playbook: rule.mode for rule in cfg.rules}
    assert modes.pop("remediate/storage_driver.yml") == "approve"  # a driver switch restarts dockerd
    assert set(modes.values()) == {"auto"}  # containing a refused job is safe, so it runs without a human
