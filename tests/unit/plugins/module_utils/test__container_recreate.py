"""_container_recreate on the real engine: a container re-created with a bounded log comes back the same (its whole
Config and HostConfig but the log and the default hostname, its mounts, its links), or it is refused, with the
reason, before anything is touched. One case per way a container can depend on another or on itself: a legacy
--link (either end), --volumes-from, --network/--pid container:X, an anonymous volume, a healthcheck, a restart
policy, --init. Containers are named pmr-guardfail-<case>-<tag> and removed afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
from guard_module_runner import load, run_module

log_limits = load("docker_container_log_limits")
LOOP = "trap 'exit 0' TERM; while :; do echo flood; sleep 1; done"


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)


def inspect(name: str) -> dict[str, Any]:
    out = docker("inspect", name)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


class Lab:
    """Containers and volumes of one test, all named pmr-guardfail-*-<tag>, removed at the end."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.volumes: list[str] = []

    def name(self, part: str) -> str:
        return f"pmr-guardfail-{part}-{self.tag}"

    def run(self, part: str, *args: str, cmd: str = LOOP) -> str:
        name = self.name(part)
        out = docker("run", "-d", "--name", name, "--log-driver", "json-file", *args, "pmr-workload:latest",
                     "sh", "-c", cmd)
        assert out.returncode == 0, out.stderr
        return name

    def volume(self, part: str) -> str:
        name = self.name(part)
        assert docker("volume", "create", name).returncode == 0
        self.volumes.append(name)
        return name

    def clean(self) -> None:
        mine = [n for n in docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
                if n.startswith("pmr-guardfail-") and self.tag in n]
        if mine:
            docker("rm", "-f", "-v", *mine)
        if self.volumes:
            docker("volume", "rm", *self.volumes)


@pytest.fixture
def lab() -> Iterator[Lab]:
    if not os.path.exists("/var/run/docker.sock") or docker("image", "inspect", "pmr-workload:latest").returncode:
        pytest.skip("no Docker engine with pmr-workload:latest on this machine (bash tests/lab/image.sh)")
    made = Lab()
    yield made
    made.clean()


def bound(name: str) -> dict[str, Any]:
    return run_module(log_limits, {"name": name, "max_size": "1m", "max_file": "2", "settle_seconds": 1})


def comparable(container: dict[str, Any]) -> dict[str, Any]:
    """What must come back the same: all of Config and HostConfig but the log and a default hostname; the mounts."""
    config = dict(container["Config"])
    if config.get("Hostname") == container["Id"][:12]:
        config.pop("Hostname")
    host = dict(container["HostConfig"])
    host.pop("LogConfig")
    mounts = sorted((m.get("Type"), m.get("Name") or m.get("Source"), m["Destination"], m["RW"])
                    for m in container["Mounts"])
    return {"Config": config, "HostConfig": host, "Mounts": mounts}


def assert_recreated_the_same(name: str, before: dict[str, Any]) -> dict[str, Any]:
    result = bound(name)
    assert not result.get("failed") and result["changed"] and not result["refused"], result
    after = inspect(name)
    assert after["Id"] != before["Id"] and after["State"]["Running"]
    assert after["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
    assert comparable(after) == comparable(before)
    return after


def assert_refused_untouched(name: str, before: dict[str, Any], *words: str) -> None:
    result = bound(name)
    assert not result.get("failed") and result["refused"] and not result["changed"], result
    for word in words:
        assert word in result["msg"], result["msg"]
    after = inspect(name)
    assert after["Id"] == before["Id"] and after["State"]["Running"] and after["Name"] == before["Name"]
    assert not [n for n in docker("ps", "-a", "--format", "{{.Names}}").stdout.split() if "-pmr-old" in n
                and n.startswith(name)]


# --- re-created the same ----------------------------------------------------------------------------------------
def test_healthcheck_restart_policy_and_init_come_back(lab: Lab) -> None:
    name = lab.run("self", "--health-cmd", "test -e /proc/1", "--health-interval", "5s", "--health-retries", "2",
                   "--restart", "on-failure:3", "--init", "--hostname", "chosen", "--stop-timeout", "7")
    assert_recreated_the_same(name, inspect(name))


def test_a_legacy_link_comes_back(lab: Lab) -> None:
    db = lab.run("db")
    web = lab.run("web", "--link", f"{db}:database")
    before = inspect(web)
    after = assert_recreated_the_same(web, before)
    hosts = docker("exec", web, "cat", "/etc/hosts").stdout
    assert "database" in hosts, hosts
    assert after["HostConfig"]["Links"] == before["HostConfig"]["Links"]


def test_volumes_from_a_named_volume_come_back(lab: Lab) -> None:
    vol = lab.volume("data")
    source = lab.run("source", "-v", f"{vol}:/data")
    user = lab.run("user", "--volumes-from", f"{source}:ro")
    assert_recreated_the_same(user, inspect(user))


def test_volumes_from_an_anonymous_volume_come_back(lab: Lab) -> None:
    source = lab.run("anonsource", "-v", "/data")
    user = lab.run("anonuser", "--volumes-from", source)
    docker("exec", user, "sh", "-c", "echo kept > /data/mark")
    assert_recreated_the_same(user, inspect(user))
    assert docker("exec", user, "cat", "/data/mark").stdout.strip() == "kept"


# --- refused, untouched -----------------------------------------------------------------------------------------
def test_the_target_of_a_legacy_link_is_refused(lab: Lab) -> None:
    db = lab.run("linked")
    lab.run("linker", "--link", f"{db}:database")
    assert_refused_untouched(db, inspect(db), "link", lab.name("linker"))


def test_shared_network_and_pid_namespaces_are_refused(lab: Lab) -> None:
    owner = lab.run("owner")
    net = lab.run("netjoin", "--network", f"container:{owner}")
    pid = lab.run("pidjoin", "--pid", f"container:{owner}")
    assert_refused_untouched(net, inspect(net), "network namespace", owner)
    assert_refused_untouched(pid, inspect(pid), "PID namespace", owner)
    assert_refused_untouched(owner, inspect(owner), "holds the network namespace", net)


def test_the_holder_of_a_shared_pid_namespace_is_refused(lab: Lab) -> None:
    # Stopping it would kill every process of the containers in its PID namespace.
    owner = lab.run("pidowner")
    joined = lab.run("pidonly", "--pid", f"container:{owner}")
    assert_refused_untouched(owner, inspect(owner), "holds the PID namespace", joined, "kill their processes")
    assert inspect(joined)["State"]["Running"]


def test_an_anonymous_volume_is_refused(lab: Lab) -> None:
    name = lab.run("anon", "-v", "/scratch")
    assert_refused_untouched(name, inspect(name), "anonymous volumes at /scratch")


def test_the_source_of_volumes_from_with_an_anonymous_volume_is_refused(lab: Lab) -> None:
    source = lab.run("anonheld", "-v", "/data")
    lab.run("anonholder", "--volumes-from", source)
    assert_refused_untouched(source, inspect(source), "anonymous volumes at /data")
