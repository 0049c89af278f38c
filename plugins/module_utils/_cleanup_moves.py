# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# The moves of guarded_cleanup, once its guard has allowed them: which quarantined items to purge or to move back,
# and the moves themselves, recorded in the manifest before they are made so that a crash leaves a manifest that
# names every item the quarantine may hold. An item that cannot move stays where it is and is reported as kept.
# Standard library only: this code runs on managed hosts.

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable

from ansible_collections.postmortem.remediation.plugins.module_utils._cleanup_items import ItemRules
from ansible_collections.postmortem.remediation.plugins.module_utils._quarantine import Quarantine, iso, move_no_replace


class Ledger:
    """What a run keeps (each with the reason) and the lines of its diff."""

    def __init__(self) -> None:
        self.kept: list[dict[str, str]] = []
        self.diff_lines: list[str] = []

    def keep(self, name: str, reason: str) -> None:
        self.kept.append({"name": name, "reason": reason})


def plan_quarantine(quarantine: Quarantine, keys: set[str], rules: ItemRules, grace: int, restore_referenced: bool,
                    ledger: Ledger) -> tuple[list[str], list[str]]:
    """Which quarantined items to purge (grace period over, still orphans) or to move back (referenced again)."""
    now = time.time()
    purge, restore = [], []
    for name in sorted(quarantine.entries):
        entry = quarantine.entries[name]
        if not os.path.lexists(quarantine.stored_path(name)):
            ledger.keep(name, "in the manifest but not in the quarantine (never moved, or removed by hand)")
            continue
        if entry.get("key") in keys:
            if not restore_referenced:
                ledger.keep(name, "quarantined, but referenced again (restore_referenced is off)")
            elif os.path.lexists(entry["origin"]):
                ledger.keep(name, "referenced again, but %s exists: not restored" % entry["origin"])
            else:
                restore.append(name)
                ledger.diff_lines.append("restore %s -> %s (referenced again)" % (name, entry["origin"]))
            continue
        lock = rules.lock_reason(name)
        if lock:  # locked after it was quarantined (a legal hold, a restore): never purged while the lock holds
            ledger.keep(name, "%s; quarantined, not purged while locked" % lock)
            continue
        left = entry["quarantined_at"] + grace - now
        if left > 0:
            ledger.keep(name, "quarantined at %s, purge in %d s" % (entry.get("quarantined_iso", "?"), left))
        else:
            purge.append(name)
            ledger.diff_lines.append("purge %s (quarantined at %s)" % (name, entry.get("quarantined_iso", "?")))
    return purge, restore


def can_quarantine(quarantine: Quarantine, origin_dir: str, name: str, ledger: Ledger) -> bool:
    """Whether the orphan ``name`` can go to the quarantine (nothing of that name is there yet)."""
    if name in quarantine.entries or os.path.lexists(quarantine.stored_path(name)):
        ledger.keep(name, "orphan, but an item of that name is already in the quarantine")
        return False
    ledger.diff_lines.append("quarantine %s -> %s" % (os.path.join(origin_dir, name), quarantine.stored_path(name)))
    return True


def plan_restore(quarantine: Quarantine, names: Iterable[str] | None, ledger: Ledger) -> list[str]:
    """The quarantined items state=restore moves back: all of them, or those ``names`` means (None: all)."""
    wanted = None
    if names is not None:
        wanted = set()
        for name in names:
            found = quarantine.find(name)
            if found is None:
                ledger.keep(name, "not in the quarantine")
            else:
                wanted.add(found)
    restore = []
    for name in sorted(quarantine.entries):
        if wanted is not None and name not in wanted:
            continue
        origin = quarantine.entries[name]["origin"]
        if not os.path.lexists(quarantine.stored_path(name)):
            ledger.keep(name, "in the manifest but not in the quarantine")
        elif os.path.lexists(origin):
            ledger.keep(name, "%s exists: not overwritten" % origin)
        else:
            restore.append(name)
            ledger.diff_lines.append("restore %s -> %s" % (quarantine.stored_path(name), origin))
    return restore


def apply_moves(quarantine: Quarantine, origin_dir: str, purge: list[str], restore: list[str], quarantined: list[str],
                key_of: Callable[[str], str | None], ledger: Ledger, done: dict[str, list[str]] | None = None) -> None:
    """Quarantine, move back and purge; the lists keep only what was done, the rest is in the ledger as kept.

    ``done`` (keys quarantined, restored, purged) gets each name as soon as its move is made: an exception or SIGTERM
    that ends the run half-way leaves there what it did (a failed run's result and pmr_guard_deleted)."""
    done = done if done is not None else {}
    stale = [name for name in quarantine.entries if not os.path.lexists(quarantine.stored_path(name))]
    if not (purge or restore or quarantined or stale):
        if not quarantine.has_record():  # the first healthy run leaves a record: a lost state file is then seen
            quarantine.ensure()
            quarantine.save(origin_dir)
        return  # nothing to move: a run that changes nothing writes nothing
    quarantine.ensure()
    # Drop manifest entries whose item is gone (reported in kept), then record the moves before making them,
    # so that a crash leaves a manifest that names every item the quarantine may hold.
    for name in stale:
        del quarantine.entries[name]
    now = time.time()
    for name in list(quarantined):
        origin = os.path.join(origin_dir, name)
        try:
            size = os.lstat(origin).st_size
        except OSError as exc:
            quarantined.remove(name)
            ledger.keep(name, "vanished before the move: %s" % exc)
            continue
        quarantine.entries[name] = {
            "key": key_of(name), "origin": origin, "quarantined_at": now, "quarantined_iso": iso(now),
            "kind": "dir" if os.path.isdir(origin) and not os.path.islink(origin) else "file", "size": size,
        }
    quarantine.save(origin_dir)
    for name in list(quarantined):
        try:
            move_no_replace(os.path.join(origin_dir, name), quarantine.stored_path(name))
        except OSError as exc:
            del quarantine.entries[name]
            quarantined.remove(name)
            ledger.keep(name, "could not be moved: %s" % exc)
        else:
            done.setdefault("quarantined", []).append(name)
    move_back(quarantine, restore, ledger, done)
    for name in list(purge):
        stored = quarantine.stored_path(name)
        try:
            if os.path.isdir(stored) and not os.path.islink(stored):
                shutil.rmtree(stored)
            else:
                os.unlink(stored)
        except OSError as exc:  # what is left stays in the manifest; the next run tries again
            purge.remove(name)
            ledger.keep(name, "could not be purged: %s" % exc)
            continue
        done.setdefault("purged", []).append(name)
        del quarantine.entries[name]
    quarantine.save(origin_dir)


def move_back(quarantine: Quarantine, names: list[str], ledger: Ledger, done: dict[str, list[str]] | None = None,
              ) -> None:
    """Move quarantined items back to their origin; one that cannot go back stays quarantined and is kept.
    ``done['restored']`` gets each name as soon as it is back (see apply_moves)."""
    for name in list(names):
        origin = quarantine.entries[name]["origin"]
        try:
            move_no_replace(quarantine.stored_path(name), origin)
        except OSError as exc:
            names.remove(name)
            ledger.keep(name, "not restored to %s: %s" % (origin, exc.strerror or exc))
        else:
            del quarantine.entries[name]
            if done is not None:
                done.setdefault("restored", []).append(name)
