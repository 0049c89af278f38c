#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_state
short_description: Compare the running dockerd with daemon.json, and say what a restart does to running containers
version_added: 0.1.0
description:
  - Reads only, unless it is given O(timer_bundles). The roles that restart dockerd call it before the restart (the
    plan) and after it (the check).
  - Before, it lists the running containers and splits them by what a restart does to them given their restart policy,
    C(live-restore) and whether the storage driver changes; and it says whether the running daemon still waits for
    the file (a run interrupted after writing daemon.json and before the restart).
  - After, it checks every key it is given against what the daemon reports (C(GET /info); after a reload, the
    configuration dockerd logs when it applies one; after a restart, the start itself), collects dockerd's errors
    about a refused reload, and says which containers that ran before came back, stayed stopped, or were left
    running outside Docker's control (a containerd-shim or a process in the container's cgroup with no container
    running in Docker).
  - With O(settings), it also plans the change of the file as M(postmortem.remediation.docker_daemon_config) with
    the same settings would (merge, coercion, and the same refusals of keys dockerd does not know, keys the unit
    already sets with a flag, a file that is not valid JSON, a link to nothing) and decides what a run that writes it
    does next (RV(decision)). With O(log_report), it also reports every container's log configuration as
    M(postmortem.remediation.docker_log_info) does. The docker_log_rotation role reads all of it in this one call.
  - With O(timer_bundles), it first installs each bundle as M(postmortem.remediation.timer_bundle) would, in the
    same call, then reads. C(playbooks/harden_docker_hosts.yml) hands it the bundles of the docker_prune_timer and
    docker_signals roles, so that an idempotent harden run costs one module call per host instead of three (each
    call's fixed cost, Python start-up and AnsiballZ, is most of an idempotent run).
  - Talks to the Docker Engine API over its Unix socket with the standard library, and reads systemd and the journal
    with C(systemctl) and C(journalctl).
author:
  - Postmortem Remediation Maintainers (@postmortem-remediation)
options:
  daemon_config:
    description: The daemon configuration file.
    type: path
    default: /etc/docker/daemon.json
  service_name:
    description: The systemd unit of dockerd, read for its process, its start time and its journal.
    type: str
    default: docker
  record_file:
    description:
      - The record a run leaves once it has checked that dockerd runs the file (RV(applied_record) written there).
      - A file written after dockerd started and not covered by this record counts as not applied yet.
    type: path
    default: /var/lib/postmortem-remediation/dockerd-applied.json
  keys:
    description: The daemon.json keys to check against the running daemon (the keys a change touched).
    type: list
    elements: str
    default: []
  expected:
    description:
      - The configuration the keys are checked against. Defaults to the content of O(daemon_config).
      - The roles pass the file they wrote, so a check that runs after a rollback still names what was asked.
    type: dict
  reload_since:
    description:
      - Unix time just before a reload was signalled. The journal from then on is read for dockerd's verdict on the
        reload (the configuration it applied, or its error).
    type: float
  driver_change:
    description:
      - The restart switches the storage driver. Every running container stops and is hidden under the new driver
        (with C(live-restore) it would keep running outside Docker's control), whatever its restart policy.
    type: bool
    default: false
  live_restore:
    description:
      - Whether C(live-restore) will be in effect when dockerd stops. Defaults to what the running daemon reports;
        a role that reloads C(live-restore=true) before restarting passes true.
    type: bool
  before:
    description:
      - The RV(running) list of an earlier call. The result then says which of them came back, stayed stopped, or
        were orphaned.
    type: list
    elements: dict
    default: []
  settings:
    description:
      - Settings to merge into O(daemon_config), as O(postmortem.remediation.docker_daemon_config#module:settings).
        The file is not written; the plan is in RV(plan) and what a run that writes it does next in RV(decision).
      - Checked with the rules M(postmortem.remediation.docker_daemon_config) applies before it writes (with its
        default O(postmortem.remediation.docker_daemon_config#module:allow_unknown_keys=false)); the check with
        C(dockerd --validate) is left to the write.
      - When O(live_restore) is not given and the planned file turns C(live-restore) on, RV(will_stop) counts it in
        effect at the stop, because the run reloads it first (RV(decision.live_restore_first)).
    type: dict
  log_report:
    description:
      - Also report the log configuration of every container, stopped ones included, in RV(log_report), from the
        same reads of the Engine API.
    type: bool
    default: false
  timer_bundles:
    description:
      - Bundles to install before the read, in this order, each as M(postmortem.remediation.timer_bundle) installs
        one (directories, files, units, the timer), with the same checks, backups, check mode and diff.
      - Each item takes the options of M(postmortem.remediation.timer_bundle) and a C(name), which names it in
        messages and in RV(timer_bundles). Every item is checked before the first is installed.
      - A bundle that fails stops the call, naming the bundle; RV(timer_bundles) then lists the bundles installed
        before it.
      - The text of the files and units is not logged nor echoed in the result's C(invocation) (size and SHA-256
        instead), as with M(postmortem.remediation.timer_bundle).
    type: list
    elements: dict
    default: []

  timeout:
    default: 30
extends_documentation_fragment:
  - postmortem.remediation.attributes
  - postmortem.remediation.attributes.actiongroup_docker
  - postmortem.remediation.docker_api
attributes:
  check_mode:
    support: full
    details:
      - Reads the same in check mode. O(timer_bundles) are planned and not installed, as with
        M(postmortem.remediation.timer_bundle) in check mode.
  diff_mode:
    support: full
    details: The diff of every file and unit of O(timer_bundles) that changes; the read has nothing to diff.
  idempotent:
    support: full
    details: The read never changes the host; a second run with the same O(timer_bundles) changes nothing."""

EXAMPLES = r"""
- name: Plan the restart
  postmortem.remediation.docker_daemon_state:
  register: before

- name: Name the containers the restart would stop
  ansible.builtin.debug:
    msg: "{{ before.will_stop | map(attribute='name') | list }}"

- name: Plan a daemon.json change, read the daemon and the containers' log limits in one call
  postmortem.remediation.docker_daemon_state:
    settings:
      log-driver: local
      log-opts:
        max-size: 10m
    log_report: true
  register: state

- name: Say what a run that writes it would do
  ansible.builtin.debug:
    msg: >-
      {{ state.plan.changed_keys }} change; then {{ state.decision.action or 'nothing' }};
      {{ state.log_report.unbounded | length }} container(s) with unbounded logs

- name: After the restart, check the changed keys and the containers
  postmortem.remediation.docker_daemon_state:
    keys: [log-driver, log-opts]
    before: "{{ before.running }}"
  register: after
  failed_when: after.mismatched | length > 0 or after.orphans | length > 0
"""

RETURN = r"""
timer_bundles:
  description:
    - One result per item of O(timer_bundles), in their order, with the keys M(postmortem.remediation.timer_bundle)
      returns (RV(postmortem.remediation.timer_bundle#module:changed_files),
      RV(postmortem.remediation.timer_bundle#module:timer) with its plan...) and the bundle's C(name).
    - C(changed) of the whole call is true when one of them changed.
  returned: always
  type: list
  elements: dict
  sample: [{name: docker_prune_timer, changed: false, changed_files: [], changed_units: [], timer: {plan: ""}}]
daemon:
  description: The running daemon.
  returned: always
  type: dict
  contains:
    reachable:
      description: Whether the Engine API answered.
      type: bool
    pid:
      description: The main process of the unit (0 when it is not running).
      type: int
    started_at:
      description: Unix time the main process started, or null.
      type: float
    live_restore:
      description: Whether live-restore is in effect now.
      type: bool
    log_driver:
      description: The default log driver.
      type: str
    storage_driver:
      description: The storage driver.
      type: str
config:
  description: The file, with its modification time and checksum (SHA-1), and whether it exists.
  returned: always
  type: dict
pending:
  description:
    - C(restart) or C(reload) when the running daemon does not run the file yet, empty when it does.
  returned: always
  type: str
pending_reasons:
  description: Why the daemon counts as not running the file.
  returned: always
  type: list
  elements: str
checks:
  description: One entry per O(keys) item, with the value asked, the value the daemon runs, where it was read, and ok.
  returned: always
  type: list
  elements: dict
mismatched:
  description: Human-readable line for each check that failed (ok false).
  returned: always
  type: list
  elements: str
unverified:
  description: Keys nothing could check (ok null) because the daemon reports them nowhere.
  returned: always
  type: list
  elements: str
reload_errors:
  description: Errors dockerd logged about the reload signalled at O(reload_since) (it keeps the old values then).
  returned: always
  type: list
  elements: str
reload_applied:
  description: Whether dockerd logged that it applied the reload signalled at O(reload_since).
  returned: always
  type: bool
running:
  description: The running containers, with their restart policy and main process.
  returned: always
  type: list
  elements: dict
will_stop:
  description: Running containers a restart stops and does not start again, each with why.
  returned: always
  type: list
  elements: dict
may_stop:
  description: Running containers with restart policy on-failure, started again only if they exit non-zero.
  returned: always
  type: list
  elements: dict
will_return:
  description: Running containers that a restart keeps running or starts again.
  returned: always
  type: list
  elements: dict
came_back:
  description: Containers of O(before) running now.
  returned: always
  type: list
  elements: dict
stopped:
  description: Containers of O(before) not running now and left with no process (visible says whether docker lists it).
  returned: always
  type: list
  elements: dict
orphans:
  description: Containers of O(before) that docker does not run while their shim or processes still run.
  returned: always
  type: list
  elements: dict
applied_record:
  description: What to write to O(record_file) once the daemon is known to run the file.
  returned: always
  type: dict
plan:
  description:
    - What writing O(settings) into O(daemon_config) changes, as M(postmortem.remediation.docker_daemon_config)
      returns it in check mode.
  returned: when O(settings) is given
  type: dict
  contains:
    changed_keys:
      description: Top-level keys whose value would change.
      type: list
      elements: str
    restart_needed:
      description: True when a changed key is only read by dockerd at start.
      type: bool
    reload_enough:
      description: True when the file would change and every changed key is applied by a reload (SIGHUP).
      type: bool
    config:
      description: The configuration the file would hold.
      type: dict
decision:
  description: What a run that writes RV(plan) does next.
  returned: when O(settings) is given
  type: dict
  contains:
    action:
      description:
        - C(restart) when a changed key is read only at start or the daemon waits for a restart (RV(pending)),
          C(reload) when a reload applies the change or what the daemon waits for, empty when there is nothing to
          apply.
      type: str
    check_keys:
      description:
        - The keys to check against the daemon after the restart or reload (O(keys) of that call), that is the
          changed keys and, when the daemon does not run the file yet, every key of the planned file.
      type: list
      elements: str
    write:
      description: Whether the file changes (the plan has changed keys).
      type: bool
    live_restore_first:
      description:
        - The action is a restart, the planned file turns C(live-restore) on and the daemon does not run it yet.
          Reload first, so that the running containers keep running through the restart.
      type: bool
log_report:
  description:
    - Every container's log configuration, with the keys M(postmortem.remediation.docker_log_info) returns, that is
      C(containers), C(unbounded) (largest first), C(unbounded_log_bytes) and C(daemon_log_driver).
  returned: when O(log_report=true) and the Engine API answered
  type: dict
"""

import hashlib
import json
import os
import time
from collections.abc import Iterable
from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.postmortem.remediation.plugins.module_utils._container_logs import log_report
from ansible_collections.postmortem.remediation.plugins.module_utils._daemon_config import (
    ConfigError,
    change_summary,
    exec_start_command,
    parse_existing,
    plan,
    validate,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._daemon_state import (
    after_restart,
    apply_decision,
    container_summary,
    describe_mismatch,
    key_checks,
    pending_apply,
    reload_outcome,
    restart_plan,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._docker_api import (
    DockerAPIError,
    docker_api_argument_spec,
    docker_api_from_module,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._files import WriteTargetError, write_target
from ansible_collections.postmortem.remediation.plugins.module_utils._timer_bundle import BundleModule, run_bundles


class DaemonState:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.api = docker_api_from_module(module)
        self.exec_start = ""
        self.inspected: list[dict[str, Any]] = []

    def read_file(self) -> tuple[bytes | None, float | None]:
        """The bytes of the file and its modification time, (None, None) when it cannot be read."""
        path = self.params["daemon_config"]
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
            return raw, os.stat(path).st_mtime
        except (IOError, OSError):
            return None, None

    def read_config(self, raw: bytes | None, mtime: float | None) -> tuple[dict[str, Any], dict[str, Any]]:
        path = self.params["daemon_config"]
        if raw is None:
            return dict(path=path, exists=False, mtime=None, checksum=None), {}
        try:
            config = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except ValueError as exc:
            self.module.fail_json(msg="%s is not valid JSON (%s): cannot compare it with the running dockerd"
                                  % (path, exc))
        if not isinstance(config, dict):
            config = {}
        return dict(path=path, exists=True, mtime=mtime, checksum=hashlib.sha1(raw).hexdigest()), config

    def plan_settings(self, raw: bytes | None) -> dict[str, Any]:
        """What docker_daemon_config with these settings would write, refused for the same reasons, nothing written."""
        path = self.params["daemon_config"]
        if raw is None and os.path.exists(path):
            self.module.fail_json(msg="Cannot read %s: it exists but could not be opened" % path)
        try:
            write_target(path)  # a link to nothing is refused, as the write would refuse it
            current = parse_existing(raw.decode("utf-8"), path) if raw is not None else {}
            desired = plan(current, self.params["settings"])
        except WriteTargetError as exc:
            self.module.fail_json(msg="Refusing to write %s: %s" % (path, exc), path=path)
        except UnicodeDecodeError as exc:
            self.module.fail_json(msg="Cannot read %s: %s" % (path, to_native(exc)))
        except ConfigError as exc:
            self.module.fail_json(msg=to_native(exc), path=path)
        problems = validate(desired, False, self.exec_start)
        if problems:
            self.module.fail_json(msg="Refusing to write %s: %s" % (path, "; ".join(problems)), problems=problems,
                                  path=path)
        return change_summary(current, desired)

    def unit_process(self) -> tuple[int, float | None]:
        """(main PID, Unix start time) of the unit's main process, from systemd's monotonic start stamp.

        The same call reads the unit's ExecStart, which the plan of O(settings) checks flags against.
        """
        systemctl = self.module.get_bin_path("systemctl")
        if not systemctl:
            return 0, None
        rc, out, _err = self.module.run_command(
            [systemctl, "show", self.params["service_name"], "--property=MainPID",
             "--property=ExecMainStartTimestampMonotonic", "--property=ExecStart"], environ_update={"LANG": "C"})
        if rc != 0:
            return 0, None
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self.exec_start = exec_start_command(values.get("ExecStart") or "")
        pid = int(values.get("MainPID") or 0)
        monotonic = int(values.get("ExecMainStartTimestampMonotonic") or 0)
        if not pid or not monotonic:
            return pid, None
        # systemd stamps with CLOCK_MONOTONIC: carry it over to wall-clock time, to the microsecond.
        return pid, round(time.time() - (time.monotonic() - monotonic / 1e6), 3)

    def read_record(self) -> dict[str, Any]:
        try:
            with open(self.params["record_file"]) as handle:
                record = json.load(handle)
        except (IOError, OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def journal_since(self, since: float) -> list[str]:
        journalctl = self.module.get_bin_path("journalctl")
        if not journalctl:
            return []
        rc, out, _err = self.module.run_command(
            [journalctl, "--unit", self.params["service_name"], "--since", "@%d" % int(since), "--output",
             "short-unix", "--no-pager"], environ_update={"LANG": "C"})
        if rc != 0:
            return []
        lines = []
        for line in out.splitlines():
            stamp, _sep, rest = line.partition(" ")
            try:
                if float(stamp) < since:
                    continue  # --since has whole seconds; a reload earlier in the same second is not this one
            except ValueError:
                pass
            lines.append(rest)
        return lines

    def containers(self) -> dict[str, dict[str, Any]]:
        """Every container docker lists now, by ID, summarised."""
        result = {}
        for item in self.api.containers(all=True):
            try:
                inspected = self.api.inspect_container(item["Id"])
            except DockerAPIError as exc:
                if exc.status != 404:  # removed since the listing
                    raise
                continue
            self.inspected.append(inspected)
            result[item["Id"]] = container_summary(inspected)
        return result

    @staticmethod
    def leftover_processes(ids: Iterable[str]) -> set[str]:
        """IDs among these that still have a containerd-shim or a process in their cgroup on this host."""
        wanted = set(ids)
        found: set[str] = set()
        if not wanted:
            return found
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            for name in ("cmdline", "cgroup"):
                try:
                    with open("/proc/%s/%s" % (entry, name), "rb") as handle:
                        text = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
                except (IOError, OSError):
                    continue
                if name == "cmdline" and "containerd-shim" not in text:
                    continue
                found.update(container_id for container_id in wanted if container_id in text)
        return found

    def run(self) -> dict[str, Any]:
        params = self.params
        raw, mtime = self.read_file()
        pid, started_at = self.unit_process()
        # Planned first, so a file docker_daemon_config refuses is refused with its message.
        planned = self.plan_settings(raw) if params["settings"] is not None else None
        config_info, file_config = self.read_config(raw, mtime)
        expected = params["expected"] if params["expected"] is not None else file_config
        record = self.read_record()
        unreachable = ""
        try:
            info = self.api.info()
            all_containers = self.containers()
        except DockerAPIError as exc:
            info, all_containers = None, {}
            unreachable = str(exc)
        result: dict[str, Any] = dict(
            changed=False, config=config_info, pending="", pending_reasons=[], checks=[], mismatched=[],
            unverified=[], reload_errors=[], reload_applied=False, running=[], will_stop=[], may_stop=[],
            will_return=[], came_back=[], stopped=[], orphans=[],
            daemon=dict(reachable=info is not None, pid=pid, started_at=started_at,
                        live_restore=bool(info and info.get("LiveRestoreEnabled")),
                        log_driver=(info or {}).get("LoggingDriver"), storage_driver=(info or {}).get("Driver")),
            applied_record=dict(pid=pid, started_at=started_at, checksum=config_info["checksum"],
                                path=config_info["path"]),
        )
        if planned is not None:
            result["plan"] = planned
            result["decision"] = apply_decision(planned, "", result["daemon"]["live_restore"])
        if info is None:
            result["daemon"]["error"] = unreachable
            # Nothing to compare with; after a restart the caller retries until the daemon answers.
            return result
        if params["log_report"]:
            result["log_report"] = log_report(self.inspected, info)

        covered = bool(record) and record.get("checksum") == config_info["checksum"] \
            and record.get("pid") == pid and started_at is not None \
            and abs(float(record.get("started_at") or 0) - started_at) < 1.0
        result["pending"], result["pending_reasons"] = pending_apply(
            file_config, info, config_info["mtime"], started_at, covered)
        if planned is not None:
            result["decision"] = apply_decision(planned, result["pending"], result["daemon"]["live_restore"])

        reloaded = None
        if params["reload_since"] is not None:
            reloaded, result["reload_errors"] = reload_outcome(self.journal_since(params["reload_since"]))
            result["reload_applied"] = reloaded is not None
        read_at_start = started_at is not None and config_info["mtime"] is not None \
            and started_at >= config_info["mtime"]
        checks = key_checks(expected, params["keys"], info, reloaded, read_at_start)
        result["checks"] = checks
        result["mismatched"] = [describe_mismatch(check) for check in checks if check["ok"] is False]
        result["unverified"] = [check["key"] for check in checks if check["ok"] is None]

        running = [c for c in all_containers.values() if c["running"]]
        live_restore = params["live_restore"] if params["live_restore"] is not None \
            else result["daemon"]["live_restore"] or bool(planned and planned["config"].get("live-restore") is True)
        result["running"] = sorted(running, key=lambda c: c["name"])
        result["will_stop"], result["may_stop"], result["will_return"] = restart_plan(
            result["running"], live_restore, params["driver_change"])

        before = params["before"] or []
        if before:
            gone = [c["id"] for c in before if not (all_containers.get(c["id"]) or {}).get("running")]
            result["came_back"], result["stopped"], result["orphans"] = after_restart(
                before, all_containers, self.leftover_processes(gone))
        return result


class StateModule(BundleModule):
    """BundleModule (no file text in the journal or the invocation) whose failures also carry the results of the
    timer bundles installed before them, so that a failed call still says what it changed."""

    bundle_results: list[dict] = []

    def fail_json(self, msg: str, **kwargs: Any) -> NoReturn:
        kwargs.setdefault("timer_bundles", self.bundle_results)
        # A failing bundle's own result says what it changed before it failed; the bundles before it changed too.
        kwargs["changed"] = bool(kwargs.get("changed")) or any(result.get("changed") for result in self.bundle_results)
        super().fail_json(msg=msg, **kwargs)


def main() -> None:
    module = StateModule(
        argument_spec=dict(
            daemon_config=dict(type="path", default="/etc/docker/daemon.json"),
            service_name=dict(type="str", default="docker"),
            record_file=dict(type="path", default="/var/lib/postmortem-remediation/dockerd-applied.json"),
            keys=dict(type="list", elements="str", default=[], no_log=False),
            expected=dict(type="dict"),
            reload_since=dict(type="float"),
            driver_change=dict(type="bool", default=False),
            live_restore=dict(type="bool"),
            before=dict(type="list", elements="dict", default=[]),
            settings=dict(type="dict"),
            log_report=dict(type="bool", default=False),
            timer_bundles=dict(type="list", elements="dict", default=[]),
            **docker_api_argument_spec(timeout=30)
        ),
        supports_check_mode=True,
    )
    # Installed first: the read then sees what they installed (a drop-in of docker.service, for one).
    module.bundle_results = []
    diffs = run_bundles(module, module.params["timer_bundles"], module.bundle_results)
    result = DaemonState(module).run()
    result["timer_bundles"] = module.bundle_results
    result["changed"] = any(bundle["changed"] for bundle in module.bundle_results)
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
