"""sync_mirror.yml and reconcile_backups.yml write the guard's metrics for every refusal: the module's own, and the
one their variable checks decide before the module runs (an empty $arch stopped there wrote nothing before).
Real ansible-playbook on localhost, real rsync and SQLite; the metrics read back with promtool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
sys.path.insert(0, str(REPO / "tests" / "unit" / "plugins" / "modules"))
from guard_module_runner import make_backups, make_mirror, require_program  # noqa: E402

PROMTOOL = require_program("promtool", "prometheus")
require_program("rsync", "rsync")


def play(tmp_path: Path, playbook: str, extra: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[mirror_upload]\nlocalhost\n[backup_servers]\nlocalhost\n[all:vars]\n"
                         f"ansible_connection=local\nansible_python_interpreter={sys.executable}\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_FORCE_COLOR="false")
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(REPO / "playbooks" / playbook),
                           "-e", json.dumps(extra), *args], capture_output=True, text=True, env=env, timeout=300,
                          check=False)


def metrics(path: Path) -> dict[str, str]:
    text = path.read_text()
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    return {line.split("{")[0]: line for line in text.splitlines() if line and not line.startswith("#")}


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    make_mirror(tmp_path, ("amd64", "i386"), 10)
    (tmp_path / "textfile").mkdir()
    return tmp_path


def mirror_vars(root: Path, arch: str, **extra: Any) -> dict[str, Any]:
    return {"mirror_repo": "debian", "mirror_arch": arch, "mirror_build_root": f"{root}/build",
            "mirror_dest_root": f"{root}/mirror", "mirror_metrics_file": f"{root}/textfile/mirror.prom",
            "mirror_metrics_unit": "mirror-sync.service", **extra}


@pytest.mark.parametrize("arch", ["", " ", "amd64/.."])
def test_a_refusal_by_the_variable_checks_is_recorded(mirror: Path, arch: str) -> None:
    proc = play(mirror, "sync_mirror.yml", mirror_vars(mirror, arch))
    assert proc.returncode != 0
    assert "Refusing to publish" in proc.stdout
    samples = metrics(mirror / "textfile" / "mirror.prom")
    assert samples["pmr_guard_refused"].endswith(" 1")
    assert f'name="debian/{arch}"' in samples["pmr_guard_refused"]
    assert 'guard="safe_sync"' in samples["pmr_guard_refused"] and 'unit="mirror-sync.service"' in samples[
        "pmr_guard_refused"]
    assert sorted(os.listdir(mirror / "mirror" / "debian")) == ["amd64", "i386"]


def test_without_a_metrics_file_the_refusal_still_fails_the_same_way(mirror: Path) -> None:
    proc = play(mirror, "sync_mirror.yml", mirror_vars(mirror, "", mirror_metrics_file=""))
    assert proc.returncode != 0 and "Refusing to publish" in proc.stdout
    assert os.listdir(mirror / "textfile") == []


def test_an_allowed_sync_then_a_refused_one_replace_the_file(mirror: Path) -> None:
    (mirror / "build/debian/amd64/pkg0.deb").unlink()
    assert play(mirror, "sync_mirror.yml", mirror_vars(mirror, "amd64")).returncode == 0
    samples = metrics(mirror / "textfile" / "mirror.prom")
    assert samples["pmr_guard_refused"].endswith(" 0") and 'name="debian/amd64"' in samples["pmr_guard_refused"]
    assert samples["pmr_guard_deleted"].endswith(" 1")
    for i in range(1, 10):
        (mirror / f"build/debian/amd64/pkg{i}.deb").unlink()
    (mirror / "build/debian/amd64/new.deb").write_text("new")
    proc = play(mirror, "sync_mirror.yml", mirror_vars(mirror, "amd64", mirror_max_delete=3))
    assert proc.returncode != 0 and "more than the bound of 3" in proc.stdout
    samples = metrics(mirror / "textfile" / "mirror.prom")
    assert samples["pmr_guard_refused"].endswith(" 1")
    assert samples["pmr_guard_planned_deletions"].endswith(" 9")


def test_check_mode_records_nothing(mirror: Path) -> None:
    proc = play(mirror, "sync_mirror.yml", mirror_vars(mirror, ""), "--check")
    assert proc.returncode != 0
    assert os.listdir(mirror / "textfile") == []


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    make_backups(tmp_path, 40, catalogued=30)  # ten orphans
    (tmp_path / "textfile").mkdir()
    return tmp_path


def backup_vars(root: Path, **extra: Any) -> dict[str, Any]:
    return {"backup_path": f"{root}/backups", "backup_pattern": "*.tar.gz",
            "backup_reference_sqlite": f"{root}/catalog.db", "backup_reference_query": "SELECT file_name FROM backups",
            "backup_metrics_file": f"{root}/textfile/backups.prom", "backup_metrics_unit": "backup-cleanup.service",
            **extra}


def test_backup_refusals_are_recorded_by_the_module_and_by_the_variable_checks(backups: Path) -> None:
    proc = play(backups, "reconcile_backups.yml", backup_vars(backups, backup_max_orphans=5))
    assert proc.returncode != 0 and "orphans: 10 items planned, more than the bound of 5" in proc.stdout
    samples = metrics(backups / "textfile" / "backups.prom")
    assert samples["pmr_guard_refused"].endswith(" 1")
    assert samples["pmr_guard_reference_healthy"].endswith(" 1")
    assert samples["pmr_guard_planned_deletions"].endswith(" 10")
    assert f'name="{backups}/backups"' in samples["pmr_guard_refused"]

    proc = play(backups, "reconcile_backups.yml", backup_vars(backups, backup_path=f"{backups}/backups/"))
    assert proc.returncode != 0 and "Refusing to clean up" in proc.stdout
    samples = metrics(backups / "textfile" / "backups.prom")
    assert samples["pmr_guard_refused"].endswith(" 1") and 'guard="guarded_cleanup"' in samples["pmr_guard_refused"]
    assert "pmr_guard_reference_healthy" not in samples


def test_the_playbooks_write_a_max_age_of_26h_unless_told_otherwise(mirror: Path) -> None:
    (mirror / "build/debian/amd64/pkg0.deb").unlink()
    assert play(mirror, "sync_mirror.yml", mirror_vars(mirror, "amd64")).returncode == 0
    samples = metrics(mirror / "textfile" / "mirror.prom")
    assert samples["pmr_guard_max_age_seconds"].endswith(" 93600")
    assert 'name="debian/amd64"' in samples["pmr_guard_max_age_seconds"]
    # '' turns the staleness alert off for this job: no series
    assert play(mirror, "sync_mirror.yml", mirror_vars(mirror, "amd64", mirror_metrics_max_age="")).returncode == 0
    assert "pmr_guard_max_age_seconds" not in metrics(mirror / "textfile" / "mirror.prom")
    # a refusal of the variable checks keeps it: the job's staleness alert must not lose its max age
    proc = play(mirror, "sync_mirror.yml", mirror_vars(mirror, "", mirror_metrics_max_age="2d"))
    assert proc.returncode != 0 and "Refusing to publish" in proc.stdout
    samples = metrics(mirror / "textfile" / "mirror.prom")
    assert samples["pmr_guard_refused"].endswith(" 1") and samples["pmr_guard_max_age_seconds"].endswith(" 172800")


def test_backup_max_age_is_passed_and_a_bad_one_refused(backups: Path) -> None:
    proc = play(backups, "reconcile_backups.yml",
                backup_vars(backups, backup_max_orphans=5, backup_metrics_max_age=3600))
    assert proc.returncode != 0 and "more than the bound of 5" in proc.stdout
    assert metrics(backups / "textfile" / "backups.prom")["pmr_guard_max_age_seconds"].endswith(" 3600")
    proc = play(backups, "reconcile_backups.yml", backup_vars(backups, backup_metrics_max_age="daily"))
    assert proc.returncode != 0 and "metrics_max_age 'daily' is not a duration" in proc.stdout
    assert len(os.listdir(backups / "backups")) == 40  # nothing quarantined
