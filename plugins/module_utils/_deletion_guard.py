# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# The one deletion guard every destructive module of the collection shares. Two incidents are behind it:
# an rsync --delete whose source path lost a component to an empty variable, and an orphan-backup cleanup
# that trusted a failing database. Both deleted because nothing compared the plan with what is plausible.
#
# The shape a destructive module follows:
#
#   1. plan      compute what would be deleted, without touching anything (dry run, reconciliation);
#   2. count     the planned deletions and the population they are taken from;
#   3. compare   with the bounds: absolute count and ratio, plus input plausibility checks;
#   4. refuse    with a reason that names the bound, the value and the limit (nothing was touched);
#   5. act       only when every check passed, and only outside check mode.
#
#   verdict = Verdict('sync of /srv/mirror/debian/amd64')
#   verdict.require_path_scope('src', src, expect_suffix='debian/amd64')
#   verdict.require_at_least('source files', n_src, minimum=100)
#   DeletionGuard(max_count=100, max_ratio=0.1).check(verdict, planned=n_del, population=n_dest)
#   if not verdict.allowed:
#       exit_with_verdict(module, verdict, result, on_refusal)   # fail_json, or exit_json with refused=True
#
# Standard library only: this code runs on managed hosts.

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ansible_collections.postmortem.remediation.plugins.module_utils._files import (
    WriteTargetError,
    write_atomically,
    write_target,
)

if TYPE_CHECKING:
    from ansible.module_utils.basic import AnsibleModule

ON_REFUSAL_CHOICES = ("fail", "report")
T = TypeVar("T")

# The options every guarded destructive module takes, declared once (documented once in the doc fragment
# postmortem.remediation.deletion_guard); the module's own bounds are checked with check_bounds.
DELETION_GUARD_ARGUMENT_SPEC = dict(
    on_refusal=dict(type="str", choices=list(ON_REFUSAL_CHOICES), default="fail"),
    list_limit=dict(type="int", default=50),
)


class PathScopeError(ValueError):
    """A path that could widen the scope of a destructive operation."""


class Check(object):
    """One comparison of a measured value with its bound."""

    def __init__(self, name: str, ok: object, value: Any = None, limit: Any = None, message: str = "") -> None:
        self.name = name
        self.ok = bool(ok)
        self.value = value
        self.limit = limit
        self.message = message

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "value": self.value, "limit": self.limit, "message": self.message}


class Verdict(object):
    """The checks made on one planned destructive operation; allowed only when every check passed."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.checks: list[Check] = []

    # -- generic comparisons -------------------------------------------------------------------------
    def require(self, name: str, ok: bool, message: str, value: Any = None, limit: Any = None) -> bool:
        """Record a check whose outcome the caller computed; ``message`` explains a failure."""
        self.checks.append(Check(name, ok, value, limit, "" if ok else message))
        return ok

    def require_at_most(self, name: str, value: int, limit: int | None, unit: str = "items") -> bool:
        """``value`` must not exceed ``limit``; a limit of None disables the check (recorded as passed)."""
        ok = limit is None or value <= limit
        message = ""
        if limit is not None and not ok:
            message = "%s: %d %s planned, more than the bound of %d" % (name, value, unit, limit)
        return self.require(name, ok, message, value, limit)

    def require_ratio_at_most(self, name: str, part: int, whole: int, limit: float | None, unit: str = "items",
                              ) -> bool:
        """``part / whole`` must not exceed ``limit`` (0..1). With an empty population any part is 100 %."""
        ratio = ratio_of(part, whole)
        ok = limit is None or ratio <= limit
        message = ""
        if limit is not None and not ok:
            message = "%s: %d of %d %s (%s) planned, more than the bound of %s" % (
                name, part, whole, unit, percent(ratio), percent(limit))
        return self.require(name, ok, message, round(ratio, 6), limit)

    def require_at_least(self, name: str, value: int, minimum: int | None, unit: str = "items") -> bool:
        """``value`` must reach ``minimum`` (an input that is too small is not trusted)."""
        ok = minimum is None or value >= minimum
        message = ""
        if minimum is not None and not ok:
            message = "%s: %d %s, fewer than the minimum of %d" % (name, value, unit, minimum)
        return self.require(name, ok, message, value, minimum)

    def require_no_shrink(self, name: str, previous: int | None, current: int, max_shrink: float | None,
                          unit: str = "items") -> bool:
        """``current`` may be smaller than ``previous`` by at most ``max_shrink`` (0..1) of ``previous``.

        ``previous`` of None (no earlier successful run) passes: there is nothing to compare with.
        """
        if previous is None or max_shrink is None or previous <= 0:
            return self.require(name, True, "", current, max_shrink)
        shrink = max(0.0, (previous - current) / float(previous))
        ok = shrink <= max_shrink
        message = ""
        if not ok:
            message = "%s: %d %s now, %d at the last successful run: shrank by %s, more than the bound of %s" % (
                name, current, unit, previous, percent(shrink), percent(max_shrink))
        return self.require(name, ok, message, round(shrink, 6), max_shrink)

    def require_path_scope(self, name: str, path: str, expect_suffix: str | None = None, absolute: bool = False,
                           ) -> bool:
        """``path`` must have only real components and end with ``expect_suffix`` (see :func:`check_path_scope`)."""
        try:
            check_path_scope(path, name, expect_suffix=expect_suffix, absolute=absolute)
        except PathScopeError as exc:
            return self.require(name, False, str(exc), path, expect_suffix)
        return self.require(name, True, "", path, expect_suffix)

    # -- outcome ----------------------------------------------------------------------------------------
    @property
    def allowed(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    @property
    def reason(self) -> str:
        """One line naming every failed check, or an empty string when allowed."""
        if self.allowed:
            return ""
        return "refused %s: %s" % (self.subject, "; ".join(check.message for check in self.failures))

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "allowed": self.allowed,
            "reason": self.reason,
            "checks": [check.as_dict() for check in self.checks],
        }


class DeletionGuard(object):
    """Bounds on one kind of deletion: an absolute count and a ratio of the population."""

    def __init__(self, max_count: int | None = None, max_ratio: float | None = None, unit: str = "items") -> None:
        if max_count is not None and max_count < 0:
            raise ValueError("max_count must be >= 0, got %r" % (max_count,))
        if max_ratio is not None and not 0.0 <= max_ratio <= 1.0:
            raise ValueError("max_ratio must be between 0 and 1, got %r" % (max_ratio,))
        self.max_count = max_count
        self.max_ratio = max_ratio
        self.unit = unit

    def check(self, verdict: Verdict, planned: int, population: int, label: str = "deletions") -> Verdict:
        """Add the count and the ratio checks for ``planned`` deletions out of ``population`` to ``verdict``."""
        verdict.require_at_most(label, planned, self.max_count, unit=self.unit)
        verdict.require_ratio_at_most(label + " ratio", planned, population, self.max_ratio, unit=self.unit)
        return verdict


def ratio_of(part: float, whole: float) -> float:
    """``part / whole``; an empty population with planned deletions counts as 100 %."""
    if whole <= 0:
        return 1.0 if part > 0 else 0.0
    return part / float(whole)


def percent(ratio: float) -> str:
    return "%.1f %%" % (ratio * 100.0)


def split_components(path: str) -> list[str]:
    """Components of a POSIX path; the leading '/' of an absolute path yields no component.

    Empty components are kept so that they can be reported: 'a//b' -> ['a', '', 'b'], 'a/b/' -> ['a', 'b', ''].
    """
    if path.startswith("/"):
        path = path[1:]
    if path == "":
        return []
    return path.split("/")


def _describe_position(components: list[str], index: int) -> str:
    if index == 0:
        return "the first component"
    return "the component after '%s'" % components[index - 1]


def check_path_scope(path: str | None, label: str, expect_suffix: str | None = None, absolute: bool = False,
                     ) -> list[str]:
    """Refuse a path whose components could come from an empty or hostile variable.

    Rejected: an empty path, an empty component ('a//b', a trailing '/'), a whitespace-only component,
    leading or trailing whitespace in a component, '.', '..', control characters; a relative path when
    ``absolute``; a path that does not end with the components of ``expect_suffix``.
    Raises PathScopeError with a message that names ``label``, the path and the offending component.
    Returns the list of components.
    """
    if path is None or path.strip() == "":
        raise PathScopeError("%s is empty (a variable expanded to nothing?)" % label)
    if absolute and not path.startswith("/"):
        raise PathScopeError("%s '%s' is not an absolute path" % (label, path))
    components = split_components(path)
    if not components:
        raise PathScopeError("%s '%s' has no component below the root" % (label, path))
    for index, component in enumerate(components):
        where = _describe_position(components, index)
        if component == "":
            if index == len(components) - 1:
                raise PathScopeError("%s '%s': the last component (after '%s') is empty; a variable expanded to "
                                     "nothing?" % (label, path, components[index - 1] if index else "/"))
            raise PathScopeError("%s '%s': %s is empty; a variable expanded to nothing?" % (label, path, where))
        if component.strip() == "":
            raise PathScopeError("%s '%s': %s is whitespace only" % (label, path, where))
        if component != component.strip():
            raise PathScopeError("%s '%s': %s ('%s') has leading or trailing whitespace" % (
                label, path, where, component))
        if component in (".", ".."):
            raise PathScopeError("%s '%s': %s is '%s', which changes the scope" % (label, path, where, component))
        if any(ord(char) < 32 or ord(char) == 127 for char in component):
            raise PathScopeError("%s '%s': %s contains a control character" % (label, path, where))
    if expect_suffix is not None:
        suffix = check_path_scope(expect_suffix, "expect_suffix")
        if expect_suffix.startswith("/"):
            raise PathScopeError("expect_suffix '%s' must be relative (the trailing components of the path)"
                                 % expect_suffix)
        tail = components[-len(suffix):] if len(suffix) <= len(components) else components
        if tail != suffix:
            wrong = [
                "'%s' where '%s' was expected" % (got, want)
                for got, want in zip(reversed(tail), reversed(suffix)) if got != want  # noqa: B905 - py2.7-3.9 targets
            ]
            detail = ", ".join(wrong) if wrong else "too few components"
            raise PathScopeError("%s '%s' does not end with the expected suffix '%s': %s" % (
                label, path, expect_suffix, detail))
    return components


def bounded(items: Iterable[T], limit: int | None) -> tuple[list[T], bool]:
    """The first ``limit`` items as a list, and whether the list was cut."""
    items = list(items)
    if limit is None or len(items) <= limit:
        return items, False
    return items[:limit], True


def refusal(verdict: Verdict, on_refusal: str = "fail") -> tuple[bool, dict[str, Any]]:
    """How a module reports a refused verdict.

    Returns ``(fail, fields)``: ``fail`` says whether the module must call ``fail_json`` (the default, so a
    refusal stops the playbook) or ``exit_json`` (``on_refusal=report``: the refusal is data, the play goes on).
    ``fields`` always carries ``refused=True``, ``reason`` and ``msg``; nothing was changed.
    """
    if on_refusal not in ON_REFUSAL_CHOICES:
        raise ValueError("on_refusal must be one of %s" % ", ".join(ON_REFUSAL_CHOICES))
    fields = {"changed": False, "refused": True, "reason": verdict.reason, "msg": verdict.reason,
              "guard": verdict.as_dict()}
    return on_refusal == "fail", fields


def exit_with_verdict(module: AnsibleModule, verdict: Verdict, result: dict[str, Any], on_refusal: str = "fail",
                      ) -> NoReturn:
    """End a guarded module run: ``exit_json`` when ``verdict`` allowed it, else report the refusal.

    ``result`` always gets the ``guard`` record. A refusal adds the fields of :func:`refusal` (``changed=False``,
    ``refused=True``, ``reason``, ``msg``) and calls ``fail_json`` or, with ``on_refusal=report``, ``exit_json``.
    """
    result["guard"] = verdict.as_dict()
    if verdict.allowed:
        module.exit_json(**printable_data(result))
    fail, fields = refusal(verdict, on_refusal)
    result.update(fields)
    if fail:
        module.fail_json(**printable_data(result))
    module.exit_json(**printable_data(result))


def printable(name: str) -> str:
    """A file name as text that survives JSON and the controller: bytes that are not UTF-8 become \\xNN.

    Names read from the filesystem keep such bytes as surrogates (``surrogateescape``), which Ansible refuses to
    return; this is the form every result, message and diff shows, and the form an operator may give back.
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def printable_data(data: Any) -> Any:
    """``data`` (dicts, lists, strings) with every string made :func:`printable`: a result Ansible will accept."""
    if isinstance(data, str):
        return printable(data)
    if isinstance(data, dict):
        return dict((printable_data(key), printable_data(value)) for key, value in data.items())
    if isinstance(data, (list, tuple)):
        return [printable_data(item) for item in data]
    return data


def check_path_options(module: AnsibleModule, names: Iterable[str], absolute: bool = True) -> None:
    """Fail before anything is touched when a path option of a destructive module could widen its scope.

    The same rules as :func:`check_path_scope` (no empty, blank, '.' or '..' component, no trailing '/', absolute)
    for every option in ``names`` that is set: one validator for every path a destructive module takes.
    """
    check_path_values(module, dict((name, module.params.get(name)) for name in names), absolute=absolute)


def check_path_values(module: Any, values: dict, absolute: bool = True) -> None:
    """:func:`check_path_options` for paths a module derives from its options (label: path), None skipped."""
    for name, value in values.items():
        if value is None:
            continue
        try:
            check_path_scope(value, name, absolute=absolute)
        except PathScopeError as exc:
            module.fail_json(msg="invalid path: %s" % exc, refused=True, reason=str(exc), changed=False)


def bound_error(params: dict, ratios: tuple = (), counts: tuple = ()) -> str:
    """The first bound option out of its range, as a message naming it and its value; empty when all are in range.

    ``ratios`` must lie between 0 and 1, ``counts`` must be 0 or more; an option that is not set (None) is not checked.
    """
    for name in ratios:
        if params.get(name) is not None and not 0.0 <= params[name] <= 1.0:
            return "%s must be between 0 and 1, got %s" % (name, params[name])
    for name in counts:
        if params.get(name) is not None and params[name] < 0:
            return "%s must be 0 or more, got %d" % (name, params[name])
    return ""


def check_bounds(module: Any, ratios: tuple = (), counts: tuple = ()) -> None:
    """Fail before anything is planned when a bound option of a destructive module is out of its range."""
    error = bound_error(module.params, ratios=ratios, counts=counts)
    if error:
        module.fail_json(msg=error)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def write_json_atomic(module: AnsibleModule, path: str, data: Any, mode: int = 0o600, keep_previous: bool = False,
                      ) -> None:
    """Write ``data`` as JSON to ``path`` with :func:`write_atomically` and the module's ``atomic_move``.

    With ``keep_previous``, the file being replaced is first kept as ``<path>.prev`` (one generation), itself
    replaced atomically (a hard link renamed over it), so a crash never leaves a truncated previous copy.
    No temporary file outlives a failure.
    """
    # A symlinked state file is written through its link (the temp file beside the real file, so the move stays a
    # rename); a dangling link fails the module instead of being replaced by a regular file. atomic_move keeps the
    # mode and owner of the file it replaces; ``mode`` applies to a new file.
    try:
        path = write_target(path)
    except WriteTargetError as exc:
        module.fail_json(msg="Refusing to write %s: %s" % (path, exc), path=path)
    if keep_previous and os.path.isfile(path):
        keep_previous_copy(path)

    def move(tmp: str, dest: str) -> None:
        try:
            module.atomic_move(tmp, dest)
        except Exception as exc:  # ansible-core raises a bare Exception when the final rename fails
            module.fail_json(msg="cannot replace %s: %s; it was left as it was" % (dest, exc))

    write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode, move=move)


def keep_previous_copy(path: str) -> None:
    """``<path>.prev`` becomes the current ``path`` in one rename (a copy when hard links are not possible)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".prev.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copy2(path, tmp)
        os.rename(tmp, path + ".prev")
    finally:
        if os.path.lexists(tmp):
            _unlink_quietly(tmp)
