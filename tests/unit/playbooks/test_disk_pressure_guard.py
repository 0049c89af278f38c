"""playbooks/remediate/disk_pressure.yml refuses to act unless exactly one host is targeted (real ansible-playbook,
local hosts; the refusal happens before any task reaches a host)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = REPO / "playbooks" / "remediate" / "disk_pressure.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "inventory.ini"
    path.write_text(
        "[docker_hosts]\nci-1\nci-2\n\n[docker_hosts:vars]\n"
        f"ansible_connection=local\nansible_python_interpreter={sys.executable}\n"
    )
    return path


def play(inventory: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
        ANSIBLE_HOME=str(REPO / "build" / "ansible-home"),
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_FORCE_COLOR="false",
    )
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-e", "target_host=all"], "resolves to 2 host(s) ci-1, ci-2"),
        (["-e", "target_host=docker_hosts"], "resolves to 2 host(s)"),
        (["-e", "target_host=ci-9"], "resolves to 0 host(s)"),
        ([], "resolves to 2 host(s)"),
        (["-l", "ci-1,ci-2"], "this play targets 2 (ci-1, ci-2)"),
        (["-l", "docker_hosts"], "this play targets 2"),
        (["-l", "ci-9"], "no hosts"),
        # A target the limit excludes used to skip both plays and exit 0 with nothing done.
        (["-e", "target_host=ci-1", "-l", "ci-2"], "this play targets 0 (none within the limit)"),
    ],
)
def test_refuses_anything_but_one_host(inventory, args, message):
    result = play(inventory, *args)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in " ".join(output.split()), output
    assert "Reclaim space until the target is met" not in output


@pytest.mark.parametrize(
    "args",
    [
        ["-e", "target_host=ci-1"],
        ["-l", "ci-1"],  # how the receiver runs it
        ["-e", "target_host=docker_hosts", "-l", "ci-1"],
    ],
)
def test_one_host_passes_the_guard_and_reaches_the_reclaim(inventory, tmp_path, args):
    # ci-1 is this machine, pointed at a socket where no engine listens: the guard lets the one host through and
    # the module then fails naming the socket, which proves the one-host path reaches the reclaim and no further.
    socket_path = tmp_path / "no-engine.sock"
    # The name before 1.0.0 on purpose: it is read until 2.0.0 (disk_pressure_docker_host is the name now).
    result = play(inventory, *args, "-e", f"disk_pressure_docker_socket={socket_path}")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "TASK [Reclaim space until the target is met]" in output
    assert f"cannot reach the Docker engine at {socket_path}" in output
    assert "ci-2" not in output
