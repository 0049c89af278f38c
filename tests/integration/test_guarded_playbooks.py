"""The two playbooks of issue 6 run by ansible-playbook on this machine, against real rsync and a real PostgreSQL.

The two-host replays live in extensions/molecule/guarded_operations; this file covers what the playbooks add (their
variable checks) and the PostgreSQL reference through psql: a server that is down, killed mid-query, hung, or that
answers with a partial list. PostgreSQL listens on a Unix socket in a temporary directory only (no TCP at all).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "unit" / "plugins" / "modules"))
from guard_module_runner import make_mirror  # noqa: E402

BIN = ROOT / ".venv" / "bin"
CUSTOMERS = 120
ORPHANS = ["cust010.tar.gz", "cust020.tar.gz", "cust030.tar.gz"]


def apt_install(package: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)


@pytest.fixture(scope="module", autouse=True)
def _rsync_installed() -> None:
    if shutil.which("rsync") is None:
        apt_install("rsync")


# --- PostgreSQL ------------------------------------------------------------------------------------------------
def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        apt_install("postgresql")
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent


class Postgres:
    """A throw-away cluster run by the postgres user, reachable only through its socket directory."""

    def __init__(self, root: Path) -> None:
        self.bin = pg_bin()
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"
        for path in (root, self.sockets):
            path.mkdir(exist_ok=True)
            shutil.chown(path, "postgres", "postgres")
        self.as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"])

    @staticmethod
    def as_postgres(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, text=True)

    def start(self) -> None:
        self.as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-o",
                          f"-c listen_addresses='' -k {self.sockets}", "start"])

    def stop(self) -> None:
        self.as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def psql_argv(self, sql: str) -> list[str]:
        return ["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.sockets), "-U", "postgres",
                "-d", "catalog", "-c", sql]

    def sql(self, sql: str, database: str = "catalog") -> str:
        argv = self.psql_argv(sql)
        argv[argv.index("catalog")] = database
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    root = Path(tempfile.mkdtemp(prefix="pmr-i6-pg-"))  # pytest's own temp dirs are closed to the postgres user
    try:
        server = Postgres(root)
        server.start()
        server.sql("CREATE DATABASE catalog", database="postgres")
        yield server
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def catalog(postgres: Postgres, tmp_path: Path) -> Path:
    """Backups on disk and a fresh catalogue: every backup has a row but the orphans and cust007 (locked)."""
    backups = tmp_path / "backups"
    backups.mkdir()
    names = [f"cust{i:03d}.tar.gz" for i in range(1, CUSTOMERS + 1)]
    for name in names:
        (backups / name).write_text(name)
    (backups / "cust007.tar.gz.lock").write_text("restore running")
    rows = ",".join(f"('{n}')" for n in names if n not in [*ORPHANS, "cust007.tar.gz"])
    postgres.sql(f"DROP TABLE IF EXISTS backups; CREATE TABLE backups (file_name text PRIMARY KEY); "
                 f"INSERT INTO backups VALUES {rows};")
    return backups


# --- ansible-playbook ----------------------------------------------------------------------------------------------
def playbook(name: str, tmp_path: Path, extra: dict[str, Any]) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run a collection playbook on localhost; return its rc and the last result of every task by name."""
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "[backup_servers]\nlocalhost\n[mirror_upload]\nlocalhost\n"
        "[all:vars]\nansible_connection=local\nansible_python_interpreter=/usr/bin/python3\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"),
               ANSIBLE_HOME=str(ROOT / "build" / "ansible-home"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_NOCOLOR="1", PATH=f"{BIN}:{os.environ['PATH']}")
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), f"postmortem.remediation.{name}",
                           "-e", json.dumps(extra)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.stdout.lstrip().startswith("{"), proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    tasks = {task["task"]["name"]: task["hosts"]["localhost"] for play in report["plays"] for task in play["tasks"]}
    return proc.returncode, tasks


def picture(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


RECONCILE = "Reconcile the backups with the catalogue (quarantine orphans, purge expired ones)"


def backup_vars(backups: Path, postgres: Postgres, **extra: Any) -> dict[str, Any]:
    args = {"backup_path": str(backups), "backup_pattern": "*.tar.gz", "backup_min_references": 50,
            "backup_reference_command": postgres.psql_argv("SELECT file_name FROM backups"),
            "backup_reference_timeout": 3}
    args.update(extra)
    return args


# --- the backup incident against PostgreSQL ------------------------------------------------------------------------
def test_healthy_catalogue_then_partial_answer(catalog: Path, postgres: Postgres, tmp_path: Path) -> None:
    rc, tasks = playbook("reconcile_backups", tmp_path, backup_vars(catalog, postgres))
    assert rc == 0
    result = tasks[RECONCILE]
    assert result["quarantined"] == ORPHANS
    assert result["kept"] == [{"name": "cust007.tar.gz", "reason": "locked: marker cust007.tar.gz.lock"}]
    assert sorted(p.name for p in (catalog / ".quarantine/items").iterdir()) == ORPHANS
    assert (catalog / "cust007.tar.gz").exists()

    # The database comes back from a failure with 43 % of its rows: the shrink check refuses.
    postgres.sql("DELETE FROM backups WHERE substr(file_name, 5, 3)::int % 100 >= 43")
    before = picture(catalog)
    rc, tasks = playbook("reconcile_backups", tmp_path,
                         backup_vars(catalog, postgres, backup_max_orphans=1000, backup_max_orphan_ratio=1.0))
    assert rc != 0
    assert tasks[RECONCILE]["refused"] is True
    left = int(postgres.sql("SELECT count(*) FROM backups"))
    assert f"reference shrink: {left} keys now, {CUSTOMERS - 4} at the last successful run" in tasks[RECONCILE]["msg"]
    assert picture(catalog) == before

    # Restore through the playbook.
    rc, tasks = playbook("reconcile_backups", tmp_path, {"backup_path": str(catalog), "backup_state": "restore"})
    assert rc == 0
    assert tasks["Restore quarantined backups"]["restored"] == ORPHANS
    assert len(list(catalog.glob("*.tar.gz"))) == CUSTOMERS


def test_database_down_is_refused(catalog: Path, postgres: Postgres, tmp_path: Path) -> None:
    before = picture(catalog)
    postgres.stop()
    try:
        rc, tasks = playbook("reconcile_backups", tmp_path, backup_vars(catalog, postgres))
    finally:
        postgres.start()
    assert rc != 0
    assert tasks[RECONCILE]["refused"] is True
    assert "reference command psql failed (rc 2)" in tasks[RECONCILE]["msg"]
    assert picture(catalog) == before


def test_database_killed_mid_query_is_refused(catalog: Path, postgres: Postgres, tmp_path: Path) -> None:
    def kill_the_query() -> None:
        for _attempt in range(100):
            time.sleep(0.1)
            killed = postgres.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE query LIKE '%pg_sleep(2)%' AND pid <> pg_backend_pid()")
            if killed.strip() != "0":
                return

    before = picture(catalog)
    killer = threading.Thread(target=kill_the_query)
    killer.start()
    query = "SELECT file_name FROM backups UNION ALL SELECT 'x' FROM pg_sleep(2)"
    rc, tasks = playbook("reconcile_backups", tmp_path,
                         backup_vars(catalog, postgres, backup_reference_command=postgres.psql_argv(query)))
    killer.join()
    assert rc != 0
    assert tasks[RECONCILE]["refused"] is True
    assert "terminating connection due to administrator command" in tasks[RECONCILE]["msg"]
    assert picture(catalog) == before


def test_hung_database_times_out(catalog: Path, postgres: Postgres, tmp_path: Path) -> None:
    before = picture(catalog)
    query = "SELECT file_name FROM backups, pg_sleep(30)"
    rc, tasks = playbook("reconcile_backups", tmp_path,
                         backup_vars(catalog, postgres, backup_reference_command=postgres.psql_argv(query),
                                     backup_reference_timeout=1))
    assert rc != 0
    assert "reference command psql timed out after 1 s" in tasks[RECONCILE]["msg"]
    assert picture(catalog) == before


@pytest.mark.parametrize("backup_path", ["", "/", "/srv/backups/", "/srv//backups", "/srv/../etc", "srv/backups"])
def test_playbook_refuses_a_path_that_widens_the_scope(tmp_path: Path, backup_path: str) -> None:
    extra = {"backup_path": backup_path, "backup_reference_command": ["echo", "x"]}
    rc, tasks = playbook("reconcile_backups", tmp_path, extra)
    assert rc != 0
    check = tasks["Validate the variables that scope the cleanup"]
    assert check["failed"] is True
    assert f"backup_path='{backup_path}'" in check["msg"]
    assert RECONCILE not in tasks


# --- the mirror incident, through the playbook ------------------------------------------------------------------
@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    make_mirror(tmp_path, ("amd64", "i386"), 10, name="p{i}.deb", content="{arch}{i}", mtime=1_700_000_000)
    (tmp_path / "build/debian/amd64/p10.deb").write_text("new")
    shutil.rmtree(tmp_path / "build/debian/i386")  # this build host builds amd64 only
    return tmp_path


@pytest.mark.parametrize("arch", ["", " ", "..", "amd64/", "amd64 i386"])
def test_sync_playbook_refuses_a_bad_architecture(mirror: Path, arch: str) -> None:
    before = picture(mirror / "mirror")
    rc, tasks = playbook("sync_mirror", mirror, {"mirror_repo": "debian", "mirror_arch": arch,
                                                 "mirror_build_root": f"{mirror}/build",
                                                 "mirror_dest_root": f"{mirror}/mirror"})
    assert rc != 0
    assert f"mirror_arch='{arch}'" in tasks["Validate the variables that name the tree to publish"]["msg"]
    assert picture(mirror / "mirror") == before


def test_sync_playbook_publishes_only_that_architecture(mirror: Path) -> None:
    i386 = picture(mirror / "mirror/debian/i386")
    rc, tasks = playbook("sync_mirror", mirror, {"mirror_repo": "debian", "mirror_arch": "amd64",
                                                 "mirror_build_root": f"{mirror}/build",
                                                 "mirror_dest_root": f"{mirror}/mirror"})
    assert rc == 0
    result = tasks["Synchronise the architecture (dry run, guard, then transfer and only the planned deletions)"]
    assert (result["transferred"], result["deleted"]) == (1, 0)
    assert picture(mirror / "mirror/debian/amd64") == picture(mirror / "build/debian/amd64")
    assert picture(mirror / "mirror/debian/i386") == i386
