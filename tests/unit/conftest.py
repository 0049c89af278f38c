"""Shared test helpers: make the collection importable and run a module for real as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from unit_support import COLLECTIONS, REPO_ROOT, FakeEngine


def _link_collection() -> None:
    link = COLLECTIONS / "ansible_collections" / "postmortem" / "remediation"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(REPO_ROOT)


_link_collection()
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))


def run_module(name: str, args: dict, check_mode: bool = False, diff: bool = False, env: dict | None = None) -> dict:
    """Run plugins/modules/<name>.py the way Ansible does (arguments in a JSON file) and return its result."""
    module_args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    payload = json.dumps({"ANSIBLE_MODULE_ARGS": module_args})
    path = REPO_ROOT / "plugins" / "modules" / f"{name}.py"
    environ = dict(os.environ, PYTHONPATH=str(COLLECTIONS))
    environ.update(env or {})
    args_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"pmr-args-{os.getpid()}-{name}.json"
    args_file.write_text(payload)
    try:
        command = [sys.executable, str(path), str(args_file)]
        proc = subprocess.run(command, capture_output=True, text=True, env=environ, timeout=300, check=False)
    finally:
        args_file.unlink(missing_ok=True)
    try:
        return json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"{name} printed no JSON (rc={proc.returncode}): {proc.stdout}\n{proc.stderr}") from exc


@pytest.fixture
def module_runner():
    return run_module


@pytest.fixture
def fake_engine(tmp_path):
    server = FakeEngine(tmp_path / "docker.sock", tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
