# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# Re-create a running container with the same configuration but a bounded log: the plan (what changes, what would
# be refused and why) is pure and built from the engine's inspect record; the steps keep the old container, renamed
# and stopped, until the new one runs, and put it back on any failure. Standard library only: runs on managed hosts.

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ansible_collections.postmortem.remediation.plugins.module_utils._container_logs import classify

if TYPE_CHECKING:
    from ansible_collections.postmortem.remediation.plugins.module_utils._docker_api import DockerAPI

# Labels of the orchestrators that own a container: re-creating it behind their back confuses them (Compose sees a
# changed config hash, Swarm and the kubelet replace what they do not know).
MANAGED_LABELS = (
    ("com.docker.compose.project", "Compose"),
    ("com.docker.swarm.service.id", "Swarm"),
    ("com.docker.stack.namespace", "Swarm"),
    ("io.kubernetes.pod.name", "Kubernetes"),
    ("io.kubernetes.container.name", "Kubernetes"),
)

BACKUP_SUFFIX = "-pmr-old"

# Endpoint settings that the create/connect calls accept back from an inspect record.
ENDPOINT_KEYS = ("IPAMConfig", "Links", "Aliases", "DriverOpts")


class RecreateError(Exception):
    """A step of the re-creation failed; the message names the container, the step and what was put back."""


def container_name(container: dict[str, Any]) -> str:
    return container.get("Name", "").lstrip("/")


def bounded_log_config(log_config: dict[str, Any], daemon_log_config: dict[str, Any] | None = None,
                       max_size: str | None = None, max_file: str | None = None,
                       ) -> tuple[dict[str, Any] | None, str]:
    """Return (new LogConfig, source) for a log configuration, or (None, why) when nothing bounded is known.

    The container's other log options (compress, tag, labels...) are kept; only its limits change: to the given
    max_size/max_file, else to the daemon's current ones when the daemon uses the same driver and bounds it.
    """
    driver = (log_config or {}).get("Type") or "json-file"
    options = dict((log_config or {}).get("Config") or {})
    for key in ("max-size", "max-file"):
        options.pop(key, None)
    if max_size:
        options["max-size"] = str(max_size)
        if max_file:
            options["max-file"] = str(max_file)
        return {"Type": driver, "Config": options}, "given max_size/max_file"
    daemon_driver = (daemon_log_config or {}).get("Type")
    daemon_options = (daemon_log_config or {}).get("Config") or {}
    if daemon_driver == driver and classify(daemon_driver, daemon_options)[0] and daemon_options.get("max-size"):
        for key in ("max-size", "max-file"):
            if daemon_options.get(key):
                options[key] = daemon_options[key]
        if max_file:
            options["max-file"] = str(max_file)
        return {"Type": driver, "Config": options}, "the daemon's current log-opts"
    if driver == "local":  # the local driver bounds itself once max-size=-1 is gone
        return {"Type": driver, "Config": options}, "the local driver's defaults"
    return None, (
        "the daemon gives new %s containers no max-size (it gives %s %s): pass max_size, or configure "
        "rotation in daemon.json and restart dockerd first" % (driver, daemon_driver or "?", daemon_options)
    )


def neighbours(api: DockerAPI, container: dict[str, Any]) -> list[dict[str, Any]]:
    """The engine's container list (GET /containers/json: Names, with a legacy link's name), each with the full
    HostConfig of its inspect record: the list holds only NetworkMode, and a container that shares this one's PID or
    IPC namespace must be seen too (stopping this one would kill its processes)."""
    found = []
    for other in api.containers(all=True):
        if other.get("Id") != container.get("Id"):
            with contextlib.suppress(api.error_class):  # removed meanwhile: its list entry says what is known
                other = dict(other, HostConfig=api.inspect_container(other["Id"]).get("HostConfig") or {})
        found.append(other)
    return found


def _names_of(others: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Container ID (full and short) and name -> name, from list entries: messages name containers, not IDs."""
    names = {}
    for other in others:
        own = [n.lstrip("/") for n in other.get("Names") or [] if n.count("/") == 1]
        if own and other.get("Id"):
            for key in (other["Id"], other["Id"][:12], own[0]):
                names[key] = own[0]
    return names


def _volumes_from(host_config: dict[str, Any], others: Iterable[dict[str, Any]]) -> set[str]:
    """Destinations of the mounts this container takes from others with --volumes-from: re-created, it takes them
    again (the same volumes, anonymous ones included), so they are not its own anonymous volumes."""
    sources = set(entry.split(":", 1)[0] for entry in host_config.get("VolumesFrom") or [])
    destinations: set[str] = set()
    for other in others:
        keys = {other.get("Id"), (other.get("Id") or "")[:12]} | {n.lstrip("/") for n in other.get("Names") or []}
        if sources & keys:
            destinations.update(m.get("Destination") for m in other.get("Mounts") or [])
    return destinations


def _named_sources(host_config: dict[str, Any]) -> set[str]:
    names = set()
    for bind in host_config.get("Binds") or []:
        names.add(bind.split(":", 1)[0])
    for mount in host_config.get("Mounts") or []:
        if mount.get("Source"):
            names.add(mount["Source"])
    return names


def refusals(container: dict[str, Any], others: Iterable[dict[str, Any]] = (), allow_managed: bool = False,
             keep_label: str | None = None) -> list[str]:
    """Why this container cannot be re-created faithfully (empty when it can). `others`: the engine's container
    list (GET /containers/json, best with each HostConfig in full: `neighbours`), to find containers that share this
    one's namespaces, link to it, or lend it volumes. `keep_label`: a label that protects a container's log
    (removing the old container removes its log).

    Re-created faithfully (the inspect record's Config and HostConfig are given back): a healthcheck, a restart
    policy, --init, a chosen hostname, a legacy --link to another container, --volumes-from. Refused: what a new
    container cannot take back alone (a namespace of another container, anonymous volumes of its own) and what
    others hold of it (its namespaces, a legacy link to it: their /etc/hosts and environment name the old one)."""
    others = list(others)
    names = _names_of(others)
    name = container_name(container)
    state = container.get("State") or {}
    host = container.get("HostConfig") or {}
    labels = (container.get("Config") or {}).get("Labels") or {}
    reasons = []
    if not state.get("Running") or state.get("Paused") or state.get("Restarting"):
        reasons.append("%s is %s, not running: only a running container's log grows; re-create it yourself"
                       % (name, state.get("Status", "not running")))
    if host.get("AutoRemove"):
        reasons.append("%s was started with --rm (AutoRemove): stopping the old one would delete it, so it could "
                       "not be put back on failure" % name)
    if not allow_managed:
        found = [(label, owner) for label, owner in MANAGED_LABELS if label in labels]
        if found:
            reasons.append("%s is managed by %s (label %s): re-create it there with log limits, or set "
                           "allow_managed" % (name, "/".join(sorted(set(owner for label, owner in found))),
                                              ", ".join(label for label, owner in found)))
    if keep_label and keep_label in labels:
        reasons.append("%s has the label %s that protects its log: re-creating it would remove the old container "
                       "and its log with it" % (name, keep_label))
    for mode_key, what in (("NetworkMode", "network"), ("PidMode", "PID"), ("IpcMode", "IPC")):
        mode = host.get(mode_key) or ""
        if mode.startswith("container:"):
            target = mode.split(":", 1)[1]
            reasons.append("%s shares the %s namespace of container %s: a new container would have to join it "
                           "again, which only re-creating both does" % (name, what, names.get(target, target)))
    ids = {container.get("Id"), container.get("Id", "")[:12], name, "/" + name}
    for mode_key, what, cut in (("NetworkMode", "network", "cut their network"),
                                ("PidMode", "PID", "kill their processes"),
                                ("IpcMode", "IPC", "take their shared memory away")):
        joined = [
            (other.get("Names") or ["?"])[0].lstrip("/")
            for other in others
            if other.get("Id") != container.get("Id")
            and (((other.get("HostConfig") or {}).get(mode_key) or "").split(":", 1)[-1] in ids)
            and ((other.get("HostConfig") or {}).get(mode_key) or "").startswith("container:")
        ]
        if joined:
            reasons.append("%s holds the %s namespace of %s: re-creating it would %s"
                           % (name, what, ", ".join(sorted(joined)), cut))
    # A legacy --link to this container shows in the list as one more name of it, /<linker>/<alias>.
    linkers = sorted(set(
        link.lstrip("/").split("/", 1)[0]
        for other in others if other.get("Id") == container.get("Id")
        for link in other.get("Names") or [] if link.count("/") > 1))
    if linkers:
        reasons.append("%s is the target of a legacy --link from %s: their /etc/hosts and environment name the old "
                       "container; re-create them too, or move them to a user-defined network"
                       % (name, ", ".join(linkers)))
    named = _named_sources(host)
    lent = _volumes_from(host, others)
    anonymous = [
        mount.get("Destination")
        for mount in container.get("Mounts") or []
        if mount.get("Type") == "volume" and mount.get("Name") not in named and mount.get("Destination") not in lent
    ]
    if anonymous:
        reasons.append("%s has anonymous volumes at %s: a new container would get new, empty ones (its data would "
                       "stay behind in the old volumes)" % (name, ", ".join(sorted(anonymous))))
    return reasons


def create_spec(container: dict[str, Any], log_config: dict[str, Any], image: str,
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The body of POST /containers/create for the copy, and the networks to connect after it (name -> endpoint).

    Config and HostConfig are the inspect record's own (the engine accepts them back), with the new LogConfig; the
    hostname is dropped when it is the old container's default (its short ID) so that the copy gets its own."""
    config = dict(container.get("Config") or {})
    short_id = container.get("Id", "")[:12]
    if config.get("Hostname") == short_id:
        config.pop("Hostname")
    config["Image"] = image
    host = dict(container.get("HostConfig") or {})
    host["LogConfig"] = log_config
    networks = ((container.get("NetworkSettings") or {}).get("Networks")) or {}
    endpoints = {}
    for net_name, settings in networks.items():
        endpoint = {}
        for key in ENDPOINT_KEYS:
            value = (settings or {}).get(key)
            if key == "Aliases" and value:
                value = [alias for alias in value if alias not in (short_id, container.get("Id"))]
                if net_name == "bridge":
                    value = None  # the default bridge takes no aliases
            if value:
                endpoint[key] = value
        endpoints[net_name] = endpoint
    mode = host.get("NetworkMode") or "default"
    primary = "bridge" if mode == "default" else mode
    body = dict(config)
    body["HostConfig"] = host
    if primary in endpoints:
        body["NetworkingConfig"] = {"EndpointsConfig": {primary: endpoints.pop(primary)}}
    return body, endpoints


def changes(container: dict[str, Any], log_config: dict[str, Any]) -> dict[str, Any]:
    """What the re-creation changes, for the diff: only the log configuration."""
    before = (container.get("HostConfig") or {}).get("LogConfig")
    return {
        "before": {"name": container_name(container), "LogConfig": before},
        "after": {"name": container_name(container), "LogConfig": log_config},
    }


def recreate(api: DockerAPI, container: dict[str, Any], body: dict[str, Any], extra_networks: dict[str, Any],
             settle: float = 3, stop_timeout: int | None = None) -> str:
    """Re-create `container` from `body`. Returns the new container's ID. On a failure the old container gets its
    name back and runs again, the copy is removed, and RecreateError says which step failed and what was done."""
    name = container_name(container)
    old_id = container["Id"]
    backup = "%s%s-%d" % (name, BACKUP_SUFFIX, int(time.time()))
    new_id = None
    old_stopped = False
    step = "rename %s to %s" % (name, backup)
    try:
        api.post("/containers/%s/rename" % old_id, {"name": backup})
        step = "create the new %s" % name
        new_id = api.post("/containers/create", {"name": name}, body=body)["Id"]
        for net_name, endpoint in sorted(extra_networks.items()):
            step = "connect the new %s to network %s" % (name, net_name)
            api.post("/networks/%s/connect" % net_name, body={"Container": new_id, "EndpointConfig": endpoint})
        step = "stop the old %s" % name
        timeout = stop_timeout if stop_timeout is not None else (container.get("Config") or {}).get("StopTimeout")
        api.post("/containers/%s/stop" % old_id, {"t": timeout if timeout is not None else 10},
                 timeout=(timeout or 10) + 60)
        old_stopped = True
        step = "start the new %s" % name
        api.post("/containers/%s/start" % new_id)
        time.sleep(settle)
        state = api.inspect_container(new_id).get("State") or {}
        if not state.get("Running") or state.get("Restarting"):
            raise RecreateError("the new %s is %s %ss after its start (exit code %s%s)" % (
                name, state.get("Status"), settle, state.get("ExitCode"),
                (", " + state["Error"]) if state.get("Error") else ""))
    except Exception as exc:
        undone = _put_back(api, old_id, name, new_id, old_stopped)
        raise RecreateError("re-creating container %s failed at '%s': %s; %s" % (name, step, exc, undone)) from exc
    try:
        api.delete("/containers/%s" % old_id)
    except api.error_class as exc:
        raise RecreateError("container %s was re-created (new ID %s) but its old copy %s could not be removed: %s"
                            % (name, new_id[:12], backup, exc)) from exc
    return new_id


def _put_back(api: DockerAPI, old_id: str, name: str, new_id: str | None, old_stopped: bool) -> str:
    done = []
    try:
        if new_id:
            api.delete("/containers/%s" % new_id, {"force": True})
            done.append("the new container was removed")
        api.post("/containers/%s/rename" % old_id, {"name": name})
        done.append("the old container has its name back")
        if old_stopped:
            api.post("/containers/%s/start" % old_id)
            done.append("and runs again")
        return ", ".join(done)
    except Exception as exc:  # the engine may be the cause: say exactly how far the restore got
        return "restoring the old container failed too (%s) after: %s; old container ID %s" % (
            exc, ", ".join(done) or "nothing", old_id[:12])
