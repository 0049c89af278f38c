"""docker_log_info: which log configurations are bounded, as a table; then the module run for real on this engine."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest
from ansible_collections.postmortem.remediation.plugins.module_utils._container_logs import classify
from ansible_collections.postmortem.remediation.plugins.module_utils._docker_api import DockerAPI
from ansible_collections.postmortem.remediation.plugins.modules import docker_log_info as li

CLASSIFY = [
    # (driver, options, bounded, fragment of the reason)
    ("json-file", {}, False, "json-file without max-size"),
    ("json-file", None, False, "json-file without max-size"),
    ("json-file", {"max-file": "5"}, False, "json-file without max-size"),  # max-file alone rotates nothing
    ("json-file", {"max-size": ""}, False, "json-file without max-size"),
    ("json-file", {"max-size": "-1"}, False, "json-file without max-size"),
    ("json-file", {"max-size": "10m"}, True, "max-size=10m, max-file=1"),
    ("json-file", {"max-size": "10m", "max-file": "3"}, True, "max-size=10m, max-file=3"),
    ("local", {}, True, "local driver (default 20m x 5"),
    ("local", None, True, "local driver (default 20m x 5"),
    ("local", {"max-size": "5m"}, True, "local rotated at 5m"),
    ("local", {"max-size": "-1"}, False, "rotation disabled"),
    ("none", {}, True, "logging disabled"),
    ("journald", {}, True, "journald with a bounded local cache"),
    ("gelf", {"cache-disabled": "true"}, True, "gelf, no local cache"),
    ("syslog", {"cache-max-size": "1m"}, True, "syslog with a bounded local cache"),
    ("some-plugin:latest", {}, True, "does not write log files under the data root"),
]


@pytest.mark.parametrize(("driver", "options", "bounded", "reason"), CLASSIFY)
def test_classify_names_what_can_fill_the_disk(driver, options, bounded, reason):
    got_bounded, got_reason = classify(driver, options)
    assert got_bounded is bounded
    assert reason in got_reason


def test_unreachable_engine_fails_naming_the_socket(module_runner, tmp_path):
    socket_path = tmp_path / "docker.sock"
    result = module_runner("docker_log_info", {"docker_host": str(socket_path)})
    assert result["failed"] is True
    assert str(socket_path) in result["msg"] and "Cannot read container log settings" in result["msg"]


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)


def _engine_has_workload_image() -> bool:
    if not os.path.exists("/var/run/docker.sock"):
        return False
    return _docker("image", "inspect", "pmr-workload:latest").returncode == 0


@pytest.fixture
def written_containers():
    """Two stopped containers on the real engine, each having written 20 000 bytes: one unbounded, one bounded."""
    if not _engine_has_workload_image():
        pytest.skip("no Docker engine with pmr-workload:latest on this machine (bash tests/lab/image.sh)")
    tag = uuid.uuid4().hex[:8]
    names = {"unbounded": f"pmr-loginfo-unbounded-{tag}", "bounded": f"pmr-loginfo-bounded-{tag}"}
    log_opts = {"unbounded": [], "bounded": ["--log-opt", "max-size=1m", "--log-opt", "max-file=2"]}
    try:
        for kind, name in names.items():
            run = _docker(
                "run", "--name", name, "--label", "pmr.test=docker_log_info", "--log-driver", "json-file",
                *log_opts[kind], "pmr-workload:latest", "sh", "-c", 'head -c 20000 /dev/zero | tr "\\0" x',
            )
            assert run.returncode == 0, run.stderr
        yield names
    finally:
        _docker("rm", "-f", *names.values())


def test_module_reports_real_containers_with_their_log_bytes(module_runner, written_containers):
    result = module_runner("docker_log_info", {})
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    by_name = {c["name"]: c for c in result["containers"]}
    unbounded = by_name[written_containers["unbounded"]]
    bounded = by_name[written_containers["bounded"]]
    assert unbounded["bounded"] is False and unbounded["state"] == "exited" and unbounded["driver"] == "json-file"
    assert bounded["bounded"] is True and bounded["options"] == {"max-size": "1m", "max-file": "2"}
    # 20 000 bytes of output, each JSON line wrapping it with stream and time: more on disk, never less.
    assert unbounded["log_bytes"] >= 20000 and bounded["log_bytes"] >= 20000
    unbounded_names = [c["name"] for c in result["unbounded"]]
    assert written_containers["unbounded"] in unbounded_names
    assert written_containers["bounded"] not in unbounded_names
    sizes = [c["log_bytes"] for c in result["unbounded"]]
    assert sizes == sorted(sizes, reverse=True)
    assert result["unbounded_log_bytes"] == sum(sizes)
    assert result["daemon_log_driver"]


def test_include_stopped_false_leaves_exited_containers_out(module_runner, written_containers):
    result = module_runner("docker_log_info", {"include_stopped": False})
    names = {c["name"] for c in result["containers"]}
    assert not names & set(written_containers.values())


def test_a_container_removed_after_the_listing_is_skipped(written_containers):
    # The race a busy host produces: listed, then removed before its inspect. Made for real on this engine.
    api = DockerAPI("/var/run/docker.sock")
    listed = api.containers(all=True)
    gone = written_containers["unbounded"]
    assert gone in {name.lstrip("/") for item in listed for name in item["Names"]}
    assert _docker("rm", "-f", gone).returncode == 0
    names = {container["Name"].lstrip("/") for container in li.inspect_all(api, listed)}
    assert gone not in names
    assert written_containers["bounded"] in names
