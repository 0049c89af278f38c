#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: timer_bundle
short_description: Install a script run by a systemd timer (directories, files, units) and start the timer, in one call
version_added: 0.1.0
description:
  - Puts in place everything a script run by a systemd timer needs - its directories, its files (the script, the
    helper files beside it, its configuration), its unit files and drop-ins - and enables and starts (or stops and
    disables) the timer, in one module call. A role that did this with one task per file paid one round trip to the
    host per file and per directory on every run, even when nothing had changed.
  - Says what changed, file by file. An idempotent run reads the files and the timer's state and writes nothing.
  - Each file and unit is written atomically (a temporary file in the same directory, then a rename), with a backup
    of the file it replaces. A file with O(files[].validate) is checked before it replaces anything; a rejected file
    is not written and the module fails naming the file and what the command said.
  - Unit files that change are checked with C(systemd-analyze verify) before they are installed (copies under their
    own names in a temporary directory), and any warning about them fails the run, because systemd ignores a line
    it cannot parse and verify only warns. Units that did not change are not verified again.
  - C(systemctl daemon-reload) runs only when a unit or drop-in changed; the timer is enabled, started, restarted
    (its own unit changed while it ran) or stopped and disabled only when its state is not the wanted one.
  - Files are written in the order given, units after the files, so a validation command may run a file written
    earlier in the same call.
  - The text of the files and units is not logged to the host's journal nor echoed back in the result's
    C(invocation); they show each text's size and SHA-256 instead. The diff still carries the text of what changes.
author:
  - Postmortem Remediation Maintainers (@postmortem-remediation)
options:
  directories:
    description:
      - Directories to create (with their parents) and keep at O(directory_mode), O(owner) and O(group).
      - The parent directory of each file and of each drop-in is created too when it is missing.
    type: list
    elements: path
    default: []
  directory_mode:
    description: Mode of the directories.
    type: raw
    default: "0755"
  files:
    description: Files to install, in this order.
    type: list
    elements: dict
    default: []
    suboptions:
      dest:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: The exact text of the file.
        type: str
        required: true
      mode:
        description: Mode of the file.
        type: raw
        default: "0644"
      validate:
        description:
          - Command that checks the new file before it is installed; C(%s) stands for the path of the candidate.
          - Split like a shell would (no shell runs it). A non-zero exit refuses the file.
        type: str
  units:
    description:
      - Unit files and drop-ins to install under O(unit_dir), after the files.
      - O(units[].name) is a unit file name (C(docker-prune.timer)) or a drop-in (C(docker.service.d/extra.conf)).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Unit file name, or C(<unit>.d/<name>.conf) for a drop-in.
        type: str
        required: true
      content:
        description: The exact text of the unit file.
        type: str
        required: true
  unit_dir:
    description: Directory of the unit files.
    type: path
    default: /etc/systemd/system
  daemon_reload:
    description:
      - Run C(systemctl daemon-reload) when a unit or drop-in changed. Turn it off only where systemd does not run
        (a root file system being prepared for an image).
    type: bool
    default: true
  verify_units:
    description:
      - Check unit files that change with C(systemd-analyze verify) before installing them (drop-ins are not
        verified on their own). Any warning that names one of them refuses them all.
    type: bool
    default: true
  timer:
    description:
      - Name of the timer unit to enable and start (O(timer_active=true)), or to stop and disable
        (O(timer_active=false)).
      - Left alone when not given.
    type: str
  timer_active:
    description: Whether O(timer) should be enabled and running.
    type: bool
    default: true
  owner:
    description: Owner of the directories, files and units.
    type: str
    default: root
  group:
    description: Group of the directories, files and units.
    type: str
    default: root
  backup:
    description: Keep a timestamped copy (C(<file>.<pid>.<date>~)) of every file and unit it replaces.
    type: bool
    default: true
notes:
  - The roles C(postmortem.remediation.docker_prune_timer) and C(postmortem.remediation.docker_signals) install their
    scripts with it; in C(playbooks/harden_docker_hosts.yml) they hand their bundles to
    O(postmortem.remediation.docker_daemon_state#module:timer_bundles) instead, which installs them the same way in the
    module call of C(postmortem.remediation.docker_log_rotation).
extends_documentation_fragment:
  - postmortem.remediation.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reports what would change (files, units, the timer's enablement and state) and writes nothing. Changed units
        are still verified. O(files[].validate) commands are not run, since they may need files not yet written.
  diff_mode:
    support: full
    details: Returns the text before and after of every file and unit that changes, and mode and owner changes.
  idempotent:
    support: full
    details: A second run with the same arguments reports no change and runs no command that changes anything."""

EXAMPLES = r"""
- name: Install a collector, its configuration and its units, and start its timer
  postmortem.remediation.timer_bundle:
    directories: [/usr/local/lib/collector, /etc/collector]
    files:
      - dest: /usr/local/lib/collector/collector.py
        content: "{{ lookup('ansible.builtin.file', 'collector.py', rstrip=false) }}"
      - dest: /etc/collector/config.json
        content: "{{ {'interval': 60} | to_nice_json }}\n"
        validate: /usr/bin/python3 /usr/local/lib/collector/collector.py --check-config --config %s
    units:
      - name: collector.service
        content: "{{ lookup('ansible.builtin.template', 'collector.service.j2') }}"
      - name: collector.timer
        content: "{{ lookup('ansible.builtin.template', 'collector.timer.j2') }}"
    timer: collector.timer
  register: collector

- name: Say what changed
  ansible.builtin.debug:
    msg: "{{ collector.changed_files + collector.changed_units }}"
"""

RETURN = r"""
changed_files:
  description: Files whose content, mode or owner changed (or would change in check mode).
  returned: always
  type: list
  elements: str
  sample: [/usr/local/lib/docker-prune/_prune_policy.py]
changed_units:
  description: Unit files and drop-ins whose content, mode or owner changed (or would change).
  returned: always
  type: list
  elements: str
  sample: [docker-prune.timer]
created_directories:
  description: Directories created (or that would be created).
  returned: always
  type: list
  elements: str
verified_units:
  description: Units checked with C(systemd-analyze verify) in this run; empty when no unit changed.
  returned: always
  type: list
  elements: str
daemon_reloaded:
  description: Whether C(systemctl daemon-reload) ran (or would run).
  returned: always
  type: bool
backup_files:
  description: Backup copy of each file or unit replaced, by path.
  returned: always
  type: dict
  sample: {/etc/docker-prune/config.json: /etc/docker-prune/config.json.1234.2026-11-30@12:00:00~}
timer:
  description: The timer's state before, the actions taken (or planned) and a one-line plan.
  returned: when O(timer) is given
  type: dict
  contains:
    name:
      description: The timer unit.
      type: str
    enabled_before:
      description: Its C(UnitFileState) before the run (C(not-found) for a unit systemd did not know).
      type: str
    active_before:
      description: Its C(ActiveState) before the run.
      type: str
    actions:
      description: The systemctl verbs run (or planned), in order, such as C(enable), C(start), C(restart).
      type: list
      elements: str
    plan:
      description: A sentence saying what the run does or would do to the timer; empty when nothing.
      type: str
"""

from ansible_collections.postmortem.remediation.plugins.module_utils._timer_bundle import (
    ARGUMENT_SPEC,
    BundleModule,
    TimerBundle,
)


def main() -> None:
    module = BundleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    module.exit_json(**TimerBundle(module).run())


if __name__ == "__main__":
    main()
