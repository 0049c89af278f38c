"""The docker_signals collector as the role installs it (the script with its helper files beside it): the
record of the daemon.json dockerd started with, the mountpoint of the data root, docker.service's states, and a
whole run against an engine socket, including the rule that a stopped docker.service is never woken by a probe.

The real engine, systemd and node_exporter are in extensions/molecule/docker_signals."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from unit_support import EngineHandler, FakeEngine, install_role_script


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """The script with its helper files beside it, as the role installs them (the list is the role's)."""
    return install_role_script(tmp_path / "lib", "docker_signals", "docker_signals.py", "__docker_signals_helpers")


@pytest.fixture
def signals(installed: Path) -> ModuleType:
    """The installed script imported as a module, with its helpers found beside it."""
    spec = importlib.util.spec_from_file_location("docker_signals_under_test", installed)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "etc").mkdir()
    return {
        "docker_socket": str(tmp_path / "docker.sock"), "docker_unit": "docker.service",
        "daemon_config": str(tmp_path / "etc" / "daemon.json"), "state_dir": str(tmp_path / "state"),
        "textfile": str(tmp_path / "textfile" / "docker_signals.prom"), "top_containers": 2,
        "expected_storage_driver": "overlay2", "api_timeout": 5,
    }


def samples(families: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(f.name, tuple(sorted(labels.items()))): value for f in families for labels, value in f.samples}


# --- the record of the configuration dockerd started with ----------------------------------------------------------
def active_since(when: float) -> dict[str, str]:
    return {"ActiveState": "active", "SubState": "running", "ActiveEnterTimestamp": f"@{when:.0f}"}


def test_record_keeps_a_copy_and_its_hash(signals: ModuleType, config: dict[str, Any]) -> None:
    Path(config["daemon_config"]).write_text('{"log-driver": "json-file"}')
    digest = signals.record_started(config)
    state = Path(config["state_dir"])
    assert (state / "daemon.json.last-started").read_text() == '{"log-driver": "json-file"}'
    assert (state / "daemon.json.last-started.sha256").read_text().strip() == digest
    assert signals.config_applied(config, {}) == (1, "record")


def test_a_changed_file_is_not_applied_until_dockerd_starts_with_it(
        signals: ModuleType, config: dict[str, Any]) -> None:
    path = Path(config["daemon_config"])
    path.write_text('{"log-level": "info"}')
    signals.record_started(config)
    path.write_text('{"log-level": "verbose"}')  # the change that stops dockerd
    assert signals.config_applied(config, {"ActiveState": "failed"}) == (0, "record")
    assert Path(config["state_dir"], "daemon.json.last-started").read_text() == '{"log-level": "info"}'
    path.write_text('{"log-level": "info"}')  # restored: the same bytes as the start
    assert signals.config_applied(config, {"ActiveState": "failed"}) == (1, "record")


def test_no_file_is_a_configuration_too(signals: ModuleType, config: dict[str, Any]) -> None:
    assert signals.record_started(config) == "absent"
    assert signals.config_applied(config, {}) == (1, "record")
    Path(config["daemon_config"]).write_text("{}")
    assert signals.config_applied(config, {}) == (0, "record")
    # A start with a file, then one without: the record holds no stale copy that a remediation would restore.
    signals.record_started(config)
    assert Path(config["state_dir"], "daemon.json.last-started").read_text() == "{}"
    Path(config["daemon_config"]).unlink()
    assert signals.record_started(config) == "absent"
    assert not Path(config["state_dir"], "daemon.json.last-started").exists()
    assert Path(config["state_dir"], "daemon.json.last-started.sha256").read_text() == "absent\n"


SEED = [
    # (case, daemon.json modified relative to dockerd's start, unit state, expected (applied, how))
    ("file older than the start: seeded", -60, "active", (1, "seeded")),
    ("file changed after the start", +60, "active", (0, "changed after start")),
    ("no record and dockerd down: unknown", -60, "failed", (None, "no record")),
]


@pytest.mark.parametrize(("case", "offset", "state", "expected"), SEED, ids=[s[0] for s in SEED])
def test_without_a_record_the_start_time_decides(signals: ModuleType, config: dict[str, Any], case: str,
                                                 offset: int, state: str, expected: tuple[int | None, str]) -> None:
    path = Path(config["daemon_config"])
    path.write_text("{}")
    started = time.time() - 3600
    os.utime(path, (started + offset, started + offset))
    unit = active_since(started) if state == "active" else {"ActiveState": state}
    assert signals.config_applied(config, unit) == expected
    seeded = Path(config["state_dir"], "daemon.json.last-started").exists()
    assert seeded == (expected[1] == "seeded")


# --- docker.service -----------------------------------------------------------------------------------------------
RESTARTING = [
    # (ActiveState, SubState, restarting)
    ("active", "running", 0), ("inactive", "dead", 0), ("activating", "start", 1), ("activating", "auto-restart", 1),
    ("failed", "failed", 1), ("deactivating", "stop-sigterm", 0),
]


@pytest.mark.parametrize(("active", "sub", "expected"), RESTARTING, ids=[f"{r[0]}/{r[1]}" for r in RESTARTING])
def test_restarting_states(signals: ModuleType, active: str, sub: str, expected: int) -> None:
    assert signals.restarting({"ActiveState": active, "SubState": sub}) == expected


# --- the data root's mountpoint ----------------------------------------------------------------------------------
MOUNTINFO = """\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
30 22 8:17 / /var/lib/docker rw,relatime - ext4 /dev/sdb1 rw
31 22 8:33 / /srv/docker\\040data rw,relatime - xfs /dev/sdc1 rw
32 30 0:50 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw
"""


@pytest.mark.parametrize(("path", "mountpoint"), [
    ("/var/lib/docker", "/var/lib/docker"),
    ("/var/lib/docker-other", "/"),          # a prefix of the name is not a parent directory
    ("/srv/docker data/root", "/srv/docker data"),
    ("/opt/docker", "/"),
])
def test_mountpoint_of_the_data_root(signals: ModuleType, tmp_path: Path, path: str, mountpoint: str) -> None:
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    assert signals.mountpoint_of(path, str(tmp_path / "mountinfo")) == mountpoint


# --- a whole run against an engine socket ----------------------------------------------------------------------
CONTAINERS = {
    # id: (name, log driver options, log bytes)
    "c1": ("flood", {}, 50_000),
    "c2": ("rotated", {"max-size": "10m", "max-file": "3"}, 30_000),
    "c3": ("quiet", {}, 10),
}


class Engine(FakeEngine):
    def answer(self, method: str, path: str) -> tuple[int, object]:
        self.requests.append((method, path))
        if path == "/info":
            return 200, {"DockerRootDir": str(self.data_root), "Driver": "vfs"}
        if path == "/containers/json":
            return 200, [{"Id": cid} for cid in CONTAINERS]
        cid = path.split("/")[2] if path.startswith("/containers/") else ""
        if cid in CONTAINERS:
            name, options, _size = CONTAINERS[cid]
            log_path = self.data_root / "containers" / cid / f"{cid}-json.log"
            return 200, {"Id": cid, "Name": "/" + name, "LogPath": str(log_path),
                         "HostConfig": {"LogConfig": {"Type": "json-file", "Config": options}}}
        return 404, {"message": f"no {path}"}


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    for cid, (_name, _options, size) in CONTAINERS.items():
        directory = tmp_path / "containers" / cid
        directory.mkdir(parents=True)
        (directory / f"{cid}-json.log").write_bytes(b"x" * size)
    (tmp_path / "containers" / "c2" / "c2-json.log.1").write_bytes(b"x" * 1000)  # a rotated file counts too
    server = Engine(tmp_path / "docker.sock", tmp_path)
    server.RequestHandlerClass = EngineHandler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_run_with_dockerd_active(signals: ModuleType, config: dict[str, Any], engine: Engine,
                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    Path(config["daemon_config"]).write_text("{}")
    signals.record_started(config)
    monkeypatch.setattr(signals, "unit_state", lambda unit: active_since(time.time() - 60))
    monkeypatch.setattr(signals, "mountpoint_of", lambda path: "/var/lib/docker")
    families, problems = signals.collect(config, now=1000.0)
    assert problems == []
    got = samples(families)
    root = str(tmp_path)
    assert got == {
        ("pmr_docker_up", ()): 1, ("pmr_docker_restarting", ()): 0, ("pmr_docker_config_applied", ()): 1,
        ("pmr_docker_storage_driver", (("driver", "vfs"),)): 1,
        ("pmr_docker_storage_driver_expected", (("driver", "overlay2"),)): 1,
        ("pmr_docker_data_root_info", (("data_root", root), ("mountpoint", "/var/lib/docker"))): 1,
        # The largest two of three (top_containers: 2); the totals count all three.
        ("pmr_container_log_bytes", (("container", "flood"),)): 50_000,
        ("pmr_container_log_bytes", (("container", "rotated"),)): 31_000,
        ("pmr_container_log_bounded", (("container", "flood"),)): 0,
        ("pmr_container_log_bounded", (("container", "rotated"),)): 1,
        ("pmr_container_logs_bytes_total", ()): 81_010, ("pmr_container_logs_unbounded", ()): 2,
        ("pmr_containers", ()): 3, ("pmr_signals_last_run_timestamp_seconds", ()): 1000.0,
    }


@pytest.mark.parametrize("state", ["inactive", "failed", "activating"])
def test_a_stopped_docker_service_is_never_woken_by_the_probe(
        signals: ModuleType, config: dict[str, Any], engine: Engine, monkeypatch: pytest.MonkeyPatch,
        state: str) -> None:
    Path(config["daemon_config"]).write_text('{"log-level": "info"}')
    signals.record_started(config)
    Path(config["daemon_config"]).write_text('{"log-level": "verbose"}')
    monkeypatch.setattr(signals, "unit_state", lambda unit: {"ActiveState": state, "SubState": "dead"})
    families, _problems = signals.collect(config)
    assert engine.requests == [], "the collector spoke to the socket of a docker.service that is not active"
    got = samples(families)
    assert got[("pmr_docker_up", ())] == 0
    assert got[("pmr_docker_config_applied", ())] == 0
    assert got[("pmr_docker_restarting", ())] == (0 if state == "inactive" else 1)
    names = {key[0] for key in got}
    assert [name for name in names if name.startswith("pmr_container") or name == "pmr_docker_storage_driver"] == []
    assert ("pmr_docker_storage_driver_expected", (("driver", "overlay2"),)) in got


def test_the_script_writes_its_file_atomically_and_validates_its_configuration(
        installed: Path, config: dict[str, Any], engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(config, _comment="managed")))
    env = dict(os.environ, PATH="/nonexistent")  # no systemctl: the socket is the only witness
    proc = subprocess.run([sys.executable, str(installed), "--config", str(path)], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = Path(config["textfile"]).read_text()
    assert "pmr_docker_up 1" in text.splitlines()
    assert os.listdir(Path(config["textfile"]).parent) == ["docker_signals.prom"]
    path.write_text(json.dumps(dict(config, top_containers=-1)))
    proc = subprocess.run([sys.executable, str(installed), "--config", str(path), "--check-config"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "top_containers" in proc.stdout
    path.write_text(json.dumps(dict(config, top_container=3)))
    proc = subprocess.run([sys.executable, str(installed), "--config", str(path), "--check-config"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "unknown key(s) top_container" in proc.stdout
