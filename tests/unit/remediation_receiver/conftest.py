"""Fixtures for the receiver unit tests.

The tests of the modules in BOTH run against both journals: SQLite, and PostgreSQL 15 (a server started once per
session by the pg_server fixture, a fresh database per test). A test that checks something only the SQLite file has
is marked `sqlite_only`."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import receiver_helpers
from receiver_helpers import write_config

from remediation_receiver.config import Config
from remediation_receiver.journal import Journal

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import pgserver

BOTH = {"test_receiver_decide", "test_receiver_schedule", "test_receiver_recovery", "test_receiver_executor",
        "test_receiver_notify", "test_receiver_cli", "test_receiver_pg", "test_receiver_first_task"}
_databases = itertools.count(1)


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "sqlite_only: checks what only the SQLite journal has (its file)")


def pytest_generate_tests(metafunc: Any) -> None:
    # A test without tmp_path writes no configuration, so it opens no journal: it runs once.
    if "journal_backend" in metafunc.fixturenames and "tmp_path" in metafunc.fixturenames and \
            metafunc.module.__name__ in BOTH:
        metafunc.parametrize("journal_backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.PgServer]:
    """PostgreSQL 15 on a unix socket in a temporary directory (fsync off: these tests are about behaviour; the
    benchmark measures with fsync on)."""
    server = pgserver.PgServer(fsync=False)
    server.create_database("pmr_unit")
    yield server
    server.destroy()


@pytest.fixture(autouse=True)
def journal_backend(request: Any) -> Iterator[str]:
    backend = getattr(request, "param", "sqlite")
    if backend != "postgresql":
        yield backend
        return
    if request.node.get_closest_marker("sqlite_only"):
        pytest.skip("checks the SQLite journal's file")
    server: pgserver.PgServer = request.getfixturevalue("pg_server")
    # A schema of its own per test (a database each would cost twice as long).
    schema = f"t{next(_databases)}"
    with server.connect("pmr_unit") as db:
        db.execute(f"CREATE SCHEMA {schema}")
    receiver_helpers.JOURNAL = server.url("pmr_unit", schema=schema)
    try:
        yield backend
    finally:
        receiver_helpers.JOURNAL = None


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return write_config(tmp_path)


@pytest.fixture
def journal(cfg: Config) -> Iterator[Journal]:
    j = Journal(cfg.journal)
    yield j
    j.close()
