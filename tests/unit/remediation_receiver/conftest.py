"""Fixtures for the receiver unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from receiver_helpers import write_config

from remediation_receiver.config import Config
from remediation_receiver.journal import Journal


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return write_config(tmp_path)


@pytest.fixture
def journal(cfg: Config) -> Iterator[Journal]:
    j = Journal(cfg.journal)
    yield j
    j.close()
