#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: safe_sync
short_description: Synchronise a directory with rsync --delete, refusing plans that look like an outage
version_added: 0.1.0
description:
  - Runs C(rsync --archive --delete) from O(src) to O(dest) on the host the task runs on, to a local path or a
    remote one (C(host:/path) over a remote shell, C(host::module/path) or C(rsync://host/module/path) to an
    rsync daemon). The content of O(src) is synchronised into O(dest), as C(rsync src/ dest/) would.
  - Before anything is touched, every path component of O(src) and O(dest) is validated (no empty component,
    no whitespace-only name, no C(.) or C(..)), and both must end with O(expect_suffix), so that a variable
    that expanded to nothing cannot widen the scope of the deletion to a parent directory.
    Give the paths without a trailing slash; a trailing slash is an empty last component and is refused.
  - An itemized dry run (C(--dry-run --itemize-changes --delete --stats)) then plans the transfer. The module
    refuses when the source is missing or holds fewer than O(min_source_files) files, or when the planned
    deletions exceed O(max_delete) files or O(max_delete_ratio) of the destination's files.
  - Only then rsync runs for real, in two steps, both from lists of planned paths (C(--files-from)), so that the
    trees are walked once, by the dry run. The transfer sends the planned creations and updates and never deletes
    anything (no C(--delete)); a file that appeared in the source after the dry run is not planned and may wait for
    the next run. Then the planned deletions, and only those, are made by rsync from the list of planned paths
    (C(--delete-missing-args)). A planned path is deleted only if the source still lacks it, files first, then
    directories deepest first and only when empty (a last pass gives the directories that held them the source's
    times again, without deleting anything). A file that no plan listed is never deleted, whatever happened
    to the source or the destination since the dry run; RV(deleted_files) names what was really deleted.
  - Names are reported as text, UTF-8 names as they are and other bytes as C(\xNN) (rsync's C(\#ooo) escapes
    are decoded); the files themselves are synchronised byte for byte.
  - O(src) and O(dest) may not start with C(-), and a host part must be a host name (no leading C(-), no
    whitespace), so that neither rsync nor the remote shell can read a location as an option.
  - A refusal fails the task by default (RV(refused=true) and the reason in C(msg)); O(on_refusal=report)
    returns it as data instead, without failing.
  - Deletions are counted in files (anything that is not a directory); deleted directories are reported apart.
author:
  - postmortem.remediation maintainers (@postmortem-remediation)
options:
  src:
    description:
      - The directory whose content is synchronised, without a trailing slash.
      - A local absolute path, C([user@]host:/path), C([user@]host::module/path) or C(rsync://host[:port]/module/path).
    type: str
    required: true
  dest:
    description:
      - The directory that receives the content of O(src), without a trailing slash. Same forms as O(src).
      - At most one of O(src) and O(dest) may be remote.
    type: str
    required: true
  expect_suffix:
    description:
      - The trailing path components that both O(src) and O(dest) must end with, for example C(debian/amd64).
      - Build it from the same variables as the paths; when one of them is empty the suffix or the path has an
        empty component and the module refuses, naming the component.
    type: str
    required: true
  min_source_files:
    description: Refuse when the source holds fewer files than this (an empty or truncated source).
    type: int
    default: 1
  max_delete:
    description: Refuse when the plan deletes more files than this at the destination.
    type: int
    default: 100
  max_delete_ratio:
    description: Refuse when the plan deletes more than this fraction (0 to 1) of the destination's files.
    type: float
    default: 0.1
  delete:
    description: Delete files at the destination that are not in the source. With V(false) nothing is deleted.
    type: bool
    default: true
  checksum:
    description: Compare files by checksum instead of size and modification time (C(--checksum)).
    type: bool
    default: false
  exclude:
    description: Patterns passed as C(--exclude); excluded files at the destination are neither sent nor deleted.
    type: list
    elements: str
    default: []
  backup_dir:
    description:
      - Keep every file that the sync deletes or replaces at the destination in this directory (rsync C(--backup
        --backup-dir)), on the destination's side, with its path below O(dest). Without it, deleted files are gone.
      - An absolute path, validated like O(src) and O(dest) (no empty component, no C(..)).
    type: str
  rsh:
    description:
      - The remote shell for C(host:/path) locations, passed to rsync as C(--rsh) (rsync splits it into words).
      - For example C(ssh -p 2222) or C(docker exec -i) (the host part is then a container name).
    type: str
  rsync_path:
    description: The rsync program on the remote side (C(--rsync-path)).
    type: str
  timeout:
    description: I/O timeout in seconds passed as C(--timeout) and, for daemons, C(--contimeout). V(0) means none.
    type: int
    default: 0
extends_documentation_fragment:
  - postmortem.remediation.attributes
  - postmortem.remediation.attributes.actiongroup_deletion_guard
  - postmortem.remediation.deletion_guard
  - postmortem.remediation.guard_metrics
attributes:
  check_mode:
    support: full
    details: Check mode runs the dry run and the guard and returns the plan; nothing is transferred or deleted.
  diff_mode:
    support: full
    details: The diff is the itemized plan (one line per change), cut after O(list_limit) lines.
  idempotent:
    support: full
    details: When source and destination already match, the dry run plans nothing and the real run is skipped.
notes:
  - Requires C(rsync) on the host the task runs on (and on the remote side of a remote location).
  - "When the tree changes during a run: the bounds were checked on the plan, and the real run can only do less
    than the plan. A file that vanished from the source after the dry run is not deleted at the destination (the
    next run plans it, and checks it against the bounds); a planned deletion that came back to the source is
    transferred, not deleted; a file that appeared at the destination is left alone; a planned directory that is
    no longer empty stays. Planned deletions that were not made are listed in RV(planned_not_deleted), with a
    warning."
  - "When two runs overlap on the same destination: the module takes no lock. Each run deletes only what its own
    plan listed and only what its source lacks, so two runs from the same source cannot delete more than either
    plan; two runs from different sources into one destination are a mistake the module cannot see. Serialise
    such jobs (one systemd timer, or C(flock) around the play)."
  - The module runs where the task runs. To push to another machine, give O(dest) as C(host:/path) with O(rsh),
    or an rsync daemon location.
seealso:
  - module: ansible.posix.synchronize
"""

EXAMPLES = r"""
- name: Publish one architecture of the repository, never a parent directory
  postmortem.remediation.safe_sync:
    src: "/srv/build/{{ repo }}/{{ arch }}"
    dest: "/srv/mirror/{{ repo }}/{{ arch }}"
    expect_suffix: "{{ repo }}/{{ arch }}"
    min_source_files: 100
    max_delete: 500
    max_delete_ratio: 0.05
    backup_dir: "/srv/mirror-attic/{{ repo }}/{{ arch }}/{{ now(utc=true, fmt='%Y%m%dT%H%M%SZ') }}"

- name: Push to another host over ssh
  postmortem.remediation.safe_sync:
    src: /srv/build/debian/amd64
    dest: mirror1.example.org:/srv/mirror/debian/amd64
    expect_suffix: debian/amd64
    rsh: ssh -o BatchMode=yes

- name: Plan only, and decide in the play
  postmortem.remediation.safe_sync:
    src: /srv/build/debian/arm64
    dest: /srv/mirror/debian/arm64
    expect_suffix: debian/arm64
    on_refusal: report
  check_mode: true
  register: plan
"""

RETURN = r"""
refused:
  description: Whether the guard refused the synchronisation (nothing was transferred or deleted).
  returned: always
  type: bool
  sample: false
reason:
  description: Why the synchronisation was refused, naming the bound or the path component; empty otherwise.
  returned: always
  type: str
  sample: "refused sync of /srv/build/debian/ to /srv/mirror/debian/: src '/srv/build/debian/': the last component
    (after 'debian') is empty; a variable expanded to nothing?"
plan:
  description: The plan made by the dry run. Absent when the paths were refused before the dry run.
  returned: when the dry run ran
  type: dict
  contains:
    source_files:
      description: Files (not directories) in the source.
      type: int
    dest_files:
      description: Files (not directories) at the destination, within the synchronised scope.
      type: int
    transfer_count:
      description: Files whose content would be sent.
      type: int
    delete_count:
      description: Files that would be deleted at the destination.
      type: int
    delete_dir_count:
      description: Directories that would be deleted at the destination.
      type: int
    delete_ratio:
      description: O(max_delete_ratio) is compared with this, C(delete_count / dest_files).
      type: float
  sample: {source_files: 120, dest_files: 118, transfer_count: 4, delete_count: 2, delete_dir_count: 0,
           delete_ratio: 0.017}
transferred:
  description: Files whose content was sent (in check mode or when refused, would have been).
  returned: always
  type: int
  sample: 4
transferred_files:
  description: The first O(list_limit) transferred paths, relative to the source.
  returned: always
  type: list
  elements: str
  sample: [pool/main/h/hello_2.10-3_amd64.deb]
deleted:
  description:
    - Files deleted at the destination (in check mode or when refused, would have been).
    - When an error or SIGTERM ended the real run, the files its finished passes deleted (see RV(pass_in_progress)).
  returned: always
  type: int
  sample: 2
deleted_files:
  description: The first O(list_limit) deleted paths, relative to the destination.
  returned: always
  type: list
  elements: str
  sample: [pool/main/h/hello_2.10-2_amd64.deb]
pass_in_progress:
  description:
    - The real rsync pass (C(transfer), C(planned deletions) or C(directory times)) that an exception or SIGTERM ended
      before it finished. RV(transferred) and RV(deleted) count the passes before it; this one may have made some of
      its planned changes (RV(plan) lists how many there were in all).
  returned: when an exception or SIGTERM ended a real rsync pass
  type: str
  sample: transfer
planned_not_deleted:
  description:
    - Planned deletions (files, and directories ending in C(/)) that the real run did not make, because the source
      has them again, they were gone already, or a directory is no longer empty.
  returned: when the real run made fewer deletions than planned
  type: list
  elements: str
  sample: [pool/main/h/hello_2.10-2_amd64.deb]
deleted_dirs:
  description: Directories deleted at the destination.
  returned: always
  type: int
  sample: 0
lists_truncated:
  description: Whether RV(transferred_files) or RV(deleted_files) was cut at O(list_limit).
  returned: always
  type: bool
  sample: false
guard:
  description: Every check of the guard, with its value and limit.
  returned: always
  type: dict
  sample: {subject: sync of /srv/build/debian/amd64 to /srv/mirror/debian/amd64, allowed: true, reason: "",
           checks: [{name: deletions, ok: true, value: 2, limit: 100, message: ""}]}
cmd:
  description:
    - The rsync command line that ran last (the dry run in check mode or when refused; else the last deletion pass,
      or the transfer when nothing was to be deleted).
  returned: when rsync ran
  type: list
  elements: str
"""

import os
from typing import Any, NoReturn

from ansible_collections.postmortem.remediation.plugins.module_utils._deletion_guard import (
    DELETION_GUARD_ARGUMENT_SPEC,
    DeletionGuard,
    PathScopeError,
    Verdict,
    bounded,
    check_bounds,
    check_path_scope,
    exit_with_verdict,
    printable,
    printable_data,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._guard_module import GuardedModule
from ansible_collections.postmortem.remediation.plugins.module_utils._textfile_metrics import (
    GUARD_METRICS_ARGSPEC,
    write_guard_metrics,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._rsync import (
    RSYNC_OK,
    Location,
    RsyncPlan,
    not_deleted_dirs,
    write_files_from,
)


class SafeSync(object):
    def __init__(self, module: GuardedModule) -> None:
        self.module = module
        self.params = module.params
        self.src = Location("src", self.params["src"])
        self.dest = Location("dest", self.params["dest"])
        self.verdict = Verdict("sync of %s to %s" % (self.params["src"], self.params["dest"]))
        self.result: dict[str, Any] = {
            "changed": False, "refused": False, "reason": "", "transferred": 0, "transferred_files": [],
            "deleted": 0, "deleted_files": [], "deleted_dirs": 0, "lists_truncated": False,
        }
        module.attach(self.verdict, self.result)

    # -- steps ------------------------------------------------------------------------------------------------
    def run(self) -> None:
        if self.validate_scope() and self.check_local_source():
            plan = self.dry_run()
            self.judge(plan)
            self.report(plan)
            if self.verdict.allowed:
                self.result["changed"] = bool(plan.items)
                if self.module._diff:
                    self.result["diff"] = self.diff(plan)
                if plan.items and not self.module.check_mode:
                    self.report(self.real_run(plan))
        self.finish()

    def validate_scope(self) -> bool:
        expect_suffix = self.params["expect_suffix"]
        try:
            check_path_scope(expect_suffix, "expect_suffix")
        except PathScopeError as exc:
            self.verdict.require("expect_suffix", False, str(exc), expect_suffix)
            expect_suffix = None  # still check the paths' own components, so that the message names them
        if self.params["backup_dir"] is not None:
            try:
                check_path_scope(self.params["backup_dir"], "backup_dir", absolute=True)
            except PathScopeError as exc:
                self.verdict.require("backup_dir", False, str(exc), self.params["backup_dir"])
        if self.src.remote and self.dest.remote:
            self.verdict.require("locations", False, "src and dest are both remote; rsync needs one local side")
        for location in (self.src, self.dest):
            try:
                location.validate(expect_suffix)
            except PathScopeError as exc:
                self.verdict.require(location.label, False, str(exc), location.spec, expect_suffix)
            else:
                self.verdict.require(location.label, True, "", location.spec, expect_suffix)
        return self.verdict.allowed

    def check_local_source(self) -> bool:
        if self.src.remote:
            return True
        return self.verdict.require(
            "source exists", os.path.isdir(self.src.path),
            "source directory %s does not exist (or is not a directory)" % self.src.path, self.src.path)

    def judge(self, plan: RsyncPlan) -> None:
        # dry_run failed the run when rsync printed no count: source_files is known here.
        self.verdict.require_at_least("source files", plan.source_files or 0, self.params["min_source_files"], "files")
        if self.params["delete"]:
            guard = DeletionGuard(self.params["max_delete"], self.params["max_delete_ratio"], unit="files")
            guard.check(self.verdict, len(plan.deleted_files), plan.dest_files, label="deletions at " + self.dest.spec)

    def dry_run(self) -> RsyncPlan:
        argv = self.command(dry_run=True)
        rc, out, err = self.rsync(argv)
        if rc not in RSYNC_OK:
            source_missing = "change_dir" in err or "link_stat" in err
            what = "the source %s is missing or unreadable" % self.src.spec if source_missing else "rsync failed"
            self.fail_or_refuse(source_missing, "dry run of %s to %s: %s (rc %d): %s" % (
                self.src.spec, self.dest.spec, what, rc, err.strip()), argv, rc)
        plan = RsyncPlan.parse(out)
        if plan.source_files is None:
            self.module.fail_json(msg="dry run of %s to %s: no 'Number of files' in rsync's statistics; cannot "
                                      "count the source" % (self.src.spec, self.dest.spec), cmd=argv, stdout=out)
        self.result["plan"] = plan.summary()
        return plan

    def real_run(self, plan: RsyncPlan) -> RsyncPlan:
        """Transfer without deleting, then delete the planned paths that are still extraneous, and nothing else."""
        done = RsyncPlan()
        # From here on the result (and a failed run's pmr_guard_deleted) counts what the real passes did, not what
        # the dry run planned (result['plan'] keeps that): an error or SIGTERM in a pass reports the truth.
        self.report(done)
        if plan.changed:  # the planned paths only: the dry run has compared the trees already (see _rsync)
            self.rsync_pass(self.command(dry_run=False, listed=plan.transfer_list()), done, "transfer")
        if self.params["delete"] and (plan.deleted_files or plan.deleted_dirs):
            for names in plan.deletion_passes():
                self.rsync_pass(self.command(dry_run=False, listed=names, delete=True), done, "planned deletions")
            self.rsync_pass(self.command(dry_run=False, listed=plan.parent_dirs()), done, "directory times")
        unplanned = set(done.deleted_files + done.deleted_dirs) - set(plan.deleted_files + plan.deleted_dirs)
        if unplanned:  # cannot happen by construction; if rsync ever did it, the task must not look fine
            self.report(done)
            self.module.fail_json(msg="sync of %s to %s deleted paths outside the plan: %s" % (
                self.src.spec, self.dest.spec, ", ".join(sorted(printable(n) for n in unplanned))), **self.result)
        left = sorted(set(plan.deleted_files + plan.deleted_dirs) - set(done.deleted_files + done.deleted_dirs))
        if left:
            self.result["planned_not_deleted"] = [printable(name) for name in left]
            self.module.warn("%d planned deletion(s) at %s were not made: the source has them again, they are gone "
                             "already, or a directory is no longer empty: %s" % (
                                 len(left), self.dest.spec, ", ".join(printable(n) for n in left[:10])))
        return done

    def rsync_pass(self, argv: list[str], done: RsyncPlan, what: str) -> None:
        """One real rsync run, folded into ``done``; a failure reports what the passes before it did. While it runs
        the result names it (``pass_in_progress``): an exception or SIGTERM that ends it cannot count what it did."""
        self.result["pass_in_progress"] = what
        rc, out, err = self.rsync(argv)
        del self.result["pass_in_progress"]
        done.add(RsyncPlan.parse(out))
        self.report(done)
        if rc not in RSYNC_OK:
            self.module.fail_json(msg="sync of %s to %s failed in the %s pass (rc %d): %s; what the run did is in "
                                      "transferred_files and deleted_files" % (
                                          self.src.spec, self.dest.spec, what, rc, err.strip()),
                                  rc=rc, stderr=err, **printable_data(self.result))
        if rc == 24 and what == "transfer":
            self.module.warn("some source files vanished during the sync of %s" % self.src.spec)
        for name in not_deleted_dirs(err):
            self.module.warn("planned deletion of the directory %s at %s not made: it is not empty any more"
                             % (printable(name), self.dest.spec))

    # -- rsync ------------------------------------------------------------------------------------------------
    def command(self, dry_run: bool, listed: list[str] | None = None, delete: bool = False) -> list[str]:
        """The dry run (with --delete: the plan), or a pass over the ``listed`` paths only: the transfer of the planned
        creations and updates (never deletes), a deletion pass (``delete``), or the pass that gives the parents of the
        deletions their times back."""
        argv = [self.module.get_bin_path("rsync", required=True), "--archive", "--itemize-changes", "--stats"]
        if dry_run:
            argv.append("--dry-run")
            if self.params["delete"]:
                argv.append("--delete")
        if listed is not None:
            # Only the listed paths, not recursive (--files-from turns off -r). A deletion pass deletes a listed path
            # only while the source lacks it (--max-delete is a second bound on the same list); any other pass
            # ignores a listed path the source lacks.
            argv.extend(["--files-from=%s" % write_files_from(self.module.tmpdir, listed), "--from0"])
            argv.extend(["--delete-missing-args", "--max-delete=%d" % len(listed)] if delete
                        else ["--ignore-missing-args"])
        if self.params["checksum"]:
            argv.append("--checksum")
        if self.params["backup_dir"] and not dry_run:
            argv.extend(["--backup", "--backup-dir=%s" % self.params["backup_dir"]])
        argv.extend("--exclude=%s" % pattern for pattern in self.params["exclude"])
        if self.params["rsh"]:
            argv.append("--rsh=%s" % self.params["rsh"])
        if self.params["rsync_path"]:
            argv.append("--rsync-path=%s" % self.params["rsync_path"])
        if self.params["timeout"]:
            argv.append("--timeout=%d" % self.params["timeout"])
            if "daemon" in (self.src.kind, self.dest.kind):
                argv.append("--contimeout=%d" % self.params["timeout"])
        # The locations are validated (no leading '-'); '--' makes sure rsync never reads them as options.
        argv.extend(["--", self.src.as_content(), self.dest.as_content()])
        self.result["cmd"] = argv
        return argv

    def rsync(self, argv: list[str]) -> tuple[int, str, str]:
        return self.module.run_command(argv, environ_update={"LC_ALL": "C", "LANG": "C"})

    # -- results ----------------------------------------------------------------------------------------------
    def report(self, plan: RsyncPlan) -> None:
        limit = self.params["list_limit"]
        transferred, cut_t = bounded([printable(name) for name in plan.transferred], limit)
        deleted, cut_d = bounded([printable(name) for name in plan.deleted_files], limit)
        self.result.update(transferred=len(plan.transferred), transferred_files=transferred,
                           deleted=len(plan.deleted_files), deleted_files=deleted,
                           deleted_dirs=len(plan.deleted_dirs), lists_truncated=cut_t or cut_d)

    def diff(self, plan: RsyncPlan) -> dict[str, str]:
        lines, cut = bounded([printable(line) for line in plan.items], self.params["list_limit"])
        if cut:
            lines.append("... and %d more changes" % (len(plan.items) - len(lines)))
        return {"before_header": self.dest.spec, "after_header": self.src.spec,
                "prepared": "\n".join(lines) + ("\n" if lines else "")}

    def fail_or_refuse(self, refuse: bool, message: str, argv: list[str], rc: int) -> NoReturn:
        if refuse:
            self.verdict.require("source readable", False, message)
            self.finish()
        self.module.fail_json(msg=message, rc=rc, **self.result)

    def finish(self) -> NoReturn:
        write_guard_metrics(self.module, "safe_sync", self.verdict, self.result)
        exit_with_verdict(self.module, self.verdict, self.result, self.params["on_refusal"])


def main() -> None:
    module = GuardedModule(
        "safe_sync",
        argument_spec=dict(
            src=dict(type="str", required=True),
            dest=dict(type="str", required=True),
            expect_suffix=dict(type="str", required=True),
            min_source_files=dict(type="int", default=1),
            max_delete=dict(type="int", default=100),
            max_delete_ratio=dict(type="float", default=0.1),
            delete=dict(type="bool", default=True),
            checksum=dict(type="bool", default=False),
            exclude=dict(type="list", elements="str", default=[]),
            backup_dir=dict(type="str"),
            rsh=dict(type="str"),
            rsync_path=dict(type="str"),
            timeout=dict(type="int", default=0),
            **DELETION_GUARD_ARGUMENT_SPEC,
            **GUARD_METRICS_ARGSPEC
        ),
        supports_check_mode=True,
    )
    check_bounds(module, ratios=("max_delete_ratio",), counts=("max_delete",))
    module.run("sync of %s to %s" % (module.params["src"], module.params["dest"]), lambda: SafeSync(module).run())


if __name__ == "__main__":
    main()
