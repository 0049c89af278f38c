"""A dry run never reads like a real one: sync_mirror.yml and reconcile_backups.yml under --check say "would"
(issue 11, item 9). Real ansible-playbook, real rsync and a real SQLite catalogue on this machine."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def playbook(tmp_path: Path, name: str, extra: dict, check: bool) -> tuple[int, str]:
    """Run a collection playbook on localhost; return its rc and the message of its report task, on one line."""
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[backup_servers]\nlocalhost\n[mirror_upload]\nlocalhost\n"
                         f"[all:vars]\nansible_connection=local\nansible_python_interpreter={sys.executable}\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_NOCOLOR="1")
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(REPO / "playbooks" / f"{name}.yml"),
            "-e", json.dumps(extra), *(["--check"] if check else [])]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    report = json.loads(proc.stdout)
    messages = [task["hosts"]["localhost"].get("msg") for play in report["plays"] for task in play["tasks"]
                if task["task"]["name"].startswith("Report what")]
    assert messages, proc.stdout
    return proc.returncode, " ".join(json.dumps(messages[-1]).split())


@pytest.fixture
def mirror(tmp_path: Path) -> dict:
    if shutil.which("rsync") is None:
        pytest.fail("rsync is not installed (apt-get install rsync)")
    for side in ("build", "mirror"):
        arch = tmp_path / side / "debian" / "amd64"
        arch.mkdir(parents=True)
        for i in range(20):
            (arch / f"p{i}.deb").write_text(f"{i}")
            os.utime(arch / f"p{i}.deb", (1_700_000_000, 1_700_000_000))
    (tmp_path / "build/debian/amd64/p0.deb").write_text("rebuilt")
    (tmp_path / "build/debian/amd64/p20.deb").write_text("new")
    (tmp_path / "build/debian/amd64/p19.deb").unlink()
    return {"mirror_repo": "debian", "mirror_arch": "amd64", "mirror_build_root": str(tmp_path / "build"),
            "mirror_dest_root": str(tmp_path / "mirror")}


def test_sync_mirror_check_says_would_and_the_real_run_says_sent(tmp_path: Path, mirror: dict) -> None:
    rc, message = playbook(tmp_path, "sync_mirror", mirror, check=True)
    assert rc == 0, message
    assert "would send 2 file(s), would delete 1" in message and "check mode" in message, message
    assert " sent" not in message.replace("nothing sent", ""), message
    assert (tmp_path / "mirror/debian/amd64/p19.deb").exists()  # nothing was deleted
    rc, message = playbook(tmp_path, "sync_mirror", mirror, check=False)
    assert rc == 0 and "2 file(s) sent, 1 deleted" in message and "would" not in message, message


def test_reconcile_backups_check_says_would(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    names = [f"cust{i:03d}.tar.gz" for i in range(1, 41)]
    for name in names:
        (backups / name).write_text(name)
    catalog = tmp_path / "catalog.db"
    with sqlite3.connect(catalog) as db:
        db.execute("CREATE TABLE backups (file_name TEXT)")
        db.executemany("INSERT INTO backups VALUES (?)", [(n,) for n in names if n != "cust013.tar.gz"])
    extra = {"backup_path": str(backups), "backup_pattern": "*.tar.gz", "backup_reference_sqlite": str(catalog),
             "backup_reference_query": "SELECT file_name FROM backups", "backup_max_orphan_ratio": 0.1}
    rc, message = playbook(tmp_path, "reconcile_backups", extra, check=True)
    assert rc == 0, message
    assert "check mode, nothing was moved" in message and '"would_quarantine": ["cust013.tar.gz"]' in message, message
    assert '"quarantined"' not in message, message
    assert (backups / "cust013.tar.gz").exists()
    rc, message = playbook(tmp_path, "reconcile_backups", extra, check=False)
    assert rc == 0 and '"quarantined": ["cust013.tar.gz"]' in message and "would" not in message, message
