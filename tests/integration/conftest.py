"""Fixtures shared by the end-to-end tests (the receiver's helpers are in receiver_e2e.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from receiver_e2e import LAB_HOST, Pager, lab


@pytest.fixture(scope="session")
def lab_host() -> Iterator[str]:
    """One lab host (systemd + dockerd in a container) named LAB_HOST, started once and removed at the end."""
    lab("up")
    yield LAB_HOST
    if not os.environ.get("RECEIVER_KEEP_LAB"):
        lab("down")


@pytest.fixture
def pager() -> Iterator[Pager]:
    """An escalation webhook on 127.0.0.1 that records what it is sent."""
    server = Pager()
    yield server
    server.close()
