# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# What safe_sync needs to know about rsync: where a location is, how to read an itemized run, and how to delete
# exactly a planned list of files and nothing else.
#
# Why the real run never uses --delete: --delete deletes whatever is extraneous when rsync runs, not what the plan
# listed. If the source changed between the dry run and the real run, it deletes files nobody approved, and
# --max-delete only bounds how many, not which. So the real run transfers without any deletion, and then deletes
# the planned paths and only those, through --files-from with --delete-missing-args: rsync deletes a listed path
# at the destination only if it is still missing from the source at that moment (a planned deletion that came back
# is transferred instead), and never recurses into a directory (a directory that is not empty stays).
#
# Why the transfer is a list too: the dry run has already walked and compared both trees; walking them again for
# the transfer doubled the cost of a sync whose plan is small. The transfer pass sends the planned paths only
# (--files-from, not recursive; implied parent directories keep the source's attributes). A path that changed after
# the plan is sent as it is now; a path that appeared after the plan waits for the next run (and its plan).
#
# Standard library only: this code runs on managed hosts.

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from typing import Any

from ansible_collections.postmortem.remediation.plugins.module_utils._deletion_guard import (
    PathScopeError,
    check_path_scope,
    ratio_of,
)

# rsync's success codes: 0, and 24 (some source files vanished during the transfer: a live tree).
RSYNC_OK = (0, 24)
ITEM_RE = re.compile(r"^([<>ch.])([fdLDS])(\S{9}) (.*)$")
DELETING_PREFIX = "*deleting "
STATS_FILES_RE = re.compile(r"^Number of files: ([\d,.]+)(?: \((.*)\))?$")
# rsync prints every byte it will not show as-is (under LC_ALL=C: anything outside printable ASCII) as \#ooo, octal.
ESCAPE_RE = re.compile(br"\\#([0-7]{3})")
NOT_EMPTY_RE = re.compile(r"^cannot delete non-empty directory: (.*)$")


def decode_name(text: str) -> str:
    """A path as rsync printed it -> the real name (str; bytes that are not UTF-8 kept as surrogates, reversible)."""
    if "\\#" not in text:  # the common case: nothing escaped, nothing to decode
        return text
    raw = text.encode("utf-8", "surrogateescape")
    return ESCAPE_RE.sub(lambda match: bytes([int(match.group(1), 8)]), raw).decode("utf-8", "surrogateescape")


def encode_name(name: str) -> bytes:
    """The bytes of a name decoded by :func:`decode_name`, for a --files-from list."""
    return name.encode("utf-8", "surrogateescape")


class Location(object):
    """One side of the synchronisation: local path, remote shell (host:path) or rsync daemon."""

    def __init__(self, label: str, spec: str) -> None:
        self.label = label
        self.spec = spec
        self.kind, self.host, self.path = self._parse(spec)

    @staticmethod
    def _parse(spec: str) -> tuple[str, Any, str]:
        if spec.startswith("rsync://"):
            rest = spec[len("rsync://"):]
            host, _sep, path = rest.partition("/")
            return "daemon", host, path
        first_slash = spec.find("/")
        colon = spec.find(":")
        if colon > 0 and (first_slash < 0 or colon < first_slash):
            if spec[colon:colon + 2] == "::":
                return "daemon", spec[:colon], spec[colon + 2:]
            return "shell", spec[:colon], spec[colon + 1:]
        return "local", None, spec

    @property
    def remote(self) -> bool:
        return self.kind != "local"

    def validate(self, expect_suffix: str | None) -> None:
        if self.spec.startswith("-"):
            # rsync would read it as an option (and a remote shell would read a host '-o...' as one): never passed.
            raise PathScopeError("%s '%s' starts with '-': it would be read as an option" % (self.label, self.spec))
        if self.remote:
            host = self.host.strip()
            if not host:
                raise PathScopeError("%s '%s': the host part is empty" % (self.label, self.spec))
            if host.startswith("-") or host != self.host or any(c.isspace() or ord(c) < 32 for c in self.host):
                raise PathScopeError("%s '%s': the host part '%s' is not a host name (it starts with '-' or holds "
                                     "whitespace or control characters)" % (self.label, self.spec, self.host))
        label = self.label if not self.remote else "%s path on %s" % (self.label, self.host)
        check_path_scope(self.path, label, expect_suffix=expect_suffix, absolute=self.kind != "daemon")

    def as_content(self) -> str:
        """The rsync argument that means 'the content of this directory'."""
        return self.spec + "/"


class RsyncPlan(object):
    """What an itemized rsync run did or would do. Names are decoded (see :func:`decode_name`)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.changed: list[str] = []
        self.transferred: list[str] = []
        self.created_files = 0
        self.deleted_files: list[str] = []
        self.deleted_dirs: list[str] = []
        self.source_files: int | None = None  # None until rsync's statistics are read

    @classmethod
    def parse(cls, stdout: str) -> RsyncPlan:
        plan = cls()
        item_match = ITEM_RE.match
        for line in stdout.splitlines():
            if line.startswith(DELETING_PREFIX):
                name = decode_name(line[len(DELETING_PREFIX):].lstrip(" "))
                plan.items.append(decode_name(line))
                (plan.deleted_dirs if name.endswith("/") else plan.deleted_files).append(name)
                continue
            match = item_match(line)
            if match:
                update, kind, attrs, name = match.groups()
                name = decode_name(name)
                plan.items.append(decode_name(line))
                if kind == "L" and " -> " in name:
                    name = name.split(" -> ", 1)[0]
                plan.changed.append(name)
                if update in "<>" and kind == "f":
                    plan.transferred.append(name)
                if kind != "d" and attrs == "+" * 9:
                    plan.created_files += 1
                continue
            stats = STATS_FILES_RE.match(line)
            if stats:
                plan.source_files = _count_non_dirs(stats.group(1), stats.group(2))
        return plan

    def add(self, other: RsyncPlan) -> RsyncPlan:
        """Fold another run's outcome into this one (the real run is a transfer pass and deletion passes)."""
        self.items.extend(other.items)
        self.changed.extend(other.changed)
        self.transferred.extend(other.transferred)
        self.deleted_files.extend(other.deleted_files)
        self.deleted_dirs.extend(other.deleted_dirs)
        return self

    @property
    def dest_files(self) -> int:
        """Files at the destination in scope: those the source also has, plus those to delete."""
        return max(0, (self.source_files or 0) - self.created_files) + len(self.deleted_files)

    def transfer_list(self) -> list[str]:
        """The planned creations and updates as a --files-from list, without a directory's trailing '/'.

        With --files-from, a directory listed as 'dir/' (or '.') would have its immediate content sent too, planned
        or not; listed as 'dir' only the directory itself is (its times and permissions). The transfer root can only
        be listed as '.', so when the plan changes the root itself, the root's immediate content is compared again.
        """
        return [name.rstrip("/") or "." for name in self.changed]

    def deletion_passes(self) -> list[list[str]]:
        """The planned deletions as --files-from lists: the files first, then the directories, deepest first.

        rsync deletes only an empty directory here, so a directory goes after everything planned inside it;
        a directory that something unplanned still fills stays.
        """
        passes = [list(self.deleted_files)] if self.deleted_files else []
        by_depth: dict[int, list[str]] = {}
        for name in self.deleted_dirs:
            name = name.rstrip("/")
            by_depth.setdefault(name.count("/"), []).append(name)
        passes.extend(by_depth[depth] for depth in sorted(by_depth, reverse=True))
        return passes

    def parent_dirs(self) -> list[str]:
        """The directories that hold planned deletions and stay: their times change with each deletion, and a last
        pass gives them the source's times again (else the next dry run would plan a change)."""
        deleted = set(name.rstrip("/") for name in self.deleted_files + self.deleted_dirs)
        parents = set(os.path.dirname(name) or "." for name in deleted)
        return sorted(parents - deleted)

    def summary(self) -> dict[str, Any]:
        return {
            "source_files": self.source_files,
            "dest_files": self.dest_files,
            "transfer_count": len(self.transferred),
            "delete_count": len(self.deleted_files),
            "delete_dir_count": len(self.deleted_dirs),
            "delete_ratio": round(ratio_of(len(self.deleted_files), self.dest_files), 6),
        }


def not_deleted_dirs(stderr: str) -> list[str]:
    """Directories rsync kept because they were not empty (something unplanned is in them)."""
    found = []
    for line in stderr.splitlines():
        match = NOT_EMPTY_RE.match(line.strip())
        if match:
            found.append(decode_name(match.group(1)) + "/")
    return found


def write_files_from(directory: str, names: Iterable[str]) -> str:
    """A NUL-separated --files-from list of ``names`` in ``directory``; returns its path."""
    fd, path = tempfile.mkstemp(prefix="safe_sync-planned-deletions.", dir=directory)
    with os.fdopen(fd, "wb") as handle:
        for name in names:
            handle.write(encode_name(name) + b"\0")
    return path


def _number(text: str) -> int:
    return int(re.sub(r"[,.]", "", text))


def _count_non_dirs(total: str, breakdown: str | None) -> int:
    """'Number of files: 4 (reg: 1, dir: 2, link: 1)' -> 2: every entry that is not a directory."""
    count = _number(total)
    for part in (breakdown or "").split(","):
        key, _sep, value = part.strip().partition(":")
        if key.strip() == "dir":
            count -= _number(value.strip())
    return count
