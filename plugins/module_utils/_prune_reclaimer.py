# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# The executor of the prune rules: one consistent read of the engine, then the tiers in order, measuring the
# filesystem after each removal; container logs are truncated in place. The engine client is passed in, so this file
# imports nothing else of the collection. Part of the rules in _prune_policy.py; copied beside the prune timer's
# script with them. Standard library only: it runs on managed hosts.

from __future__ import annotations

import os
import time
from urllib.parse import quote
from collections.abc import Callable, Iterable
from typing import Any

try:
    from ._prune_rules import DEFAULT_KEEP_LABEL, image_ancestry, matches_container, plan_build_cache, plan_volumes
    from ._prune_rules import plan_container_logs, plan_images, plan_stopped_containers
    from ._prune_units import PolicyError, human_bytes
except ImportError:  # copied beside the prune timer's script (roles/docker_prune_timer): a flat directory, no package
    from _prune_rules import DEFAULT_KEEP_LABEL, image_ancestry, matches_container  # type: ignore[no-redef]
    from _prune_rules import plan_build_cache, plan_volumes  # type: ignore[no-redef]
    from _prune_rules import plan_container_logs, plan_images, plan_stopped_containers  # type: ignore[no-redef]
    from _prune_units import PolicyError, human_bytes  # type: ignore[no-redef]


# ---------------------------------------------------------------------------------------------------------
# Log truncation
# ---------------------------------------------------------------------------------------------------------
def truncate_keep_tail(path: str, keep_tail: int) -> tuple[int, int]:
    """Truncate a log dockerd holds open, in place, keeping its last keep_tail bytes from a line start.

    dockerd appends with O_APPEND, so its next write lands at the new end. Lines written during the few
    milliseconds between reading the tail and truncating are lost. Returns (size_before, size_after).
    """
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        if keep_tail <= 0 or size <= keep_tail:
            tail = b"" if keep_tail <= 0 else None
        else:
            handle.seek(size - keep_tail)
            tail = handle.read(keep_tail)
            newline = tail.find(b"\n")
            tail = tail[newline + 1:] if newline >= 0 else b""
        if tail is None:
            return size, size
        handle.seek(0)
        handle.write(tail)
        handle.flush()
        handle.truncate(len(tail))
        os.fsync(handle.fileno())
    return size, len(tail)


# ---------------------------------------------------------------------------------------------------------
# The engine state and the executor
# ---------------------------------------------------------------------------------------------------------
def filesystem_usage(path: str) -> tuple[int, int]:
    """(free bytes available to unprivileged users, like df's Avail; total bytes) of the filesystem at path."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize


def _file_size(path: Any) -> int:
    try:
        return os.stat(path).st_size
    except (OSError, TypeError):
        return 0


class EngineState:
    """One consistent read of what the engine holds. Any failed query raises: never act on a partial view."""

    def __init__(self, api: Any, with_volumes: bool = False) -> None:
        df = api.system_df()
        if not isinstance(df, dict) or df.get("Images") is None:
            raise PolicyError("the engine's /system/df answer has no image list: refusing to plan on it")
        self.images = df.get("Images") or []
        self.build_cache = df.get("BuildCache") or []
        self.volumes = (df.get("Volumes") or []) if with_volumes else []
        size_rw = dict((c["Id"], c.get("SizeRw") or 0) for c in df.get("Containers") or [])
        listed = api.containers(all=True)
        if not isinstance(listed, list):
            raise PolicyError("the engine's container list is not a list: refusing to plan on it")
        # An empty answer next to a non-empty count is a partial view: "unused" would then mean everything.
        counts = api.info() or {}
        if not listed and (counts.get("Containers") or 0) > 0:
            raise PolicyError("the engine listed no containers but counts %s: refusing to decide what is unused"
                              % counts.get("Containers"))
        if not self.images and (counts.get("Images") or 0) > 0:
            raise PolicyError("the engine's disk usage lists no images but it counts %s: refusing to plan on it"
                              % counts.get("Images"))
        self.containers: list[dict] = []
        error_class = getattr(api, "error_class", Exception)
        for summary in listed:
            try:
                detail = api.inspect_container(summary["Id"])
            except error_class as exc:
                # A container removed between the list and its inspect (a CI job run with --rm) uses nothing now.
                # Any other failure is a partial view: raise.
                if getattr(exc, "status", None) == 404:
                    continue
                raise
            detail["Names"] = summary.get("Names")
            detail["Labels"] = (detail.get("Config") or {}).get("Labels") or summary.get("Labels") or {}
            detail["ImageID"] = detail.get("Image")
            detail["Created"] = detail.get("Created")
            detail["SizeRw"] = size_rw.get(summary["Id"], 0)
            detail["LogSize"] = _file_size(detail.get("LogPath"))
            self.containers.append(detail)
        self.parents = image_ancestry(api.images(all=True) or [])


class Reclaimer:
    """Runs the tiers in order against the engine, measuring the filesystem after each removal.

    target_free=None runs every tier to the end (the timer's hygiene); otherwise it stops as soon as the
    free space on the data-root filesystem reaches target_free bytes.
    """

    def __init__(self, api: Any, data_root: str, tiers: Iterable[str], keep_label: str = DEFAULT_KEEP_LABEL,
                 min_age: dict[str, int] | None = None, log_max_size: int = 100 * 1024 ** 2,
                 log_keep_tail: int = 1024 ** 2, build_cache_all: bool = True,
                 measure: Callable[[str], tuple[int, int]] = filesystem_usage,
                 clock: Callable[[], float] = time.time, containers: Iterable[str] | None = None) -> None:
        self.api = api
        self.data_root = data_root
        self.tiers = list(tiers)
        self.keep_label = keep_label
        self.min_age = dict(min_age or {})
        self.log_max_size = log_max_size
        self.log_keep_tail = log_keep_tail
        # Names or IDs whose logs alone may be cut (empty: every container's).
        self.log_containers = list(containers or [])
        self.build_cache_all = build_cache_all
        self.measure = measure
        self.clock = clock
        # The client names its own error type, so this file needs no import of it (see the header).
        self.api_error: Any = getattr(api, "error_class", Exception)

    def free(self) -> int:
        return self.measure(self.data_root)[0]

    # -- planning -------------------------------------------------------------------------------------
    def plan_tier(self, tier: str, state: EngineState, containers: list[dict] | None = None,
                  ) -> tuple[list[dict], list[dict]]:
        now = self.clock()
        min_age = self.min_age.get(tier, 0)
        containers = state.containers if containers is None else containers
        if tier == "build_cache":
            return plan_build_cache(state.build_cache, min_age, now), []
        if tier == "stopped_containers":
            return plan_stopped_containers(containers, self.keep_label, min_age, now)
        if tier in ("dangling_images", "unused_images"):
            return plan_images(state.images, containers, state.parents, self.keep_label,
                               tier == "dangling_images", min_age, now)
        if tier == "container_logs":
            if self.log_containers:
                containers = [c for c in containers if matches_container(c, self.log_containers)]
            return plan_container_logs(containers, self.keep_label, self.log_max_size, self.log_keep_tail)
        if tier == "volumes":
            return plan_volumes(state.volumes, self.keep_label)
        raise PolicyError("unknown tier %s" % tier)

    def estimate(self, state: EngineState, target: int | None = None) -> tuple[list[dict], int]:
        """Check mode: what each tier would reclaim, simulating earlier tiers; nothing is touched."""
        free = self.free()
        containers = list(state.containers)
        report = []
        for tier in self.tiers:
            candidates, spared = self.plan_tier(tier, state, containers)
            needed = target is None or free < target
            chosen = []
            for candidate in candidates:
                # One build cache prune removes every record the policy selects: it cannot stop at the target the
                # way the other tiers do, record by record, so its estimate counts them all.
                if target is not None and free >= target and tier != "build_cache":
                    break
                chosen.append(candidate)
                free += candidate["estimated_bytes"] if needed else 0
            if tier == "stopped_containers" and needed:
                gone = set(c["id"] for c in chosen)
                containers = [c for c in containers if c["Id"] not in gone]
            report.append({
                "tier": tier,
                "would_run": bool(needed and candidates),
                "estimated_bytes": sum(c["estimated_bytes"] for c in candidates),
                "would_remove": [c["name"] for c in (chosen if needed else [])],
                "candidates": len(candidates),
                "spared": spared,
            })
        return report, free

    # -- execution ------------------------------------------------------------------------------------
    def run(self, target: int | None = None, with_volumes: bool = False) -> list[dict]:
        """Reclaim; returns one report per tier that was considered."""
        reports: list[dict] = []
        for tier in self.tiers:
            free = self.free()
            if target is not None and free >= target:
                break
            report: dict[str, Any] | None = None
            try:
                state = EngineState(self.api, with_volumes=(tier == "volumes" and with_volumes))
                candidates, spared = self.plan_tier(tier, state)
                report = {"tier": tier, "removed": [], "failed": [], "spared": spared,
                          "estimated_bytes": sum(c["estimated_bytes"] for c in candidates), "free_before": free}
                if candidates:
                    getattr(self, "_run_" + tier)(candidates, target, report)
            except BaseException as exc:  # re-raised; SIGTERM's exception in the prune script too
                # Any error, an unexpected one too: the caller reports what the earlier tiers removed, and what this
                # tier removed before the error (an error nothing expected lost both, and the run said "nothing").
                if report is not None and report["removed"]:
                    try:
                        report["free_after"] = self.free()
                    except OSError:
                        report["free_after"] = free
                    report["reclaimed_bytes"] = max(0, report["free_after"] - free)
                    reports.append(report)
                exc.tier, exc.reports = tier, reports  # type: ignore[attr-defined]
                raise
            report["free_after"] = self.free()
            report["reclaimed_bytes"] = max(0, report["free_after"] - free)
            reports.append(report)
        return reports

    def _target_met(self, target: int | None) -> bool:
        return target is not None and self.free() >= target

    def _run_build_cache(self, candidates: list[dict], target: int | None, report: dict[str, Any]) -> None:
        query: dict[str, Any] = {"all": self.build_cache_all}
        min_age = self.min_age.get("build_cache", 0)
        if min_age:
            query["filters"] = {"until": ["%ds" % min_age]}
        answer = self.api.post("/build/prune", query=query, timeout=max(self.api.timeout, 600)) or {}
        deleted = answer.get("CachesDeleted") or []
        report["removed"] = ["build cache record %s" % d[:12] for d in deleted]
        report["engine_reported_bytes"] = int(answer.get("SpaceReclaimed") or 0)

    def _run_stopped_containers(self, candidates: list[dict], target: int | None, report: dict[str, Any]) -> None:
        for candidate in candidates:
            if self._target_met(target):
                break
            try:
                self.api.delete("/containers/%s" % quote(candidate["id"], safe=""), query={"v": False})
                report["removed"].append(candidate["name"])
            except self.api_error as exc:  # one object that cannot go (just started, say) spares only itself
                report["failed"].append({"name": candidate["name"], "error": str(exc)})

    def _remove_image(self, candidate: dict) -> None:
        if not candidate.get("tags"):
            self.api.delete("/images/%s" % quote(candidate["id"], safe=""), query={"force": False, "noprune": False})
            return
        # Remove tag by tag: removing by id refuses an image that is tagged in several repositories,
        # and force would also untag images that containers use.
        for tag in candidate["tags"]:
            self.api.delete("/images/%s" % quote(tag, safe="/:@"), query={"force": False, "noprune": False})

    def _run_images(self, candidates: list[dict], target: int | None, report: dict[str, Any]) -> None:
        for candidate in candidates:
            if self._target_met(target):
                break
            try:
                self._remove_image(candidate)
                report["removed"].append(candidate["name"])
            except self.api_error as exc:  # a 409 (child image, container created meanwhile) spares it only
                report["failed"].append({"name": candidate["name"], "error": str(exc)})

    _run_dangling_images = _run_images
    _run_unused_images = _run_images

    def _run_container_logs(self, candidates: list[dict], target: int | None, report: dict[str, Any]) -> None:
        report["truncated"] = []
        for candidate in candidates:
            if self._target_met(target):
                break
            try:
                before, after = truncate_keep_tail(candidate["path"], self.log_keep_tail)
            except (IOError, OSError) as exc:
                report["failed"].append({"name": candidate["name"], "error": "%s: %s" % (candidate["path"], exc)})
                continue
            sizes = (candidate["name"], human_bytes(before), human_bytes(after))
            report["removed"].append("log of %s (%s -> %s)" % sizes)
            report["truncated"].append({"container": candidate["name"], "path": candidate["path"],
                                        "size_before": before, "size_after": after})

    def _run_volumes(self, candidates: list[dict], target: int | None, report: dict[str, Any]) -> None:
        for candidate in candidates:
            if self._target_met(target):
                break
            try:
                self.api.delete("/volumes/%s" % quote(candidate["id"], safe=""))
                report["removed"].append(candidate["name"])
            except self.api_error as exc:  # a volume taken by a new container stays
                report["failed"].append({"name": candidate["name"], "error": str(exc)})
