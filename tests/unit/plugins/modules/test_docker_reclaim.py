"""docker_reclaim run as Ansible runs it: the refusals that need no engine, and the deletion guard's refusal of an
engine whose answers disagree (a small fake engine: that fault cannot be made on a real one). The tiers themselves
run against real engines on lab hosts in Molecule (extensions/molecule/docker_prune_timer)."""

from __future__ import annotations

import os
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
    result = module_runner("docker_reclaim", dict(args, docker_host="/nonexistent/docker.sock"))
    assert result.get("failed") is True, result
    assert "invalid option" in result["msg"]
    assert fragment in result["msg"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({}, "target_free is required unless tiers is [container_logs] alone"),
        ({"tiers": ["build_cache", "container_logs"]}, "target_free is required unless tiers is [container_logs]"),
        ({"target_free": "2G", "containers": ["api-1"]}, "containers selects logs to cut; it needs tiers"),
    ],
)
def test_no_target_and_a_container_filter_are_for_the_log_tier_alone(module_runner, args, fragment):
    result = module_runner("docker_reclaim", dict(args, docker_host="/nonexistent/docker.sock"))
    assert result.get("failed") is True, result
    assert fragment in result["msg"]


def test_the_log_tier_alone_needs_no_target(module_runner, tmp_path):
    # Past the option checks, it fails only on the missing engine.
    result = module_runner("docker_reclaim", {"tiers": ["container_logs"], "containers": ["api-1"],
                                              "docker_host": str(tmp_path / "none.sock")})
    assert result.get("failed") is True
    assert "cannot read the engine's data-root" in result["msg"]


def test_unknown_tier_is_refused_by_the_argument_spec(module_runner):
    result = module_runner("docker_reclaim", {"target_free": "2G", "tiers": ["networks"]})
    assert result.get("failed") is True
    assert "networks" in result["msg"]


def test_unreachable_engine_fails_naming_the_socket_and_touches_nothing(module_runner, tmp_path):
    socket_path = tmp_path / "docker.sock"
    result = module_runner("docker_reclaim", {"target_free": "50%", "docker_host": str(socket_path)})
    assert result.get("failed") is True
    assert str(socket_path) in result["msg"]
    assert "cannot read the engine's data-root" in result["msg"]


def test_check_mode_fails_the_same_way_without_an_engine(module_runner, tmp_path):
    result = module_runner(
        "docker_reclaim", {"target_free": "1G", "docker_host": str(tmp_path / "none.sock")}, check_mode=True
    )
    assert result.get("failed") is True
    assert "cannot reach the Docker engine" in result["msg"]


# --- the shared deletion guard: never plan on an engine whose answers disagree ----------------------------------
# fake_engine (tests/unit/conftest.py) lists containers until /build/prune, then none while it still counts one.
def unmet_target(path: Path) -> str:
    """A target in bytes just above what the filesystem at path has free, so that the module has to plan."""
    stat = os.statvfs(path)
    free, size = stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize
    if free + 256 * 1024**2 >= size:
        pytest.skip("the test filesystem is almost empty: no target can be above its free space")
    return str(free + 256 * 1024**2)


def mutations(engine) -> list[tuple[str, str]]:
    return [(method, path) for method, path in engine.requests if method != "GET"]


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_partial_view_of_the_engine_is_refused_through_the_deletion_guard(module_runner, fake_engine, tmp_path,
                                                                            check_mode):
    fake_engine.containers_listed = []  # no containers listed, one counted: every image would look unused
    args = {"target_free": unmet_target(tmp_path), "docker_host": str(tmp_path / "docker.sock"),
            "lock_file": str(tmp_path / "prune.lock")}
    result = module_runner("docker_reclaim", args, check_mode=check_mode)
    assert result.get("failed") is True, result
    assert result["refused"] is True
    assert result["msg"] == result["reason"]
    assert result["reason"].startswith(f"refused reclaim on {tmp_path}: engine state:")
    assert "the engine listed no containers but counts 1" in result["reason"]
    assert [(c["name"], c["ok"]) for c in result["guard"]["checks"]] == [("engine state", False)]
    assert result["changed"] is False
    assert mutations(fake_engine) == []


def test_a_partial_view_in_a_later_tier_stops_the_run_and_reports_what_was_removed(module_runner, fake_engine,
                                                                                   tmp_path):
    args = {"target_free": unmet_target(tmp_path), "docker_host": str(tmp_path / "docker.sock"),
            "lock_file": str(tmp_path / "prune.lock"), "tiers": ["build_cache", "dangling_images", "unused_images"]}
    result = module_runner("docker_reclaim", args)
    assert result.get("failed") is True, result
    assert result["guard"]["allowed"] is True
    assert "stopped in tier dangling_images, the engine's state is not plausible" in result["msg"]
    assert "removed before the error: build_cache x1" in result["msg"]
    assert result["changed"] is True
    assert result["removed"] == {"build_cache": ["build cache record cache1"]}
    assert mutations(fake_engine) == [("POST", "/build/prune")]  # the image web:1 was not touched


@pytest.mark.parametrize(("option", "value", "fragment"), [
    ("lock_file", "/run/lock/", "lock_file '/run/lock/': the last component (after 'lock') is empty"),
    ("data_root", "/var/lib//docker", "data_root '/var/lib//docker': the component after 'lib' is empty"),
    ("docker_host", "run/docker.sock", "docker_host 'run/docker.sock' is not an absolute path"),
])
def test_paths_follow_the_rules_of_every_destructive_module(module_runner, option, value, fragment):
    """Issue 10.6: one validator for every path a destructive module takes (an empty variable, a stray slash)."""
    result = module_runner("docker_reclaim", {"target_free": "2G", option: value})
    assert result.get("failed") is True
    assert fragment in result["msg"], result["msg"]


def test_a_lock_file_that_cannot_be_created_fails_naming_it_before_any_tier(module_runner, fake_engine, tmp_path):
    # An OSError outside the engine calls was a traceback: no message naming the object and the cause.
    (tmp_path / "not-a-dir").write_text("a file where the lock's directory should be\n")
    args = {"target_free": unmet_target(tmp_path), "docker_host": str(tmp_path / "docker.sock"),
            "lock_file": str(tmp_path / "not-a-dir" / "prune.lock")}
    result = module_runner("docker_reclaim", args)
    assert result.get("failed") is True, result
    assert "cannot take the lock" in result["msg"] and "not-a-dir" in result["msg"], result["msg"]
    assert result["changed"] is False and result["removed"] == {}
    assert mutations(fake_engine) == []


def test_an_unexpected_engine_answer_in_a_later_tier_still_reports_what_was_removed(
        module_runner, fake_engine, tmp_path, monkeypatch):
    # After the build cache tier, the engine answers its image list with something no engine sends (a string per
    # image): an error nothing expects. It used to fail "unexpected ..." without the build cache it had removed.
    answer = fake_engine.answer

    def odd_images(method, path):
        status, body = answer(method, path)
        if path == "/images/json" and ("POST", "/build/prune") in fake_engine.requests:
            return 200, ["sha256:a"]
        if path == "/containers/json":
            return 200, [{"Id": "c1", "Names": ["/web"]}]  # a plausible view: the guard does not refuse
        return status, body

    monkeypatch.setattr(fake_engine, "answer", odd_images)
    args = {"target_free": unmet_target(tmp_path), "docker_host": str(tmp_path / "docker.sock"),
            "lock_file": str(tmp_path / "prune.lock"), "tiers": ["build_cache", "dangling_images", "unused_images"]}
    result = module_runner("docker_reclaim", args)
    assert result.get("failed") is True, result
    assert "stopped in tier dangling_images, an unexpected" in result["msg"], result["msg"]
    assert "removed before the error: build_cache x1" in result["msg"]
    assert result["changed"] is True
    assert result["removed"] == {"build_cache": ["build cache record cache1"]}
