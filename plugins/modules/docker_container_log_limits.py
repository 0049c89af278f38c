#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_container_log_limits
short_description: Re-create a running container whose log is unbounded, with the same configuration and log limits
version_added: 0.1.0
description:
  - Daemon-wide log limits apply only to containers created after them; a container created before keeps an
    unbounded C(json-file) log that grows right back after a cut. This module re-creates one named running container
    with the same Config, HostConfig, networks (with their aliases and static addresses), name and labels, but with
    C(max-size)/C(max-file) log options (the given ones, else the daemon's current ones).
  - B(Re-creating restarts the workload.) The old container is stopped (its stop signal and timeout) and the new one
    started, so the service is down for that time and loses its in-memory state. Its named volumes and bind mounts
    are kept; its writable layer (files written outside volumes) is not.
  - It plans first. It refuses, with the reason, and changes nothing when the container cannot be re-created
    faithfully - not running; started with C(--rm) (it could not be put back); managed by Compose, Swarm or
    Kubernetes (by their labels, unless I(allow_managed)); anonymous volumes of its own (the copy would get new,
    empty ones); sharing the network, PID or IPC namespace of another container, or holding one that others share
    (stopping it would cut their network or kill their processes); the target of a legacy C(--link) (the linking
    containers' C(/etc/hosts) and environment name the old one); carrying I(keep_label). A refusal is a success
    with C(refused=true).
  - Re-created the same - a healthcheck, a restart policy, C(--init), a chosen hostname, a legacy C(--link) to
    another container, and C(--volumes-from) (the copy takes the same volumes again, anonymous ones included).
  - The old container is renamed (C(NAME-pmr-old-TIMESTAMP)) and kept, stopped, until the new one runs after
    I(settle_seconds); on any failure the copy is removed and the old container gets its name back and runs again.
    Then the old container is removed (never its volumes), and its log file with it.
  - A container whose log is already bounded is left alone. Without I(max_size), the daemon's current log options
    are read by creating (never starting) and removing a probe container, in check mode too.
  - Talks to the Docker Engine API over its Unix socket with the standard library.
author:
  - Postmortem Remediation Maintainers (@postmortem-remediation)
options:
  name:
    description: Name (or ID) of the running container to re-create.
    type: str
    required: true
  max_size:
    description:
      - Rotate the log at this size (for example C(10m)). Default, the daemon's current C(max-size); the run fails
        when the daemon has none and this is not given.
    type: str
  max_file:
    description: Keep this many log files. Default, the daemon's current C(max-file) (with I(max_size), C(1)).
    type: str
  allow_managed:
    description: Re-create a container even when a Compose, Swarm or Kubernetes label says an orchestrator owns it.
    type: bool
    default: false
  keep_label:
    description:
      - A container with this label is refused - its log is protected, and removing the old container removes its
        log. The same label as C(docker_reclaim)'s I(keep_label). Empty to protect nothing.
    type: str
    default: postmortem.remediation.keep
  settle_seconds:
    description: The new container must still run this many seconds after its start, else the old one is put back.
    type: int
    default: 3
extends_documentation_fragment:
  - postmortem.remediation.attributes
  - postmortem.remediation.attributes.actiongroup_docker
  - postmortem.remediation.docker_api
attributes:
  check_mode:
    support: full
    details: Plans and reports what it would change or why it refuses; changes no container.
  diff_mode:
    support: full
    details: Shows the log configuration before and after.
  idempotent:
    support: full
    details: A container whose log is bounded is left alone."""

EXAMPLES = r"""
- name: Re-create api so that its log rotates (restarts it)
  postmortem.remediation.docker_container_log_limits:
    name: api
    max_size: 10m
    max_file: "5"
  register: recreated

- name: Say when it was refused
  ansible.builtin.debug:
    msg: "{{ recreated.reasons }}"
  when: recreated.refused
"""

RETURN = r"""
container:
  description: The container's name.
  returned: always
  type: str
refused:
  description: Whether the container was refused (then nothing changed; see RV(reasons)).
  returned: always
  type: bool
reasons:
  description: Why it was refused, one sentence per cause.
  returned: always
  type: list
  elements: str
bounded_before:
  description: Whether its log was already bounded.
  returned: always
  type: bool
log_config_before:
  description: Its log configuration before.
  returned: always
  type: dict
log_config_after:
  description: The log configuration of the new container (planned in check mode); empty when nothing changes.
  returned: always
  type: dict
limits_from:
  description: Where the new limits come from.
  returned: when changed
  type: str
old_id:
  description: ID of the container before.
  returned: always
  type: str
new_id:
  description: ID of the new container (not in check mode).
  returned: when changed and not in check mode
  type: str
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.postmortem.remediation.plugins.module_utils._container_logs import classify
from ansible_collections.postmortem.remediation.plugins.module_utils._container_recreate import (
    RecreateError,
    bounded_log_config,
    changes,
    container_name,
    create_spec,
    neighbours,
    recreate,
    refusals,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._docker_api import (
    DockerAPI,
    DockerAPIError,
    docker_api_argument_spec,
    docker_api_from_module,
)


def daemon_log_config(api: DockerAPI, container: dict[str, Any]) -> dict[str, Any]:
    """What the daemon gives a new container: create a probe (never started), read its LogConfig, remove it."""
    probe = api.post("/containers/create", {"name": "%s-pmr-logprobe" % container_name(container)}, body={
        "Image": container["Image"], "Entrypoint": ["/pmr-log-probe"], "Cmd": [],
        "HostConfig": {"NetworkMode": "none", "LogConfig": {"Type": "", "Config": {}}},
    })
    try:
        return api.inspect_container(probe["Id"])["HostConfig"]["LogConfig"]
    finally:
        api.delete("/containers/%s" % probe["Id"], {"force": True})


def image_reference(api: DockerAPI, container: dict[str, Any]) -> str:
    """The image name the container was created with if it still names the same image, else the image ID."""
    name = (container.get("Config") or {}).get("Image") or ""
    try:
        if name and api.get("/images/%s/json" % name).get("Id") == container["Image"]:
            return name
    except DockerAPIError:
        pass
    return container["Image"]


def run(module: AnsibleModule, api: DockerAPI) -> dict[str, Any]:
    params = module.params
    container = api.inspect_container(params["name"])
    name = container_name(container)
    log_before = container["HostConfig"]["LogConfig"]
    bounded, why = classify(log_before.get("Type"), log_before.get("Config"))
    result = dict(changed=False, container=name, refused=False, reasons=[], bounded_before=bounded,
                  log_config_before=log_before, log_config_after={}, old_id=container["Id"])
    if bounded:
        result["msg"] = "%s: log already bounded (%s); left alone" % (name, why)
        return result
    reasons = refusals(container, neighbours(api, container), params["allow_managed"], params["keep_label"])
    daemon_config = None if params["max_size"] else daemon_log_config(api, container)
    log_after, source = bounded_log_config(log_before, daemon_config, params["max_size"], params["max_file"])
    if log_after is None:
        reasons.append("%s: no bounded log options to give it: %s" % (name, source))
    if reasons or log_after is None:  # a missing log_after is among the reasons
        result.update(refused=True, reasons=reasons,
                      msg="REFUSED to re-create %s (its log stays unbounded): %s" % (name, "; ".join(reasons)))
        return result
    body, extra_networks = create_spec(container, log_after, image_reference(api, container))
    result.update(changed=True, log_config_after=log_after, limits_from=source)
    if module._diff:
        result["diff"] = changes(container, log_after)
    if module.check_mode:
        result["msg"] = "%s would be re-created (restarted) with log options %s from %s" % (
            name, log_after["Config"], source)
        return result
    new_id = recreate(api, container, body, extra_networks, settle=params["settle_seconds"])
    result["new_id"] = new_id
    result["msg"] = "%s re-created (restarted) with log options %s from %s" % (name, log_after["Config"], source)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            max_size=dict(type="str"),
            max_file=dict(type="str"),
            allow_managed=dict(type="bool", default=False),
            keep_label=dict(type="str", default="postmortem.remediation.keep"),
            settle_seconds=dict(type="int", default=3),
            **docker_api_argument_spec()
        ),
        supports_check_mode=True,
    )
    api = docker_api_from_module(module)
    try:
        module.exit_json(**run(module, api))
    except RecreateError as exc:
        module.fail_json(msg=str(exc), container=module.params["name"])
    except DockerAPIError as exc:
        module.fail_json(msg="Cannot re-create container %s with log limits: %s" % (module.params["name"], exc),
                         container=module.params["name"])


if __name__ == "__main__":
    main()
