"""_textfile_metrics: the text exposition node_exporter reads, written atomically; then the pmr_guard_* metrics of
safe_sync (real rsync) and guarded_cleanup (real SQLite) run for real, read back as Prometheus parses them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
from ansible_collections.postmortem.remediation.plugins.module_utils import _textfile_metrics as tm
from guard_module_runner import load, make_backups, make_mirror, require_program, run_module, tree

PROMTOOL = require_program("promtool", "prometheus")
RSYNC = require_program("rsync", "rsync")


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by (name, sorted labels): a small reader of what render() writes (no escapes in the values used)."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        name, _brace, labels = head.partition("{")
        pairs = tuple(sorted(tuple(p.split("=", 1)) for p in labels.rstrip("}").split(",") if p)) if labels else ()
        samples[(name, tuple((k, v.strip('"')) for k, v in pairs))] = float(value)
    return samples


def promtool_lint(text: str) -> None:
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- rendering ---------------------------------------------------------------------------------------------------
VALUES = [
    # (value, as written)
    (0, "0"), (1, "1"), (True, "1"), (False, "0"), (1234567890123, "1234567890123"), (2.0, "2"), (0.25, "0.25"),
    (float("nan"), "NaN"), (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (1796029428.0424783, "1796029428.0424783"),
]


@pytest.mark.parametrize(("value", "text"), VALUES, ids=[v[1] for v in VALUES])
def test_values_are_written_as_prometheus_reads_them(value: Any, text: str) -> None:
    assert tm.format_value(value) == text


LABEL_VALUES = [
    # (label value, escaped)
    ("web", "web"), ('a"b', 'a\\"b'), ("a\\b", "a\\\\b"), ("line\nbreak", "line\\nbreak"),
    ("/srv/mirror/debian/", "/srv/mirror/debian/"),
]


@pytest.mark.parametrize(("value", "escaped"), LABEL_VALUES, ids=[v[1] for v in LABEL_VALUES])
def test_label_values_are_escaped(value: str, escaped: str) -> None:
    text = tm.render([tm.Family("pmr_test", "help").add(1, name=value)])
    assert f'pmr_test{{name="{escaped}"}} 1' in text.splitlines()
    promtool_lint(text)


@pytest.mark.parametrize(("name", "label"), [("pmr-bad", "ok"), ("1pmr", "ok"), ("pmr_ok", "bad-label"),
                                             ("pmr_ok", "__reserved")])
def test_invalid_names_are_refused(name: str, label: str) -> None:
    with pytest.raises(tm.MetricsError):
        tm.Family(name, "help").add(1, **{label: "x"})


def test_families_render_help_type_and_sorted_samples() -> None:
    family = tm.Family("pmr_container_log_bytes", "Bytes.").add(5, container="web").add(7, container="api")
    assert tm.render([family]) == (
        "# HELP pmr_container_log_bytes Bytes.\n# TYPE pmr_container_log_bytes gauge\n"
        'pmr_container_log_bytes{container="api"} 7\npmr_container_log_bytes{container="web"} 5\n')


def test_write_atomically_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.prom"
    target.write_text("old\n")
    inode = target.stat().st_ino
    tm.write_atomically(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_ino != inode, "written in place, not renamed over: a scrape could read half a file"
    assert sorted(os.listdir(tmp_path)) == ["x.prom"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_guard_families_name_every_series_by_guard_name_and_unit() -> None:
    text = tm.render(tm.guard_families("guarded_cleanup", "/srv/backups", "cleanup.service", 100.0, True, 57, 0,
                                       reference_healthy=False))
    promtool_lint(text)
    labels = (("guard", "guarded_cleanup"), ("name", "/srv/backups"), ("unit", "cleanup.service"))
    assert parse(text) == {("pmr_guard_last_run_timestamp_seconds", labels): 100.0, ("pmr_guard_refused", labels): 1,
                           ("pmr_guard_failed", labels): 0, ("pmr_guard_planned_deletions", labels): 57,
                           ("pmr_guard_deleted", labels): 0,
                           ("pmr_guard_reference_healthy", labels): 0}
    with pytest.raises(tm.MetricsError):
        tm.guard_families("rsync", "x", "", 0, False, 0, 0)


# --- safe_sync: a real rsync ------------------------------------------------------------------------------------
safe_sync = load("safe_sync")
guarded_cleanup = load("guarded_cleanup")


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    make_mirror(tmp_path, ("amd64", "i386"), 20)
    (tmp_path / "build/debian/amd64/pkg0.deb").unlink()  # one deletion planned at the mirror
    (tmp_path / "metrics").mkdir()
    return tmp_path


def sync(root: Path, arch: str = "amd64", check_mode: bool = False, **extra: Any) -> dict[str, Any]:
    args = {"src": f"{root}/build/debian/{arch}", "dest": f"{root}/mirror/debian/{arch}",
            "expect_suffix": f"debian/{arch}", "metrics_file": f"{root}/metrics/mirror.prom",
            "metrics_unit": "mirror-sync.service", **extra}
    return run_module(safe_sync, args, check_mode=check_mode)


def guard_samples(path: Path) -> dict[str, float]:
    text = path.read_text()
    promtool_lint(text)
    return {name: value for (name, _labels), value in parse(text).items()}


def test_safe_sync_writes_a_run_that_deleted(mirror: Path) -> None:
    result = sync(mirror)
    assert not result.get("failed") and result["deleted"] == 1
    samples = parse((mirror / "metrics/mirror.prom").read_text())
    labels = (("guard", "safe_sync"), ("name", f"{mirror}/mirror/debian/amd64"), ("unit", "mirror-sync.service"))
    assert samples[("pmr_guard_refused", labels)] == 0
    assert samples[("pmr_guard_planned_deletions", labels)] == 1
    assert samples[("pmr_guard_deleted", labels)] == 1
    assert ("pmr_guard_reference_healthy", labels) not in samples  # safe_sync has no reference


def test_safe_sync_writes_the_refusal_of_an_empty_arch(mirror: Path) -> None:
    result = sync(mirror, arch="", metrics_name="debian/amd64")
    assert result["failed"] and result["refused"]
    samples = parse((mirror / "metrics/mirror.prom").read_text())
    labels = (("guard", "safe_sync"), ("name", "debian/amd64"), ("unit", "mirror-sync.service"))
    assert samples[("pmr_guard_refused", labels)] == 1
    assert samples[("pmr_guard_deleted", labels)] == 0


def test_safe_sync_writes_planned_deletions_beyond_the_bound(mirror: Path) -> None:
    result = sync(mirror, max_delete=0)
    assert result["refused"]
    samples = guard_samples(mirror / "metrics/mirror.prom")
    assert (samples["pmr_guard_refused"], samples["pmr_guard_planned_deletions"], samples["pmr_guard_deleted"]) == (
        1, 1, 0)


def test_check_mode_writes_no_metrics(mirror: Path) -> None:
    result = sync(mirror, check_mode=True)
    assert result["changed"] and not result.get("failed")
    assert not (mirror / "metrics/mirror.prom").exists()


def test_without_metrics_file_nothing_is_written(mirror: Path) -> None:
    result = sync(mirror, metrics_file=None)
    assert result["deleted"] == 1
    assert os.listdir(mirror / "metrics") == []


def test_an_unwritable_metrics_file_is_a_warning_not_a_failure(mirror: Path) -> None:
    result = sync(mirror, metrics_file=f"{mirror}/no-such-dir/mirror.prom")
    assert not result.get("failed") and result["deleted"] == 1
    assert "no-such-dir" in result["metrics_error"]
    assert "metrics file" in str(result.get("warnings"))  # a warning summary (ansible-core 2.19) or a string


# --- guarded_cleanup: a real SQLite catalogue -------------------------------------------------------------------
@pytest.fixture
def backups(tmp_path: Path) -> Path:
    make_backups(tmp_path, 100, catalogued=100)
    (tmp_path / "metrics").mkdir()
    return tmp_path


def cleanup(root: Path, **extra: Any) -> dict[str, Any]:
    args = {"path": f"{root}/backups", "pattern": "*.tar.gz", "reference_sqlite": f"{root}/catalog.db",
            "reference_query": "SELECT file_name FROM backups", "metrics_file": f"{root}/metrics/cleanup.prom",
            "metrics_name": "customer-backups", "metrics_unit": "backup-cleanup.service", **extra}
    return run_module(guarded_cleanup, args)


def delete_rows(root: Path, names: list[str]) -> None:
    with sqlite3.connect(root / "catalog.db") as conn:
        conn.executemany("DELETE FROM backups WHERE file_name = ?", [(n,) for n in names])


CLEANUPS = [
    # (case, rows deleted from the catalogue, extra options, refused, reference healthy, planned, deleted)
    ("healthy, two orphans quarantined", 2, {}, 0, 1, 2, 2),
    ("too many orphans, healthy reference", 11, {"max_reference_shrink": 1.0, "max_orphan_ratio": 1.0}, 1, 1, 11, 0),
    ("the database answers with 43 % of the rows", 57, {}, 1, 0, 57, 0),
    ("the catalogue is empty", 100, {"max_reference_shrink": 1.0}, 1, 0, 100, 0),
]


@pytest.mark.parametrize(("case", "rows", "extra", "refused", "healthy", "planned", "deleted"), CLEANUPS,
                         ids=[c[0] for c in CLEANUPS])
def test_guarded_cleanup_writes_its_verdict_and_the_reference_health(
        backups: Path, case: str, rows: int, extra: dict[str, Any], refused: int, healthy: int, planned: int,
        deleted: int) -> None:
    assert not cleanup(backups).get("failed")  # a healthy run first: the count the shrink check compares with
    delete_rows(backups, [f"cust{i:03d}.tar.gz" for i in range(rows)])
    result = cleanup(backups, **extra)
    assert bool(result.get("refused")) == bool(refused), result.get("msg")
    samples = guard_samples(backups / "metrics/cleanup.prom")
    assert samples == {"pmr_guard_last_run_timestamp_seconds": pytest.approx(samples[
        "pmr_guard_last_run_timestamp_seconds"]), "pmr_guard_refused": refused, "pmr_guard_failed": 0,
        "pmr_guard_planned_deletions": planned,
        "pmr_guard_deleted": deleted, "pmr_guard_reference_healthy": healthy}
    assert 0 < __import__("time").time() - samples["pmr_guard_last_run_timestamp_seconds"] < 60


# --- metrics_max_age: the job's schedule, for the staleness alerts ---------------------------------------------
MAX_AGES = [
    # (value, seconds)
    ("26h", 93600), (93600, 93600), ("93600", 93600), (" 2d ", 172800), ("90m", 5400), ("1w", 604800),
    ("45s", 45), (7200.0, 7200), (None, None), ("", None),
]


@pytest.mark.parametrize(("value", "seconds"), MAX_AGES, ids=[repr(v[0]) for v in MAX_AGES])
def test_max_age_is_seconds_or_a_duration(value: Any, seconds: int | None) -> None:
    assert tm.parse_max_age(value) == seconds


@pytest.mark.parametrize("value", ["26x", "26 hours", "1.5h", "-5", "h", "0", "0h", 0, -60, 1.5, True, [26]],
                         ids=repr)
def test_max_age_refuses_what_is_no_positive_duration(value: Any) -> None:
    with pytest.raises(ValueError, match="metrics_max_age"):
        tm.parse_max_age(value)


def test_guard_families_write_the_max_age_only_when_given() -> None:
    labels = (("guard", "safe_sync"), ("name", "debian/amd64"), ("unit", "mirror-sync.service"))
    text = tm.render(tm.guard_families("safe_sync", "debian/amd64", "mirror-sync.service", 100.0, False, 0, 0,
                                       max_age=93600))
    promtool_lint(text)
    assert parse(text)[("pmr_guard_max_age_seconds", labels)] == 93600
    text = tm.render(tm.guard_families("safe_sync", "debian/amd64", "mirror-sync.service", 100.0, False, 0, 0))
    assert "pmr_guard_max_age_seconds" not in text


@pytest.mark.parametrize(("value", "seconds"), [("26h", 93600), (7200, 7200)])
def test_safe_sync_writes_its_max_age_with_the_job_labels(mirror: Path, value: Any, seconds: int) -> None:
    result = sync(mirror, metrics_max_age=value)
    assert not result.get("failed") and result["deleted"] == 1
    samples = parse((mirror / "metrics/mirror.prom").read_text())
    labels = (("guard", "safe_sync"), ("name", f"{mirror}/mirror/debian/amd64"), ("unit", "mirror-sync.service"))
    assert samples[("pmr_guard_max_age_seconds", labels)] == seconds
    assert ("pmr_guard_last_run_timestamp_seconds", labels) in samples  # the alert compares the two: same labels


def test_a_refused_run_keeps_its_max_age(mirror: Path) -> None:
    result = sync(mirror, max_delete=0, metrics_max_age="26h")
    assert result["refused"]
    samples = guard_samples(mirror / "metrics/mirror.prom")
    assert samples["pmr_guard_refused"] == 1 and samples["pmr_guard_max_age_seconds"] == 93600


@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check mode"])
@pytest.mark.parametrize("value", ["26x", "0", -1, "1.5h"])
def test_an_invalid_max_age_is_refused_before_any_work(mirror: Path, value: Any, check_mode: bool) -> None:
    before = tree(mirror / "mirror")
    result = sync(mirror, metrics_max_age=value, check_mode=check_mode)
    assert result["failed"] and "metrics_max_age" in result["msg"] and repr(value) in result["msg"], result["msg"]
    assert tree(mirror / "mirror") == before  # nothing synchronised, nothing deleted
    if check_mode:
        assert not (mirror / "metrics/mirror.prom").exists()
    else:  # recorded as a failed run (MirrorSyncFailed), without a max age it does not have
        samples = guard_samples(mirror / "metrics/mirror.prom")
        assert samples["pmr_guard_failed"] == 1 and "pmr_guard_max_age_seconds" not in samples


def test_check_mode_with_a_max_age_writes_nothing(mirror: Path) -> None:
    result = sync(mirror, metrics_max_age="26h", check_mode=True)
    assert result["changed"] and not result.get("failed")
    assert os.listdir(mirror / "metrics") == []


def test_guarded_cleanup_writes_its_max_age(backups: Path) -> None:
    result = cleanup(backups, metrics_max_age="26h")
    assert not result.get("failed"), result.get("msg")
    assert guard_samples(backups / "metrics/cleanup.prom")["pmr_guard_max_age_seconds"] == 93600
    result = cleanup(backups, metrics_max_age="soon")
    assert result["failed"] and "metrics_max_age 'soon' is not a duration" in result["msg"]


def test_the_guard_metrics_filter_writes_the_max_age() -> None:
    from ansible.errors import AnsibleFilterError
    from ansible_collections.postmortem.remediation.plugins.filter.guard_metrics import guard_metrics

    text = guard_metrics({"guard": "guarded_cleanup", "name": "/srv/backups", "max_age": "26h"}, 100)
    assert "pmr_guard_max_age_seconds" in text and parse(text)[(
        "pmr_guard_max_age_seconds", (("guard", "guarded_cleanup"), ("name", "/srv/backups"), ("unit", "")))] == 93600
    assert "pmr_guard_max_age_seconds" not in guard_metrics({"guard": "safe_sync", "max_age": ""}, 100)
    with pytest.raises(AnsibleFilterError, match="max_age '26x'"):
        guard_metrics({"guard": "safe_sync", "max_age": "26x"}, 100)
