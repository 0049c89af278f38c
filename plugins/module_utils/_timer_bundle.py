# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What M(timer_bundle) does, shared with M(docker_daemon_state), which installs timer bundles in its own call.

A harden run that installed each timer role's bundle in a module call of its own paid one module start per role and
per host: on a fleet, that start (Python, AnsiballZ, the controller's worker) is most of an idempotent run's cost.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text

from ansible_collections.postmortem.remediation.plugins.module_utils._files import (
    WriteTargetError,
    write_target,
)

_UNIT = r"[A-Za-z0-9:_.@\\-]+\.(?:service|timer|socket|path|target|mount|slice)"
UNIT_NAME = re.compile(r"^%s$" % _UNIT)
DROP_IN_NAME = re.compile(r"^%s\.d/[A-Za-z0-9:_.@\\-]+\.conf$" % _UNIT)


def read_bytes(path: str) -> bytes | None:
    """The content of ``path``, or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def summarized(params: dict) -> dict:
    """``params`` with the text of every file and unit replaced by its size and SHA-256, also in ``timer_bundles``.

    AnsibleModule logs its arguments to the host's journal on every run and echoes them back in the result
    (``invocation``): with the text of every file in them that was some 75 kB each way on every idempotent run, for
    nothing a reader of the log or of the result needs (the diff carries the text of what changes).
    """
    brief = dict(params)
    for key in ("files", "units"):
        if isinstance(brief.get(key), list):
            brief[key] = [dict(entry, content=digest(entry["content"]))
                          if isinstance(entry, dict) and isinstance(entry.get("content"), str) else entry
                          for entry in brief[key]]
    if isinstance(brief.get("timer_bundles"), list):
        brief["timer_bundles"] = [summarized(entry) if isinstance(entry, dict) else entry
                                  for entry in brief["timer_bundles"]]
    return brief


def digest(content: str) -> str:
    data = to_bytes(content, errors="surrogate_or_strict")
    return "(%d bytes, sha256 %s)" % (len(data), hashlib.sha256(data).hexdigest())


class BundleModule(AnsibleModule):
    """AnsibleModule that logs and returns its arguments without the text of the files and units."""

    def _log_invocation(self) -> None:
        params = self.params
        self.params = summarized(params)
        try:
            super()._log_invocation()
        finally:
            self.params = params

    def _return_formatted(self, kwargs: dict) -> None:
        kwargs.setdefault("invocation", {"module_args": summarized(self.params)})
        super()._return_formatted(kwargs)


def verify_warnings(stderr: str, names: list[str]) -> list[str]:
    """The lines of systemd-analyze verify output that are about one of ``names`` (other units' noise is ignored)."""
    return [line for line in stderr.splitlines() if any(name in line for name in names)]


class TimerBundle:
    """Plans every directory, file, unit and the timer first, then changes only what differs."""

    def __init__(self, module: AnsibleModule, params: dict | None = None, label: str = "") -> None:
        """``params`` are the module's own unless given (one of docker_daemon_state's ``timer_bundles``, checked
        with bundle_params); ``label`` starts every failure message, to say which bundle failed."""
        self.module = module
        self.params = module.params if params is None else params
        self.label = label
        self.check = module.check_mode
        self.result: dict = dict(changed=False, changed_files=[], changed_units=[], created_directories=[],
                                 verified_units=[], daemon_reloaded=False, backup_files={})
        self.diffs: list[dict] = []

    # -- helpers -----------------------------------------------------------------------------------------------
    def fail(self, msg: str) -> None:
        """Fail naming the bundle, with ``changed`` saying what this bundle changed before the failure."""
        self.module.fail_json(msg=self.label + msg, **dict(self.result, changed=self.changed()))

    def changed(self) -> bool:
        """Whether anything was (check mode: would be) changed so far."""
        result = self.result
        return bool(result["changed"] or result["changed_files"] or result["changed_units"]
                    or result["created_directories"] or result["daemon_reloaded"]
                    or result.get("timer", {}).get("actions"))

    def attributes(self, path: str, mode: object) -> dict:
        return self.module.load_file_common_arguments(
            dict(mode=mode, owner=self.params["owner"], group=self.params["group"]), path=path)

    def fix_attributes(self, path: str, mode: object) -> bool:
        """Mode and owner put right (check mode: only reported); the changes go into the diff."""
        diff: dict = dict(before={"path": path}, after={"path": path})
        changed = self.module.set_fs_attributes_if_different(self.attributes(path, mode), False, diff)
        if changed and self.module._diff:
            self.diffs.append(diff)
        return changed

    def ensure_directory(self, path: str, mode: object) -> bool:
        """``path`` as a directory with ``mode`` and the owner; True when it was (or would be) created or fixed."""
        if os.path.isdir(path):
            return self.fix_attributes(path, mode)
        if path in self.result["created_directories"]:
            return True  # check mode: already planned
        if os.path.lexists(path):
            self.fail("%s exists and is not a directory: cannot install into it; move it away and run again" % path)
        self.result["created_directories"].append(path)
        if self.check:
            return True
        try:
            os.makedirs(path, 0o755)
        except OSError as exc:
            self.fail("Cannot create the directory %s: %s" % (path, to_native(exc)))
        self.fix_attributes(path, mode)
        return True

    def candidate(self, target: str, content: bytes, mode: object) -> str:
        """``content`` in a temporary file beside ``target``, with the final mode and owner."""
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(target), dir=os.path.dirname(target))
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            self.module.set_fs_attributes_if_different(self.attributes(tmp, mode), False)
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def validate(self, dest: str, tmp: str, command: str) -> None:
        try:
            argv = [tmp if word == "%s" else word.replace("%s", tmp) for word in shlex.split(command)]
        except ValueError as exc:
            self.fail("Cannot read the validate command of %s (%s): %s" % (dest, command, exc))
        rc, out, err = self.module.run_command(argv)
        if rc != 0:
            self.fail("%s was not written: %s refused it (exit %s): %s"
                      % (dest, command.replace("%s", "<candidate>"), rc, (err or out).strip()))

    def install(self, path: str, content: bytes, mode: object, validate: str | None = None) -> bool:
        """Write ``content`` at ``path`` when it differs (atomically, with a backup), then fix mode and owner."""
        try:
            target = write_target(path)
        except WriteTargetError as exc:
            self.fail("Refusing to write %s: %s" % (path, exc))
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):  # a missing parent is created; an existing one is not this module's to change
            self.ensure_directory(parent, self.params["directory_mode"])
        if os.path.isdir(target):
            self.fail("%s is a directory: cannot write a file there; move it away and run again" % path)
        before = read_bytes(target)
        changed = before != content
        if changed and self.module._diff:
            self.diffs.append(dict(before_header=path, after_header=path,
                                   before=to_text(before or b"", errors="surrogate_or_replace"),
                                   after=to_text(content, errors="surrogate_or_replace")))
        if changed and not self.check:
            tmp = self.candidate(target, content, mode)
            try:  # the candidate never outlives the run, whatever fails
                if validate:
                    self.validate(path, tmp, validate)
                if before is not None and self.params["backup"]:
                    self.result["backup_files"][path] = self.module.backup_local(target)
                try:
                    self.module.atomic_move(tmp, target)
                except Exception as exc:  # ansible-core raises a bare Exception when the final rename fails
                    self.fail("Cannot replace %s: %s; it was left as it was" % (path, exc))
            finally:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
        if before is None and self.check:
            return True  # nothing to compare mode and owner with yet
        return self.fix_attributes(target, mode) or changed

    # -- the steps ---------------------------------------------------------------------------------------------
    def check_names(self) -> None:
        for unit in self.params["units"]:
            name = unit["name"]
            if not (UNIT_NAME.match(name) or DROP_IN_NAME.match(name)):
                self.fail("Unit %r is neither a unit file name (name.service, name.timer...) nor a drop-in "
                          "(unit.service.d/name.conf)" % name)
        timer = self.params["timer"]
        if timer is not None and not (UNIT_NAME.match(timer) and timer.endswith(".timer")):
            self.fail("timer %r is not the name of a timer unit (name.timer)" % timer)
        for entry in self.params["files"]:
            if not os.path.isabs(entry["dest"]):
                self.fail("files: dest %r is not an absolute path" % entry["dest"])
            if entry.get("validate") is not None and "%s" not in entry["validate"]:
                self.fail("The validate command of %s must name the candidate as %%s: %s"
                          % (entry["dest"], entry["validate"]))

    def directories(self) -> None:
        for path in self.params["directories"]:
            if self.ensure_directory(path, self.params["directory_mode"]):
                self.result["changed"] = True

    def files(self) -> None:
        for entry in self.params["files"]:
            if self.install(entry["dest"], to_bytes(entry["content"]), entry["mode"], entry.get("validate")):
                self.result["changed_files"].append(entry["dest"])

    def changed_unit_contents(self) -> list[dict]:
        unit_dir = self.params["unit_dir"]
        return [unit for unit in self.params["units"]
                if read_bytes(os.path.join(unit_dir, unit["name"])) != to_bytes(unit["content"])]

    def verify(self, units: list[dict]) -> None:
        """systemd-analyze verify on copies under their own names, before anything replaces the installed units."""
        whole = [unit for unit in units if "/" not in unit["name"]]
        if not whole or not self.params["verify_units"]:
            return
        analyze = self.module.get_bin_path("systemd-analyze")
        if not analyze:
            self.fail("systemd-analyze is not installed, so the units %s cannot be verified; nothing of them was "
                      "written (verify_units: false skips the check)" % ", ".join(u["name"] for u in whole))
        workdir = tempfile.mkdtemp(prefix="timer-bundle-verify.")
        try:
            paths = []
            for unit in whole:
                path = os.path.join(workdir, unit["name"])
                with open(path, "wb") as handle:
                    handle.write(to_bytes(unit["content"]))
                paths.append(path)
            rc, out, err = self.module.run_command([analyze, "verify", *paths], environ_update={"LANG": "C"})
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        names = [unit["name"] for unit in whole]
        self.result["verified_units"] = names
        warnings = verify_warnings(err.replace(workdir + "/", ""), names)
        if rc != 0 or warnings:
            self.fail("systemd-analyze verify refused %s (exit %s), so no unit was written: %s"
                      % (", ".join(names), rc, "; ".join(warnings) or (err or out).strip()))

    def units(self) -> None:
        self.verify(self.changed_unit_contents())
        unit_dir = self.params["unit_dir"]
        reload_needed = False
        for unit in self.params["units"]:
            path = os.path.join(unit_dir, unit["name"])
            before = read_bytes(path)
            if self.install(path, to_bytes(unit["content"]), "0644"):
                self.result["changed_units"].append(unit["name"])
                reload_needed = reload_needed or before != to_bytes(unit["content"])
        if reload_needed and self.params["daemon_reload"]:
            self.result["daemon_reloaded"] = True
            if not self.check:
                self.systemctl("daemon-reload")

    def systemctl(self, *argv: str) -> str:
        systemctl = self.module.get_bin_path("systemctl", required=False)
        if not systemctl:
            self.fail("systemctl is not installed: cannot %s" % " ".join(argv))
        rc, out, err = self.module.run_command([systemctl, *argv], environ_update={"LANG": "C"})
        if rc != 0:
            self.fail("systemctl %s failed (exit %s): %s" % (" ".join(argv), rc, (err or out).strip()))
        return out

    def timer_state(self, name: str) -> dict:
        out = self.systemctl("show", name, "--property=LoadState,UnitFileState,ActiveState")
        state = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return dict(load=state.get("LoadState", ""), enabled=state.get("UnitFileState", "") or "not-found",
                    active=state.get("ActiveState", ""))

    def timer(self) -> None:
        name = self.params["timer"]
        if name is None:
            return
        state = self.timer_state(name)
        unknown = state["load"] == "not-found"
        if unknown and not self.check and self.params["timer_active"]:
            self.fail("systemd does not know %s (LoadState not-found): install its unit with units, or in an earlier "
                      "run" % name)
        actions = []
        if self.params["timer_active"]:
            if state["enabled"] not in ("enabled", "static"):
                actions.append("enable")
            if state["active"] != "active":
                actions.append("start")
            elif name in self.result["changed_units"]:
                actions.append("restart")  # a running timer keeps the schedule it started with
        else:
            if state["active"] in ("active", "activating"):
                actions.append("stop")
            if state["enabled"] == "enabled":
                actions.append("disable")
        plan = ""
        if actions:
            plan = "%s %s %s" % ("would" if self.check else "did", " and ".join(actions), name)
            if unknown:
                plan += " (check mode: the unit is not installed yet)"
        self.result["timer"] = dict(name=name, enabled_before=state["enabled"], active_before=state["active"],
                                    actions=actions, plan=plan)
        if not self.check:
            for action in actions:
                self.systemctl(action, name)

    def run(self) -> dict:
        self.check_names()
        self.directories()
        self.files()
        self.units()
        self.timer()
        result = self.result
        result["changed"] = self.changed()
        if self.module._diff:
            result["diff"] = self.diffs
        return result


ARGUMENT_SPEC: dict = dict(
    directories=dict(type="list", elements="path", default=[]),
    directory_mode=dict(type="raw", default="0755"),
    files=dict(type="list", elements="dict", default=[], options=dict(
        dest=dict(type="path", required=True),
        content=dict(type="str", required=True),
        mode=dict(type="raw", default="0644"),
        validate=dict(type="str"),
    )),
    units=dict(type="list", elements="dict", default=[], options=dict(
        name=dict(type="str", required=True),
        content=dict(type="str", required=True),
    )),
    unit_dir=dict(type="path", default="/etc/systemd/system"),
    daemon_reload=dict(type="bool", default=True),
    verify_units=dict(type="bool", default=True),
    timer=dict(type="str"),
    timer_active=dict(type="bool", default=True),
    owner=dict(type="str", default="root"),
    group=dict(type="str", default="root"),
    backup=dict(type="bool", default=True),
)


def bundle_params(module: AnsibleModule, entry: object, index: int) -> tuple[str, dict]:
    """(name, parameters) of one item of ``timer_bundles``: checked against ARGUMENT_SPEC with its defaults filled in,
    as the module itself would check them; the module fails naming the bundle and what is wrong."""
    if not isinstance(entry, dict):
        module.fail_json(msg="timer_bundles[%d] is not a dictionary of timer_bundle options" % index)
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        module.fail_json(msg="timer_bundles[%d] has no name (a label for its messages and its result)" % index)
    options = dict(entry)
    del options["name"]
    validated = ArgumentSpecValidator(ARGUMENT_SPEC).validate(options)
    if validated.error_messages:
        module.fail_json(msg="timer bundle %s: %s" % (name, "; ".join(validated.error_messages)))
    return name, validated.validated_parameters


def run_bundles(module: AnsibleModule, entries: list, results: list[dict]) -> list[dict]:
    """Install each bundle in the order given, in this process; append each one's result to ``results`` as it ends
    (so that a failure can report the bundles installed before it) and return their diffs.

    Every bundle's parameters are checked before the first one is installed, and names must be unique.
    """
    diffs: list[dict] = []
    checked = [bundle_params(module, entry, index) for index, entry in enumerate(entries)]
    names = [name for name, _params in checked]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        module.fail_json(msg="timer_bundles: the name %s is given more than once" % ", ".join(repeated))
    bundles = [(name, TimerBundle(module, params, label="timer bundle %s: " % name)) for name, params in checked]
    for _name, bundle in bundles:  # the checks run() starts with, for every bundle before the first is installed
        bundle.check_names()
    for name, bundle in bundles:
        result = bundle.run()
        result.pop("diff", None)
        results.append(dict(result, name=name))
        diffs.extend(bundle.diffs)
    return diffs
