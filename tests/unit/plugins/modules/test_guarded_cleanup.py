"""guarded_cleanup against real files and a real SQLite database: every refusal row fails if its guard is removed."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from guard_module_runner import finish_module, load, run_module, start_module, tree

guarded_cleanup = load("guarded_cleanup")
quarantine = importlib.import_module("ansible_collections.postmortem.remediation.plugins.module_utils._quarantine")
CUSTOMERS = 100


class Site:
    """A backup directory and the catalogue database that says which backups exist."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.backups = root / "backups"
        self.db = root / "catalog.db"
        self.backups.mkdir()
        names = [f"cust{i:03d}.tar.gz" for i in range(CUSTOMERS)]
        for name in names:
            (self.backups / name).write_text(name)
        with self.connect() as conn:
            conn.execute("CREATE TABLE backups (id INTEGER PRIMARY KEY, file_name TEXT NOT NULL)")
            conn.executemany("INSERT INTO backups (file_name) VALUES (?)", [(n,) for n in names])

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db)

    def delete_rows(self, names: list[str]) -> None:
        with self.connect() as conn:
            conn.executemany("DELETE FROM backups WHERE file_name = ?", [(n,) for n in names])

    def add_rows(self, names: list[str]) -> None:
        with self.connect() as conn:
            conn.executemany("INSERT INTO backups (file_name) VALUES (?)", [(n,) for n in names])

    def args(self, **extra: Any) -> dict[str, Any]:
        args = {"path": str(self.backups), "pattern": "*.tar.gz", "reference_sqlite": str(self.db),
                "reference_query": "SELECT file_name FROM backups"}
        args.update(extra)
        return {key: value for key, value in args.items() if value is not None}  # None: leave the option out

    def picture(self) -> dict[str, str]:
        """The backups as a customer sees them (the quarantine apart)."""
        return {name: text for name, text in tree(self.backups).items() if not name.startswith(".quarantine/")}


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def run(site: Site, check_mode: bool = False, diff: bool = False, **extra: Any) -> dict[str, Any]:
    return run_module(guarded_cleanup, site.args(**extra), check_mode=check_mode, diff=diff)


# --- the incident: a failing or partial reference must refuse, and nothing may move ---------------------------
def database_missing(site: Site) -> dict[str, Any]:
    site.db.unlink()
    return {}


def database_corrupt(site: Site) -> dict[str, Any]:
    site.db.write_bytes(b"this is not a database" * 100)
    return {}


def table_missing(site: Site) -> dict[str, Any]:
    with site.connect() as conn:
        conn.execute("DROP TABLE backups")
    return {}


def table_empty(site: Site) -> dict[str, Any]:
    with site.connect() as conn:
        conn.execute("DELETE FROM backups")
    return {}


def partial_answer(site: Site) -> dict[str, Any]:
    """A healthy run recorded 100 keys; the failing database now answers with 43 of them."""
    run(site)
    site.delete_rows([f"cust{i:03d}.tar.gz" for i in range(43, CUSTOMERS)])
    return {"max_orphans": 1000, "max_orphan_ratio": 1.0}  # only the shrink check stands between 57 % and the bin


def too_many_orphans(site: Site) -> dict[str, Any]:
    site.delete_rows([f"cust{i:03d}.tar.gz" for i in range(11)])
    return {"max_reference_shrink": 1.0, "max_orphan_ratio": 1.0}


def orphan_ratio(site: Site) -> dict[str, Any]:
    site.delete_rows([f"cust{i:03d}.tar.gz" for i in range(6)])
    return {"max_reference_shrink": 1.0}


def command_fails(site: Site) -> dict[str, Any]:
    # Prints a partial list and then fails, like a client that lost its connection half-way.
    return {"reference_sqlite": None, "reference_query": None,
            "reference_command": ["sh", "-c", "echo cust001.tar.gz; echo 'connection lost' >&2; exit 2"]}


def command_times_out(site: Site) -> dict[str, Any]:
    return {"reference_sqlite": None, "reference_query": None, "reference_timeout": 1,
            "reference_command": ["sh", "-c", "echo cust001.tar.gz; sleep 30"]}


def command_prints_nothing(site: Site) -> dict[str, Any]:
    return {"reference_sqlite": None, "reference_query": None, "reference_command": ["true"]}


def too_few_references(site: Site) -> dict[str, Any]:
    return {"min_references": CUSTOMERS + 1}


REFUSALS: list[tuple[str, Callable[[Site], dict[str, Any]], list[str]]] = [
    ("database missing", database_missing, ["reference database", "does not exist"]),
    ("database corrupt", database_corrupt, ["file is not a database"]),
    ("table missing", table_missing, ["reference query on", "no such table: backups"]),
    ("table empty", table_empty, ["reference keys: 0 keys, fewer than the minimum of 1"]),
    ("partial answer", partial_answer, ["reference shrink: 43 keys now, 100 at the last successful run",
                                        "57.0 %"]),
    ("too many orphans", too_many_orphans, ["orphans: 11 items planned, more than the bound of 10"]),
    ("orphan ratio", orphan_ratio, ["orphans ratio: 6 of 100 items (6.0 %) planned, more than the bound of 5.0 %"]),
    ("command fails", command_fails, ["reference command sh failed (rc 2): connection lost"]),
    ("command times out", command_times_out, ["reference command sh timed out after 1 s"]),
    ("command prints nothing", command_prints_nothing, ["reference keys: 0 keys"]),
    ("fewer than min_references", too_few_references, ["fewer than the minimum of 101"]),
]


@pytest.mark.parametrize(("case", "fault", "words"), REFUSALS, ids=[r[0] for r in REFUSALS])
@pytest.mark.parametrize("check_mode", [False, True], ids=["apply", "check"])
def test_refused_and_nothing_moved(site: Site, case: str, fault: Callable[[Site], dict[str, Any]], words: list[str],
                                   check_mode: bool) -> None:
    extra = fault(site)
    before = site.picture()
    state_before = (site.backups / ".quarantine/state.json").read_text() if case == "partial answer" else None
    result = run(site, check_mode=check_mode, **extra)
    assert result["failed"] is True
    assert result["refused"] is True
    assert result["changed"] is False
    assert result["quarantined"] == [] and result["purged"] == []
    for word in words:
        assert word in result["msg"], result["msg"]
    assert site.picture() == before
    if state_before is not None:  # a refused run never records its reference as the new normal
        assert (site.backups / ".quarantine/state.json").read_text() == state_before


def test_database_locked_by_a_writer_is_refused(site: Site) -> None:
    writer = site.connect()
    writer.execute("BEGIN EXCLUSIVE")
    try:
        before = site.picture()
        result = run(site, reference_timeout=1)
    finally:
        writer.rollback()
        writer.close()
    assert result["refused"] is True
    assert "timed out after 1 s (database is locked)" in result["msg"]
    assert site.picture() == before


def test_report_mode_does_not_fail(site: Site) -> None:
    table_empty(site)
    result = run(site, on_refusal="report")
    assert result.get("failed", False) is False
    assert result["refused"] is True
    assert "fewer than the minimum" in result["reason"]


# --- healthy reference: quarantine exactly the orphans -----------------------------------------------------------
@pytest.fixture
def orphans(site: Site) -> list[str]:
    """Five backups lost their row; two of them are locked (marker file, legal-hold pattern)."""
    names = ["cust010.tar.gz", "cust020.tar.gz", "cust030.tar.gz", "cust040.tar.gz", "cust050.tar.gz"]
    site.delete_rows(names)
    (site.backups / "cust040.tar.gz.lock").write_text("restore in progress")
    return names


def quarantined_names(site: Site) -> list[str]:
    items = site.backups / ".quarantine/items"
    return sorted(p.name for p in items.iterdir()) if items.exists() else []


def test_check_mode_returns_the_plan_and_moves_nothing(site: Site, orphans: list[str]) -> None:
    before = site.picture()
    result = run(site, check_mode=True, diff=True, lock_patterns=["cust050.*"])
    assert result["changed"] is True
    assert result["quarantined"] == ["cust010.tar.gz", "cust020.tar.gz", "cust030.tar.gz"]
    assert "quarantine " + str(site.backups / "cust010.tar.gz") in result["diff"]["prepared"]
    assert site.picture() == before
    assert not (site.backups / ".quarantine").exists()


def test_healthy_reference_quarantines_exactly_the_orphans(site: Site, orphans: list[str]) -> None:
    result = run(site, lock_patterns=["cust050.*"])
    assert result["changed"] is True
    assert result["quarantined"] == ["cust010.tar.gz", "cust020.tar.gz", "cust030.tar.gz"]
    assert result["quarantined_count"] == 3
    assert result["referenced"] == CUSTOMERS - 5
    assert {k["name"]: k["reason"] for k in result["kept"]} == {
        "cust040.tar.gz": "locked: marker cust040.tar.gz.lock",
        "cust050.tar.gz": "locked: matches cust050.*",
    }
    assert quarantined_names(site) == ["cust010.tar.gz", "cust020.tar.gz", "cust030.tar.gz"]
    assert (site.backups / "cust040.tar.gz").read_text() == "cust040.tar.gz"
    assert (site.backups / "cust050.tar.gz").read_text() == "cust050.tar.gz"
    assert len(list(site.backups.glob("*.tar.gz"))) == CUSTOMERS - 3
    manifest = json.loads((site.backups / ".quarantine/manifest.json").read_text())
    assert manifest["items"]["cust010.tar.gz"]["origin"] == str(site.backups / "cust010.tar.gz")
    state = json.loads((site.backups / ".quarantine/state.json").read_text())
    assert state["reference_count"] == CUSTOMERS - 5
    again = run(site, lock_patterns=["cust050.*"])
    assert again["changed"] is False
    assert again["pending_quarantine"] == 3


def test_purge_only_after_the_grace_period(site: Site, orphans: list[str]) -> None:
    run(site, grace_period="2s")
    early = run(site, grace_period="2s")
    assert early["purged"] == []
    assert any("purge in" in k["reason"] for k in early["kept"])
    assert quarantined_names(site) == ["cust010.tar.gz", "cust020.tar.gz", "cust030.tar.gz", "cust050.tar.gz"]
    time.sleep(2.1)
    late = run(site, grace_period="2s")
    assert late["changed"] is True
    assert late["purged"] == ["cust010.tar.gz", "cust020.tar.gz", "cust030.tar.gz", "cust050.tar.gz"]
    assert quarantined_names(site) == []
    assert json.loads((site.backups / ".quarantine/manifest.json").read_text())["items"] == {}
    assert (site.backups / "cust040.tar.gz").exists()


def test_purge_waits_for_a_healthy_reference(site: Site, orphans: list[str]) -> None:
    run(site, grace_period="0s")
    table_empty(site)
    result = run(site, grace_period="0s", on_refusal="report")
    assert result["refused"] is True
    assert result["purged"] == []
    assert len(quarantined_names(site)) == 4


def test_restore_puts_everything_back(site: Site, orphans: list[str]) -> None:
    before = site.picture()
    run(site)
    check = run_module(guarded_cleanup, {"path": str(site.backups), "state": "restore"}, check_mode=True)
    assert check["changed"] is True and len(quarantined_names(site)) == 4
    one = run_module(guarded_cleanup, {"path": str(site.backups), "state": "restore", "names": ["cust020.tar.gz"]})
    assert one["restored"] == ["cust020.tar.gz"]
    rest = run_module(guarded_cleanup, {"path": str(site.backups), "state": "restore"})
    assert rest["restored"] == ["cust010.tar.gz", "cust030.tar.gz", "cust050.tar.gz"]
    assert site.picture() == before
    assert run_module(guarded_cleanup, {"path": str(site.backups), "state": "restore"})["changed"] is False


def test_restore_never_overwrites(site: Site, orphans: list[str]) -> None:
    run(site)
    (site.backups / "cust010.tar.gz").write_text("a new backup with the same name")
    result = run_module(guarded_cleanup, {"path": str(site.backups), "state": "restore", "names": ["cust010.tar.gz"]})
    assert result["changed"] is False
    assert "exists: not overwritten" in result["kept"][0]["reason"]
    assert (site.backups / "cust010.tar.gz").read_text() == "a new backup with the same name"


def test_item_referenced_again_comes_back(site: Site, orphans: list[str]) -> None:
    run(site)
    site.add_rows(["cust020.tar.gz"])
    result = run(site)
    assert result["restored"] == ["cust020.tar.gz"]
    assert (site.backups / "cust020.tar.gz").exists()


def test_quarantined_orphans_count_against_the_bound(site: Site) -> None:
    """A reference that loses a few rows per run cannot drain the directory a bound at a time."""
    for batch in range(3):
        site.delete_rows([f"cust{batch * 4 + i:03d}.tar.gz" for i in range(4)])
        result = run(site, max_reference_shrink=1.0, max_orphan_ratio=1.0, on_refusal="report")
        if batch < 2:
            assert result["refused"] is False, result["reason"]
        else:
            assert result["refused"] is True
            assert "orphans: 12 items planned, more than the bound of 10" in result["reason"]
    assert len(quarantined_names(site)) == 8


def test_key_regex_and_unparsable_names(site: Site) -> None:
    (site.backups / "notes.tar.gz").write_text("not a backup")
    result = run(site, key_regex=r"^(?P<key>cust\d{3})\.tar\.gz$",
                 reference_query="SELECT replace(file_name, '.tar.gz', '') FROM backups")
    assert result["quarantined"] == []
    assert {"name": "notes.tar.gz", "reason": "name does not match key_regex"} in result["kept"]
    assert (site.backups / "notes.tar.gz").exists()


def test_reference_from_a_command(site: Site) -> None:
    site.delete_rows(["cust007.tar.gz"])
    script = "import sqlite3, sys\nfor (name,) in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]): print(name)"
    result = run(site, reference_sqlite=None, reference_query=None,
                 reference_command=[sys.executable, "-c", script, str(site.db), "SELECT file_name FROM backups"])
    assert result["quarantined"] == ["cust007.tar.gz"]


@pytest.mark.parametrize(("extra", "words"), [
    ({"grace_period": "soon"}, "grace_period 'soon'"),
    ({"max_orphan_ratio": 2.0}, "max_orphan_ratio must be between 0 and 1"),
    ({"reference_sqlite": None, "reference_query": None}, "state is reconcile but any of the following"),
    ({"reference_command": [], "reference_sqlite": None, "reference_query": None},
     "reference_command is an empty list"),
])
def test_bad_options_fail_before_anything(site: Site, extra: dict[str, Any], words: str) -> None:
    before = site.picture()
    result = run(site, **extra)
    assert result["failed"] is True
    assert words in result["msg"]
    assert site.picture() == before


@pytest.fixture(autouse=True)
def _no_leftover_temp_files(site: Site) -> Iterator[None]:
    yield
    quarantine = site.backups / ".quarantine"
    if quarantine.exists():
        assert not [p.name for p in quarantine.iterdir() if p.name.endswith(".tmp")]


# --- what the guard must never touch, added in review --------------------------------------------------------------
def test_lock_added_in_quarantine_stops_the_purge(site: Site, orphans: list[str]) -> None:
    """A legal hold placed during the grace period: the quarantined backup is kept, not purged."""
    run(site, grace_period="0s")
    (site.backups / "cust010.tar.gz.lock").write_text("legal hold")
    result = run(site, grace_period="0s", lock_patterns=["cust020.*"])
    assert result["purged"] == ["cust030.tar.gz", "cust050.tar.gz"]
    kept = {k["name"]: k["reason"] for k in result["kept"]}
    assert kept["cust010.tar.gz"] == "locked: marker cust010.tar.gz.lock; quarantined, not purged while locked"
    assert kept["cust020.tar.gz"] == "locked: matches cust020.*; quarantined, not purged while locked"
    assert quarantined_names(site) == ["cust010.tar.gz", "cust020.tar.gz"]


def test_empty_reference_is_refused_even_with_min_references_zero(site: Site) -> None:
    table_empty(site)
    before = site.picture()
    result = run(site, min_references=0, max_orphans=1000, max_orphan_ratio=1.0)
    assert result["refused"] is True
    assert "reference keys: 0 keys, fewer than the minimum of 1" in result["msg"]
    assert site.picture() == before


def test_a_move_never_replaces_what_appeared_at_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the check cannot close: the target appears after it. The hard link refuses; os.rename would not."""
    (tmp_path / "quarantined").write_text("old backup")
    (tmp_path / "origin").write_text("new backup")
    monkeypatch.setattr(guarded_cleanup.os.path, "lexists", lambda _path: False)  # the check saw nothing
    with pytest.raises(FileExistsError):
        quarantine.move_no_replace(str(tmp_path / "quarantined"), str(tmp_path / "origin"))
    assert (tmp_path / "origin").read_text() == "new backup"
    assert (tmp_path / "quarantined").read_text() == "old backup"


def test_referenced_again_but_origin_taken_is_not_overwritten(site: Site, orphans: list[str]) -> None:
    run(site)
    site.add_rows(["cust010.tar.gz", "cust020.tar.gz"])
    (site.backups / "cust010.tar.gz").write_text("a new backup with the same name")
    result = run(site)
    assert result["restored"] == ["cust020.tar.gz"]
    assert {"name": "cust010.tar.gz",
            "reason": f"referenced again, but {site.backups / 'cust010.tar.gz'} exists: not restored"} in result["kept"]
    assert (site.backups / "cust010.tar.gz").read_text() == "a new backup with the same name"
    assert "cust010.tar.gz" in quarantined_names(site)


def test_lock_markers_are_never_items(site: Site) -> None:
    """With pattern '*', a marker has no row of its own: it must not become an orphan (and unlock its backup)."""
    (site.backups / "cust001.tar.gz.lock").write_text("restore running")
    result = run(site, pattern="*")
    assert result["items"] == CUSTOMERS
    assert result["orphan_count"] == 0
    assert (site.backups / "cust001.tar.gz.lock").exists()


def test_restore_referenced_off_leaves_it_quarantined(site: Site, orphans: list[str]) -> None:
    run(site)
    site.add_rows(["cust020.tar.gz"])
    result = run(site, restore_referenced=False)
    assert result["restored"] == []
    assert {"name": "cust020.tar.gz",
            "reason": "quarantined, but referenced again (restore_referenced is off)"} in result["kept"]
    assert "cust020.tar.gz" in quarantined_names(site)


def test_quarantine_on_another_filesystem_is_refused(site: Site) -> None:
    """Moves must be renames: a quarantine on another filesystem would make them copies."""
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == site.backups.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) on this machine")
    site.delete_rows(["cust001.tar.gz"])
    before = site.picture()
    result = run(site, quarantine_dir=str(other / f"pmr-i6-quarantine-{site.root.name}"))
    assert result["failed"] is True
    assert "is not on the filesystem of" in result["msg"]
    assert site.picture() == before


def test_a_run_that_changes_nothing_writes_nothing(site: Site, orphans: list[str]) -> None:
    run(site)
    quarantine = site.backups / ".quarantine"
    files = ("manifest.json", "manifest.json.prev", "state.json")

    def stamps() -> dict[str, tuple[int, int]]:
        return {name: ((quarantine / name).stat().st_ino, (quarantine / name).stat().st_mtime_ns) for name in files}

    before = stamps()
    again = run(site)
    assert again["changed"] is False
    assert stamps() == before


def test_a_purge_that_fails_is_reported_and_the_item_stays_recorded(site: Site, orphans: list[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An item that cannot be deleted (root cannot be denied here for real) is kept in the manifest, not a traceback."""
    run(site, grace_period="0s")
    real_unlink = guarded_cleanup.os.unlink

    def unlink(path: str, *args: Any, **kwargs: Any) -> None:
        if path.endswith("/cust020.tar.gz"):
            raise PermissionError(13, "Permission denied", path)
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(guarded_cleanup.os, "unlink", unlink)
    result = run(site, grace_period="0s")
    assert result["purged"] == ["cust010.tar.gz", "cust030.tar.gz", "cust050.tar.gz"]
    assert any(k["name"] == "cust020.tar.gz" and k["reason"].startswith("could not be purged: ")
               and "Permission denied" in k["reason"] for k in result["kept"])
    assert quarantined_names(site) == ["cust020.tar.gz"]
    manifest = json.loads((site.backups / ".quarantine/manifest.json").read_text())
    assert list(manifest["items"]) == ["cust020.tar.gz"]


# --- issue 10: overlapping runs, odd names, paths, a lost state file, aliases ---------------------------------------
def slow_reference(site: Site, seconds: float) -> list[str]:
    """A reference command that answers after ``seconds``, with the catalogue's keys: a run stays in flight."""
    script = "import sqlite3, sys, time\ntime.sleep(float(sys.argv[3]))\n" \
             "for (name,) in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]): print(name)"
    return [sys.executable, "-c", script, str(site.db), "SELECT file_name FROM backups", str(seconds)]


def test_two_overlapping_runs_keep_every_quarantine_record(site: Site) -> None:
    """Issue 10.4: two real processes at once; each quarantines its own orphan, and the manifest names both."""
    site.delete_rows(["cust010.tar.gz", "cust060.tar.gz"])
    common = {"reference_sqlite": None, "reference_query": None, "reference_command": slow_reference(site, 1.5)}
    first = start_module("guarded_cleanup", site.args(pattern="cust0[0-4]*", **common))
    second = start_module("guarded_cleanup", site.args(pattern="cust0[5-9]*", **common))
    results = [finish_module(first), finish_module(second)]
    assert [r.get("failed", False) for r in results] == [False, False], [r.get("msg") for r in results]
    assert sorted(name for r in results for name in r["quarantined"]) == ["cust010.tar.gz", "cust060.tar.gz"]
    manifest = json.loads((site.backups / ".quarantine/manifest.json").read_text())
    assert sorted(manifest["items"]) == ["cust010.tar.gz", "cust060.tar.gz"]
    restored = run_module(guarded_cleanup, {"path": str(site.backups), "state": "restore"})
    assert restored["restored"] == ["cust010.tar.gz", "cust060.tar.gz"]


def test_a_manifest_rewritten_since_it_was_read_is_not_overwritten(
        site: Site, orphans: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that ignores the lock (an older module, a hand edit) between the read and the write: refused."""
    run(site)
    manifest = site.backups / ".quarantine/manifest.json"
    real_read = guarded_cleanup.Reference.read

    def read_while_another_writer_saves(self: Any) -> set[str]:
        data = json.loads(manifest.read_text())
        data["generation"] = data.get("generation", 0) + 1
        data["items"]["cust099.tar.gz"] = dict(data["items"]["cust010.tar.gz"], key="cust099.tar.gz")
        manifest.write_text(json.dumps(data))
        return real_read(self)

    monkeypatch.setattr(guarded_cleanup.Reference, "read", read_while_another_writer_saves)
    site.delete_rows(["cust070.tar.gz"])
    written = manifest.read_text()
    result = run(site, lock_patterns=["cust050.*"])
    assert result["failed"] is True
    assert "rewritten by another run since this one read it" in result["msg"]
    assert manifest.read_text() != written  # the other writer's picture ...
    assert "cust099.tar.gz" in json.loads(manifest.read_text())["items"]  # ... is still there
    assert (site.backups / "cust070.tar.gz").exists()


NON_UTF8 = b"cust\xff.tar.gz"


def test_a_name_that_is_not_utf8_is_reported_purged_and_restorable(site: Site) -> None:
    """Issue 10.5: reported as cust\\xff.tar.gz (a result the controller accepts), moved back byte for byte."""
    item = os.fsencode(site.backups) + b"/" + NON_UTF8
    with open(item, "wb") as handle:
        handle.write(b"a backup with a Latin-1 name")
    result = run(site, max_orphan_ratio=0.5)
    assert result["quarantined"] == ["cust\\xff.tar.gz"]
    assert not os.path.exists(item)
    again = run(site, max_orphan_ratio=0.5)
    assert again["pending_quarantine"] == 1 and again["changed"] is False
    back = run_module(guarded_cleanup, {"path": str(site.backups), "state": "restore", "names": ["cust\\xff.tar.gz"]})
    assert back["restored"] == ["cust\\xff.tar.gz"]
    with open(item, "rb") as handle:
        assert handle.read() == b"a backup with a Latin-1 name"
    run(site, max_orphan_ratio=0.5, grace_period="0s")
    purged = run(site, max_orphan_ratio=0.5, grace_period="0s")
    assert purged["purged"] == ["cust\\xff.tar.gz"]
    assert not os.path.exists(item)


@pytest.mark.parametrize(("option", "value", "words"), [
    ("path", "{backups}/", "the last component (after 'backups') is empty"),
    ("path", "{root}//backups", "the component after"),
    ("path", "{backups}/.", "is '.'"),
    ("path", "backups", "is not an absolute path"),
    ("quarantine_dir", "{backups}/ /q", "whitespace only"),
    ("state_file", "{root}/state/", "the last component (after 'state') is empty"),
])
def test_paths_follow_the_rules_of_safe_sync(site: Site, option: str, value: str, words: str) -> None:
    """Issue 10.6: `<root>/backups/{{ customer }}` with an empty customer must not reconcile the parent."""
    customer = site.backups / "acme"
    customer.mkdir()
    (customer / "x.tar.gz").write_text("acme")
    before = tree(site.backups)
    result = run(site, **{option: value.format(backups=site.backups, root=site.root)})
    assert result["refused"] is True and result["failed"] is True
    assert f"{option} '" in result["msg"] and words in result["msg"], result["msg"]
    assert tree(site.backups) == before


def test_a_deleted_state_file_falls_back_to_its_previous_copy(site: Site) -> None:
    """Issue 10.7: the shrink check still has its reference when state.json is gone."""
    run(site)
    (site.backups / ".quarantine/state.json").unlink()
    partial = partial_answer_without_state(site)
    result = run(site, **partial)
    assert result["refused"] is True
    assert "reference shrink: 43 keys now, 100 at the last successful run" in result["msg"]
    assert result["reference"]["previous_source"].endswith("state.json.prev")
    assert "the shrink check uses the previous copy" in json.dumps(result.get("warnings"))


def partial_answer_without_state(site: Site) -> dict[str, Any]:
    site.delete_rows([f"cust{i:03d}.tar.gz" for i in range(43, CUSTOMERS)])
    return {"max_orphans": 1000, "max_orphan_ratio": 1.0}


def test_a_lost_state_record_is_refused_unless_first_run(site: Site) -> None:
    run(site)
    for name in ("state.json", "state.json.prev"):
        (site.backups / ".quarantine" / name).unlink()
    partial = partial_answer_without_state(site)
    before = site.picture()
    result = run(site, on_refusal="report", **partial)
    assert result["refused"] is True
    assert "the record of the last healthy reference is lost" in result["reason"]
    assert "set first_run=true" in result["reason"]
    assert site.picture() == before
    accepted = run(site, first_run=True, **partial)
    assert accepted["refused"] is False
    assert accepted["quarantined_count"] == CUSTOMERS - 43


def test_quarantine_and_state_reached_through_a_symlinked_alias_are_not_items(site: Site) -> None:
    """Issue 10.8: the module's own files are recognised by device and inode, not by spelling."""
    alias = site.root / "alias"
    alias.symlink_to(site.backups)
    site.delete_rows(["cust010.tar.gz"])
    args = {"pattern": "*", "quarantine_dir": str(alias / "quarantine"), "state_file": str(alias / "state.json")}
    first = run(site, **args)
    assert first["quarantined"] == ["cust010.tar.gz"]
    again = run(site, **args)
    assert again["orphan_count"] == 0, again["orphans"]
    assert again["items"] == CUSTOMERS - 1
    assert (site.backups / "quarantine/items/cust010.tar.gz").exists()


def test_a_quarantine_that_holds_the_items_directory_is_refused(site: Site) -> None:
    result = run(site, quarantine_dir=str(site.backups))
    assert result["refused"] is True
    assert "quarantined into themselves" in result["msg"]


def test_a_manifest_that_cannot_be_replaced_fails_cleanly_and_moves_nothing(site: Site, orphans: list[str]) -> None:
    """Issue 10.23: an immutable manifest (chattr +i) makes the rename fail; no temp file, no traceback, no move."""
    run(site)
    manifest = site.backups / ".quarantine/manifest.json"
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(manifest)], capture_output=True,
                                                        check=False).returncode != 0:
        pytest.skip("no immutable attribute here")
    site.delete_rows(["cust070.tar.gz"])
    try:
        result = run(site)
    finally:
        subprocess.run(["chattr", "-i", str(manifest)], check=True)
    assert result["failed"] is True
    assert f"cannot replace {manifest}" in result["msg"]
    assert (site.backups / "cust070.tar.gz").exists()
