# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# Where a module that replaces a file atomically must write, and what it must keep: a symlinked file is written
# through its link (a rename over the link would split the configuration in two), a dangling link is refused, and
# the mode and owner of the file replaced are kept. Standard library only: it runs on managed hosts.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fcntl
import os
import time


class WriteTargetError(Exception):
    """The path cannot be written safely; the message names it and says why."""


def write_target(path):
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


def existing_mode_and_owner(path):
    """(mode bits, uid, gid) of an existing file, or None when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mode & 0o7777, stat.st_uid, stat.st_gid


def lock_directory(directory, timeout):
    """An open descriptor holding an exclusive flock on ``directory``, or None after ``timeout`` seconds.

    Two runs that read, validate and replace the same file serialise on its directory: the second reads what the
    first wrote instead of overwriting it with a merge of stale content. A directory lock leaves no lock file
    behind. The lock ends when the descriptor is closed (or the process exits).
    """
    fd = os.open(directory, os.O_RDONLY)
    deadline = time.time() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except (IOError, OSError):
            if time.time() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.2)
