"""`ansible-playbook playbooks/harden_docker_hosts.yml --check --diff` on a fresh lab host plans and changes nothing
(issue 11, item 8: it used to stop with rc 2, "Could not find the requested service docker-prune.timer")."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_names import lab_prefix

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
PREFIX = lab_prefix("docs-dry")
HOST = f"{PREFIX}-1"


@pytest.fixture(scope="module")
def fresh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A lab host that has never been hardened, with an inventory of its own; removed at the end."""
    inventory = tmp_path_factory.mktemp("dry") / "inventory.ini"
    lab = ["bash", str(REPO / "tests/lab/lab.sh")]
    env = dict(os.environ, LAB_INVENTORY=str(inventory))
    subprocess.run([*lab, "down", PREFIX], check=True, env=env)  # a host left by an interrupted run is not fresh
    subprocess.run([*lab, "up", "1", PREFIX], check=True, env=env)
    yield inventory
    subprocess.run([*lab, "down", PREFIX], check=False, env=env)


def on_host(*argv: str) -> str:
    return subprocess.run(["docker", "exec", HOST, *argv], capture_output=True, text=True, check=False).stdout


def test_check_diff_on_a_fresh_host_plans_and_touches_nothing(fresh_host: Path) -> None:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_FORCE_COLOR="false",
               PATH=f"{BIN}:{os.environ['PATH']}")
    # The command as docs/log_rotation.md and the README give it.
    run = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(fresh_host), "playbooks/harden_docker_hosts.yml",
                          "--check", "--diff"], cwd=REPO, capture_output=True, text=True, env=env, timeout=600,
                         check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    # Every role of the playbook that installs a timer plans it (docker_signals had the same mistake).
    assert "would enable and start docker-prune.timer" in output, output
    assert "would enable and start pmr-docker-signals.timer" in output, output
    assert "+OnCalendar=" in output  # the diff of the timer unit that would be installed
    # Nothing was installed, enabled or written.
    listing = on_host("ls", "/etc/systemd/system", "/etc/docker")
    assert "docker-prune" not in listing and "pmr-docker-signals" not in listing, listing
    assert "daemon.json" not in listing, listing
    assert on_host("systemctl", "is-enabled", "docker-prune.timer").strip() in ("", "not-found"), listing
