"""Test support shared by the unit tests, imported by name (a `conftest` module name is ambiguous: several exist).

Kept apart from conftest.py so that a test file can import it whichever conftest pytest loaded last.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socketserver
import urllib.parse
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO_ROOT / "build" / "collections"


def install_role_script(directory: Path, role: str, script: str, helpers_var: str) -> Path:
    """The role's script copied into ``directory`` with the module_utils files its ``vars/main.yml`` lists in
    ``helpers_var`` beside it, as the role installs them; the path of the installed script."""
    role_dir = REPO_ROOT / "roles" / role
    helpers = yaml.safe_load((role_dir / "vars" / "main.yml").read_text())[helpers_var]
    directory.mkdir()
    shutil.copy(role_dir / "files" / script, directory / script)
    for name in helpers:
        shutil.copy(REPO_ROOT / "plugins" / "module_utils" / name, directory / name)
    return directory / script


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
