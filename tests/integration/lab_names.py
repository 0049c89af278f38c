"""The names the end-to-end tests give what they create on the shared machine (lab hosts, their volumes and loop
filesystems): this checkout's LAB_PREFIX (tests/lab/prefix.sh: exported by the Makefile, else computed from the
checkout's path), then the test's own word. Two checkouts running the same test at once never share a host, and
`tests/lab/lab.sh down PREFIX` removes only PREFIX-<number>, this test's hosts."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def checkout_prefix() -> str:
    """LAB_PREFIX when set (validated), else pmr-<6 hex digits of this checkout's path>."""
    return subprocess.run(["bash", str(REPO / "tests" / "lab" / "prefix.sh")], capture_output=True, text=True,
                          check=True).stdout.strip()


LAB_PREFIX = checkout_prefix()


def lab_prefix(word: str) -> str:
    """The lab.sh prefix of one test's hosts: LAB_PREFIX-word (its hosts are LAB_PREFIX-word-1..N)."""
    return f"{LAB_PREFIX}-{word}"
