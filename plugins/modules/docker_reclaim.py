#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_reclaim
short_description: Free space on the Docker data-root filesystem, tier by tier, until a target is met
version_added: 0.1.0
description:
  - Emergency reclaim for a Docker host whose data-root filesystem is filling up. Goes through tiers in a
    fixed order and stops as soon as the free space on the filesystem that holds the engine's data-root
    reaches O(target_free).
  - "The order: V(build_cache) (build cache not used for O(min_age)), V(stopped_containers) (oldest first),
    V(dangling_images), V(unused_images) (oldest first), V(container_logs) (json-file logs of running
    containers above O(log_max_size), truncated in place keeping their last O(log_keep_tail) bytes, never
    deleted because dockerd holds them open), and V(volumes) only when O(volumes=true)."
  - Never removes an image that any remaining container uses (running or stopped), a parent of such an
    image, or any object carrying the O(keep_label) label. Never removes a stopped container that has a
    restart policy or belongs to a Compose project (a service stopped by a backup job is not a leftover).
  - Free space is measured on the filesystem itself (like C(df)'s Avail column) after every removal, not
    taken from the engine's size estimates.
  - Plans first, through the collection's shared deletion guard. One full read of the engine's state (disk
    usage, every container's inspect, every image's parent) must succeed and be plausible (a container list
    that is empty while the engine counts containers would make every image look unused). Otherwise the
    module refuses, touching nothing, with RV(refused=true) and the reason in C(msg).
  - Reads the engine's state again before each tier; a read that fails or is implausible stops the run there,
    reporting what the earlier tiers already removed.
  - Holds the lock file shared with the C(docker_prune_timer) role's service, so the two never run at once.
  - Talks to the Docker Engine API over its Unix socket with the Python standard library.
author:
  - postmortem.remediation maintainers (@postmortem-remediation)
options:
  target_free:
    description:
      - Free space wanted on the data-root filesystem, in bytes, as a size (V(500M), V(2G), V(1.5GiB);
        binary units) or as a percentage of the filesystem size (V(15%)).
      - Required, except with O(tiers=[container_logs]) alone. Without a target every log above O(log_max_size)
        is cut, whatever the free space (a runaway log, before it fills the disk).
    type: str
  tiers:
    description:
      - Which tiers may run. They always run in the order described above, whatever the order here.
      - V(volumes) also needs O(volumes=true).
    type: list
    elements: str
    choices: [build_cache, stopped_containers, dangling_images, unused_images, container_logs, volumes]
    default: [build_cache, stopped_containers, dangling_images, unused_images, container_logs]
  volumes:
    description:
      - Also remove volumes that no container references, as the last tier. Volumes hold data; off by default.
    type: bool
    default: false
  keep_label:
    description:
      - Label key that protects containers, images and volumes; objects carrying it (with any value except
        V(false), V(0) or V(no)) are never removed, and the logs of containers carrying it are not truncated.
    type: str
    default: postmortem.remediation.keep
  min_age:
    description:
      - Spare build cache, stopped containers and images younger than this (V(30s), V(10m), V(24h), V(7d)).
        Build cache age is the time since it was last used; a container's is the time since it stopped.
    type: str
    default: "0s"
  log_max_size:
    description:
      - Truncate json-file logs of running containers that are larger than this.
    type: str
    default: 100M
  containers:
    description:
      - Only the logs of these containers (names or IDs) are considered. Only with O(tiers=[container_logs]).
      - A name that matches no running container is not an error; RV(removed) then names nothing for it.
    type: list
    elements: str
    default: []
  log_keep_tail:
    description:
      - How much of the end of a truncated log to keep, cut at a line start so every kept line is whole.
        V(0) empties the log.
    type: str
    default: 1M
  data_root:
    description:
      - Path on the filesystem to measure. Defaults to the engine's C(DockerRootDir). The module refuses a
        path that is not on the same filesystem as the engine's data-root.
    type: path
  lock_file:
    description:
      - Lock file shared with the C(docker_prune_timer) service.
    type: path
    default: /run/lock/postmortem-docker-prune.lock
  lock_timeout:
    description:
      - Seconds to wait for a running prune to finish before failing.
    type: int
    default: 120
  timeout:
    description:
      - Seconds to wait for one Engine API call (image removal and build cache pruning can be slow).
    default: 300
extends_documentation_fragment:
  - postmortem.remediation.attributes
  - postmortem.remediation.attributes.actiongroup_docker
  - postmortem.remediation.docker_api
attributes:
  check_mode:
    support: full
    details: Estimates per tier from the engine's sizes; removes nothing and truncates nothing.
  diff_mode:
    support: full
    details: Free space before and after, and the objects removed (or that would be removed).
  idempotent:
    support: full
    details: When the target is already met nothing runs and the module reports no change.
notes:
  - A truncated log is not backed up; freeing its space is the point. The kept tail stays in place.
  - Lines a container writes during the few milliseconds of a truncation may be lost.
  - Estimates in check mode are the engine's figures; layers shared between images make them approximate.
  - O(data_root), O(docker_host) and O(lock_file) follow the path rules of every destructive module of the
    collection (absolute, no empty component or trailing C(/), no C(.) or C(..)); the module fails before anything
    else when one does not.
  - One build cache prune removes every record older than O(min_age), whatever the target, so the estimate of the
    V(build_cache) tier counts them all (it used to stop at the target and came out about three times low).
seealso:
  - name: Disk pressure guide
    description: docs/disk_pressure.md in this collection.
    link: https://github.com/postmortem/remediation/blob/main/docs/disk_pressure.md
"""

EXAMPLES = r"""
- name: Free space until 15 % of the Docker filesystem is free
  postmortem.remediation.docker_reclaim:
    target_free: 15%
  register: reclaim

- name: Estimate what each tier would free, touching nothing
  postmortem.remediation.docker_reclaim:
    target_free: 5G
  check_mode: true

- name: Cut the runaway log of one container to its last megabyte, whatever the free space
  postmortem.remediation.docker_reclaim:
    tiers: [container_logs]
    containers: [api-1]
    log_max_size: 100M
    log_keep_tail: 1M

- name: Reclaim without touching logs, sparing anything younger than an hour
  postmortem.remediation.docker_reclaim:
    target_free: 2G
    tiers: [build_cache, stopped_containers, dangling_images, unused_images]
    min_age: 1h
"""

RETURN = r"""
target_met:
  description: Whether the free space reached the target (in check mode, whether it already had). Without
    O(target_free), true once every log above O(log_max_size) was cut (in check mode, when none is above it).
  returned: always
  type: bool
  sample: true
target_free_bytes:
  description: The target in bytes (0 without O(target_free)).
  returned: always
  type: int
  sample: 2147483648
free_before:
  description: Free bytes on the data-root filesystem before the run.
  returned: always
  type: int
  sample: 214748364
free_after:
  description: Free bytes after the run (in check mode, the same as RV(free_before)).
  returned: always
  type: int
  sample: 2362232012
size:
  description: Size of the data-root filesystem in bytes.
  returned: always
  type: int
  sample: 2620874752
data_root:
  description: The path whose filesystem was measured.
  returned: always
  type: str
  sample: /var/lib/docker
reclaimed:
  description: Bytes freed on the filesystem by each tier that ran.
  returned: always
  type: dict
  sample: {build_cache: 524288000, stopped_containers: 104857600}
removed:
  description: What each tier that ran removed (containers and images by name, truncated logs with sizes).
  returned: always
  type: dict
  sample: {stopped_containers: [ci-job-41], dangling_images: [3f2a9c1b7d20]}
tiers:
  description: One report per tier that ran, with what it removed, what failed, what it spared and why.
  returned: always
  type: list
  elements: dict
elapsed_seconds:
  description: How long the tiers took, lock wait excluded.
  returned: when tiers ran
  type: float
  sample: 12.4
protected:
  description:
    - The objects the tiers that ran had to spare (in use, keep label, restart policy, too young) that hold the
      most space, largest first (at most five), so that whoever escalates knows what stayed and why.
  returned: when the engine's state was read
  type: list
  elements: dict
  sample: [{name: "svc-web:latest (3f2a9c1b7d20)", tier: unused_images, reason: used by container web,
            bytes: 88080384, size: 84.0 MiB}]
refused:
  description:
    - Whether the module refused to act, touching nothing in the refused step. The guard refuses to plan on an
      engine state that is not plausible; a target larger than the filesystem is refused too.
  returned: always
  type: bool
  sample: false
reason:
  description: Why the guard refused, naming the check and the engine's answer; empty otherwise.
  returned: always
  type: str
  sample: "refused reclaim on /var/lib/docker: engine state: the engine listed no containers but counts 12:
    refusing to decide what is unused"
guard:
  description: The guard's checks on the plan (see the shared deletion guard), with their outcome.
  returned: when the engine's state was read
  type: dict
  sample: {subject: reclaim on /var/lib/docker, allowed: true, reason: "", checks: [{name: engine state, ok: true}]}
plan:
  description: Check mode only. Per tier, the estimated bytes, whether it would run to meet the target, and
    what it would remove.
  returned: check mode
  type: list
  elements: dict
  sample: [{tier: build_cache, would_run: true, estimated_bytes: 524288000, would_remove: [regular abc]}]
estimated_free_after:
  description: Check mode only. Free bytes expected after the tiers that would run.
  returned: check mode
  type: int
"""

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.postmortem.remediation.plugins.module_utils._deletion_guard import (
    Verdict,
    check_path_options,
    check_path_values,
    refusal,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._docker_api import (
    DockerAPIError,
    docker_api_argument_spec,
    docker_api_from_module,
    socket_path,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._prune_policy import (
    DEFAULT_KEEP_LABEL,
    DEFAULT_LOCK_FILE,
    DEFAULT_TIERS,
    TIERS,
    EngineState,
    PolicyError,
    Reclaimer,
    acquire_lock,
    filesystem_usage,
    human_bytes,
    largest_protected,
    parse_duration,
    parse_size,
    parse_target,
    select_tiers,
    target_bytes,
)


T = TypeVar("T")


class ReclaimManager:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        params = module.params
        self.tiers = self._option("tiers", lambda tiers: select_tiers(tiers, params["volumes"]))
        logs_only = self.tiers == ["container_logs"]
        if params["target_free"] is None and not logs_only:
            module.fail_json(msg="docker_reclaim: target_free is required unless tiers is [container_logs] alone "
                                 "(without a target, every candidate of a tier would go)")
        if params["containers"] and not logs_only:
            module.fail_json(msg="docker_reclaim: containers selects logs to cut; it needs tiers: [container_logs] "
                                 "alone, not %s" % ", ".join(self.tiers))
        self.target = None if params["target_free"] is None else self._option("target_free", parse_target)
        min_age = self._option("min_age", parse_duration)
        log_max_size = self._option("log_max_size", parse_size)
        log_keep_tail = self._option("log_keep_tail", parse_size)
        self.api = docker_api_from_module(module)
        self.data_root = self._data_root()
        self.reclaimer = Reclaimer(
            self.api, self.data_root, self.tiers, keep_label=params["keep_label"],
            min_age=dict((tier, min_age) for tier in ("build_cache", "stopped_containers",
                                                      "dangling_images", "unused_images")),
            log_max_size=log_max_size, log_keep_tail=log_keep_tail, containers=params["containers"],
        )

    def _option(self, name: str, parse: Callable[[Any], T]) -> T:
        try:
            return parse(self.module.params[name])
        except PolicyError as exc:
            self.module.fail_json(msg="docker_reclaim: invalid option %s: %s" % (name, exc))

    def _data_root(self) -> str:
        try:
            engine_root = self.api.info().get("DockerRootDir") or "/var/lib/docker"
        except DockerAPIError as exc:
            self.module.fail_json(msg="docker_reclaim: cannot read the engine's data-root: %s" % exc)
        wanted = self.module.params["data_root"] or engine_root
        try:
            if os.stat(wanted).st_dev != os.stat(engine_root).st_dev:
                self.module.fail_json(
                    msg="docker_reclaim: %s is not on the filesystem of the engine's data-root %s; measuring it "
                        "would not tell whether reclaiming helped. Leave data_root unset." % (wanted, engine_root))
        except OSError as exc:
            self.module.fail_json(msg="docker_reclaim: cannot stat the data-root %s: %s" % (wanted, exc))
        return wanted

    def run(self) -> dict[str, Any]:
        free_before, size = filesystem_usage(self.data_root)
        # No target (logs only): every log above log_max_size is cut; the reclaimer never stops early.
        target = None if self.target is None else target_bytes(self.target, size)
        result: dict[str, Any] = dict(
            changed=False, target_free_bytes=target or 0, free_before=free_before, free_after=free_before, size=size,
            data_root=self.data_root, reclaimed={}, removed={}, tiers=[], refused=False, reason="")
        if target is not None and target >= size:
            # Refused like any plan that cannot work: whoever reads refused/reason learns why nothing ran.
            reason = ("target %s (%s) is more than the %s filesystem holding %s: it can never be met"
                      % (self.module.params["target_free"], human_bytes(target), human_bytes(size), self.data_root))
            result.update(refused=True, reason=reason, target_met=False)
            self.module.fail_json(msg="docker_reclaim: " + reason, **result)
        if target is not None and free_before >= target:
            result.update(target_met=True, msg="%s free on %s, target %s already met: nothing to do"
                          % (human_bytes(free_before), self.data_root, human_bytes(target)))
            return result
        plan, free_after = self._plan(result, target)
        if self.module.check_mode:
            return self._estimate(result, target, plan, free_after)
        return self._reclaim(result, target)

    def _plan(self, result: dict[str, Any], target: int | None) -> tuple[list[dict], int]:
        """Plan first: read the engine's whole state and estimate every tier, under the shared deletion guard."""
        verdict = Verdict("reclaim on %s" % self.data_root)
        try:
            state = EngineState(self.api, with_volumes="volumes" in self.tiers)
        except DockerAPIError as exc:
            verdict.require("engine state", False, "engine state: could not be read: %s" % exc)
        except PolicyError as exc:
            verdict.require("engine state", False, "engine state: %s" % exc)
        else:
            verdict.require("engine state", True, "")
        result["guard"] = verdict.as_dict()
        if not verdict.allowed:
            # A refusal always fails: an emergency reclaim that does nothing must reach whoever runs it.
            result.update(refusal(verdict, "fail")[1])
            self.module.fail_json(**result)
        return self.reclaimer.estimate(state, target)

    def _estimate(self, result: dict[str, Any], target: int | None, plan: list[dict], free_after: int,
                  ) -> dict[str, Any]:
        would = dict((t["tier"], t["would_remove"]) for t in plan if t["would_run"])
        result.update(changed=bool(would), plan=plan, estimated_free_after=free_after,
                      target_met=target is None and not would, protected=largest_protected(plan),
                      msg="%s free, target %s: would run %s, expecting about %s free"
                          % (human_bytes(result["free_before"]), self._target_text(target),
                             ", ".join(would) or "no tier", human_bytes(free_after)))
        if self.module._diff:
            result["diff"] = self._diff(result["free_before"], free_after, would)
        return result

    def _reclaim(self, result: dict[str, Any], target: int | None) -> dict[str, Any]:
        try:
            lock = acquire_lock(self.module.params["lock_file"], self.module.params["lock_timeout"])
        except OSError as exc:
            self.module.fail_json(msg="docker_reclaim: cannot take the lock %s: %s: %s; nothing was removed"
                                      % (self.module.params["lock_file"], type(exc).__name__, exc), **result)
        if lock is None:
            self.module.fail_json(msg="docker_reclaim: another prune holds %s after %ss; try again when it ends"
                                      % (self.module.params["lock_file"], self.module.params["lock_timeout"]),
                                  **result)
        started = time.time()
        try:
            reports = self.reclaimer.run(target=target, with_volumes="volumes" in self.tiers)
        except Exception as exc:
            # What was removed before the error is reported, whatever the error: the caller must not read this
            # failure as "nothing done".
            self._record(result, getattr(exc, "reports", []), target, started)
            self.module.fail_json(
                msg="docker_reclaim: stopped in tier %s, %s: %s; removed before the error: %s"
                    % (getattr(exc, "tier", "?"),
                       "the engine's state is not plausible" if isinstance(exc, PolicyError)
                       else "the engine failed" if isinstance(exc, DockerAPIError)
                       else "a file operation failed" if isinstance(exc, OSError)
                       else "an unexpected %s" % type(exc).__name__,
                       exc, self._removed_summary(result["removed"])),
                **result)
        finally:
            lock.close()
        self._record(result, reports, target, started)
        result["msg"] = "%s -> %s free on %s (target %s): %s" % (
            human_bytes(result["free_before"]), human_bytes(result["free_after"]), self.data_root,
            self._target_text(target),
            ("target met" if target is not None
             else "every log above %s cut" % human_bytes(self.reclaimer.log_max_size))
            if result["target_met"] else
            ("TARGET NOT MET after every allowed tier" if target is not None else "SOME LOGS COULD NOT BE CUT"))
        if self.module._diff:
            result["diff"] = self._diff(result["free_before"], result["free_after"], result["removed"])
        return result

    def _record(self, result: dict[str, Any], reports: list[dict], target: int | None, started: float) -> None:
        free_after = filesystem_usage(self.data_root)[0]
        removed = dict((r["tier"], r["removed"]) for r in reports if r["removed"])
        result.update(
            changed=bool(removed), tiers=reports, removed=removed, free_after=free_after,
            reclaimed=dict((r["tier"], r["reclaimed_bytes"]) for r in reports),
            target_met=(free_after >= target) if target is not None else not any(r["failed"] for r in reports),
            elapsed_seconds=round(time.time() - started, 3), protected=largest_protected(reports),
        )

    @staticmethod
    def _target_text(target: int | None) -> str:
        return "none (logs only)" if target is None else human_bytes(target)

    @staticmethod
    def _removed_summary(removed: dict[str, list[str]]) -> str:
        return ", ".join("%s x%d" % (tier, len(names)) for tier, names in removed.items()) or "nothing"

    def _diff(self, free_before: int, free_after: int, removed: dict[str, list[str]]) -> dict[str, str]:
        after = ["free: %s" % human_bytes(free_after)]
        for tier in TIERS:
            for name in removed.get(tier, []):
                after.append("removed (%s): %s" % (tier, name))
        return {"before": "free: %s\n" % human_bytes(free_before), "after": "\n".join(after) + "\n",
                "before_header": "%s (before)" % self.data_root, "after_header": "%s (after)" % self.data_root}


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            target_free=dict(type="str"),
            containers=dict(type="list", elements="str", default=[]),
            tiers=dict(type="list", elements="str", choices=list(TIERS), default=list(DEFAULT_TIERS)),
            volumes=dict(type="bool", default=False),
            keep_label=dict(type="str", default=DEFAULT_KEEP_LABEL),
            min_age=dict(type="str", default="0s"),
            log_max_size=dict(type="str", default="100M"),
            log_keep_tail=dict(type="str", default="1M"),
            data_root=dict(type="path"),
            lock_file=dict(type="path", default=DEFAULT_LOCK_FILE),
            lock_timeout=dict(type="int", default=120),
            **docker_api_argument_spec(timeout=300)
        ),
        supports_check_mode=True,
    )
    check_path_options(module, ("data_root", "lock_file"))  # the rules of every destructive module
    try:
        check_path_values(module, {"docker_host": socket_path(module.params["docker_host"])})
    except ValueError as exc:
        module.fail_json(msg="invalid path: %s" % exc, refused=True, reason=str(exc), changed=False)
    try:
        module.exit_json(**ReclaimManager(module).run())
    except Exception as exc:  # an error nothing above expects: named, never a bare traceback
        module.fail_json(msg="docker_reclaim: unexpected %s: %s" % (type(exc).__name__, exc))


if __name__ == "__main__":
    main()
