#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_config
short_description: Manage /etc/docker/daemon.json by merge, without ever breaking the daemon
version_added: 0.1.0
description:
  - Merges O(settings) into the Docker daemon configuration file. Nested mappings are merged key by key, other
    values are replaced, and keys the module was not told about are kept (a C(runtimes) block written by another
    tool survives).
  - Writes values dockerd reads as strings (every C(log-opts) value) as strings, refuses top-level keys dockerd
    does not know, and refuses a C(hosts) key while the docker unit passes C(-H) in its C(ExecStart), and any other
    key the unit already sets with a flag (such as C(--containerd) or C(--log-driver)), because dockerd does not
    start when a setting is given both ways.
  - Checks the candidate with C(dockerd --validate) where the installed dockerd has it (Docker Engine 23.0 and later).
  - An existing file that is not valid JSON (C(NaN) and C(Infinity) included) is never overwritten. The file is
    replaced atomically and the previous version is kept as a backup.
  - A O(path) that is a symbolic link is written through the link (the file it points to is replaced, the link
    stays); a link that points to nothing is refused, because creating its target or replacing the link would
    both change the operator's layout without asking.
  - The mode and owner of an existing file are kept (a C(0600) file holding proxy credentials stays C(0600)) unless
    O(mode) is given; a new file gets C(0644) unless O(mode) is given.
  - A C(null) value in O(settings) removes that key (C(null) for C(compress) under C(log-opts) removes that option).
    Every C(log-opts) value is written as a string. Booleans and integers are converted (C(3) becomes C("3")), while
    a number with a fraction, a list or a mapping is refused with its name, because dockerd reads only strings there
    and there is no single obvious string for them.
  - "Two runs at once: the read, validation and replacement happen under an exclusive lock on the file's directory,
    so a second run waits (up to O(lock_timeout) seconds) and then merges into what the first one wrote; no update
    is lost. A change made to the file by a tool that does not take the lock while a run validates can be
    overwritten by that run."
  - Says whether the change needs a restart of dockerd or whether a reload (SIGHUP) is enough. It never restarts
    the daemon itself; the roles restart it, wait for it, and roll back when it does not come back.
author:
  - Postmortem Remediation Maintainers (@postmortem-remediation)
options:
  path:
    description:
      - The daemon configuration file.
      - Its alias O(daemon_config) is the name the other modules of the collection give this file.
    type: path
    default: /etc/docker/daemon.json
    aliases: [daemon_config]
  settings:
    description:
      - Settings to merge into the file. With O(exclusive=true), the whole content of the file.
    type: dict
    default: {}
  remove_keys:
    description:
      - Keys to remove, top-level names or dotted paths into nested mappings such as C(log-opts.max-size).
    type: list
    elements: str
    default: []
  exclusive:
    description:
      - Make the file exactly O(settings) (after O(remove_keys) and coercion); keys not in O(settings) are removed.
    type: bool
    default: false
  allow_unknown_keys:
    description:
      - Accept top-level keys this module does not know, for a dockerd newer than its list.
    type: bool
    default: false
  validate:
    description:
      - Run C(dockerd --validate --config-file <candidate>) before writing, when the installed dockerd supports it.
    type: bool
    default: true
  dockerd_path:
    description: The dockerd binary used for validation. Found on the PATH when not given.
    type: path
  service_name:
    description: The systemd unit of the daemon, read for its C(ExecStart) flags.
    type: str
    default: docker
  backup:
    description: Keep a timestamped copy of the file it replaces.
    type: bool
    default: true
  mode:
    description:
      - File mode of the file. When not given, an existing file keeps its mode and a new file gets C(0644).
    type: raw
  lock_timeout:
    description: Seconds to wait for another run that is changing the same file to finish.
    type: int
    default: 120

extends_documentation_fragment:
  - postmortem.remediation.attributes
attributes:
  check_mode:
    support: full
    details: Computes and returns the change, runs the validation, writes nothing.
  diff_mode:
    support: full
    details: Returns the file text before and after.
  idempotent:
    support: full
    details: A second run with the same arguments reports no change."""

EXAMPLES = r"""
- name: Bound container logs daemon-wide
  postmortem.remediation.docker_daemon_config:
    settings:
      log-driver: local
      log-opts:
        max-size: 10m
        max-file: 5
  register: daemon_config

- name: Restart dockerd only when the change needs it
  ansible.builtin.systemd_service:
    name: docker
    state: restarted
  when: daemon_config.restart_needed

- name: Stop managing a key and leave the rest alone
  postmortem.remediation.docker_daemon_config:
    remove_keys:
      - log-opts.compress
"""

RETURN = r"""
changed_keys:
  description: Top-level keys whose value changed.
  returned: always
  type: list
  elements: str
  sample: [log-driver, log-opts]
restart_needed:
  description: True when a changed key is only read by dockerd at start (log and storage settings among them).
  returned: always
  type: bool
reload_enough:
  description: True when the file changed and every changed key is applied by a reload (SIGHUP).
  returned: always
  type: bool
backup_file:
  description: The copy of the replaced file.
  returned: when a file was replaced and O(backup=true)
  type: str
  sample: /etc/docker/daemon.json.12345.2026-11-21@10:00:00~
config:
  description: The configuration as it is (or in check mode, would be) on disk.
  returned: always
  type: dict
validated_with:
  description: How the candidate was checked, C(dockerd --validate) or C(rules) when dockerd has no validate flag.
  returned: always
  type: str
"""

import os
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native

from ansible_collections.postmortem.remediation.plugins.module_utils._daemon_config import (
    ConfigError,
    change_summary,
    exec_start_command,
    parse_existing,
    plan,
    render,
    validate,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._files import (
    WriteTargetError,
    acquire_lock,
    write_target,
)


class DaemonConfig:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.path = self.params["path"]
        try:
            # The file actually replaced: the link's target when path is a symlink (the link itself stays).
            self.target = write_target(self.path)
        except WriteTargetError as exc:
            module.fail_json(msg="Refusing to write %s: %s" % (self.path, exc), path=self.path)

    def read_current(self) -> tuple[str | None, dict[str, Any]]:
        if not os.path.exists(self.target):
            return None, {}
        try:
            with open(self.target, "rb") as handle:
                text = handle.read().decode("utf-8")
        except (IOError, OSError, UnicodeDecodeError) as exc:
            self.module.fail_json(msg="Cannot read %s: %s" % (self.path, to_native(exc)))
        return text, parse_existing(text, self.path)

    def unit_exec_start(self) -> str:
        systemctl = self.module.get_bin_path("systemctl")
        if not systemctl:
            return ""
        rc, out, _err = self.module.run_command(
            [systemctl, "show", self.params["service_name"], "--property=ExecStart", "--value"],
            environ_update={"LANG": "C"},
        )
        return exec_start_command(out) if rc == 0 else ""

    def dockerd(self) -> str | None:
        given = self.params["dockerd_path"]
        if given and not os.access(given, os.X_OK):
            self.module.fail_json(
                msg="dockerd_path %s is not an executable file; cannot validate %s" % (given, self.path)
            )
        return given or self.module.get_bin_path("dockerd")

    def dockerd_validates(self, dockerd: str) -> bool:
        rc, out, err = self.module.run_command([dockerd, "--help"], environ_update={"LANG": "C"})
        return rc == 0 and "--validate" in (out + err)

    def write_candidate(self, text: str) -> str:
        # Same directory as the target so the final move is atomic; check mode may run before it exists.
        directory = os.path.dirname(self.target) or "."
        if not os.path.isdir(directory):
            directory = tempfile.gettempdir()
        fd, tmp = tempfile.mkstemp(prefix=".daemon.json.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(to_bytes(text))
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def validate_with_dockerd(self, tmp: str) -> str:
        dockerd = self.dockerd()
        if not self.params["validate"] or not dockerd or not self.dockerd_validates(dockerd):
            return "rules"
        rc, out, err = self.module.run_command([dockerd, "--validate", "--config-file", tmp])
        if rc != 0:
            self.module.fail_json(
                msg="dockerd --validate refused the new %s, which was not written: %s"
                % (self.path, (err or out).strip()),
            )
        return "dockerd --validate"

    def run(self) -> dict[str, Any]:
        if self.module.check_mode:
            return self.plan_and_write()
        directory = os.path.dirname(self.target) or "."
        lock = acquire_lock(directory, self.params["lock_timeout"])
        if lock is None:
            self.module.fail_json(
                msg="Another run has been changing %s for more than %ss (it holds the lock on %s); nothing was "
                    "written. Run again when it has finished." % (self.path, self.params["lock_timeout"], directory),
                path=self.path,
            )
        try:
            return self.plan_and_write()
        finally:
            lock.close()

    def apply_mode(self, created: bool) -> bool:
        """The mode only when asked for; an existing file keeps its own, a new one gets 0644."""
        mode = self.params["mode"]
        if mode is None:
            return self.module.set_mode_if_different(self.target, "0644", False) if created else False
        return self.module.set_mode_if_different(self.target, mode, False)

    def plan_and_write(self) -> dict[str, Any]:
        params = self.params
        try:
            before_text, current = self.read_current()
            desired = plan(current, params["settings"], params["remove_keys"], params["exclusive"])
        except ConfigError as exc:
            self.module.fail_json(msg=to_native(exc), path=self.path)
        problems = validate(desired, params["allow_unknown_keys"], self.unit_exec_start())
        if problems:
            self.module.fail_json(
                msg="Refusing to write %s: %s" % (self.path, "; ".join(problems)), problems=problems, path=self.path
            )

        # Compared as data, not text: a hand-formatted file that already says the same is left alone.
        summary = change_summary(current, desired)
        changed = bool(summary["changed_keys"])
        result = dict(changed=changed, path=self.path, validated_with="rules", **summary)
        after_text = render(desired)
        if self.module._diff:
            result["diff"] = dict(
                before=before_text or "", after=after_text if changed else (before_text or ""),
                before_header=self.path, after_header=self.path,
            )
        if not changed:
            # Same content: a mode given explicitly is the only thing left to put right (honours check mode).
            if before_text is not None:
                result["changed"] = self.apply_mode(created=False)
            return result

        tmp = self.write_candidate(after_text)
        try:  # the candidate never outlives the run, whatever fails (validation, backup, the final move)
            result["validated_with"] = self.validate_with_dockerd(tmp)
            if self.module.check_mode:
                return result
            if before_text is not None and params["backup"]:
                result["backup_file"] = self.module.backup_local(self.target)
            # atomic_move gives the new file the mode and owner of the one it replaces.
            try:
                self.module.atomic_move(tmp, self.target)
            except Exception as exc:  # ansible-core raises a bare Exception when the final rename fails
                self.module.fail_json(msg="cannot replace %s: %s; it was left as it was" % (self.path, exc),
                                      **result)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        self.apply_mode(created=before_text is None)
        return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/docker/daemon.json", aliases=["daemon_config"]),
            settings=dict(type="dict", default={}),
            remove_keys=dict(type="list", elements="str", default=[], no_log=False),
            exclusive=dict(type="bool", default=False),
            allow_unknown_keys=dict(type="bool", default=False),
            validate=dict(type="bool", default=True),
            dockerd_path=dict(type="path"),
            service_name=dict(type="str", default="docker"),
            backup=dict(type="bool", default=True),
            mode=dict(type="raw"),
            lock_timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    directory = os.path.dirname(module.params["path"])
    if directory and not os.path.isdir(directory) and not module.check_mode:
        try:
            os.makedirs(directory, 0o755)
        except OSError as exc:
            module.fail_json(msg="Cannot create %s for %s: %s" % (directory, module.params["path"], exc))
    module.exit_json(**DaemonConfig(module).run())


if __name__ == "__main__":
    main()
