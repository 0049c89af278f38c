# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# Files on managed hosts, one implementation each: where a module that replaces a file atomically must write, and
# what it must keep (a symlinked file is written through its link, since a rename over the link would split the
# configuration in two; a dangling link is refused; the mode and owner of the file replaced are kept); how a text is
# written atomically (write_atomically); and the flock that makes runs take turns (acquire_lock).
#
# Copied beside the scripts of the prune timer and docker_signals roles, so it imports nothing of the collection.
# Standard library only: it runs on managed hosts.

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time

from typing import IO, Callable


class WriteTargetError(Exception):
    """The path cannot be written safely; the message names it and says why."""


def write_target(path: str) -> str:
    """The file to replace for ``path``: ``path`` itself, or the file its symlink(s) point to.

    A rename onto a symlink replaces the link with a regular file, so whoever reads the link's target (the
    configuration management that owns it, another tool) keeps reading the old content. A dangling link is
    refused: creating its target would write somewhere the operator may not expect, and replacing the link would
    throw away their layout.
    """
    if not os.path.islink(path):
        return path
    real = os.path.realpath(path)
    if not os.path.exists(real):
        raise WriteTargetError(
            "%s is a symbolic link to %s, which does not exist: refusing to replace the link with a regular file or "
            "to create its target. Create the target (or remove the link) and run again." % (path, real)
        )
    if not os.path.isfile(real):
        raise WriteTargetError("%s is a symbolic link to %s, which is not a regular file" % (path, real))
    return real


def existing_mode_and_owner(path: str) -> tuple[int, int, int] | None:
    """(mode bits, uid, gid) of an existing file, or None when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mode & 0o7777, stat.st_uid, stat.st_gid


def write_atomically(path: str, text: str, mode: int = 0o644, move: Callable[[str, str], object] | None = None,
                     ) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory, fsync'ed, then renamed.

    ``move(src, dest)`` does the rename (a module passes ``module.atomic_move``); ``os.rename`` otherwise.
    Whatever fails (the write, the disk, the rename), the temporary file is removed: nothing is left behind.
    No backup of the file replaced is kept: callers rewrite it at every run (metrics, a record of a hash).
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        (move or os.rename)(temp, path)
    finally:
        if os.path.lexists(temp):
            with contextlib.suppress(OSError):
                os.unlink(temp)


# One lock implementation for every run that must take turns: docker_reclaim and the prune timer (a lock file),
# guarded_cleanup (the directory it cleans) and docker_daemon_config (the directory of daemon.json). Locking a
# directory itself creates nothing.
class _DirectoryHandle(object):
    """An open directory, so that it can be flock-ed itself: a lock that creates nothing."""

    def __init__(self, path: str) -> None:
        self.fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))

    def fileno(self) -> int:
        if self.fd is None:  # like a closed file's
            raise ValueError("I/O operation on a closed directory handle")
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def acquire_lock(path: str, wait_seconds: float = 0) -> _DirectoryHandle | IO[str] | None:
    """An open, flock-ed file object, or None when another run holds the lock after wait_seconds.

    ``path`` is a lock file (created if missing, with its directory), or an existing directory, locked as it is.
    The lock ends when the caller closes the object (or the process exits).
    """
    handle: _DirectoryHandle | IO[str]
    if os.path.isdir(path):
        handle = _DirectoryHandle(path)
    else:
        directory = os.path.dirname(path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)  # two runs may create it at once
        handle = open(path, "a")  # noqa: SIM115 - the lock lasts as long as the caller keeps the handle open
    deadline = time.time() + wait_seconds
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except (IOError, OSError) as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                handle.close()
                raise
            if time.time() >= deadline:
                handle.close()
                return None
            time.sleep(0.5)
