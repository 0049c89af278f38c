# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# The keep rules and the plans of the prune rules: what must stay (the keep label, restart policies, Compose
# projects, images in use and their parents) and, tier by tier, what may go, in which order. Pure functions over the
# engine's answers, so that tables of cases can test them. Part of the rules in _prune_policy.py; copied beside the
# prune timer's script with them. Standard library only: it runs on managed hosts.

from __future__ import annotations

from collections.abc import Iterable

try:
    from ._prune_units import PolicyError, human_bytes, parse_timestamp
except ImportError:  # copied beside the prune timer's script (roles/docker_prune_timer): a flat directory, no package
    from _prune_units import PolicyError, human_bytes, parse_timestamp  # type: ignore[no-redef]

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


# ---------------------------------------------------------------------------------------------------------
# Keep rules
# ---------------------------------------------------------------------------------------------------------
def is_kept(labels: dict | None, keep_label: str) -> bool:
    """An object carrying the keep label (any value but false/0/no) is never removed or touched."""
    if not keep_label or not labels or keep_label not in labels:
        return False
    return str(labels[keep_label]).strip().lower() not in ("false", "0", "no")


def is_dangling(image: dict) -> bool:
    tags = image.get("RepoTags") or []
    return all(tag == "<none>:<none>" for tag in tags)


def image_label(image: dict) -> str:
    tags = [tag for tag in (image.get("RepoTags") or []) if tag != "<none>:<none>"]
    short = image.get("Id", "").replace("sha256:", "")[:12]
    return "%s (%s)" % (",".join(tags), short) if tags else short


def container_name(container: dict) -> str:
    names = container.get("Names") or []
    if names:
        return names[0].lstrip("/")
    return (container.get("Name") or container.get("Id", "")[:12]).lstrip("/")


def container_keep_reason(container: dict, keep_label: str) -> str | None:
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


def image_ancestry(all_images: Iterable[dict]) -> dict[str, str]:
    """Map image id -> parent id, from the engine's list of all images (classic builder chains)."""
    return dict((img["Id"], img.get("ParentId") or "") for img in all_images if img.get("Id"))


def ancestors(image_id: str, parents: dict[str, str]) -> set[str]:
    seen = set()
    current = parents.get(image_id, "")
    while current and current not in seen:
        seen.add(current)
        current = parents.get(current, "")
    return seen


def protected_images(images: list[dict], containers: Iterable[dict], parents: dict[str, str], keep_label: str,
                     ) -> dict[str, str]:
    """Image id -> reason, for every image that must stay: used by any container, kept, or an ancestor of one.

    `containers` is every container that will still exist (running or stopped), so the image of a stopped
    container that stays is protected too.
    """
    reasons: dict[str, str] = {}
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
def _age(timestamp: object, now: float) -> float | None:
    stamp = parse_timestamp(timestamp)
    return None if stamp is None else now - stamp


def plan_build_cache(records: list[dict] | None, min_age: int, now: float) -> list[dict]:
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


def plan_stopped_containers(containers: Iterable[dict], keep_label: str, min_age: int, now: float,
                            ) -> tuple[list[dict], list[dict]]:
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
            spared.append({"id": container["Id"], "name": container_name(container), "reason": reason,
                           "bytes": int(container.get("SizeRw") or 0) + int(container.get("LogSize") or 0)})
            continue
        candidates.append({
            "id": container["Id"],
            "name": container_name(container),
            "age": age,
            "estimated_bytes": int(container.get("SizeRw") or 0) + int(container.get("LogSize") or 0),
        })
    candidates.sort(key=lambda c: -(c["age"] or 0))
    return candidates, spared


def unique_size(image: dict) -> int:
    size = int(image.get("Size") or 0)
    shared = image.get("SharedSize")
    if shared is None or shared < 0:
        return size
    return max(0, size - int(shared))


def plan_images(images: list[dict], containers: Iterable[dict], parents: dict[str, str], keep_label: str,
                dangling: bool, min_age: int, now: float) -> tuple[list[dict], list[dict]]:
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
            spared.append({"id": image["Id"], "name": image_label(image), "reason": reason, "bytes": own})
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


def matches_container(container: dict, wanted: Iterable[str]) -> bool:
    """Whether a container (an inspect answer) is named in wanted, by name or by a prefix of its ID (12+ chars)."""
    name = container_name(container)
    cid = container.get("Id") or ""
    return any(w.lstrip("/") == name or (len(w) >= 12 and cid.startswith(w)) for w in wanted)


def plan_container_logs(containers: Iterable[dict], keep_label: str, max_size: int, keep_tail: int,
                        ) -> tuple[list[dict], list[dict]]:
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
                           "reason": "keep label %s" % keep_label, "bytes": size})
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


def plan_volumes(volumes: list[dict] | None, keep_label: str) -> tuple[list[dict], list[dict]]:
    """Volumes no container references (RefCount 0) and without the keep label."""
    candidates, spared = [], []
    for volume in volumes or []:
        usage = volume.get("UsageData") or {}
        if usage.get("RefCount", 1) != 0:
            continue
        if is_kept(volume.get("Labels"), keep_label):
            spared.append({"id": volume["Name"], "name": volume["Name"], "reason": "keep label %s" % keep_label,
                           "bytes": max(0, int(usage.get("Size") or 0))})
            continue
        candidates.append({"id": volume["Name"], "name": volume["Name"],
                           "estimated_bytes": max(0, int(usage.get("Size") or 0))})
    return candidates, spared


def largest_protected(tier_reports: Iterable[dict], limit: int = 5) -> list[dict]:
    """The protected objects that hold the most space, across tiers, largest first (each once, by id)."""
    seen = {}
    for report in tier_reports:
        for item in report.get("spared") or []:
            if item.get("bytes") and item["id"] not in seen:
                seen[item["id"]] = {"name": item["name"], "tier": report["tier"], "reason": item["reason"],
                                    "bytes": item["bytes"], "size": human_bytes(item["bytes"])}
    return sorted(seen.values(), key=lambda item: -item["bytes"])[:limit]


def select_tiers(tiers: Iterable[str], volumes: bool) -> list[str]:
    """The requested tiers in canonical order; volumes only when explicitly enabled."""
    unknown = [t for t in tiers if t not in TIERS]
    if unknown:
        raise PolicyError("unknown tier(s) %s; known: %s" % (", ".join(unknown), ", ".join(TIERS)))
    chosen = [t for t in TIERS if t in tiers and t != "volumes"]
    if volumes:
        chosen.append("volumes")
    return chosen
