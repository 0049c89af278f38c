"""The shared deletion guard, as a specification: plan, count, compare with bounds, refuse with a reason."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "build" / "collections"))
guard = importlib.import_module("ansible_collections.postmortem.remediation.plugins.module_utils._deletion_guard")


# --- path scope: the mirror incident ------------------------------------------------------------------------
PATH_REFUSALS = [
    # (path, expect_suffix, absolute, words the message must contain)
    ("", None, False, ["src is empty"]),
    ("   ", None, False, ["src is empty"]),
    ("/", None, True, ["no component below the root"]),
    ("/srv/build/debian/", "debian/amd64", True, ["last component (after 'debian') is empty"]),
    ("/srv/build//amd64", "debian/amd64", True, ["component after 'build' is empty"]),
    ("//srv", None, True, ["first component is empty"]),
    ("/srv/build/debian/ ", None, True, ["component after 'debian' is whitespace only"]),
    ("/srv/build/debian/amd64 ", None, True, ["('amd64 ') has leading or trailing whitespace"]),
    ("/srv/build/debian/..", None, True, ["component after 'debian' is '..'"]),
    ("/srv/build/debian/.", None, True, ["component after 'debian' is '.'"]),
    ("/srv/build/deb\nian", None, True, ["control character"]),
    ("srv/build", None, True, ["not an absolute path"]),
    ("/srv/build/debian/i386", "debian/amd64", True, ["'i386' where 'amd64' was expected"]),
    ("/srv/build/ubuntu/amd64", "debian/amd64", True, ["'ubuntu' where 'debian' was expected"]),
    ("/amd64", "debian/amd64", True, ["too few components"]),
    ("/srv/build/debian", "debian/", True, ["expect_suffix 'debian/'", "is empty"]),
    ("/srv/build/debian", "/debian", True, ["must be relative"]),
    ("/srv/build/debian", "", True, ["expect_suffix is empty"]),
]


@pytest.mark.parametrize(("path", "suffix", "absolute", "words"), PATH_REFUSALS)
def test_path_scope_refuses_and_names_the_component(
    path: str, suffix: str | None, absolute: bool, words: list[str]
) -> None:
    with pytest.raises(guard.PathScopeError) as err:
        guard.check_path_scope(path, "src", expect_suffix=suffix, absolute=absolute)
    for word in words:
        assert word in str(err.value)


PATH_ACCEPTED = [
    ("/srv/build/debian/amd64", "debian/amd64", ["srv", "build", "debian", "amd64"]),
    ("/srv/build/debian/amd64", "amd64", ["srv", "build", "debian", "amd64"]),
    ("mirror/debian/amd64", "debian/amd64", ["mirror", "debian", "amd64"]),
    ("/srv/my backups/2024", None, ["srv", "my backups", "2024"]),
    ("/srv/.hidden/x", "x", ["srv", ".hidden", "x"]),
]


@pytest.mark.parametrize(("path", "suffix", "components"), PATH_ACCEPTED)
def test_path_scope_accepts_real_paths(path: str, suffix: str | None, components: list[str]) -> None:
    assert guard.check_path_scope(path, "dest", expect_suffix=suffix) == components


# --- bounds: count and ratio --------------------------------------------------------------------------------
BOUNDS = [
    # (planned, population, max_count, max_ratio, allowed, failed check names)
    (0, 0, 0, 0.0, True, []),
    (0, 100, 0, 0.0, True, []),
    (5, 100, 5, 0.05, True, []),
    (6, 100, 5, 1.0, False, ["deletions"]),
    (6, 100, 100, 0.05, False, ["deletions ratio"]),
    (57, 100, 10, 0.1, False, ["deletions", "deletions ratio"]),
    (1, 0, 10, 0.5, False, ["deletions ratio"]),  # deleting from an empty population counts as 100 %
    (1000, 1000, None, None, True, []),  # both bounds disabled on purpose: recorded, passed
    (10, 1000, 10, None, True, []),
]


@pytest.mark.parametrize(("planned", "population", "max_count", "max_ratio", "allowed", "failed"), BOUNDS)
def test_deletion_bounds(planned: int, population: int, max_count: int | None, max_ratio: float | None,
                         allowed: bool, failed: list[str]) -> None:
    verdict = guard.Verdict("cleanup of /srv/backups")
    guard.DeletionGuard(max_count, max_ratio).check(verdict, planned, population)
    assert verdict.allowed is allowed
    assert [check.name for check in verdict.failures] == failed
    assert len(verdict.checks) == 2
    if not allowed:
        assert verdict.reason.startswith("refused cleanup of /srv/backups: ")


def test_refusal_reason_names_value_and_limit() -> None:
    verdict = guard.Verdict("cleanup of /srv/backups")
    guard.DeletionGuard(max_count=10, max_ratio=0.1, unit="backups").check(verdict, 57, 100)
    assert verdict.reason == (
        "refused cleanup of /srv/backups: deletions: 57 backups planned, more than the bound of 10; "
        "deletions ratio: 57 of 100 backups (57.0 %) planned, more than the bound of 10.0 %")


@pytest.mark.parametrize(("max_count", "max_ratio"), [(-1, 0.1), (1, -0.1), (1, 1.5)])
def test_guard_rejects_meaningless_bounds(max_count: int, max_ratio: float) -> None:
    with pytest.raises(ValueError):
        guard.DeletionGuard(max_count, max_ratio)


# --- input plausibility: the backup incident ----------------------------------------------------------------
SHRINK = [
    # (previous, current, max_shrink, allowed)
    (None, 3, 0.1, True),  # first run: nothing to compare with
    (1000, 1000, 0.1, True),
    (1000, 1200, 0.1, True),  # growth is fine
    (1000, 900, 0.1, True),
    (1000, 899, 0.1, False),
    (1000, 430, 0.1, False),  # the incident: a failing database answered with a partial list
    (1000, 0, 1.0, True),  # the operator accepted any shrink for this run
]


@pytest.mark.parametrize(("previous", "current", "max_shrink", "allowed"), SHRINK)
def test_reference_shrink(previous: int | None, current: int, max_shrink: float, allowed: bool) -> None:
    verdict = guard.Verdict("reference")
    assert verdict.require_no_shrink("reference keys", previous, current, max_shrink) is allowed
    assert verdict.allowed is allowed
    if not allowed:
        assert "at the last successful run" in verdict.reason


@pytest.mark.parametrize(("value", "minimum", "allowed"), [(0, 1, False), (1, 1, True), (99, 100, False),
                                                           (5, None, True)])
def test_minimum(value: int, minimum: int | None, allowed: bool) -> None:
    verdict = guard.Verdict("source")
    verdict.require_at_least("source files", value, minimum)
    assert verdict.allowed is allowed


def test_verdict_needs_every_check_and_reports_all_failures() -> None:
    verdict = guard.Verdict("sync")
    verdict.require("one", True, "never shown")
    verdict.require("two", False, "two failed")
    verdict.require("three", False, "three failed")
    assert not verdict.allowed
    assert verdict.reason == "refused sync: two failed; three failed"
    as_dict = verdict.as_dict()
    assert as_dict["allowed"] is False
    assert [c["name"] for c in as_dict["checks"]] == ["one", "two", "three"]
    assert as_dict["checks"][0]["message"] == ""


# --- reporting ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("on_refusal", "fail"), [("fail", True), ("report", False)])
def test_refusal_fails_by_default_or_reports(on_refusal: str, fail: bool) -> None:
    verdict = guard.Verdict("sync")
    verdict.require("x", False, "x failed")
    must_fail, fields = guard.refusal(verdict, on_refusal)
    assert must_fail is fail
    assert fields["refused"] is True
    assert fields["changed"] is False
    assert fields["msg"] == fields["reason"] == "refused sync: x failed"


def test_refusal_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError):
        guard.refusal(guard.Verdict("x"), "ignore")


class _Exited(Exception):
    def __init__(self, how: str, fields: dict[str, Any]) -> None:
        super().__init__(how)
        self.how, self.fields = how, fields


class _EndingModule:
    """exit_json/fail_json as AnsibleModule has them: the run ends there."""

    @staticmethod
    def exit_json(**fields: Any) -> None:
        raise _Exited("exit_json", fields)

    @staticmethod
    def fail_json(**fields: Any) -> None:
        raise _Exited("fail_json", fields)


@pytest.mark.parametrize(("allowed", "on_refusal", "how", "refused"), [
    (True, "fail", "exit_json", False),
    (True, "report", "exit_json", False),
    (False, "fail", "fail_json", True),
    (False, "report", "exit_json", True),
])
def test_exit_with_verdict_ends_the_run(allowed: bool, on_refusal: str, how: str, refused: bool) -> None:
    verdict = guard.Verdict("cleanup of /srv/backups")
    verdict.require("reference", allowed, "reference command psql failed (rc 2)")
    result = {"changed": True, "refused": False, "reason": "", "quarantined": ["a"]}
    with pytest.raises(_Exited) as ended:
        guard.exit_with_verdict(_EndingModule(), verdict, result, on_refusal)
    assert ended.value.how == how
    fields = ended.value.fields
    assert fields["refused"] is refused
    assert fields["guard"] == verdict.as_dict()
    if refused:
        assert fields["changed"] is False
        assert fields["msg"] == fields["reason"] == verdict.reason
        assert fields["reason"] == "refused cleanup of /srv/backups: reference command psql failed (rc 2)"
    else:
        assert fields["changed"] is True and "msg" not in fields


@pytest.mark.parametrize(("items", "limit", "expected", "cut"), [
    (["a", "b", "c"], 5, ["a", "b", "c"], False),
    (["a", "b", "c"], 2, ["a", "b"], True),
    ([], 0, [], False),
    (iter(["a"]), None, ["a"], False),
])
def test_bounded(items: Any, limit: int | None, expected: list[str], cut: bool) -> None:
    assert guard.bounded(items, limit) == (expected, cut)


class _Module:
    """The one AnsibleModule method write_json_atomic uses."""

    @staticmethod
    def atomic_move(src: str, dest: str) -> None:
        os.rename(src, dest)


def test_write_json_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    guard.write_json_atomic(_Module(), str(target), {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.mark.parametrize(("name", "shown"), [
    ("cust001.tar.gz", "cust001.tar.gz"),
    ("kunde-müller.tar.gz", "kunde-müller.tar.gz"),
    (b"cust\xff.tar.gz".decode("utf-8", "surrogateescape"), "cust\\xff.tar.gz"),
])
def test_printable_names_survive_strict_utf8(name: str, shown: str) -> None:
    assert guard.printable(name) == shown
    assert guard.printable_data({name: [name, {"reason": name}]}) == {shown: [shown, {"reason": shown}]}
    shown.encode("utf-8")  # what the controller requires of a result


def test_write_json_atomic_keeps_the_replaced_file_as_prev_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    guard.write_json_atomic(_Module(), str(target), {"generation": 1}, keep_previous=True)
    guard.write_json_atomic(_Module(), str(target), {"generation": 2}, keep_previous=True)
    assert json.loads((tmp_path / "manifest.json.prev").read_text()) == {"generation": 1}
    assert json.loads(target.read_text()) == {"generation": 2}
    with pytest.raises(TypeError):
        guard.write_json_atomic(_Module(), str(target), {"not json": object()}, keep_previous=True)
    assert json.loads(target.read_text()) == {"generation": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "manifest.json.prev"]


class _FailingModule(_Module):
    class Failed(Exception):
        pass

    def fail_json(self, **kwargs: Any) -> None:
        raise self.Failed(kwargs["msg"])


def test_write_json_atomic_writes_through_a_symlink_and_keeps_the_mode(tmp_path: Path) -> None:
    real = tmp_path / "real" / "state.json"
    real.parent.mkdir()
    real.write_text("{}")
    real.chmod(0o640)
    link = tmp_path / "state.json"
    link.symlink_to(real)
    guard.write_json_atomic(_Module(), str(link), {"a": 1}, keep_previous=True)
    assert link.is_symlink() and json.loads(real.read_text()) == {"a": 1}
    assert (real.parent / "state.json.prev").read_text() == "{}"
    assert sorted(p.name for p in real.parent.iterdir()) == ["state.json", "state.json.prev"]


def test_write_json_atomic_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "state.json"
    link.symlink_to(tmp_path / "gone" / "state.json")
    with pytest.raises(_FailingModule.Failed, match="does not exist"):
        guard.write_json_atomic(_FailingModule(), str(link), {"a": 1})
    assert link.is_symlink() and not (tmp_path / "gone").exists()


# --- the bound options, checked once for every guarded module ---------------------------------------------------
BOUNDS = [
    # (params, message; "" when every bound is in range)
    ({"max_delete": 0, "max_delete_ratio": 0.0}, ""),
    ({"max_delete": 100, "max_delete_ratio": 1.0}, ""),
    ({"max_delete": None, "max_delete_ratio": None}, ""),
    ({"max_delete": -1, "max_delete_ratio": 0.1}, "max_delete must be 0 or more, got -1"),
    ({"max_delete": 1, "max_delete_ratio": 1.5}, "max_delete_ratio must be between 0 and 1, got 1.5"),
    ({"max_delete": 1, "max_delete_ratio": -0.1}, "max_delete_ratio must be between 0 and 1, got -0.1"),
    ({"max_delete": -5, "max_delete_ratio": 2.0}, "max_delete_ratio must be between 0 and 1, got 2.0"),  # ratios first
]


@pytest.mark.parametrize(("params", "message"), BOUNDS)
def test_bound_error_names_the_option_and_its_value(params: dict[str, Any], message: str) -> None:
    assert guard.bound_error(params, ratios=("max_delete_ratio",), counts=("max_delete",)) == message


def test_the_guard_options_are_declared_once_with_the_safe_defaults() -> None:
    spec = guard.DELETION_GUARD_ARGUMENT_SPEC
    assert spec["on_refusal"] == {"type": "str", "choices": ["fail", "report"], "default": "fail"}
    assert spec["list_limit"] == {"type": "int", "default": 50}
