#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_log_info
short_description: Report each container's log driver, its limits, and how much disk its logs use
version_added: 0.1.0
description:
  - Daemon-wide log limits apply only to containers created after the change. This module lists every container
    with the log configuration it was created with, whether its logs are bounded, and the bytes its log files use now,
    so that the containers still able to fill the disk can be named and re-created.
  - A C(json-file) container without C(max-size) (or with C(max-size=-1)) is unbounded. C(local) is bounded by its
    defaults unless C(max-size=-1). C(none) writes nothing. Remote drivers keep a bounded local cache (dual logging).
  - Talks to the Docker Engine API over its Unix socket with the standard library.
author:
  - Postmortem Remediation Maintainers (@postmortem-remediation)
options:
  include_stopped:
    description: Also list containers that are not running (their logs still use disk).
    type: bool
    default: true

extends_documentation_fragment:
  - postmortem.remediation.attributes
  - postmortem.remediation.attributes.read_only
  - postmortem.remediation.attributes.actiongroup_docker
  - postmortem.remediation.docker_api"""

EXAMPLES = r"""
- name: Find containers that can still fill the disk with logs
  postmortem.remediation.docker_log_info:
  register: logs

- name: Name them
  ansible.builtin.debug:
    msg: "{{ logs.unbounded | map(attribute='name') | list }}"
"""

RETURN = r"""
daemon_log_driver:
  description: The daemon's default log driver, for containers created from now on.
  returned: always
  type: str
  sample: json-file
containers:
  description: Every container with its log configuration and current log size.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Short container ID.
      type: str
    name:
      description: Container name without the leading slash.
      type: str
    state:
      description: Container state, such as C(running) or C(exited).
      type: str
    driver:
      description: The log driver the container was created with.
      type: str
    options:
      description: The log options it was created with.
      type: dict
    bounded:
      description: Whether the log files have a size limit.
      type: bool
    reason:
      description: Why the logs count as bounded or unbounded.
      type: str
    log_bytes:
      description: Bytes its log files use now (0 when not stored locally).
      type: int
unbounded:
  description: The subset of RV(containers) whose logs have no size limit, largest first.
  returned: always
  type: list
  elements: dict
unbounded_log_bytes:
  description: Bytes used by the logs of unbounded containers together.
  returned: always
  type: int
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.postmortem.remediation.plugins.module_utils._container_logs import log_report
from ansible_collections.postmortem.remediation.plugins.module_utils._docker_api import (
    DockerAPI,
    DockerAPIError,
    docker_api_argument_spec,
    docker_api_from_module,
)


def inspect_all(api: DockerAPI, listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Inspect each listed container; one removed since the listing is skipped, not an error."""
    inspected = []
    for item in listed:
        try:
            inspected.append(api.inspect_container(item["Id"]))
        except DockerAPIError as exc:
            if exc.status != 404:
                raise
    return inspected


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            include_stopped=dict(type="bool", default=True),
            **docker_api_argument_spec()
        ),
        supports_check_mode=True,
    )
    api = docker_api_from_module(module)
    try:
        info = api.info()
        inspected = inspect_all(api, api.containers(all=module.params["include_stopped"]))
        report = log_report(inspected, info)
    except DockerAPIError as exc:
        module.fail_json(msg="Cannot read container log settings: %s" % exc)
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
