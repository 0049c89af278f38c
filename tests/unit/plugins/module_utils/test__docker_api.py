"""The Docker API options, declared once: docker_host (a Unix socket as a URL or a path) and timeout."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "build" / "collections"))
api = importlib.import_module("ansible_collections.postmortem.remediation.plugins.module_utils._docker_api")

SOCKETS = [
    # (docker_host, the socket path the client connects to)
    ("unix:///var/run/docker.sock", "/var/run/docker.sock"),
    ("/var/run/docker.sock", "/var/run/docker.sock"),
    ("unix:///run/user/1000/docker.sock", "/run/user/1000/docker.sock"),
]
REFUSED = [
    # (docker_host, words the message must contain)
    ("tcp://127.0.0.1:2375", "only a Unix socket"),
    ("ssh://root@host", "only a Unix socket"),
    ("run/docker.sock", "docker_host 'run/docker.sock' is not an absolute path"),
    ("unix://run/docker.sock", "is not an absolute path"),
    ("", "is not an absolute path"),
]


@pytest.mark.parametrize(("docker_host", "path"), SOCKETS)
def test_socket_path_takes_a_unix_url_or_a_path(docker_host: str, path: str) -> None:
    assert api.socket_path(docker_host) == path


@pytest.mark.parametrize(("docker_host", "words"), REFUSED)
def test_socket_path_refuses_what_is_not_a_unix_socket(docker_host: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        api.socket_path(docker_host)


def test_the_spec_is_one_declaration_with_the_module_s_own_timeout() -> None:
    assert api.docker_api_argument_spec() == {
        "docker_host": {"type": "str", "default": "unix:///var/run/docker.sock", "aliases": ["docker_socket"]},
        "timeout": {"type": "int", "default": 60},
    }
    assert api.docker_api_argument_spec(timeout=300)["timeout"] == {"type": "int", "default": 300}
    first, second = api.docker_api_argument_spec(), api.docker_api_argument_spec()
    first["docker_host"]["aliases"].append("x")
    assert second["docker_host"]["aliases"] == ["docker_socket"]  # a fresh dict per module: no shared mutation
