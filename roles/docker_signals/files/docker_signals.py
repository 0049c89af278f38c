# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docker host signals for node_exporter's textfile collector (installed by postmortem.remediation.docker_signals).

Run by pmr-docker-signals.timer, it writes docker_signals.prom atomically: whether dockerd is up or restarting,
whether /etc/docker/daemon.json is the one dockerd last started with, the storage driver in use and the one
expected, the data root and the mountpoint it lives on (to join node_filesystem_*), and the container logs:
the largest N with their bytes and whether each is bounded, plus the totals.

`--record-started` is run by the ExecStartPost= drop-in of docker.service: once dockerd has started and said it
is ready, it keeps a copy of the daemon.json it started with (and its sha256) in the state directory. The
collector compares the file on disk with that record; the copy is also what a remediation restores.

The collector never touches the Docker socket while docker.service is not active: docker.socket would start
dockerd on the first connection, and a probe that restarts the daemon it watches hides the outage.

Standard library only. The engine client and the log rules are copied beside this script from the collection's
plugins/module_utils (_docker_api.py, _container_logs.py, _textfile_metrics.py, _files.py).
Exit status: 0 when the metrics were written, 1 when they could not be, 2 for an unusable configuration.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Copied beside this script by the role, found through the path set above.
import _container_logs
import _docker_api
import _textfile_metrics as tm

ABSENT = "absent"
RECORD_COPY = "daemon.json.last-started"
RECORD_HASH = "daemon.json.last-started.sha256"
DEFAULTS: dict[str, Any] = {
    "docker_socket": _docker_api.DEFAULT_SOCKET,
    "docker_unit": "docker.service",
    "daemon_config": "/etc/docker/daemon.json",
    "state_dir": "/var/lib/pmr-docker-signals",
    "textfile": "/var/lib/prometheus/node-exporter/docker_signals.prom",
    "top_containers": 10,
    "expected_storage_driver": "",
    "api_timeout": 10,
}
RESTARTING_STATES = ("activating", "failed")


def say(message: str) -> None:
    sys.stdout.write(f"{message}\n")
    sys.stdout.flush()


def load_config(path: str | None) -> dict[str, Any]:
    config = dict(DEFAULTS)
    if path:
        with open(path) as handle:
            loaded = json.load(handle)
        config.update({k: v for k, v in loaded.items() if not k.startswith("_")})
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}")
    if int(config["top_containers"]) < 0:
        raise ValueError("top_containers must be 0 or more")
    config["top_containers"] = int(config["top_containers"])
    return config


# -- daemon.json: on disk and as dockerd last started with it -------------------------------------------------------
def file_digest(path: str) -> str:
    """sha256 of the file, or 'absent' (dockerd then starts with its defaults)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return ABSENT


def read_record(state_dir: str) -> str | None:
    try:
        with open(os.path.join(state_dir, RECORD_HASH)) as handle:
            return handle.read().strip() or None
    except FileNotFoundError:
        return None


def record_started(config: dict[str, Any]) -> str:
    """Keep a copy of daemon.json (or the fact that there was none) as the configuration dockerd started with."""
    state_dir = config["state_dir"]
    os.makedirs(state_dir, 0o755, exist_ok=True)
    digest = file_digest(config["daemon_config"])
    copy = os.path.join(state_dir, RECORD_COPY)
    if digest == ABSENT:
        if os.path.exists(copy):
            os.unlink(copy)
    else:
        temp = copy + ".tmp"
        shutil.copyfile(config["daemon_config"], temp)
        os.chmod(temp, 0o644)
        os.replace(temp, copy)
        # The copy is what counts: hash it, not the file on disk that may have changed since.
        digest = file_digest(copy)
    tm.write_atomically(os.path.join(state_dir, RECORD_HASH), digest + "\n")
    return digest


def config_applied(config: dict[str, Any], unit: dict[str, str]) -> tuple[int | None, str]:
    """1 when daemon.json on disk is the one dockerd last started with, 0 when not, None when unknown.

    Without a record (the drop-in was installed after dockerd's last start), a running dockerd that started after
    the file's last change started with it: the record is seeded then. Otherwise the answer waits for a start.
    """
    on_disk = file_digest(config["daemon_config"])
    recorded = read_record(config["state_dir"])
    if recorded is not None:
        return (1 if recorded == on_disk else 0), "record"
    started = unit_started_at(unit)
    if unit.get("ActiveState") != "active" or started is None:
        return None, "no record"
    modified = 0.0 if on_disk == ABSENT else os.stat(config["daemon_config"]).st_mtime
    if modified <= started:
        record_started(config)
        return 1, "seeded"
    return 0, "changed after start"


# -- docker.service ----------------------------------------------------------------------------------------------
def unit_state(unit_name: str) -> dict[str, str]:
    """ActiveState, SubState and when the unit last became active; empty without systemd."""
    systemctl = shutil.which("systemctl")
    if not systemctl:
        return {}
    proc = subprocess.run([systemctl, "show", unit_name, "--timestamp=unix",
                           "--property=ActiveState,SubState,ActiveEnterTimestamp,LoadState"],
                          capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:
        return {}
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def unit_started_at(unit: dict[str, str]) -> float | None:
    value = unit.get("ActiveEnterTimestamp", "")
    if value.startswith("@"):
        try:
            return float(value[1:])
        except ValueError:
            return None
    return None


def restarting(unit: dict[str, str]) -> int:
    """1 while systemd is (re)starting dockerd, waits to restart it, or gave up (failed)."""
    return int(unit.get("ActiveState") in RESTARTING_STATES or unit.get("SubState") == "auto-restart")


# -- the data root -----------------------------------------------------------------------------------------------
def unescape_mount(field: str) -> str:
    """Mount paths in /proc/*/mountinfo escape space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountpoint_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The mountpoint of the filesystem holding ``path``: the longest mountpoint that is a prefix of it."""
    real = os.path.realpath(path)
    best = "/"
    try:
        with open(mountinfo) as handle:
            mounts = [unescape_mount(line.split()[4]) for line in handle if len(line.split()) > 4]
    except OSError:
        mounts = []
    for mount in mounts:
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best = mount
    return best


def configured_data_root(config: dict[str, Any]) -> str:
    try:
        with open(config["daemon_config"]) as handle:
            return json.load(handle).get("data-root") or "/var/lib/docker"
    except (OSError, ValueError, AttributeError):
        return "/var/lib/docker"


# -- containers --------------------------------------------------------------------------------------------------
def container_logs(api: _docker_api.DockerAPI, data_root: str) -> list[dict[str, Any]]:
    logs = []
    for item in api.containers(all=True):
        try:
            container = api.inspect_container(item["Id"])
        except _docker_api.DockerAPIError as exc:
            if exc.status == 404:  # removed since the listing
                continue
            raise
        log_config = container["HostConfig"]["LogConfig"]
        bounded, _reason = _container_logs.classify(log_config.get("Type") or "", log_config.get("Config") or {})
        logs.append({"name": container["Name"].lstrip("/"), "bounded": bounded,
                     "bytes": _container_logs.log_bytes(container, data_root)})
    return logs


# -- the metrics -------------------------------------------------------------------------------------------------
def collect(config: dict[str, Any], now: float | None = None) -> tuple[list[tm.Family], list[str]]:
    """Every family this run can answer, and the problems met on the way (for the journal)."""
    problems: list[str] = []
    unit = unit_state(config["docker_unit"])
    families: list[tm.Family] = []

    def gauge(name: str, help_text: str) -> tm.Family:
        family = tm.Family(name, help_text)
        families.append(family)
        return family

    # Without systemd, the socket is the only witness; with it, only an active unit may be asked.
    may_ask = not unit or unit.get("ActiveState") == "active"
    api = _docker_api.DockerAPI(config["docker_socket"], timeout=config["api_timeout"])
    info: dict[str, Any] | None = None
    if may_ask:
        try:
            info = api.info()
        except (_docker_api.DockerAPIError, OSError) as exc:
            problems.append(f"dockerd does not answer on {config['docker_socket']}: {exc}")
    gauge("pmr_docker_up", "1 when docker.service is active and dockerd answers its API, else 0.").add(
        1 if info is not None else 0)
    if unit:
        gauge("pmr_docker_restarting",
              "1 while docker.service is activating, waiting to restart (auto-restart) or failed.").add(
            restarting(unit))
    applied, how = config_applied(config, unit)
    if applied is not None:
        gauge("pmr_docker_config_applied",
              "1 when daemon.json on disk is the one dockerd last started with (sha256 recorded at each start).").add(
            applied)
    else:
        problems.append(f"cannot tell whether {config['daemon_config']} is applied: {how}")

    if info is not None:
        gauge("pmr_docker_storage_driver", "The storage driver dockerd runs, as a label.").add(
            1, driver=info.get("Driver") or "")
    if config["expected_storage_driver"]:
        gauge("pmr_docker_storage_driver_expected", "The storage driver this host is meant to run, as a label.").add(
            1, driver=config["expected_storage_driver"])

    data_root = (info or {}).get("DockerRootDir") or configured_data_root(config)
    gauge("pmr_docker_data_root_info",
          "The Docker data root and the mountpoint of its filesystem (join node_filesystem_* on mountpoint).").add(
        1, data_root=data_root, mountpoint=mountpoint_of(data_root))

    if info is not None:
        try:
            logs = container_logs(api, data_root)
        except (_docker_api.DockerAPIError, OSError) as exc:
            problems.append(f"cannot list the containers: {exc}")
        else:
            add_log_families(gauge, logs, config["top_containers"])

    gauge("pmr_signals_last_run_timestamp_seconds", "Unix time the docker_signals collector last ran.").add(
        time.time() if now is None else now)
    return families, problems


def add_log_families(gauge: Any, logs: list[dict[str, Any]], top: int) -> None:
    largest = sorted(logs, key=lambda log: (-log["bytes"], log["name"]))[:top]
    sizes = gauge("pmr_container_log_bytes", "Bytes of the container's log files under the data root (largest N).")
    bounded = gauge("pmr_container_log_bounded", "1 when the container's log is bounded by rotation (largest N).")
    for log in largest:
        sizes.add(log["bytes"], container=log["name"])
        bounded.add(1 if log["bounded"] else 0, container=log["name"])
    gauge("pmr_container_logs_bytes_total", "Bytes of every container's log files together.").add(
        sum(log["bytes"] for log in logs))
    gauge("pmr_container_logs_unbounded", "How many containers have a log that nothing bounds.").add(
        sum(1 for log in logs if not log["bounded"]))
    gauge("pmr_containers", "How many containers the engine has (running or not).").add(len(logs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="/etc/pmr-docker-signals/config.json")
    parser.add_argument("--record-started", action="store_true",
                        help="record daemon.json as the configuration dockerd started with (ExecStartPost=)")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--stdout", action="store_true", help="print the metrics instead of writing the file")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except (OSError, ValueError, TypeError) as exc:
        say(f"FAILED: unusable configuration {args.config}: {exc}")
        return 2
    if args.check_config:
        say(f"configuration {args.config} is valid")
        return 0
    if args.record_started:
        digest = record_started(config)
        say(f"recorded {config['daemon_config']} ({digest[:12]}) as the configuration dockerd started with")
        return 0
    families, problems = collect(config)
    for problem in problems:
        say(problem)
    text = tm.render(families)
    if args.stdout:
        sys.stdout.write(text)
        return 0
    try:
        os.makedirs(os.path.dirname(config["textfile"]), 0o755, exist_ok=True)
        tm.write_atomically(config["textfile"], text)
    except OSError as exc:
        say(f"FAILED: cannot write {config['textfile']}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
