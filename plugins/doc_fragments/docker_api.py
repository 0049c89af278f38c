# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The Docker Engine API options, declared once in plugins/module_utils/_docker_api.py (docker_api_argument_spec)
    # and merged into every module that talks to the engine. The names follow community.docker. A module whose
    # timeout default differs states only `timeout: {default: N}` under its own options.
    DOCUMENTATION = r"""
options:
  docker_host:
    description:
      - The Docker Engine API socket, as C(unix:///path/to/socket) or as the plain path C(/path/to/socket).
      - Only a Unix socket on the managed host is supported; C(tcp://) and C(ssh://) are refused.
      - Set it once for every module of the collection that talks to the engine with
        C(module_defaults) and the action group C(group/postmortem.remediation.docker).
    type: str
    default: unix:///var/run/docker.sock
    aliases: [docker_socket]
  timeout:
    description:
      - Seconds to wait for one Engine API call.
    type: int
    default: 60
"""
