"""The lab script and the Makefile do what the README says (issue 11, item 13), on the real engine."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LAB = REPO / "tests" / "lab" / "lab.sh"


def test_make_help_lists_every_target() -> None:
    phony = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith(".PHONY:"):
            phony.update(line.split(":", 1)[1].split())
    listed = {line.split()[0] for line in subprocess.run(
        ["make", "-s", "-C", str(REPO), "help"], capture_output=True, text=True, check=True).stdout.splitlines()}
    assert {"e2e", "collection-link", "lab-up", "lab-down", "test"} <= phony
    assert sorted(phony - listed) == []


def docker(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, check=False)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A lab prefix of this test's own, and whatever it created removed by exact name afterwards."""
    name = f"pmr-docs-lt{uuid.uuid4().hex[:6]}"
    created: list[str] = []
    yield name
    for container in docker("ps", "-a", "--format", "{{.Names}}").stdout.split():
        if container.startswith(name + "-"):
            created.append(container)
    for container in created:
        docker("rm", "-f", "-v", container)
        docker("volume", "rm", container + "-docker")


def test_lab_down_removes_only_prefix_dash_number(prefix: str) -> None:
    names = [f"{prefix}-1", f"{prefix}-12", f"{prefix}-x-1", f"{prefix}-1-old"]
    for name in names:
        started = docker("run", "-d", "--name", name, "--label", "pmr.lab=1", "pmr-workload:latest", "sleep", "600")
        assert started.returncode == 0, started.stderr
    down = subprocess.run(["bash", str(LAB), "down", prefix], capture_output=True, text=True, check=True)
    remaining = set(docker("ps", "-a", "--format", "{{.Names}}").stdout.split())
    assert not {f"{prefix}-1", f"{prefix}-12"} & remaining, down.stderr
    assert {f"{prefix}-x-1", f"{prefix}-1-old"} <= remaining, down.stderr


def test_lab_up_of_a_new_host_says_nothing_about_a_stopped_one(prefix: str, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.ini"
    up = subprocess.run(["bash", str(LAB), "up", "1", prefix], capture_output=True, text=True, check=False,
                        env={"LAB_INVENTORY": str(inventory), "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                             "/usr/bin:/sbin:/bin"})
    assert up.returncode == 0, up.stderr
    assert "stopped" not in up.stderr and "Error" not in up.stderr and "No such container" not in up.stderr, up.stderr
    assert re.search(rf"^{prefix}-1$", inventory.read_text(), re.MULTILINE)
    assert docker("inspect", "-f", "{{.State.Running}}", f"{prefix}-1").stdout.strip() == "true"
