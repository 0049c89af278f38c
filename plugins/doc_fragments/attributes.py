# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The attributes every module of the collection declares, in one style: the fragment says what each attribute
    # means, the module says only its support and, in details, how it behaves (a module's own keys win).
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check mode and return the changed status it predicts without modifying the target.
  diff_mode:
    description: Returns details on what has changed (or would change in check mode) when in diff mode.
  idempotent:
    description: >-
      When run twice in a row outside check mode with the same arguments, the second run reports no change.
  platform:
    description: The target systems the module runs on.
    support: full
    platforms: posix
"""

    # Added by the modules that only read (the _info modules and docker_daemon_state).
    READ_ONLY = r"""
attributes:
  check_mode:
    support: full
    details: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    details: Changes nothing, so there is nothing to diff.
  idempotent:
    support: full
    details: Never changes the host.
"""

    # Added by the modules in the action group docker (meta/runtime.yml): the modules that take the Docker API options.
    ACTIONGROUP_DOCKER = r"""
attributes:
  action_group:
    description: Use C(group/postmortem.remediation.docker) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - postmortem.remediation.docker
"""

    # Added by the modules in the action group deletion_guard: the modules that take the deletion-guard options.
    ACTIONGROUP_DELETION_GUARD = r"""
attributes:
  action_group:
    description: >-
      Use C(group/postmortem.remediation.deletion_guard) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - postmortem.remediation.deletion_guard
"""
