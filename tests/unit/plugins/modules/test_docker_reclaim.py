"""docker_reclaim run as Ansible runs it: the refusals that need no engine (the tiers run on lab hosts in Molecule)."""

from __future__ import annotations

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
