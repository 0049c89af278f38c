# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# Whether a container's log is bounded, and how many bytes it holds under the data root: one definition for the
# docker_log_info module and the docker_signals collector (copied beside the script by its role).
# Standard library only: this runs on managed hosts.

from __future__ import annotations

import contextlib
import glob
import os
from typing import Any

REMOTE_DRIVERS_WITH_CACHE = ("syslog", "journald", "gelf", "fluentd", "awslogs", "splunk", "etwlogs", "gcplogs")


def classify(driver: str | None, options: dict[str, Any] | None) -> tuple[bool, str]:
    """Return (bounded, reason) for a container's log configuration."""
    max_size = (options or {}).get("max-size")
    if driver == "json-file":
        if max_size in (None, "", "-1"):
            return False, "json-file without max-size: the log grows until the disk is full"
        return True, "json-file rotated at max-size=%s, max-file=%s" % (max_size, (options or {}).get("max-file", "1"))
    if driver == "local":
        if max_size == "-1":
            return False, "local with max-size=-1: rotation disabled"
        return True, "local driver (default 20m x 5, compressed)" if not max_size else "local rotated at %s" % max_size
    if driver == "none":
        return True, "logging disabled"
    if driver in REMOTE_DRIVERS_WITH_CACHE:
        if (options or {}).get("cache-disabled") == "true":
            return True, "%s, no local cache" % driver
        return True, "%s with a bounded local cache (dual logging)" % driver
    return True, "driver %s does not write log files under the data root" % driver


def log_bytes(container: dict[str, Any], data_root: str) -> int:
    """Bytes of the container's log files (rotated ones included) from an inspect record."""
    driver = container["HostConfig"]["LogConfig"]["Type"]
    if driver == "json-file" and container.get("LogPath"):
        paths = glob.glob(container["LogPath"] + "*")
    else:
        paths = glob.glob(os.path.join(data_root, "containers", container["Id"], "*-logs", "*"))
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):  # a file may rotate away between listing and stat
            total += os.path.getsize(path)
    return total


def describe(container: dict[str, Any], data_root: str) -> dict[str, Any]:
    """A container's log configuration from its inspect record: driver, options, bounded and why, bytes now."""
    log_config = container["HostConfig"]["LogConfig"]
    driver = log_config.get("Type") or ""
    options = log_config.get("Config") or {}
    bounded, reason = classify(driver, options)
    return dict(
        id=container["Id"][:12],
        name=container["Name"].lstrip("/"),
        state=container["State"]["Status"],
        driver=driver,
        options=options,
        bounded=bounded,
        reason=reason,
        log_bytes=log_bytes(container, data_root),
    )


def log_report(inspected: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """Every container's log configuration, the unbounded ones largest first, and their bytes together."""
    containers = [describe(container, info["DockerRootDir"]) for container in inspected]
    unbounded = sorted((c for c in containers if not c["bounded"]), key=lambda c: -c["log_bytes"])
    return dict(
        daemon_log_driver=info.get("LoggingDriver"),
        containers=containers,
        unbounded=unbounded,
        unbounded_log_bytes=sum(c["log_bytes"] for c in unbounded),
    )
