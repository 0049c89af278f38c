"""A throw-away PostgreSQL 15 server for the tests and the benchmark: Debian's binaries, run as the `postgres` user in a
temporary directory, reached on a unix socket only (no TCP port). `make postgresql` installs the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

BINDIR = Path(os.environ.get("PMR_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "pmr"
# A role that must give its password (scram-sha-256): the password-file and redaction tests use it.
PASSWORD_ROLE = "pmr_pw"
PASSWORD = "pmr-pg-s3cret-Jx81"
RUN_AS = "postgres"


def available() -> bool:
    return (BINDIR / "initdb").exists() and (BINDIR / "pg_ctl").exists()


class PgServer:
    def __init__(self, *, fsync: bool = True, prefix: str = "pmr-pg-") -> None:
        if not available():
            raise RuntimeError(f"PostgreSQL 15 is not installed ({BINDIR}/initdb missing): run `make postgresql`")
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.log = self.root / "postgresql.log"
        self.fsync = fsync
        shutil.chown(self.root, RUN_AS)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        shutil.chown(pwfile, RUN_AS)
        self._as_postgres([str(BINDIR / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth-local=trust",
                           "--auth-host=reject", "--no-sync", "-E", "UTF8", "--locale=C"])
        pwfile.unlink()
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"local all {PASSWORD_ROLE} scram-sha-256\n" + hba.read_text())
        self.start()
        with self.connect() as db:
            db.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")

    def _as_postgres(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """PostgreSQL refuses to run as root: run its programs as the `postgres` user."""
        return subprocess.run(["runuser", "-u", RUN_AS, "--", *argv], capture_output=True, text=True, check=check,
                              cwd=self.root)

    def start(self) -> None:
        options = (f"-k {self.socket_dir} -c listen_addresses='' -c fsync={'on' if self.fsync else 'off'} "
                   "-c max_connections=300 -c shared_buffers=64MB")
        proc = self._as_postgres([str(BINDIR / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                                  "-t", "60", "-o", options, "start"], check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"postgres did not start: {proc.stdout}{proc.stderr}{self.log.read_text()[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres([str(BINDIR / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def url(self, dbname: str = "postgres", user: str = SUPERUSER, schema: str | None = None) -> str:
        url = f"postgresql://{user}@/{dbname}?host={self.socket_dir}"
        if schema:
            url += f"&options=-csearch_path%3D{schema}"
        return url

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(dbname), autocommit=True, **kwargs)

    def create_database(self, name: str) -> str:
        with self.connect() as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}"')
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while True:
            try:
                with self.connect():
                    return
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
