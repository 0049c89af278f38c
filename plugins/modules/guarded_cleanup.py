#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: guarded_cleanup
short_description: Quarantine files that a healthy reference list no longer names, and purge them after a grace period
version_added: 0.1.0
description:
  - Reconciles the items of a directory (entries of O(path) whose name matches O(pattern)) with a reference list
    of keys, produced by a command (O(reference_command), for example C(psql)) or by a SQL query on a SQLite
    database (O(reference_sqlite) and O(reference_query), read-only, with the host's Python C(sqlite3) module).
    An item whose key is not in the reference is an orphan.
  - The reference is trusted only when it is healthy and plausible. The module refuses when the command fails or
    times out, the database cannot be opened or the query fails, the list is empty or shorter than
    O(min_references), or it shrank by more than O(max_reference_shrink) since the last successful run (the count
    is kept in O(state_file) on the host).
  - It also refuses when the orphans exceed O(max_orphans) items or O(max_orphan_ratio) of the items.
  - Locked items are never touched, whatever the reference says - those whose name matches O(lock_patterns) and
    those with a lock marker next to them (C(<name>) plus O(lock_suffix), for example C(backup-17.tar.gz.lock)).
    A lock that appears while an item is in the quarantine (a marker at its origin, or a new O(lock_patterns)
    entry) stops its purge.
  - Nothing is deleted at once. Orphans are moved (renamed) into O(quarantine_dir) and recorded in a JSON manifest
    there. A later run purges them only after O(grace_period), and only if the reference, healthy again, still
    does not name them; an item that the reference names again is moved back (O(restore_referenced)).
  - O(state=restore) moves quarantined items back (all of them, or those in O(names)).
  - A refusal fails the task by default (RV(refused=true), the reason in C(msg)); O(on_refusal=report) returns it
    as data instead.
author:
  - postmortem.remediation maintainers (@postmortem-remediation)
options:
  path:
    description:
      - The directory holding the items (not searched recursively).
      - An absolute path with the rules of P(postmortem.remediation.safe_sync#module) for its paths, the same for
        O(quarantine_dir) and O(state_file). No empty component (C(a//b)), no trailing C(/), no whitespace-only
        component, no C(.) or C(..). A variable that expanded to nothing (C(/srv/backups/{{ customer }})) is then
        refused instead of widening the cleanup to the parent directory.
    type: path
    required: true
  pattern:
    description:
      - Shell-style pattern the item names must match (C(fnmatch)). Names starting with C(.) match only a pattern
        that starts with C(.).
    type: str
    default: "*"
  key_regex:
    description:
      - Regular expression that extracts the reference key from an item name, with C(re.search); the key is the
        group named C(key), else group 1, else the whole match. Without it, the key is the whole name.
      - Items whose name does not match are kept (an item that cannot be understood is never an orphan).
    type: str
  reference_command:
    description:
      - Command (argument list, no shell) that prints one reference key per line, for example
        C([psql, -X, -A, -t, -v, ON_ERROR_STOP=1, -c, "SELECT file_name FROM backups", backups]).
      - A non-zero exit code, a timeout or an empty output refuses the cleanup.
    type: list
    elements: str
  reference_sqlite:
    description:
      - SQLite database file to run O(reference_query) on, opened read-only (a missing file is an error, never an
        empty database).
    type: path
  reference_query:
    description: SQL query on O(reference_sqlite) whose first column holds the reference keys.
    type: str
  reference_timeout:
    description: Seconds after which the reference command or query is abandoned (and the cleanup refused).
    type: int
    default: 60
  min_references:
    description:
      - Refuse when the reference holds fewer keys than this.
      - An empty reference is always refused, even with V(0).
    type: int
    default: 1
  max_reference_shrink:
    description:
      - Refuse when the reference shrank by more than this fraction (0 to 1) since the last successful run.
      - After a legitimate mass deletion, run once with V(1) to accept the new size.
    type: float
    default: 0.1
  max_orphans:
    description:
      - Refuse when there are more orphans than this, counting those still in the quarantine (not yet purged);
        the bound holds for everything out of place at once, not per run.
    type: int
    default: 10
  max_orphan_ratio:
    description:
      - Refuse when the orphans (new ones plus those still in the quarantine) are more than this fraction (0 to 1)
        of the items (the items in O(path) plus those still in the quarantine).
    type: float
    default: 0.05
  lock_patterns:
    description: Item names matching any of these patterns are locked and never touched.
    type: list
    elements: str
    default: []
  lock_suffix:
    description: An item is locked while a file named C(<item name><lock_suffix>) exists next to it.
    type: str
    default: .lock
  quarantine_dir:
    description:
      - Where orphans are moved, on the same filesystem as O(path) (moves are atomic renames; the module refuses
        otherwise). Items go to C(items/), the manifest is C(manifest.json).
      - Defaults to C(.quarantine) inside O(path).
    type: path
  state_file:
    description:
      - Where the size of the last healthy reference is kept. Defaults to C(state.json) in O(quarantine_dir).
      - Every write keeps the record it replaces as C(<state_file>.prev) (the first record too). When the state file
        is missing or unreadable, the previous copy is used, with a warning.
      - When both are lost although the quarantine shows earlier runs (its manifest exists), the run is refused;
        see O(first_run).
    type: path
  first_run:
    description:
      - Accept that there is no record of an earlier healthy reference, so that the shrink check
        (O(max_reference_shrink)) has nothing to compare with.
      - Needed only when the state file and its previous copy are both lost while the quarantine shows earlier runs;
        a run in a directory where the module never ran is a first run without it. Ignored when a record exists.
      - Set it for one run, after checking that the reference is complete.
    type: bool
    default: false
  lock_timeout:
    description:
      - How many seconds a run waits for another run on the same O(path) (a C(flock) on the directory itself)
        before it fails without doing anything.
    type: int
    default: 120
  grace_period:
    description:
      - How long an orphan stays in quarantine before a run may purge it, as a number with a unit
        C(s), C(m), C(h), C(d) or C(w) (seconds without a unit).
    type: str
    default: 7d
  restore_referenced:
    description: Move a quarantined item back when the reference names it again.
    type: bool
    default: true
  state:
    description:
      - V(reconcile) checks the reference, purges expired quarantined orphans and quarantines new ones.
      - V(restore) moves quarantined items back to O(path); it does not need the reference.
    type: str
    choices: [reconcile, restore]
    default: reconcile
  names:
    description:
      - With O(state=restore), the item names to restore; all quarantined items when omitted.
      - A name that is not valid UTF-8 is given as the module reports it, with C(\xNN) for each such byte.
    type: list
    elements: str
extends_documentation_fragment:
  - postmortem.remediation.attributes
  - postmortem.remediation.attributes.actiongroup_deletion_guard
  - postmortem.remediation.deletion_guard
  - postmortem.remediation.guard_metrics
attributes:
  check_mode:
    support: full
    details: Check mode reads the reference, runs the guard and returns the plan; nothing is moved or written.
  diff_mode:
    support: full
    details: The diff lists the planned moves and purges, cut after O(list_limit) lines.
  idempotent:
    support: partial
    details:
      - A second run with the same items and reference changes nothing.
      - Purging depends on the clock, so a run after O(grace_period) changes what an earlier run left.
notes:
  - The manifest and the state file are written atomically (temporary file and rename) and the previous version is
    kept as C(<file>.prev).
  - Names that are not valid UTF-8 are handled as bytes (moved, purged and restored as they are) and reported with
    C(\xNN) for each byte that is not UTF-8.
  - The quarantine directory and the state file are never items, also when reached through a symlinked alias of
    O(path) (they are recognised by device and inode).
  - "When two runs overlap: every run locks O(path) (C(flock) on the directory itself, so nothing is created; the
    mechanism the prune timer and P(postmortem.remediation.docker_reclaim#module) share) before it reads the
    manifest, the state or the items, and holds the lock until it has written; the other run waits up to
    O(lock_timeout) seconds and then plans on what the first one left. The manifest also carries a generation
    number, and a run never writes it over a newer one (a writer that ignored the lock): it fails instead."
  - "When the items or the reference change during a run: the plan is made once, under the lock. An orphan that
    vanished before its move is reported in RV(kept) and not recorded; a move never replaces what appeared at its
    target; a lock marker that appears is honoured by the next run (a quarantined item is not purged while it is
    locked). A reference that changes after it was read is read again by the next run, which checks it again against
    every bound."
"""

EXAMPLES = r"""
- name: Quarantine offsite backups that no database row names any more
  postmortem.remediation.guarded_cleanup:
    path: /srv/backups
    pattern: "*.tar.gz"
    reference_sqlite: /var/lib/backupd/catalog.db
    reference_query: SELECT file_name FROM backups
    min_references: 100
    max_orphans: 20
    max_orphan_ratio: 0.02
    grace_period: 7d

- name: The same against PostgreSQL, through psql
  postmortem.remediation.guarded_cleanup:
    path: /srv/backups
    pattern: "*.tar.gz"
    key_regex: '^(?P<key>[0-9a-f-]{36})\.tar\.gz$'
    reference_command: [psql, -X, -A, -t, -v, ON_ERROR_STOP=1, -c, "SELECT id FROM backups", catalog]
    lock_patterns: ["legal-hold-*"]

- name: Put every quarantined backup back
  postmortem.remediation.guarded_cleanup:
    path: /srv/backups
    state: restore
"""

RETURN = r"""
refused:
  description: Whether the guard refused the run (nothing was moved, purged or written).
  returned: always
  type: bool
  sample: false
reason:
  description: Why the run was refused, naming the failed check; empty otherwise.
  returned: always
  type: str
  sample: "refused cleanup of /srv/backups: reference keys: 430 keys now, 1000 at the last successful run: shrank
    by 57.0 %, more than the bound of 10.0 %"
reference:
  description:
    - The reference that was read, its count, and the count it was compared with (C(previous_count), read from
      C(previous_source), the state file or its previous copy; C(null) on a first run).
  returned: when O(state=reconcile)
  type: dict
  sample: {source: "sqlite /var/lib/backupd/catalog.db", count: 1000, previous_count: 998, error: "",
           previous_source: /srv/backups/.quarantine/state.json}
items:
  description: Items in O(path) matching O(pattern), locked ones included.
  returned: always
  type: int
  sample: 1002
referenced:
  description: Items whose key is in the reference.
  returned: when O(state=reconcile)
  type: int
  sample: 995
orphans:
  description: Unlocked items whose key is not in the reference (first O(list_limit)).
  returned: when O(state=reconcile)
  type: list
  elements: str
orphan_count:
  description: Number of orphans.
  returned: when O(state=reconcile)
  type: int
pending_quarantine:
  description: Items already in the quarantine and still orphans; they count against O(max_orphans).
  returned: when the reference was healthy
  type: int
quarantined:
  description:
    - Items moved into the quarantine by this run (first O(list_limit); in check mode, would be).
    - When an error or SIGTERM ended the run half-way, every item it moved before that (with RV(purged) and
      RV(restored) likewise); its C(pmr_guard_deleted) counts them.
  returned: always
  type: list
  elements: str
quarantined_count:
  description: Number of items moved into the quarantine.
  returned: always
  type: int
purged:
  description: Quarantined items deleted by this run after their grace period (first O(list_limit)).
  returned: always
  type: list
  elements: str
purged_count:
  description: Number of purged items.
  returned: always
  type: int
restored:
  description: Items moved back from the quarantine (first O(list_limit)).
  returned: always
  type: list
  elements: str
restored_count:
  description: Number of restored items.
  returned: always
  type: int
kept:
  description:
    - Items left alone for a reason other than being referenced, each with the reason
      (locked, unparsable name, still in its grace period, origin occupied; first O(list_limit)).
  returned: always
  type: list
  elements: dict
  sample: [{name: backup-17.tar.gz, reason: "locked: marker backup-17.tar.gz.lock"}]
kept_count:
  description: Number of entries in RV(kept) before the cut.
  returned: always
  type: int
references_without_item:
  description: Reference keys with no item in O(path) (reported only; the module never edits the reference).
  returned: when O(state=reconcile)
  type: int
  sample: 0
quarantine_dir:
  description: The quarantine directory.
  returned: always
  type: str
guard:
  description: Every check of the guard, with its value and limit.
  returned: always
  type: dict
"""

import os
import re
from typing import Any

from ansible_collections.postmortem.remediation.plugins.module_utils._cleanup_items import ItemRules
from ansible_collections.postmortem.remediation.plugins.module_utils._cleanup_moves import (
    Ledger,
    apply_moves,
    can_quarantine,
    move_back,
    plan_quarantine,
    plan_restore,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._deletion_guard import (
    DELETION_GUARD_ARGUMENT_SPEC,
    DeletionGuard,
    Verdict,
    bounded,
    check_bounds,
    exit_with_verdict,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._guard_module import GuardedModule
from ansible_collections.postmortem.remediation.plugins.module_utils._textfile_metrics import (
    GUARD_METRICS_ARGSPEC,
    write_guard_metrics,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._quarantine import (
    MissingState,
    Quarantine,
    Reference,
    StateRecord,
    UnhealthyReference,
    is_inside,
    parse_grace,
)


class GuardedCleanup(object):
    def __init__(self, module: GuardedModule) -> None:
        self.module = module
        self.params = module.params
        self.path = os.path.abspath(self.params["path"])
        self.quarantine_dir = os.path.abspath(self.params["quarantine_dir"] or os.path.join(self.path, ".quarantine"))
        self.state_file = self.params["state_file"] or os.path.join(self.quarantine_dir, "state.json")
        self.quarantine = Quarantine(module, self.quarantine_dir)
        self.items = ItemRules(self.path, self.params["pattern"], self.params["key_regex"],
                               self.params["lock_patterns"], self.params["lock_suffix"],
                               (self.quarantine_dir, self.state_file, self.state_file + ".prev"))
        self.verdict = Verdict("cleanup of %s" % self.path)
        self.ledger = Ledger()
        self.result: dict[str, Any] = {"changed": False, "refused": False, "reason": "",
                                       "quarantine_dir": self.quarantine_dir,
                                       "quarantined": [], "purged": [], "restored": []}
        module.attach(self.verdict, self.result)

    def list_items(self) -> list[str]:
        if not os.path.isdir(self.path):
            self.module.fail_json(msg="directory %s does not exist; nothing to reconcile" % self.path)
        return self.items.names()

    # -- paths and the lock ---------------------------------------------------------------------------------------
    def check_paths(self) -> bool:
        """The same rules as safe_sync's for every path this module moves, deletes or writes under; then the lock."""
        for name in ("path", "quarantine_dir", "state_file"):
            if self.params[name] is not None:
                self.verdict.require_path_scope(name, self.params[name], absolute=True)
        if not self.verdict.allowed:
            return False
        if not os.path.isdir(self.path):
            self.module.fail_json(msg="directory %s does not exist; nothing to reconcile" % self.path)
        if is_inside(self.path, self.quarantine_dir):
            return self.verdict.require("quarantine_dir", False, "quarantine %s holds %s itself: its items would be "
                                        "quarantined into themselves" % (self.quarantine_dir, self.path))
        self.check_same_filesystem()
        self.quarantine.open(self.path, self.params["lock_timeout"])
        return True

    def check_same_filesystem(self) -> None:
        probe = self.quarantine_dir
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if os.stat(probe).st_dev != os.stat(self.path).st_dev:
            self.module.fail_json(msg="quarantine %s is not on the filesystem of %s: moves would be copies, not "
                                      "atomic renames; choose a quarantine_dir next to the items"
                                      % (self.quarantine_dir, self.path))

    def close(self) -> None:
        self.quarantine.close()

    # -- reconcile ------------------------------------------------------------------------------------------------
    def reconcile(self) -> None:
        if not self.check_paths():
            return self.finish()
        quarantine = self.quarantine
        names = self.list_items()
        self.result["items"] = len(names)
        reference = Reference(self.module)
        record = StateRecord(self.module, self.state_file)
        info = {"source": reference.source, "count": 0, "previous_count": None, "error": ""}
        self.result["reference"] = info
        try:
            previous = info["previous_count"] = record.previous_count(quarantine, self.params["first_run"])
        except MissingState as exc:
            self.verdict.require("reference record", False, str(exc))
            return self.finish()
        info["previous_source"] = record.used
        try:
            keys = reference.read()
        except UnhealthyReference as exc:
            info["error"] = str(exc)
            self.verdict.require("reference", False, str(exc))
            return self.finish()
        self.verdict.require("reference", True, "")
        info["count"] = len(keys)
        # An empty answer is never trusted, even with min_references set to 0: it would make every item an orphan.
        self.verdict.require_at_least("reference keys", len(keys), max(1, self.params["min_references"]), "keys")
        self.verdict.require_no_shrink("reference shrink", previous, len(keys), self.params["max_reference_shrink"],
                                       "keys")

        orphans = self.find_orphans(names, keys)
        purge, restore = plan_quarantine(quarantine, keys, self.items, parse_grace(self.params["grace_period"]),
                                         self.params["restore_referenced"], self.ledger)
        # The bounds hold for everything out of place at once: new orphans plus those still in quarantine, so that
        # a slowly failing reference cannot take a few percent more on every run.
        pending = len([name for name in quarantine.entries
                       if name not in restore and os.path.lexists(quarantine.stored_path(name))])
        self.result["pending_quarantine"] = pending
        guard = DeletionGuard(self.params["max_orphans"], self.params["max_orphan_ratio"], unit="items")
        guard.check(self.verdict, len(orphans) + pending, len(names) + pending, label="orphans")
        if not self.verdict.allowed:
            return self.finish()

        quarantined = [name for name in orphans if can_quarantine(quarantine, self.path, name, self.ledger)]
        changed = bool(purge or restore or quarantined)
        if not self.module.check_mode:
            # self.result's lists fill as the moves are made: a failure half-way reports (and counts) what was done,
            # and says changed (the manifest is written before the first move).
            try:
                apply_moves(quarantine, self.path, purge, restore, quarantined, self.items.key_of, self.ledger,
                            done=self.result)
            except BaseException:
                self.result["changed"] = True
                raise
            changed = record.save(len(keys), previous, self.path) or changed
        else:
            changed = changed or len(keys) != previous
        self.result.update(changed=changed, purged=purge, restored=restore, quarantined=quarantined)
        return self.finish()

    def find_orphans(self, names: list[str], keys: set[str]) -> list[str]:
        """The items whose key the reference does not name; locked and unreadable names are kept."""
        orphans, referenced, seen_keys = [], 0, set()
        for name in names:
            key = self.items.key_of(name)
            lock = self.items.lock_reason(name)
            if key is not None:
                seen_keys.add(key)
            if lock:
                self.ledger.keep(name, lock)
            elif key is None:
                self.ledger.keep(name, "name does not match key_regex")
            elif key in keys:
                referenced += 1
            else:
                orphans.append(name)
        self.result.update(referenced=referenced, orphan_count=len(orphans),
                           orphans=bounded(orphans, self.params["list_limit"])[0],
                           references_without_item=len(keys - seen_keys))
        return orphans

    # -- restore ----------------------------------------------------------------------------------------------------
    def restore(self) -> None:
        if not self.check_paths():
            return self.finish()
        self.result["items"] = len(self.list_items())
        restore = plan_restore(self.quarantine, self.params["names"], self.ledger)
        if restore and not self.module.check_mode:
            try:
                move_back(self.quarantine, restore, self.ledger, done=self.result)
            except BaseException:  # what was restored before the failure is in the result
                self.result["changed"] = bool(self.result["restored"])
                raise
            self.quarantine.save(self.path)
        self.result.update(changed=bool(restore), restored=restore)
        return self.finish()

    # -- result -----------------------------------------------------------------------------------------------------
    def finish(self) -> None:
        limit = self.params["list_limit"]
        for key in ("quarantined", "purged", "restored"):
            names = self.result[key]
            self.result[key + "_count"] = len(names)
            self.result[key] = bounded(names, limit)[0]
        self.result["kept_count"] = len(self.ledger.kept)
        self.result["kept"] = bounded(self.ledger.kept, limit)[0]
        if not self.verdict.allowed:
            for key in ("quarantined", "purged", "restored"):
                self.result[key], self.result[key + "_count"] = [], 0
        elif self.module._diff:
            diff_lines = self.ledger.diff_lines
            lines, cut = bounded(diff_lines, limit)
            if cut:
                lines.append("... and %d more" % (len(diff_lines) - len(lines)))
            self.result["diff"] = {"before_header": self.path, "after_header": self.path,
                                   "prepared": "\n".join(lines) + ("\n" if lines else "")}
        self.close()
        write_guard_metrics(self.module, "guarded_cleanup", self.verdict, self.result)
        exit_with_verdict(self.module, self.verdict, self.result, self.params["on_refusal"])


def main() -> None:
    module = GuardedModule(
        "guarded_cleanup",
        argument_spec=dict(
            path=dict(type="path", required=True),
            pattern=dict(type="str", default="*"),
            key_regex=dict(type="str", no_log=False),
            reference_command=dict(type="list", elements="str"),
            reference_sqlite=dict(type="path"),
            reference_query=dict(type="str"),
            reference_timeout=dict(type="int", default=60),
            min_references=dict(type="int", default=1),
            max_reference_shrink=dict(type="float", default=0.1),
            max_orphans=dict(type="int", default=10),
            max_orphan_ratio=dict(type="float", default=0.05),
            lock_patterns=dict(type="list", elements="str", default=[]),
            lock_suffix=dict(type="str", default=".lock"),
            quarantine_dir=dict(type="path"),
            state_file=dict(type="path"),
            first_run=dict(type="bool", default=False),
            lock_timeout=dict(type="int", default=120),
            grace_period=dict(type="str", default="7d"),
            restore_referenced=dict(type="bool", default=True),
            state=dict(type="str", choices=["reconcile", "restore"], default="reconcile"),
            names=dict(type="list", elements="str"),
            **DELETION_GUARD_ARGUMENT_SPEC,
            **GUARD_METRICS_ARGSPEC
        ),
        mutually_exclusive=[("reference_command", "reference_sqlite")],
        required_together=[("reference_sqlite", "reference_query")],
        required_if=[("state", "reconcile", ("reference_command", "reference_sqlite"), True)],
        supports_check_mode=True,
    )
    params = module.params
    check_bounds(module, ratios=("max_reference_shrink", "max_orphan_ratio"),
                 counts=("max_orphans", "min_references", "reference_timeout", "lock_timeout"))
    if params["reference_command"] is not None and not params["reference_command"]:
        module.fail_json(msg="reference_command is an empty list")
    try:
        parse_grace(params["grace_period"])
        if params["key_regex"]:
            re.compile(params["key_regex"])
    except (ValueError, re.error) as exc:
        module.fail_json(msg="invalid option: %s" % exc)
    module.run("cleanup of %s" % params["path"], lambda: run_cleanup(module))


def run_cleanup(module: GuardedModule) -> None:
    cleanup = GuardedCleanup(module)
    try:
        cleanup.restore() if module.params["state"] == "restore" else cleanup.reconcile()
    finally:
        cleanup.close()  # the lock ends with the run, also when it fails


if __name__ == "__main__":
    main()
