# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The options of the one deletion guard (plugins/module_utils/_deletion_guard.py, DELETION_GUARD_ARGUMENT_SPEC)
    # that every guarded destructive module takes. Each module documents its own bounds (what it counts).
    DOCUMENTATION = r"""
options:
  on_refusal:
    description:
      - What a refusal does. V(fail) fails the task, so the playbook stops (the safe default for a destructive step).
      - V(report) returns RV(refused=true) with the reason and does not fail, for plays that decide themselves.
      - Either way nothing was changed, and the result carries the checks in RV(guard).
      - Set it once for every guarded module with C(module_defaults) and the action group
        C(group/postmortem.remediation.deletion_guard).
    type: str
    choices: [fail, report]
    default: fail
  list_limit:
    description:
      - How many names each returned list (and the diff) holds at most.
    type: int
    default: 50
"""
