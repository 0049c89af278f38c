# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# The quarantine of guarded_cleanup: the reference it trusts, the directory and manifest that hold what it moved,
# the record of the last healthy reference, and the lock that keeps two runs from rewriting each other's manifest.
#
# Two runs at once: every run takes a lock on the directory it cleans (flock on the directory itself, so nothing is
# created: the mechanism the prune timer and docker_reclaim share, acquire_lock in _files) before it reads
# anything, and holds it until it has written. The manifest also carries a generation number: a run writes it only
# if the file on disk still has the generation it read, so a manifest is never replaced by an older picture, lock
# or not.
#
# Standard library only: this code runs on managed hosts.

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ansible_collections.postmortem.remediation.plugins.module_utils._deletion_guard import (
    printable,
    write_json_atomic,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._files import acquire_lock

if TYPE_CHECKING:
    from ansible.module_utils.basic import AnsibleModule

MANIFEST_VERSION = 1
GRACE_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
GRACE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
TIMEOUT_RC = (124, 137)


def parse_grace(text: str | None) -> int:
    match = GRACE_RE.match(text or "")
    if not match:
        raise ValueError("grace_period '%s' is not a number with a unit s, m, h, d or w" % text)
    return int(match.group(1)) * GRACE_UNITS[match.group(2)]


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def move_no_replace(source: str, target: str) -> None:
    """Rename ``source`` to ``target``, never replacing what is at ``target`` (os.rename would, silently).

    Files and symlinks are hard-linked first, which fails with EEXIST if ``target`` appeared after the check, then
    unlinked; a directory is renamed (rename(2) refuses a non-empty directory target).
    """
    if os.path.lexists(target):
        raise OSError(errno.EEXIST, "%s exists: not overwritten" % target)
    if os.path.isdir(source) and not os.path.islink(source):
        os.rename(source, target)
        return
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        os.rename(source, target)  # a filesystem without hard links: the check above is all there is
        return
    os.unlink(source)


class UnhealthyReference(Exception):
    """The reference could not be read: the cleanup must not trust it."""


class Reference(object):
    """Read the reference keys from a command or a SQLite query, refusing anything unhealthy."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params

    @property
    def source(self) -> str:
        if self.params["reference_command"]:
            return "command %s" % " ".join(self.params["reference_command"])
        return "sqlite %s" % self.params["reference_sqlite"]

    def read(self) -> set[str]:
        if self.params["reference_command"]:
            return self._from_command(self.params["reference_command"])
        return self._from_sqlite(self.params["reference_sqlite"], self.params["reference_query"])

    def _from_command(self, argv: list[str]) -> set[str]:
        timeout = self.params["reference_timeout"]
        timeout_bin = self.module.get_bin_path("timeout")
        if not timeout_bin:
            raise UnhealthyReference("the 'timeout' program is missing; the reference command cannot be bounded")
        rc, out, err = self.module.run_command(
            [timeout_bin, "--kill-after=5", str(timeout), *argv], environ_update={"LC_ALL": "C"})
        if rc in TIMEOUT_RC:
            raise UnhealthyReference("reference command %s timed out after %d s" % (argv[0], timeout))
        if rc != 0:
            raise UnhealthyReference("reference command %s failed (rc %d): %s" % (
                argv[0], rc, (err.strip() or out.strip())[:500]))
        return set(line.strip() for line in out.splitlines() if line.strip())

    def _from_sqlite(self, database: str, query: str) -> set[str]:
        if not os.path.isfile(database):
            raise UnhealthyReference("reference database %s does not exist" % database)
        deadline = time.time() + self.params["reference_timeout"]
        try:
            conn = sqlite3.connect("file:%s?mode=ro" % quote(database), uri=True,
                                   timeout=self.params["reference_timeout"])
        except sqlite3.Error as exc:
            raise UnhealthyReference("reference database %s cannot be opened: %s" % (database, exc)) from exc
        try:
            conn.set_progress_handler(lambda: 1 if time.time() > deadline else 0, 10000)
            rows = conn.execute(query).fetchall()
        except sqlite3.Error as exc:
            timed_out = time.time() > deadline
            cause = "timed out after %d s (%s)" % (self.params["reference_timeout"], exc) if timed_out else str(exc)
            raise UnhealthyReference("reference query on %s failed: %s" % (database, cause)) from exc
        finally:
            conn.close()
        return set(str(row[0]).strip() for row in rows if row and row[0] is not None and str(row[0]).strip())


class Quarantine(object):
    """The quarantine directory: items/ holds the moved items, manifest.json says where they came from."""

    def __init__(self, module: AnsibleModule, directory: str) -> None:
        self.module = module
        self.directory = directory
        self.items_dir = os.path.join(directory, "items")
        self.manifest_path = os.path.join(directory, "manifest.json")
        self.lock: Any = None
        self.generation = 0
        self.entries: dict[str, dict[str, Any]] = {}

    def open(self, origin_dir: str, lock_timeout: float) -> Quarantine:
        """Lock ``origin_dir`` (the directory cleaned into this quarantine), then read the manifest under the lock."""
        self.lock = acquire_lock(origin_dir, lock_timeout)
        if self.lock is None:
            self.module.fail_json(msg="cleanup of %s: another run holds its lock after %d s; nothing was done, try "
                                      "again when it ends" % (origin_dir, lock_timeout))
        self.entries = self._load()
        return self

    def close(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def has_record(self) -> bool:
        """Whether a run ever wrote a manifest here (the quarantine is not new)."""
        return any(os.path.exists(p) for p in (self.manifest_path, self.manifest_path + ".prev"))

    def _read(self) -> Any:
        try:
            with open(self.manifest_path) as handle:
                return json.load(handle)
        except (IOError, OSError, ValueError) as exc:
            self.module.fail_json(msg="quarantine manifest %s cannot be read: %s; fix or move it away, the "
                                      "module will not guess what the quarantine holds" % (self.manifest_path, exc))

    def _load(self) -> dict[str, dict[str, Any]]:
        if not os.path.exists(self.manifest_path):
            self.generation = 0
            return {}
        data = self._read()
        self.generation = int(data.get("generation", 0))
        return data.get("items", {})

    def find(self, wanted: str) -> str | None:
        """The manifest name an operator means: the name itself, or its printable form (bytes as \\xNN)."""
        if wanted in self.entries:
            return wanted
        for name in self.entries:
            if printable(name) == wanted:
                return name
        return None

    def stored_path(self, name: str) -> str:
        return os.path.join(self.items_dir, name)

    def ensure(self) -> None:
        for directory in (self.directory, self.items_dir):
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o700, exist_ok=True)  # two runs may create it at once

    def save(self, origin_dir: str) -> None:
        on_disk = self._read().get("generation", 0) if os.path.exists(self.manifest_path) else 0
        if on_disk != self.generation:
            self.module.fail_json(msg="quarantine manifest %s was rewritten by another run since this one read it "
                                      "(generation %s, now %s): not overwritten with an older picture; run again"
                                      % (self.manifest_path, self.generation, on_disk))
        self.generation += 1
        write_json_atomic(self.module, self.manifest_path,
                          {"version": MANIFEST_VERSION, "generation": self.generation, "path": origin_dir,
                           "items": self.entries}, keep_previous=True)


class StateRecord(object):
    """The size of the last healthy reference, kept in a state file and its previous copy."""

    def __init__(self, module: AnsibleModule, path: str) -> None:
        self.module = module
        self.path = path
        self.used: str | None = None

    def _read(self, path: str) -> int:
        with open(path) as handle:
            return int(json.load(handle)["reference_count"])

    def previous_count(self, quarantine: Quarantine, first_run: bool) -> int | None:
        """The count to compare with, from the state file or else its previous copy; None on a first run.

        Raises MissingState when neither can be read although a record existed (a file is there but unreadable, or
        the quarantine's manifest shows earlier runs), unless ``first_run`` says the operator wants to start over.
        """
        problems, existed = [], False
        for path in (self.path, self.path + ".prev"):
            if not os.path.exists(path):
                problems.append("%s is missing" % path)
                continue
            existed = True
            try:
                count = self._read(path)
            except (IOError, OSError, ValueError, KeyError, TypeError) as exc:
                problems.append("%s cannot be read (%s)" % (path, exc))
                continue
            self.used = path
            if problems:
                self.module.warn("guarded_cleanup: %s; the shrink check uses the previous copy %s"
                                 % ("; ".join(problems), path))
            return count
        if (existed or quarantine.has_record()) and not first_run:
            raise MissingState("the record of the last healthy reference is lost: %s; the quarantine %s shows earlier "
                               "runs, so the shrink check has nothing to compare the reference with; if this is meant "
                               "as a first run, set first_run=true" % ("; ".join(problems), quarantine.directory))
        return None

    def save(self, count: int, previous: int | None, origin_dir: str) -> bool:
        """Record ``count`` (and keep the record it replaces); a run whose count did not change writes nothing."""
        if count == previous and self.used == self.path:
            return False
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700, exist_ok=True)
        data = {"reference_count": count, "recorded_at": iso(time.time()), "path": origin_dir}
        write_json_atomic(self.module, self.path, data, keep_previous=True)
        if not os.path.exists(self.path + ".prev"):  # the first record: its copy is the fallback if it is deleted
            write_json_atomic(self.module, self.path + ".prev", data)
        return True


class MissingState(Exception):
    """The record of the last healthy reference is gone although the module ran here before."""


def identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` resolves to, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def is_inside(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or below it, both resolved (symlinked aliases included)."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")
