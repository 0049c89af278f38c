# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# What the running dockerd uses compared with daemon.json, and what a restart does to running containers.
# Pure functions, no Ansible imports: the module docker_daemon_state gathers the inputs and calls these.

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from ansible_collections.postmortem.remediation.plugins.module_utils._daemon_config import RELOADABLE_KEYS

# daemon.json keys that GET /info reports, and how to read each from it.
INFO_KEYS = {
    "log-driver": lambda info: info.get("LoggingDriver"),
    "storage-driver": lambda info: info.get("Driver"),
    "live-restore": lambda info: info.get("LiveRestoreEnabled"),
    "debug": lambda info: info.get("Debug"),
    "data-root": lambda info: info.get("DockerRootDir"),
    "labels": lambda info: info.get("Labels") or [],
    "default-runtime": lambda info: info.get("DefaultRuntime"),
    "runtimes": lambda info: info.get("Runtimes") or {},
    "experimental": lambda info: info.get("ExperimentalBuild"),
    "registry-mirrors": lambda info: (info.get("RegistryConfig") or {}).get("Mirrors") or [],
    "insecure-registries": lambda info: _insecure_registries(info.get("RegistryConfig") or {}),
}

# Lists the daemon may extend with entries of its own (127.0.0.0/8 is always insecure): the file's must be there.
SUBSET_LISTS = ("insecure-registries",)

# Restart policies under which dockerd starts a container again when it comes back.
RETURNING_POLICIES = ("always", "unless-stopped")


def _insecure_registries(registry_config: dict[str, Any]) -> list[str]:
    names = [name for name, index in (registry_config.get("IndexConfigs") or {}).items()
             if isinstance(index, dict) and index.get("Secure") is False]
    return list(registry_config.get("InsecureRegistryCIDRs") or []) + names


def daemon_values(info: dict[str, Any]) -> dict[str, Any]:
    """The daemon.json keys GET /info reports, with the values the running daemon uses."""
    return dict((key, read(info)) for key, read in INFO_KEYS.items())


def _zero(value: Any) -> bool:
    return value in (None, False, 0, "", [], {})


def _norm(item: Any) -> str:
    if isinstance(item, str):
        return item.rstrip("/")  # dockerd adds a slash to registry mirrors
    return json.dumps(item, sort_keys=True)


def same(key: str, wanted: Any, actual: Any) -> bool:
    """Whether the daemon's value satisfies the file's, lenient where dockerd adds its own entries."""
    if actual is None:
        return _zero(wanted)
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(same(key, value, actual.get(name)) for name, value in wanted.items())
    if isinstance(wanted, list):
        if not isinstance(actual, list):
            return False
        wanted_set, actual_set = set(map(_norm, wanted)), set(map(_norm, actual))
        return wanted_set <= actual_set if key in SUBSET_LISTS else wanted_set == actual_set
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return wanted is actual
    if isinstance(wanted, (int, float)) and isinstance(actual, (int, float)):
        return wanted == actual
    return wanted == actual


_MSG = re.compile(r'\bmsg="((?:[^"\\]|\\.)*)"')
_CONFIG_FIELD = re.compile(r'\bconfig="((?:[^"\\]|\\.)*)"')
_LEVEL = re.compile(r'\blevel=(\w+)')


def _unquote(text: str) -> Any:
    try:
        return json.loads('"%s"' % text)
    except ValueError:
        return text


def reload_outcome(lines: Iterable[str]) -> tuple[dict[str, Any] | None, list[str]]:
    """What dockerd said about its last reload in these journal lines: (the configuration it runs, its errors).

    dockerd 20.10 logs `msg="Reloaded configuration: {json}"` when a reload was applied and an error-level line
    (`file configuration validation failed: ...`, `unable to configure the Docker daemon ...`) when it refused one
    and kept the old values. Newer engines put the JSON in a `config=` field. (None, []) when it said nothing yet.
    """
    config: dict[str, Any] | None = None
    errors: list[str] = []
    for line in lines:
        match = _MSG.search(line)
        message = _unquote(match.group(1)) if match else line
        if "Got signal to reload configuration" in message:
            config, errors = None, []  # only the outcome of the last signal counts
            continue
        if message.startswith("Reloaded configuration"):
            field = _CONFIG_FIELD.search(line)
            text = _unquote(field.group(1)) if field else message.partition(":")[2]
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            config = parsed if isinstance(parsed, dict) else {}
            continue
        level = _LEVEL.search(line)
        if level and level.group(1) in ("error", "fatal") and ("configur" in message or "reload" in message):
            errors.append(message)
    return config, errors


def key_checks(file_config: dict[str, Any], keys: Iterable[str], info: dict[str, Any] | None,
               reloaded: dict[str, Any] | None = None, read_at_start: bool = False) -> list[dict[str, Any]]:
    """One check per key: the value the file asks for against the value the running daemon reports.

    Sources, best first: GET /info; the configuration dockerd logged when it applied a reload; for a daemon started
    after the file was written, the start itself (dockerd reads the whole file and does not start on a bad value).
    `ok` is None when nothing can tell.
    """
    reported = daemon_values(info) if info else {}
    checks = []
    for key in keys:
        wanted = file_config.get(key)
        if key in reported:
            actual, source = reported[key], "docker info"
            ok = same(key, wanted, actual)
        elif reloaded is not None and key in RELOADABLE_KEYS:
            actual, source = reloaded.get(key), "the configuration dockerd logged on reload"
            ok = same(key, wanted, actual)
        elif read_at_start:
            actual, source, ok = wanted, "read at start (dockerd started after the file was written)", True
        else:
            actual, source, ok = None, "not reported by the daemon", None
        checks.append(dict(key=key, expected=wanted, actual=actual, source=source, ok=ok))
    return checks


def describe_mismatch(check: dict[str, Any]) -> str:
    return "%s: daemon.json says %s, dockerd runs %s (%s)" % (
        check["key"], json.dumps(check["expected"]), json.dumps(check["actual"]), check["source"])


def pending_apply(file_config: dict[str, Any], info: dict[str, Any] | None, file_mtime: float | None,
                  started_at: float | None, covered_by_record: bool) -> tuple[str, list[str]]:
    """Whether the running daemon still waits for the file: 'restart', 'reload' or '' and the reasons.

    A role run interrupted after writing daemon.json and before restarting leaves a file the daemon never read. The
    daemon's values (GET /info) show some of it; the rest shows as a file written after the daemon started that no
    verified run has applied since (the record a run leaves after it checked the daemon).
    """
    reasons, kind = [], ""
    for check in key_checks(file_config, [key for key in file_config if key in INFO_KEYS], info):
        if check["ok"] is False:
            reasons.append(describe_mismatch(check))
            kind = "restart" if check["key"] not in RELOADABLE_KEYS or kind == "restart" else "reload"
    if file_mtime is not None and started_at is not None and file_mtime > started_at and not covered_by_record:
        reasons.append(
            "daemon.json was written after dockerd started and no run has applied it since "
            "(an interrupted run, or an edit by hand)")
        kind = "restart"
    return kind, reasons


def container_summary(inspected: dict[str, Any]) -> dict[str, Any]:
    """The parts of GET /containers/{id}/json that say what a restart does to the container."""
    policy = (inspected.get("HostConfig") or {}).get("RestartPolicy") or {}
    state = inspected.get("State") or {}
    return dict(
        id=inspected["Id"],
        name=inspected.get("Name", "").lstrip("/"),
        restart_policy=policy.get("Name") or "no",
        running=bool(state.get("Running")),
        pid=state.get("Pid") or 0,
        driver=inspected.get("Driver", ""),
    )


def restart_plan(running: Iterable[dict[str, Any]], live_restore: bool, driver_change: bool,
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Split the running containers by what a restart of dockerd does to them.

    will_stop: stopped and not started again. may_stop: on-failure, started again only when it exits non-zero on the
    stop. will_return: started again by their restart policy, or kept running by live-restore.
    """
    will_stop, may_stop, will_return = [], [], []
    for container in running:
        entry = dict(container)
        if driver_change:
            entry["why"] = (
                "its storage driver goes away: with live-restore it would keep running outside Docker's control"
                if live_restore else "stopped, and hidden under the new storage driver")
            will_stop.append(entry)
        elif live_restore:
            entry["why"] = "live-restore keeps it running"
            will_return.append(entry)
        elif container["restart_policy"] in RETURNING_POLICIES:
            entry["why"] = "restart policy %s starts it again" % container["restart_policy"]
            will_return.append(entry)
        elif container["restart_policy"] == "on-failure":
            entry["why"] = "on-failure starts it again only if it exits non-zero when stopped"
            may_stop.append(entry)
        else:
            entry["why"] = "no restart policy: it stays stopped"
            will_stop.append(entry)
    return will_stop, may_stop, will_return


def after_restart(before: Iterable[dict[str, Any]], now_by_id: dict[str, dict[str, Any]], leftover_ids: set[str],
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Compare the containers that ran before the restart with what dockerd shows now.

    now_by_id: container ID -> summary for every container dockerd lists now. leftover_ids: IDs that still have a
    containerd-shim or a process in their cgroup. A container docker no longer runs while such a process is left is
    an orphan: running outside Docker's control.
    """
    came_back, stopped, orphans = [], [], []
    for container in before:
        now = now_by_id.get(container["id"])
        entry = dict(name=container["name"], id=container["id"], restart_policy=container["restart_policy"])
        if now is not None and now["running"]:
            came_back.append(entry)
            continue
        entry["visible"] = now is not None
        if container["id"] in leftover_ids:
            orphans.append(entry)
        else:
            stopped.append(entry)
    return came_back, stopped, orphans


def apply_decision(plan: dict[str, Any], pending: str, live_restore_now: bool) -> dict[str, Any]:
    """What a run that writes plan (docker_daemon_config's summary) does next, given what the daemon still waits for.

    action: 'restart', 'reload' or '' (nothing to apply). check_keys: the keys the daemon must run afterwards, what
    the plan changes and, when an earlier run left the file unapplied, every key of it. write: the file changes.
    live_restore_first: live-restore, on in the planned file and off in the daemon, is reloaded before the restart
    so that it keeps the running containers running.
    """
    restart = bool(plan["restart_needed"]) or pending == "restart"
    action = "restart" if restart else "reload" if plan["reload_enough"] or pending == "reload" else ""
    check_keys = set(plan["changed_keys"]) | (set(plan["config"]) if pending else set())
    return dict(
        action=action,
        check_keys=sorted(check_keys),
        write=bool(plan["changed_keys"]),
        live_restore_first=restart and plan["config"].get("live-restore") is True and not live_restore_now,
    )
