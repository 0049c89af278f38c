# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# The items of the directory guarded_cleanup reconciles: which entries are items (the pattern, never the module's
# own files, hidden names only for a hidden pattern, never a lock marker), which are locked, and the reference key
# each one carries. Standard library only: this code runs on managed hosts.

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable

from ansible_collections.postmortem.remediation.plugins.module_utils._quarantine import identity


class ItemRules:
    """The rules that name the items of ``path``: its pattern, its locks and its keys (the module's options)."""

    def __init__(self, path: str, pattern: str, key_regex: str | None, lock_patterns: list[str], lock_suffix: str,
                 own_paths: Iterable[str]) -> None:
        self.path = path
        self.pattern = pattern
        self.key_regex = key_regex
        self.lock_patterns = lock_patterns
        self.lock_suffix = lock_suffix
        # The module's own files are never items, however they are reached (a symlinked alias of path included).
        self.own = set(identity(p) for p in own_paths) - {None}

    def names(self) -> list[str]:
        """The item names in ``path``, sorted."""
        names = []
        for name in sorted(os.listdir(self.path)):
            full = os.path.join(self.path, name)
            if identity(full) in self.own:
                continue
            if name.startswith(".") and not self.pattern.startswith("."):
                continue
            if self.lock_suffix and name.endswith(self.lock_suffix):
                continue
            if fnmatch.fnmatchcase(name, self.pattern):
                names.append(name)
        return names

    def lock_reason(self, name: str) -> str | None:
        """Why the item ``name`` is locked (a lock pattern, a lock marker at its origin), or None."""
        for lock_pattern in self.lock_patterns:
            if fnmatch.fnmatchcase(name, lock_pattern):
                return "locked: matches %s" % lock_pattern
        suffix = self.lock_suffix
        if suffix and os.path.lexists(os.path.join(self.path, name + suffix)):
            return "locked: marker %s" % (name + suffix)
        return None

    def key_of(self, name: str) -> str | None:
        """The reference key of ``name``: the whole name, or what key_regex extracts; None when it does not match."""
        if not self.key_regex:
            return name
        match = re.search(self.key_regex, name)
        if not match:
            return None
        if "key" in match.re.groupindex:
            return match.group("key")
        return match.group(1) if match.re.groups else match.group(0)
