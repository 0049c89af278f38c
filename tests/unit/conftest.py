"""Shared test helpers: make the collection importable and run a module for real as a subprocess."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO_ROOT / "build" / "collections"


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


# An engine that lists no containers while it counts some cannot be produced on a real engine at will: this one is
# a small Engine API over a Unix socket that answers from a table and records every request.
class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, data_root: Path) -> None:
        self.requests: list[tuple[str, str]] = []
        self.containers_listed = [{"Id": "c1", "Names": ["/web"]}]
        self.data_root = data_root
        super().__init__(str(path), EngineHandler)

    def answer(self, method: str, path: str) -> tuple[int, object]:
        self.requests.append((method, path))
        if method == "GET" and path == "/info":
            return 200, {"DockerRootDir": str(self.data_root), "Containers": 1, "Images": 1}
        if method == "GET" and path == "/system/df":
            return 200, {
                "Images": [{"Id": "sha256:a", "RepoTags": ["web:1"], "Created": 1, "Size": 10, "SharedSize": 0}],
                "Containers": [{"Id": "c1", "SizeRw": 0}],
                "BuildCache": [{"ID": "cache1", "Type": "regular", "Size": 4096, "InUse": False, "Shared": False,
                                "LastUsedAt": "2020-01-01T00:00:00Z"}],
                "Volumes": [],
            }
        if method == "GET" and path == "/containers/json":
            return 200, self.containers_listed
        if method == "GET" and path == "/containers/c1/json":
            return 200, {"Id": "c1", "Image": "sha256:a", "State": {"Status": "running", "Running": True},
                         "HostConfig": {"LogConfig": {"Type": "json-file"}}, "Config": {"Labels": {}}}
        if method == "GET" and path == "/images/json":
            return 200, [{"Id": "sha256:a", "ParentId": ""}]
        if method == "POST" and path == "/build/prune":
            # From now on the engine's container list comes back empty while /info still counts one.
            self.containers_listed = []
            return 200, {"CachesDeleted": ["cache1"], "SpaceReclaimed": 4096}
        return 500, {"message": f"the fake engine does not answer {method} {path}"}


class EngineHandler(http.server.BaseHTTPRequestHandler):
    def handle_any(self) -> None:
        status, body = self.server.answer(self.command, urllib.parse.urlsplit(self.path).path)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = handle_any

    def address_string(self) -> str:
        return "unix"

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_engine(tmp_path):
    server = FakeEngine(tmp_path / "docker.sock", tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
