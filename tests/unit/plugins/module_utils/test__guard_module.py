"""_guard_module: every run of safe_sync and guarded_cleanup leaves its outcome in metrics_file (ok, refused or
failed, with its time), so that an alert pages on a failure within its `for:`, not a staleness alert hours later.
The modules run for real (real rsync, real SQLite, a real lock, a real SIGTERM); the one mock is an os.rename that
raises PermissionError, since the tests run as root."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
from ansible_collections.postmortem.remediation.plugins.module_utils import _cleanup_moves, _files
from guard_module_runner import (
    finish_module,
    load,
    make_backups,
    make_mirror,
    processes_naming,
    require_program,
    run_module,
    start_module,
    wait_for_file,
)
from test__textfile_metrics import guard_samples

RSYNC = require_program("rsync", "rsync")
safe_sync = load("safe_sync")
guarded_cleanup = load("guarded_cleanup")


def outcome(samples: dict[str, float]) -> str:
    """ok, refused or failed, as the alert rules read the file; and the run's time must be now."""
    assert 0 <= time.time() - samples["pmr_guard_last_run_timestamp_seconds"] < 60
    failed = samples.get("pmr_guard_failed", 0)  # absent from files written before the metric existed
    assert not (samples["pmr_guard_refused"] and failed), samples
    return "failed" if failed else "refused" if samples["pmr_guard_refused"] else "ok"


# --- safe_sync ----------------------------------------------------------------------------------------------------
@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    make_mirror(tmp_path, ("amd64", "i386"), 20)
    (tmp_path / "build/debian/amd64/pkg0.deb").unlink()
    (tmp_path / "metrics").mkdir()
    return tmp_path


def sync(root: Path, **extra: Any) -> dict[str, Any]:
    args = {"src": f"{root}/build/debian/amd64", "dest": f"{root}/mirror/debian/amd64",
            "expect_suffix": "debian/amd64", "metrics_file": f"{root}/metrics/mirror.prom",
            "metrics_name": "debian/amd64", "metrics_unit": "mirror-sync.service", **extra}
    return run_module(safe_sync, args)


SYNC_ENDINGS = [
    # (case, extra options, outcome written, words of the task's message)
    ("within bounds", {}, "ok", []),
    ("refused: more deletions than max_delete", {"max_delete": 0}, "refused", ["bound of 0"]),
    ("refused, reported without failing", {"max_delete": 0, "on_refusal": "report"}, "refused", ["bound of 0"]),
    ("failed: a bound out of range", {"max_delete_ratio": 2.0}, "failed", ["max_delete_ratio"]),
    ("failed: a parameter of the wrong type", {"min_source_files": "many"}, "failed", ["min_source_files"]),
    ("failed: rsync cannot reach the destination", {"dest": "pmr-guardfail-nohost:/srv/mirror/debian/amd64",
                                                    "rsh": "false"}, "failed", ["rsync failed"]),
]


@pytest.mark.parametrize(("case", "extra", "expected", "words"), SYNC_ENDINGS, ids=[c[0] for c in SYNC_ENDINGS])
def test_every_safe_sync_run_writes_how_it_ended(mirror: Path, case: str, extra: dict[str, Any], expected: str,
                                                 words: list[str]) -> None:
    result = sync(mirror, **extra)
    fails_the_task = expected == "failed" or (expected == "refused" and extra.get("on_refusal") != "report")
    assert bool(result.get("failed")) == fails_the_task, result.get("msg")
    for word in words:
        assert word in result["msg"]
    assert outcome(guard_samples(mirror / "metrics/mirror.prom")) == expected


def test_a_metrics_file_that_cannot_be_replaced_leaves_the_sync_successful(mirror: Path) -> None:
    # A directory where the file should be: the temporary file is written, the rename fails. Through
    # module.atomic_move that rename was a fail_json after the sync had deleted: a success reported as a failure.
    (mirror / "metrics/mirror.prom").mkdir()
    result = sync(mirror)
    assert not result.get("failed"), result.get("msg")
    assert result["deleted"] == 1 and "mirror.prom" in result["metrics_error"]
    assert os.listdir(mirror / "metrics") == ["mirror.prom"], "a temporary file was left in the textfile directory"


# --- guarded_cleanup ----------------------------------------------------------------------------------------------
@pytest.fixture
def backups(tmp_path: Path) -> Path:
    make_backups(tmp_path, 100, catalogued=98)
    (tmp_path / "metrics").mkdir()
    return tmp_path


def cleanup_args(root: Path, **extra: Any) -> dict[str, Any]:
    return {"path": f"{root}/backups", "pattern": "*.tar.gz", "reference_sqlite": f"{root}/catalog.db",
            "reference_query": "SELECT file_name FROM backups", "metrics_file": f"{root}/metrics/cleanup.prom",
            "metrics_name": "customer-backups", "metrics_unit": "backup-cleanup.service", "first_run": True,
            **extra}


def test_a_lock_held_past_lock_timeout_is_a_failure(backups: Path) -> None:
    lock = _files.acquire_lock(str(backups / "backups"))
    try:
        result = run_module(guarded_cleanup, cleanup_args(backups, lock_timeout=0))
    finally:
        assert lock is not None
        lock.close()
    assert result["failed"] and "another run holds its lock" in result["msg"]
    assert outcome(guard_samples(backups / "metrics/cleanup.prom")) == "failed"


def test_an_unexpected_error_mid_way_is_a_failure_that_counts_what_was_done(
        backups: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_rename = os.rename
    moves: list[str] = []

    def rename_once(src: str, dst: str) -> None:  # the second quarantine move meets a permission error
        if "/.quarantine/" in str(dst) and not str(dst).endswith((".tmp", ".json")):
            moves.append(dst)
            if len(moves) == 2:
                raise PermissionError(13, "Permission denied", dst)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_once)
    result = run_module(guarded_cleanup, cleanup_args(backups))
    assert result["failed"] and "PermissionError" in result["msg"] and "Permission denied" in result["msg"]
    samples = guard_samples(backups / "metrics/cleanup.prom")
    assert outcome(samples) == "failed" and samples["pmr_guard_planned_deletions"] == 2
    assert samples["pmr_guard_reference_healthy"] == 1


def test_an_error_after_a_move_counts_the_move_in_the_result_and_the_metrics(
        backups: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The second of the two quarantine moves meets an error no move expects (a bug, SIGTERM): the run fails, and the
    # move made before it is in the result and in pmr_guard_deleted (both said 0 before: the counts were only set
    # when a run ended).
    real_move = _cleanup_moves.move_no_replace
    moved: list[str] = []

    def move_once(src: str, dst: str) -> None:
        if moved:
            raise RuntimeError("the second move breaks")
        real_move(src, dst)
        moved.append(os.path.basename(src))

    monkeypatch.setattr(_cleanup_moves, "move_no_replace", move_once)
    result = run_module(guarded_cleanup, cleanup_args(backups))
    assert result["failed"] and "RuntimeError: the second move breaks" in result["msg"], result
    assert result["quarantined"] == moved and len(moved) == 1 and result["changed"] is True, result
    assert (backups / "backups/.quarantine/items" / moved[0]).exists()
    samples = guard_samples(backups / "metrics/cleanup.prom")
    assert outcome(samples) == "failed"
    assert samples["pmr_guard_planned_deletions"] == 2 and samples["pmr_guard_deleted"] == 1


def test_sigterm_during_a_hanging_reference_is_a_failure(backups: Path) -> None:
    started = backups.parent / "reference-started"
    args = cleanup_args(backups, reference_command=["sh", "-c", f"touch {started}; sleep 30; echo cust000.tar.gz"],
                        reference_timeout=60)
    del args["reference_sqlite"], args["reference_query"]
    process = start_module("guarded_cleanup", args)
    # Signalled once the module waits on the reference command (a fixed 2.5 s was short on a loaded machine: the
    # module was still importing, and SIGTERM's default action killed it without a result).
    assert wait_for_file(started, process), "the module never ran its reference command"
    process.send_signal(signal.SIGTERM)
    result = finish_module(process)
    assert result["failed"] and "terminated by SIGTERM" in result["msg"]
    assert outcome(guard_samples(backups / "metrics/cleanup.prom")) == "failed"
    # The reference command does not outlive the module (it ran on for its 30 s, orphaned, before).
    deadline = time.monotonic() + 10
    while processes_naming(str(started)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_naming(str(started)) == []


def test_a_refusal_that_fails_the_task_stays_a_refusal(backups: Path) -> None:
    result = run_module(guarded_cleanup, cleanup_args(backups, max_orphans=1))
    assert result["failed"] and result["refused"]
    assert outcome(guard_samples(backups / "metrics/cleanup.prom")) == "refused"


def test_check_mode_failure_writes_nothing(backups: Path) -> None:
    result = run_module(guarded_cleanup, cleanup_args(backups, grace_period="soon"), check_mode=True)
    assert result["failed"]
    assert os.listdir(backups / "metrics") == []


@pytest.mark.parametrize("extra", [{"max_delete": 0}, {"max_delete_ratio": 2.0}], ids=["refused", "failed"])
def test_a_metrics_file_that_cannot_be_written_leaves_a_refusal_or_failure_as_it_was(
        mirror: Path, extra: dict[str, Any]) -> None:
    result = sync(mirror, metrics_file=f"{mirror}/no-such-dir/mirror.prom", **extra)
    assert result["failed"] and bool(result.get("refused")) == ("max_delete" in extra), result
    assert "no-such-dir" in result["metrics_error"]
    assert "metrics file" not in result["msg"]  # the task's message is the run's own
