# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# What docker_host_info reads on a host, parsed: /proc/mounts, systemd-detect-virt, PID 1's environment, xfs_info,
# Docker's DriverStatus, containerd's and dockerd's configuration. Plain functions over text, unit-tested without a
# host (tests/unit/plugins/modules/test_docker_host_info.py). Standard library only: this code runs on managed hosts.

from __future__ import annotations

import json
import re
from typing import Any

DEFAULT_DATA_ROOT = "/var/lib/docker"
DEFAULT_CONTAINERD_ROOT = "/var/lib/containerd"

# `stat -f -c %T` prints the statfs magic's name; ext2, ext3 and ext4 share one magic.
STATFS_NAMES = {"ext2/ext3": "ext4", "overlayfs": "overlay", "fuseblk": "fuse"}

# systemd-detect-virt names that are containers (the rest, except "none", are hypervisors).
CONTAINER_TECHNOLOGIES = (
    "lxc", "lxc-libvirt", "docker", "podman", "systemd-nspawn", "openvz", "rkt", "wsl", "proot", "pouch",
)


def unescape_mount_field(field: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[dict[str, Any]]:
    """Rows of /proc/mounts (or /proc/self/mounts) as dicts, in mount order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mounts.append(dict(
            device=unescape_mount_field(fields[0]),
            mount_point=unescape_mount_field(fields[1]),
            fstype=fields[2],
            options=fields[3].split(","),
        ))
    return mounts


def mount_for(path: str, mounts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The mount that holds `path`: the longest mount point that is a prefix; a later mount shadows an earlier one."""
    best = None
    for mount in mounts:
        point = mount["mount_point"]
        inside = path == point or point == "/" or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best["mount_point"])):
            best = mount
    return best


def normalize_fstype(fstype: str | None) -> str | None:
    """Name a filesystem the way the compatibility table does."""
    if not fstype:
        return None
    fstype = fstype.strip()
    return STATFS_NAMES.get(fstype, fstype)


def parse_detect_virt(rc: int, out: str | None) -> str | None:
    """`systemd-detect-virt` prints a technology or 'none' (exit 1 for none); None means none or unknown."""
    lines = (out or "").strip().splitlines()
    value = lines[0].strip() if lines else ""
    if rc not in (0, 1) or not value or value == "none":
        return None
    return value


def parse_environ(data: bytes | str) -> dict[str, str]:
    """The NUL-separated environment of a process (/proc/<pid>/environ) as a dict."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    result = {}
    for item in data.split("\0"):
        if "=" in item:
            key, value = item.split("=", 1)
            result[key] = value
    return result


def classify_virtualization(detect_container: str | None, detect_vm: str | None, run_container: str | None,
                            environ_container: str | None, dockerenv: bool) -> dict[str, Any]:
    """One answer, most trusted source first: systemd-detect-virt, what PID 1 was told, then /.dockerenv."""
    container = detect_container or run_container or environ_container or ("docker" if dockerenv else None)
    vm = detect_vm
    sources = dict(
        systemd_detect_virt_container=detect_container,
        systemd_detect_virt_vm=detect_vm,
        run_systemd_container=run_container,
        proc1_environ_container=environ_container,
        dockerenv=dockerenv,
    )
    if container:
        kind, technology = "container", container
    elif vm:
        kind, technology = "vm", vm
    else:
        kind, technology = "none", "none"
    return dict(type=kind, technology=technology, container=container, vm=vm, sources=sources)


def parse_xfs_info(text: str | None) -> int | None:
    """ftype from `xfs_info` output ('naming =version 2 bsize=4096 ascii-ci=0, ftype=1'); None when absent."""
    match = re.search(r"\bftype=(\d)", text or "")
    return int(match.group(1)) if match else None


def parse_driver_status(pairs: Any) -> dict[str, str]:
    """Docker's DriverStatus (a list of [name, value] pairs) as a dict."""
    result = {}
    for pair in pairs or []:
        if isinstance(pair, (list, tuple)) and len(pair) == 2:
            result[str(pair[0])] = str(pair[1])
    return result


def uses_containerd_store(info: dict[str, Any]) -> bool:
    """Docker 24+ with the containerd image store reports its snapshotter as DriverStatus driver-type."""
    status = parse_driver_status(info.get("DriverStatus"))
    return status.get("driver-type", "").startswith("io.containerd.snapshotter")


def parse_containerd_root(text: str | None) -> str:
    """The top-level `root = "..."` of /etc/containerd/config.toml, else containerd's default."""
    for line in (text or "").splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            break
        match = re.match(r'^root\s*=\s*"([^"]+)"', stripped)
        if match:
            return match.group(1)
    return DEFAULT_CONTAINERD_ROOT


def data_root_from_config(text: str | None) -> str | None:
    """`data-root` (or the old `graph`) from daemon.json text; None when absent or unreadable."""
    try:
        config = json.loads(text) if text and text.strip() else {}
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    return config.get("data-root") or config.get("graph")
