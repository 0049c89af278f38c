"""Run a module of the collection in-process, for real (real rsync, real files), and return its JSON result.

The module's ``main()`` runs exactly as on a managed host: argument parsing, check mode, ``run_command``,
``exit_json``/``fail_json``. Only the transport is skipped, which keeps a test at a few milliseconds.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
from ansible.module_utils import _internal as module_utils_internal
from ansible.module_utils.testing import patch_module_args

COLLECTIONS = Path(__file__).resolve().parents[4] / "build" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))


def require_program(program: str, package: str) -> str:
    """The path of ``program``, installed from Debian's ``package`` first when the machine lacks it."""
    if shutil.which(program) is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)
    found = shutil.which(program)
    assert found, f"{program} is still missing after installing {package}"
    return found


def load(name: str) -> ModuleType:
    return importlib.import_module("ansible_collections.postmortem.remediation.plugins.modules." + name)


def run_module(module: ModuleType, args: dict[str, Any], check_mode: bool = False, diff: bool = False) -> dict:
    """The result dict of one module run; ``failed`` is True when the module called fail_json."""
    stdout = io.StringIO()
    full = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    # As on a managed host: once a test has imported controller code (ansible.errors, a filter plugin), ansible-core
    # sends module warnings to the controller's display instead of the result, and the outcome hung on test order.
    with patch_module_args(full), contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exit_info, \
            mock.patch.object(module_utils_internal, "is_controller", False):
        module.main()
    result = json.loads(stdout.getvalue())
    assert bool(result.get("failed")) == (exit_info.value.code != 0)
    # The controller refuses a result that is not valid UTF-8 (a lone surrogate from a file name): so does this.
    json.dumps(result, ensure_ascii=False).encode("utf-8")
    return result


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content: the before/after picture a destructive test compares."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def make_mirror(root: Path, arches: Sequence[str] = ("amd64", "i386"), packages: int = 10, *,
                name: str = "pkg{i}.deb", content: str = "{arch} {i}", mtime: float | None = None) -> Path:
    """The mirror incident's two trees alike: ``root/{build,mirror}/debian/<arch>/`` with ``packages`` files each,
    named and filled from the templates (``{arch}``, ``{i}``), all dated ``mtime`` when given; ``root``."""
    for side in ("build", "mirror"):
        for arch in arches:
            directory = root / side / "debian" / arch
            directory.mkdir(parents=True)
            for i in range(packages):
                package = directory / name.format(arch=arch, i=i)
                package.write_text(content.format(arch=arch, i=i))
                if mtime is not None:
                    os.utime(package, (mtime, mtime))
    return root


def make_backups(root: Path, count: int, catalogued: int) -> list[str]:
    """The backup incident's site: ``root/backups`` with ``count`` files cust000.tar.gz, … (each holds its name) and
    ``root/catalog.db`` whose table ``backups (file_name)`` lists the first ``catalogued`` of them; their names."""
    directory = root / "backups"
    directory.mkdir()
    names = [f"cust{i:03d}.tar.gz" for i in range(count)]
    for name in names:
        (directory / name).write_text(name)
    with sqlite3.connect(root / "catalog.db") as conn:
        conn.execute("CREATE TABLE backups (file_name TEXT)")
        conn.executemany("INSERT INTO backups VALUES (?)", [(n,) for n in names[:catalogued]])
    return names


def start_module(name: str, args: dict[str, Any]) -> subprocess.Popen[str]:
    """The module run in a process of its own, as on a managed host: for runs that must really overlap."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(COLLECTIONS), os.environ.get("PYTHONPATH", "")]))
    argv = [sys.executable, "-m", "ansible_collections.postmortem.remediation.plugins.modules." + name,
            json.dumps({"ANSIBLE_MODULE_ARGS": args})]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish_module(process: subprocess.Popen[str], timeout: float = 60) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert out.strip(), f"no result from the module (rc {process.returncode}): {err}"
    return json.loads(out)


def wait_for_file(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> bool:
    """Wait until ``path`` exists (a process shows where it is by writing it), the process ends, or ``timeout``."""
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.exists()


def processes_naming(text: str) -> list[str]:
    """The command lines of the running processes whose command line contains ``text``."""
    return list(_processes_naming(text).values())


def kill_processes_naming(text: str) -> None:
    """SIGKILL every process whose command line contains ``text`` (a test's own leftovers)."""
    for pid in _processes_naming(text):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _processes_naming(text: str) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found[int(entry.name)] = cmdline
    return found
