"""docker_reclaim run as Ansible runs it: the refusals that need no engine, and the deletion guard's refusal of an
engine whose answers disagree (a small fake engine: that fault cannot be made on a real one). The tiers themselves
run against real engines on lab hosts in Molecule (extensions/molecule/docker_prune_timer)."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import threading
import urllib.parse
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"target_free": "lots"}, "target_free: size 'lots'"),
        ({"target_free": "150%"}, "target_free: target '150%': a percentage must be above 0 and below 100"),
        ({"target_free": "0"}, "target_free: target '0': must be more than 0 bytes"),
        ({"target_free": "2G", "min_age": "a while"}, "min_age: duration 'a while'"),
        ({"target_free": "2G", "log_max_size": "big"}, "log_max_size: size 'big'"),
        ({"target_free": "2G", "log_keep_tail": "-1M"}, "log_keep_tail: size '-1M'"),
    ],
)
def test_invalid_options_fail_naming_the_value(module_runner, args, fragment):
    result = module_runner("docker_reclaim", dict(args, docker_socket="/nonexistent/docker.sock"))
    assert result.get("failed") is True, result
    assert "invalid option" in result["msg"]
    assert fragment in result["msg"]


def test_unknown_tier_is_refused_by_the_argument_spec(module_runner):
    result = module_runner("docker_reclaim", {"target_free": "2G", "tiers": ["networks"]})
    assert result.get("failed") is True
    assert "networks" in result["msg"]


def test_unreachable_engine_fails_naming_the_socket_and_touches_nothing(module_runner, tmp_path):
    socket_path = tmp_path / "docker.sock"
    result = module_runner("docker_reclaim", {"target_free": "50%", "docker_socket": str(socket_path)})
    assert result.get("failed") is True
    assert str(socket_path) in result["msg"]
    assert "cannot read the engine's data-root" in result["msg"]


def test_check_mode_fails_the_same_way_without_an_engine(module_runner, tmp_path):
    result = module_runner(
        "docker_reclaim", {"target_free": "1G", "docker_socket": str(tmp_path / "none.sock")}, check_mode=True
    )
    assert result.get("failed") is True
    assert "cannot reach the Docker engine" in result["msg"]


# --- the shared deletion guard: never plan on an engine whose answers disagree ----------------------------------
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
def engine(tmp_path):
    server = FakeEngine(tmp_path / "docker.sock", tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def unmet_target(path: Path) -> str:
    """A target in bytes just above what the filesystem at path has free, so that the module has to plan."""
    stat = os.statvfs(path)
    free, size = stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize
    if free + 256 * 1024**2 >= size:
        pytest.skip("the test filesystem is almost empty: no target can be above its free space")
    return str(free + 256 * 1024**2)


def mutations(engine: FakeEngine) -> list[tuple[str, str]]:
    return [(method, path) for method, path in engine.requests if method != "GET"]


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_partial_view_of_the_engine_is_refused_through_the_deletion_guard(module_runner, engine, tmp_path,
                                                                            check_mode):
    engine.containers_listed = []  # no containers listed, one counted: every image would look unused
    args = {"target_free": unmet_target(tmp_path), "docker_socket": str(tmp_path / "docker.sock"),
            "lock_file": str(tmp_path / "prune.lock")}
    result = module_runner("docker_reclaim", args, check_mode=check_mode)
    assert result.get("failed") is True, result
    assert result["refused"] is True
    assert result["msg"] == result["reason"]
    assert result["reason"].startswith(f"refused reclaim on {tmp_path}: engine state:")
    assert "the engine listed no containers but counts 1" in result["reason"]
    assert [(c["name"], c["ok"]) for c in result["guard"]["checks"]] == [("engine state", False)]
    assert result["changed"] is False
    assert mutations(engine) == []


def test_a_partial_view_in_a_later_tier_stops_the_run_and_reports_what_was_removed(module_runner, engine, tmp_path):
    args = {"target_free": unmet_target(tmp_path), "docker_socket": str(tmp_path / "docker.sock"),
            "lock_file": str(tmp_path / "prune.lock"), "tiers": ["build_cache", "dangling_images", "unused_images"]}
    result = module_runner("docker_reclaim", args)
    assert result.get("failed") is True, result
    assert result["guard"]["allowed"] is True
    assert "stopped in tier dangling_images, the engine's state is not plausible" in result["msg"]
    assert "the earlier tiers removed: build_cache x1" in result["msg"]
    assert result["changed"] is True
    assert result["removed"] == {"build_cache": ["build cache record cache1"]}
    assert mutations(engine) == [("POST", "/build/prune")]  # the image web:1 was not touched
