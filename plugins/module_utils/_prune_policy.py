# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# What may be reclaimed on a Docker host, in which order, and how: the one copy of the rules shared by the
# docker_reclaim module (emergency, until a free-space target is met) and the docker_prune_timer role's
# script (scheduled hygiene). The role copies this file and _docker_api.py beside its script, so this file
# imports nothing from the collection at module level: the engine client is passed in.
#
# Standard library only: it runs on managed hosts.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import errno
import fcntl
import os
import re
import time

try:
    from urllib.parse import quote
except ImportError:  # pragma: no cover - Python 2 is not supported on targets
    from urllib import quote

# Canonical order: cheapest and least valuable first. Volumes hold data: last, and only when asked for.
TIERS = (
    "build_cache",
    "stopped_containers",
    "dangling_images",
    "unused_images",
    "container_logs",
    "volumes",
)
DEFAULT_TIERS = TIERS[:5]
DEFAULT_KEEP_LABEL = "postmortem.remediation.keep"
DEFAULT_LOCK_FILE = "/run/lock/postmortem-docker-prune.lock"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
STOPPED_STATES = ("exited", "created", "dead")

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4, "p": 1024 ** 5}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_TIMESTAMP_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")


class PolicyError(ValueError):
    """An option value that cannot be understood."""


# ---------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------
def parse_size(value):
    """'500M', '2G', '1.5GiB', '1024', 1024 -> bytes. Units are binary (1K = 1024), like Docker's."""
    if isinstance(value, bool):
        raise PolicyError("size %r: expected a number of bytes or a size like 500M or 2G" % (value,))
    if isinstance(value, int):
        if value < 0:
            raise PolicyError("size %r: must not be negative" % (value,))
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise PolicyError("size %r: expected a number of bytes or a size like 500M, 2G, 1.5GiB" % (value,))
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.lower()])


def parse_target(value):
    """'15%' -> ('percent', 15.0); '2G' -> ('bytes', 2147483648)."""
    match = _PERCENT_RE.match(str(value))
    if match:
        percent = float(match.group(1))
        if not 0 < percent < 100:
            raise PolicyError("target %r: a percentage must be above 0 and below 100" % (value,))
        return ("percent", percent)
    size = parse_size(value)
    if size <= 0:
        raise PolicyError("target %r: must be more than 0 bytes" % (value,))
    return ("bytes", size)


def target_bytes(target, total_bytes):
    """The free-space target in bytes for a filesystem of total_bytes."""
    kind, amount = target
    if kind == "percent":
        return int(total_bytes * amount / 100.0)
    return int(amount)


def parse_duration(value):
    """'30s', '10m', '24h', '7d', '2w', '1h30m', 90 -> seconds. 0 and '0s' mean no minimum age."""
    if isinstance(value, bool):
        raise PolicyError("duration %r: expected seconds or a duration like 30s, 10m, 24h, 7d" % (value,))
    if isinstance(value, (int, float)):
        if value < 0:
            raise PolicyError("duration %r: must not be negative" % (value,))
        return int(value)
    text = str(value).strip().lower()
    if re.match(r"^\d+$", text):
        return int(text)
    if not text or _DURATION_PART_RE.sub("", text) != "":
        raise PolicyError("duration %r: expected seconds or a duration like 30s, 10m, 24h, 7d, 1h30m" % (value,))
    return int(sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(text)))


def parse_timestamp(value):
    """Docker's RFC 3339 timestamps (nanoseconds, Z or offset) or Unix seconds -> Unix seconds (float).

    Docker's zero time (0001-01-01T00:00:00Z) and anything unreadable give None.
    """
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if value > 0 else None
    match = _TIMESTAMP_RE.match(str(value).strip())
    if not match:
        return None
    base, fraction, zone = match.groups()
    if base.startswith("0001-"):
        return None
    seconds = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    if fraction:
        seconds += float("0" + fraction[:10])
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return float(seconds)


def parse_clock(value):
    """'01:30' -> minutes after midnight."""
    match = re.match(r"^\s*(\d{1,2}):(\d{2})\s*$", str(value))
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise PolicyError("time of day %r: expected HH:MM (00:00 to 23:59)" % (value,))
    return int(match.group(1)) * 60 + int(match.group(2))


def active_window(windows, minute_of_day):
    """The first window (dict with start, end and optional name) that contains minute_of_day, else None.

    A window whose end is before its start spans midnight; start is inside, end is outside.
    """
    for window in windows or []:
        start = parse_clock(window["start"])
        end = parse_clock(window["end"])
        if start == end:
            continue
        spans_midnight = end < start
        if (start <= minute_of_day < end) or (spans_midnight and (minute_of_day >= start or minute_of_day < end)):
            return window
    return None


def human_bytes(size):
    size = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return ("%d %s" % (size, unit)) if unit == "B" else ("%.1f %s" % (size, unit))
        size /= 1024.0
    return "%.1f TiB" % size  # pragma: no cover


# ---------------------------------------------------------------------------------------------------------
# Keep rules
# ---------------------------------------------------------------------------------------------------------
def is_kept(labels, keep_label):
    """An object carrying the keep label (any value but false/0/no) is never removed or touched."""
    if not keep_label or not labels or keep_label not in labels:
        return False
    return str(labels[keep_label]).strip().lower() not in ("false", "0", "no")


def is_dangling(image):
    tags = image.get("RepoTags") or []
    return all(tag == "<none>:<none>" for tag in tags)


def image_label(image):
    tags = [tag for tag in (image.get("RepoTags") or []) if tag != "<none>:<none>"]
    short = image.get("Id", "").replace("sha256:", "")[:12]
    return "%s (%s)" % (",".join(tags), short) if tags else short


def container_name(container):
    names = container.get("Names") or []
    if names:
        return names[0].lstrip("/")
    return (container.get("Name") or container.get("Id", "")[:12]).lstrip("/")


def container_keep_reason(container, keep_label):
    """Why a stopped container must stay, or None when it may be removed.

    Stopped is not the same as unwanted: a service with a restart policy or a Compose project stopped by
    the nightly backup is expected to start again, and removing it turns a pause into an outage.
    """
    labels = container.get("Labels") or {}
    if is_kept(labels, keep_label):
        return "keep label %s" % keep_label
    policy = ((container.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
    if policy != "no":
        return "restart policy %s: a service that was stopped, not a leftover" % policy
    if COMPOSE_PROJECT_LABEL in labels:
        return "part of Compose project %s" % labels[COMPOSE_PROJECT_LABEL]
    return None


def image_ancestry(all_images):
    """Map image id -> parent id, from the engine's list of all images (classic builder chains)."""
    return dict((img["Id"], img.get("ParentId") or "") for img in all_images if img.get("Id"))


def ancestors(image_id, parents):
    seen = set()
    current = parents.get(image_id, "")
    while current and current not in seen:
        seen.add(current)
        current = parents.get(current, "")
    return seen


def protected_images(images, containers, parents, keep_label):
    """Image id -> reason, for every image that must stay: used by any container, kept, or an ancestor of one.

    `containers` is every container that will still exist (running or stopped), so the image of a stopped
    container that stays is protected too.
    """
    reasons = {}
    for container in containers:
        image_id = container.get("ImageID") or container.get("Image")
        if image_id:
            reasons.setdefault(image_id, "used by container %s" % container_name(container))
    for image in images:
        if is_kept(image.get("Labels"), keep_label):
            reasons.setdefault(image["Id"], "keep label %s" % keep_label)
    # Parents of protected images (classic builder chains) must stay, and so must parents of any image:
    # removing a parent only untags it and reclaims nothing.
    for image_id in list(reasons):
        for parent in ancestors(image_id, parents):
            reasons.setdefault(parent, "parent of %s" % image_id.replace("sha256:", "")[:12])
    child_parents = set(parents.values())
    for image in images:
        if image["Id"] in child_parents:
            reasons.setdefault(image["Id"], "parent of another image")
    return reasons


# ---------------------------------------------------------------------------------------------------------
# Planning: pure functions over the engine's answers, so that tables of cases can test them.
# Every candidate is a dict: id, name, estimated_bytes, and what the executor needs.
# ---------------------------------------------------------------------------------------------------------
def _age(timestamp, now):
    stamp = parse_timestamp(timestamp)
    return None if stamp is None else now - stamp


def plan_build_cache(records, min_age, now):
    """Build cache records a prune would remove: not in use, not shared with images, unused for min_age."""
    candidates = []
    for record in records or []:
        if record.get("InUse"):
            continue
        last_used = record.get("LastUsedAt") or record.get("CreatedAt")
        age = _age(last_used, now)
        if min_age and (age is None or age < min_age):
            continue
        candidates.append({
            "id": record.get("ID"),
            "name": "%s %s" % (record.get("Type", "cache"), record.get("ID", "")[:12]),
            # Shared records hold layers an image also holds: removing them frees nothing.
            "estimated_bytes": 0 if record.get("Shared") else int(record.get("Size") or 0),
        })
    return candidates


def plan_stopped_containers(containers, keep_label, min_age, now):
    """Stopped containers that may go, oldest finished first, and the ones that must stay (with reasons).

    `containers` are inspect documents (State, HostConfig, Config.Labels) enriched with SizeRw and LogSize.
    """
    candidates, spared = [], []
    for container in containers:
        state = (container.get("State") or {}).get("Status") or container.get("State")
        if state not in STOPPED_STATES:
            continue
        reason = container_keep_reason(container, keep_label)
        finished = (container.get("State") or {}).get("FinishedAt")
        age = _age(finished, now)
        if age is None:
            age = _age(container.get("Created"), now)
        if reason is None and min_age and (age is None or age < min_age):
            reason = "stopped less than %ss ago" % min_age
        if reason:
            spared.append({"id": container["Id"], "name": container_name(container), "reason": reason})
            continue
        candidates.append({
            "id": container["Id"],
            "name": container_name(container),
            "age": age,
            "estimated_bytes": int(container.get("SizeRw") or 0) + int(container.get("LogSize") or 0),
        })
    candidates.sort(key=lambda c: -(c["age"] or 0))
    return candidates, spared


def unique_size(image):
    size = int(image.get("Size") or 0)
    shared = image.get("SharedSize")
    if shared is None or shared < 0:
        return size
    return max(0, size - int(shared))


def plan_images(images, containers, parents, keep_label, dangling, min_age, now):
    """Dangling (dangling=True) or unused tagged images (dangling=False) that may go, oldest first.

    Images with no bytes of their own are spared in the unused tier: removing them only loses a tag.
    """
    protected = protected_images(images, containers, parents, keep_label)
    candidates, spared = [], []
    for image in images:
        if is_dangling(image) != dangling:
            continue
        reason = protected.get(image["Id"])
        age = _age(image.get("Created"), now)
        own = unique_size(image)
        if reason is None and min_age and (age is None or age < min_age):
            reason = "created less than %ss ago" % min_age
        if reason is None and not dangling and own == 0:
            reason = "no layers of its own: removing it frees nothing"
        if reason:
            spared.append({"id": image["Id"], "name": image_label(image), "reason": reason})
            continue
        candidates.append({
            "id": image["Id"],
            "name": image_label(image),
            "tags": [t for t in (image.get("RepoTags") or []) if t != "<none>:<none>"],
            "age": age,
            "estimated_bytes": own,
        })
    candidates.sort(key=lambda c: -(c["age"] or 0))
    return candidates, spared


def matches_container(container, wanted):
    """Whether a container (an inspect answer) is named in wanted, by name or by a prefix of its ID (12+ chars)."""
    name = container_name(container)
    cid = container.get("Id") or ""
    return any(w.lstrip("/") == name or (len(w) >= 12 and cid.startswith(w)) for w in wanted)


def plan_container_logs(containers, keep_label, max_size, keep_tail):
    """json-file logs of running containers above max_size, largest first; truncated in place, never deleted."""
    candidates, spared = [], []
    for container in containers:
        state = container.get("State") or {}
        if not state.get("Running"):
            continue
        log_type = ((container.get("HostConfig") or {}).get("LogConfig") or {}).get("Type")
        size = int(container.get("LogSize") or 0)
        if log_type != "json-file" or not container.get("LogPath") or size <= max_size:
            continue
        if is_kept((container.get("Config") or {}).get("Labels"), keep_label):
            spared.append({"id": container["Id"], "name": container_name(container),
                           "reason": "keep label %s" % keep_label})
            continue
        candidates.append({
            "id": container["Id"],
            "name": container_name(container),
            "path": container["LogPath"],
            "size": size,
            "estimated_bytes": max(0, size - keep_tail),
        })
    candidates.sort(key=lambda c: -c["size"])
    return candidates, spared


def plan_volumes(volumes, keep_label):
    """Volumes no container references (RefCount 0) and without the keep label."""
    candidates, spared = [], []
    for volume in volumes or []:
        usage = volume.get("UsageData") or {}
        if usage.get("RefCount", 1) != 0:
            continue
        if is_kept(volume.get("Labels"), keep_label):
            spared.append({"id": volume["Name"], "name": volume["Name"], "reason": "keep label %s" % keep_label})
            continue
        candidates.append({"id": volume["Name"], "name": volume["Name"],
                           "estimated_bytes": max(0, int(usage.get("Size") or 0))})
    return candidates, spared


def select_tiers(tiers, volumes):
    """The requested tiers in canonical order; volumes only when explicitly enabled."""
    unknown = [t for t in tiers if t not in TIERS]
    if unknown:
        raise PolicyError("unknown tier(s) %s; known: %s" % (", ".join(unknown), ", ".join(TIERS)))
    chosen = [t for t in TIERS if t in tiers and t != "volumes"]
    if volumes:
        chosen.append("volumes")
    return chosen


# ---------------------------------------------------------------------------------------------------------
# Log truncation
# ---------------------------------------------------------------------------------------------------------
def truncate_keep_tail(path, keep_tail):
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
# Lock shared by the module and the timer: one reclaim at a time on a host.
# ---------------------------------------------------------------------------------------------------------
def acquire_lock(path, wait_seconds=0):
    """An open, flock-ed file object, or None when another run holds the lock after wait_seconds."""
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory)
    handle = open(path, "a")  # noqa: SIM115 - the lock lasts as long as the caller keeps the handle open
    deadline = time.time() + wait_seconds
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except (IOError, OSError) as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                handle.close()
                raise
            if time.time() >= deadline:
                handle.close()
                return None
            time.sleep(0.5)


# ---------------------------------------------------------------------------------------------------------
# The engine state and the executor
# ---------------------------------------------------------------------------------------------------------
def filesystem_usage(path):
    """(free bytes available to unprivileged users, like df's Avail; total bytes) of the filesystem at path."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize


def _file_size(path):
    try:
        return os.stat(path).st_size
    except (OSError, TypeError):
        return 0


class EngineState:
    """One consistent read of what the engine holds. Any failed query raises: never act on a partial view."""

    def __init__(self, api, with_volumes=False):
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
        self.containers = []
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

    def __init__(self, api, data_root, tiers, keep_label=DEFAULT_KEEP_LABEL, min_age=None,
                 log_max_size=100 * 1024 ** 2, log_keep_tail=1024 ** 2, build_cache_all=True,
                 measure=filesystem_usage, clock=time.time, containers=None):
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
        self.api_error = getattr(api, "error_class", Exception)

    def free(self):
        return self.measure(self.data_root)[0]

    # -- planning -------------------------------------------------------------------------------------
    def plan_tier(self, tier, state, containers=None):
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

    def estimate(self, state, target=None):
        """Check mode: what each tier would reclaim, simulating earlier tiers; nothing is touched."""
        free = self.free()
        containers = list(state.containers)
        report = []
        for tier in self.tiers:
            candidates, spared = self.plan_tier(tier, state, containers)
            needed = target is None or free < target
            chosen = []
            for candidate in candidates:
                if target is not None and free >= target:
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
    def run(self, target=None, with_volumes=False):
        """Reclaim; returns one report per tier that was considered."""
        reports = []
        for tier in self.tiers:
            free = self.free()
            if target is not None and free >= target:
                break
            try:
                state = EngineState(self.api, with_volumes=(tier == "volumes" and with_volumes))
                candidates, spared = self.plan_tier(tier, state)
                report = {"tier": tier, "removed": [], "failed": [], "spared": spared,
                          "estimated_bytes": sum(c["estimated_bytes"] for c in candidates),
                          "free_before": free}
                if candidates:
                    getattr(self, "_run_" + tier)(candidates, target, report)
            except (self.api_error, PolicyError) as exc:
                # The caller reports what the earlier tiers already removed.
                exc.tier, exc.reports = tier, reports
                raise
            report["free_after"] = self.free()
            report["reclaimed_bytes"] = max(0, report["free_after"] - free)
            reports.append(report)
        return reports

    def _target_met(self, target):
        return target is not None and self.free() >= target

    def _run_build_cache(self, candidates, target, report):
        query = {"all": self.build_cache_all}
        min_age = self.min_age.get("build_cache", 0)
        if min_age:
            query["filters"] = {"until": ["%ds" % min_age]}
        answer = self.api.post("/build/prune", query=query, timeout=max(self.api.timeout, 600)) or {}
        deleted = answer.get("CachesDeleted") or []
        report["removed"] = ["build cache record %s" % d[:12] for d in deleted]
        report["engine_reported_bytes"] = int(answer.get("SpaceReclaimed") or 0)

    def _run_stopped_containers(self, candidates, target, report):
        for candidate in candidates:
            if self._target_met(target):
                break
            try:
                self.api.delete("/containers/%s" % quote(candidate["id"], safe=""), query={"v": False})
                report["removed"].append(candidate["name"])
            except self.api_error as exc:  # one object that cannot go (just started, say) spares only itself
                report["failed"].append({"name": candidate["name"], "error": str(exc)})

    def _remove_image(self, candidate):
        if not candidate.get("tags"):
            self.api.delete("/images/%s" % quote(candidate["id"], safe=""), query={"force": False, "noprune": False})
            return
        # Remove tag by tag: removing by id refuses an image that is tagged in several repositories,
        # and force would also untag images that containers use.
        for tag in candidate["tags"]:
            self.api.delete("/images/%s" % quote(tag, safe="/:@"), query={"force": False, "noprune": False})

    def _run_images(self, candidates, target, report):
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

    def _run_container_logs(self, candidates, target, report):
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

    def _run_volumes(self, candidates, target, report):
        for candidate in candidates:
            if self._target_met(target):
                break
            try:
                self.api.delete("/volumes/%s" % quote(candidate["id"], safe=""))
                report["removed"].append(candidate["name"])
            except self.api_error as exc:  # a volume taken by a new container stays
                report["failed"].append({"name": candidate["name"], "error": str(exc)})


# ---------------------------------------------------------------------------------------------------------
# node_exporter textfile metrics
# ---------------------------------------------------------------------------------------------------------
METRIC_PREFIX = "docker_prune"


def render_metrics(run):
    """Prometheus text exposition for one timer run (a dict: timestamp, success, skipped, duration, tiers...)."""
    lines = []

    def gauge(name, help_text, samples):
        lines.append("# HELP %s_%s %s" % (METRIC_PREFIX, name, help_text))
        lines.append("# TYPE %s_%s gauge" % (METRIC_PREFIX, name))
        for labels, value in samples:
            label_text = ""
            if labels:
                label_text = "{%s}" % ",".join('%s="%s"' % (k, str(v).replace('"', "'")) for k, v in labels)
            lines.append("%s_%s%s %s" % (METRIC_PREFIX, name, label_text, _number(value)))

    gauge("last_run_timestamp_seconds", "Unix time the last run ended.", [((), run["timestamp"])])
    gauge("last_run_success", "1 when the last run finished without error (a skipped run counts as success).",
          [((), 1 if run["success"] else 0)])
    if run.get("last_success_timestamp") is not None:
        gauge("last_success_timestamp_seconds", "Unix time of the last successful run.",
              [((), run["last_success_timestamp"])])
    gauge("last_run_skipped", "1 when the last run was skipped, with the reason.",
          [((("reason", run.get("skip_reason") or "none"),), 1 if run.get("skipped") else 0)])
    gauge("last_run_duration_seconds", "How long the last run took.", [((), run.get("duration", 0))])
    tiers = run.get("tiers") or {}
    gauge("reclaimed_bytes", "Bytes the last run freed on the data-root filesystem, per kind.",
          [((("kind", k),), v.get("reclaimed_bytes", 0)) for k, v in sorted(tiers.items())])
    gauge("removed_objects", "Objects the last run removed, per kind.",
          [((("kind", k),), v.get("removed", 0)) for k, v in sorted(tiers.items())])
    gauge("failed_objects", "Objects the last run could not remove, per kind.",
          [((("kind", k),), v.get("failed", 0)) for k, v in sorted(tiers.items())])
    if run.get("free_bytes") is not None:
        gauge("filesystem_free_bytes", "Free bytes on the Docker data-root filesystem after the last run.",
              [((), run["free_bytes"])])
        gauge("filesystem_size_bytes", "Size of the Docker data-root filesystem.", [((), run["size_bytes"])])
    return "\n".join(lines) + "\n"


def _number(value):
    if isinstance(value, float) and not value.is_integer():
        return "%.3f" % value
    return "%d" % int(value)


def write_atomically(path, text, mode=0o644):
    """Write text to path through a temporary file in the same directory and a rename."""
    directory = os.path.dirname(path) or "."
    temp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    with open(temp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temp, mode)
    os.rename(temp, path)
