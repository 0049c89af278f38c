"""docker_container_log_limits: the plan as tables (limits, refusals, create spec); then the module run for real on
this engine with the workload image: re-created bounded, check mode, idempotence, refusals, put back on failure."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
from ansible_collections.postmortem.remediation.plugins.module_utils import _container_recreate as rc

DAEMON_BOUNDED = {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "5"}}
DAEMON_UNBOUNDED = {"Type": "json-file", "Config": {}}

LIMITS = [
    # (container LogConfig, daemon LogConfig, max_size, max_file, expected Config or None, fragment of source)
    ({"Type": "json-file", "Config": {}}, DAEMON_BOUNDED, None, None, {"max-size": "10m", "max-file": "5"},
     "daemon"),
    ({"Type": "json-file", "Config": {"max-size": "-1", "tag": "{{.Name}}"}}, DAEMON_BOUNDED, None, None,
     {"max-size": "10m", "max-file": "5", "tag": "{{.Name}}"}, "daemon"),
    ({"Type": "json-file", "Config": {}}, DAEMON_BOUNDED, None, "2", {"max-size": "10m", "max-file": "2"}, "daemon"),
    ({"Type": "json-file", "Config": {}}, DAEMON_UNBOUNDED, "1m", "3", {"max-size": "1m", "max-file": "3"}, "given"),
    ({"Type": "json-file", "Config": {"max-file": "9"}}, DAEMON_UNBOUNDED, "1m", None, {"max-size": "1m"}, "given"),
    ({"Type": "json-file", "Config": {}}, DAEMON_UNBOUNDED, None, None, None, "no max-size"),
    ({"Type": "json-file", "Config": {}}, {"Type": "local", "Config": {}}, None, None, None, "no max-size"),
    ({"Type": "local", "Config": {"max-size": "-1"}}, DAEMON_UNBOUNDED, None, None, {}, "local driver"),
]


@pytest.mark.parametrize(("log_config", "daemon", "max_size", "max_file", "expected", "source"), LIMITS)
def test_bounded_log_config_keeps_other_options_and_takes_limits(log_config, daemon, max_size, max_file, expected,
                                                                 source):
    got, got_source = rc.bounded_log_config(log_config, daemon, max_size, max_file)
    assert source in got_source
    if expected is None:
        assert got is None
    else:
        assert got == {"Type": log_config["Type"], "Config": expected}


def _container(**overrides):
    container = {
        "Id": "abcdef1234567890" * 4, "Name": "/api", "Image": "sha256:img",
        "State": {"Status": "running", "Running": True, "Paused": False, "Restarting": False},
        "Config": {"Hostname": "abcdef123456", "Image": "app:1", "Env": ["A=1"], "Labels": {"team": "x"}},
        "HostConfig": {"NetworkMode": "appnet", "LogConfig": {"Type": "json-file", "Config": {}},
                       "Binds": ["data:/data", "/srv:/srv:ro"], "RestartPolicy": {"Name": "always"}},
        "Mounts": [{"Type": "volume", "Name": "data", "Destination": "/data"},
                   {"Type": "bind", "Source": "/srv", "Destination": "/srv"}],
        "NetworkSettings": {"Networks": {
            "appnet": {"Aliases": ["api", "abcdef123456"], "IPAMConfig": {"IPv4Address": "10.9.0.5"},
                       "DNSNames": ["api"], "NetworkID": "n1", "IPAddress": "10.9.0.5"},
            "backnet": {"Aliases": ["api-back"], "NetworkID": "n2"},
        }},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(container.get(key), dict):
            container[key] = dict(container[key], **value)
        else:
            container[key] = value
    return container


REFUSALS = [
    # (overrides, others, allow_managed, fragment of the reason or None when accepted)
    ({}, [], False, None),
    ({"State": {"Status": "exited", "Running": False}}, [], False, "is exited, not running"),
    ({"State": {"Paused": True}}, [], False, "not running"),
    ({"HostConfig": {"AutoRemove": True}}, [], False, "--rm (AutoRemove)"),
    ({"Config": {"Labels": {"com.docker.compose.project": "shop"}}}, [], False, "managed by Compose"),
    ({"Config": {"Labels": {"com.docker.compose.project": "shop"}}}, [], True, None),
    ({"Config": {"Labels": {"com.docker.swarm.service.id": "s"}}}, [], False, "managed by Swarm"),
    ({"Config": {"Labels": {"io.kubernetes.pod.name": "p"}}}, [], False, "managed by Kubernetes"),
    ({"HostConfig": {"NetworkMode": "container:db"}}, [], False, "shares the network namespace of container db"),
    ({"HostConfig": {"PidMode": "container:db"}}, [], False, "shares the PID namespace"),
    ({}, [{"Id": "o", "Names": ["/sidecar"], "HostConfig": {"NetworkMode": "container:api"}}], False,
     "holds the network namespace of sidecar"),
    ({}, [{"Id": "o", "Names": ["/sidecar"], "HostConfig": {"NetworkMode": "container:" + "abcdef1234567890" * 4}}],
     False, "holds the network namespace of sidecar"),
    ({}, [{"Id": "o", "Names": ["/other"], "HostConfig": {"NetworkMode": "appnet"}}], False, None),
    ({"Mounts": [{"Type": "volume", "Name": "f00" * 21 + "d", "Destination": "/var/lib/app"}]}, [], False,
     "anonymous volumes at /var/lib/app"),
    ({"HostConfig": {"Mounts": [{"Type": "volume", "Source": "m", "Target": "/m"}]},
      "Mounts": [{"Type": "volume", "Name": "m", "Destination": "/m"}]}, [], False, None),
]


REFUSALS += [
    ({"Config": {"Labels": {"postmortem.remediation.keep": "true"}}}, [], False,
     "label postmortem.remediation.keep that protects its log"),
    ({"Config": {"Labels": {"postmortem.remediation.keep": "true"}}}, [], True,
     "label postmortem.remediation.keep that protects its log"),  # allow_managed does not lift it
]


@pytest.mark.parametrize(("overrides", "others", "allow_managed", "reason"), REFUSALS)
def test_refusals_say_why(overrides, others, allow_managed, reason):
    reasons = rc.refusals(_container(**overrides), others, allow_managed, "postmortem.remediation.keep")
    if reason is None:
        assert reasons == []
    else:
        assert any(reason in r and "api" in r for r in reasons), reasons


def test_create_spec_copies_config_and_networks_with_the_new_log_config():
    container = _container()
    log_config = {"Type": "json-file", "Config": {"max-size": "1m"}}
    body, extra = rc.create_spec(container, log_config, "app:1")
    assert "Hostname" not in body  # the old default hostname (its short ID) is not copied
    assert body["Env"] == ["A=1"] and body["Labels"] == {"team": "x"} and body["Image"] == "app:1"
    assert body["HostConfig"]["LogConfig"] == log_config
    assert body["HostConfig"]["Binds"] == ["data:/data", "/srv:/srv:ro"]
    assert body["HostConfig"]["RestartPolicy"] == {"Name": "always"}
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"appnet": {
        "Aliases": ["api"], "IPAMConfig": {"IPv4Address": "10.9.0.5"}}}}
    assert extra == {"backnet": {"Aliases": ["api-back"]}}
    # the record is not modified
    assert container["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {}}
    assert container["Config"]["Hostname"] == "abcdef123456"


def test_create_spec_keeps_a_chosen_hostname_and_the_default_bridge_without_aliases():
    container = _container(Config={"Hostname": "web"}, HostConfig={"NetworkMode": "default"},
                           NetworkSettings={"Networks": {"bridge": {"Aliases": ["x"], "NetworkID": "b"}}})
    body, extra = rc.create_spec(container, {"Type": "json-file", "Config": {}}, "sha256:img")
    assert body["Hostname"] == "web"
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"bridge": {}}}
    assert extra == {}


def test_unreachable_engine_fails_naming_the_container_and_socket(module_runner, tmp_path):
    sock = tmp_path / "docker.sock"
    result = module_runner("docker_container_log_limits", {"name": "api", "docker_host": str(sock)})
    assert result["failed"] is True
    assert "api" in result["msg"] and str(sock) in result["msg"]


# On the real engine.

def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)


def _inspect(name: str) -> dict:
    out = _docker("inspect", name)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


@pytest.fixture
def engine():
    if not os.path.exists("/var/run/docker.sock") or _docker("image", "inspect", "pmr-workload:latest").returncode:
        pytest.skip("no Docker engine with pmr-workload:latest on this machine (bash tests/lab/image.sh)")
    tag = uuid.uuid4().hex[:8]
    made = {"containers": [], "volumes": [], "networks": []}

    def run(name_part, *args, cmd="trap 'exit 0' TERM; while :; do echo flood; sleep 1; done"):
        name = f"pmr-recreate-{name_part}-{tag}"
        made["containers"].append(name)
        out = _docker("run", "-d", "--name", name, "--label", "pmr.test=docker_container_log_limits", *args,
                      "pmr-workload:latest", "sh", "-c", cmd)
        assert out.returncode == 0, out.stderr
        return name

    def volume():
        name = f"pmr-recreate-vol-{tag}"
        assert _docker("volume", "create", name).returncode == 0
        made["volumes"].append(name)
        return name

    def network():
        name = f"pmr-recreate-net-{tag}"
        assert _docker("network", "create", name).returncode == 0
        made["networks"].append(name)
        return name

    yield type("Engine", (), {"run": staticmethod(run), "volume": staticmethod(volume),
                              "network": staticmethod(network), "tag": tag})
    leftovers = [line for line in _docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
                 if tag in line and line.startswith("pmr-recreate-")]
    _docker("rm", "-f", *set(made["containers"] + leftovers))
    for net in made["networks"]:
        _docker("network", "rm", net)
    for vol in made["volumes"]:
        _docker("volume", "rm", vol)


def test_unbounded_container_is_recreated_bounded_keeping_its_configuration(module_runner, engine):
    vol, net = engine.volume(), engine.network()
    name = engine.run("app", "--label", "team=payments", "-e", "GREETING=hello", "--restart", "unless-stopped",
                      "-v", f"{vol}:/data", "--network", net, "--network-alias", "flooder", "--log-driver", "json-file")
    before = _inspect(name)
    assert before["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {}}
    args = {"name": name, "max_size": "1m", "max_file": "2", "settle_seconds": 1}

    planned = module_runner("docker_container_log_limits", args, check_mode=True, diff=True)
    assert planned["changed"] is True and planned["refused"] is False, planned
    assert planned["diff"]["after"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
    assert _inspect(name)["Id"] == before["Id"]  # check mode changed nothing
    assert _inspect(name)["HostConfig"]["LogConfig"] == before["HostConfig"]["LogConfig"]

    done = module_runner("docker_container_log_limits", args, diff=True)
    assert done["changed"] is True and done.get("failed") is not True, done
    after = _inspect(name)
    assert after["Id"] != before["Id"] and after["Id"] == done["new_id"]
    assert after["State"]["Running"] is True
    assert after["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
    assert after["Config"]["Labels"] == before["Config"]["Labels"]
    assert "GREETING=hello" in after["Config"]["Env"]
    assert after["HostConfig"]["RestartPolicy"] == before["HostConfig"]["RestartPolicy"]
    assert after["Config"]["Image"] == "pmr-workload:latest"
    assert [(m["Name"], m["Destination"]) for m in after["Mounts"]] == [(vol, "/data")]
    assert "flooder" in after["NetworkSettings"]["Networks"][net]["Aliases"]
    assert after["Config"]["Cmd"] == before["Config"]["Cmd"]
    # the old container is gone, not left renamed
    names = _docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert not [n for n in names if n.startswith(name + rc.BACKUP_SUFFIX)]

    again = module_runner("docker_container_log_limits", args)
    assert again["changed"] is False and again["bounded_before"] is True, again
    assert _inspect(name)["Id"] == after["Id"]


@pytest.mark.parametrize(("kind", "args", "reason"), [
    ("rm", ["--rm"], "AutoRemove"),
    ("compose", ["--label", "com.docker.compose.project=shop"], "managed by Compose"),
])
def test_refused_container_is_left_running_with_its_reason(module_runner, engine, kind, args, reason):
    name = engine.run(kind, *args)
    before = _inspect(name)
    result = module_runner("docker_container_log_limits", {"name": name, "max_size": "1m"})
    assert result.get("failed") is not True and result["changed"] is False, result
    assert result["refused"] is True and reason in result["msg"] and name in result["msg"]
    after = _inspect(name)
    assert after["Id"] == before["Id"] and after["State"]["Running"] is True


def test_without_max_size_the_daemon_limits_are_used_or_the_run_is_refused(module_runner, engine):
    name = engine.run("daemon")
    daemon = json.loads(_docker("info", "--format", "{{json .}}").stdout)
    result = module_runner("docker_container_log_limits", {"name": name}, check_mode=True)
    assert result.get("failed") is not True, result
    probe = _inspect(name)
    assert probe["State"]["Running"] is True
    assert not [n for n in _docker("ps", "-a", "--format", "{{.Names}}").stdout.split() if "pmr-logprobe" in n
                and engine.tag in n]  # the probe is removed
    if daemon["LoggingDriver"] == "json-file" and result["refused"]:
        assert "no max-size" in result["msg"]
    else:
        assert result["changed"] is True and result["limits_from"] == "the daemon's current log-opts"


def test_a_copy_that_does_not_run_puts_the_old_container_back(module_runner, engine):
    # A workload that only starts where it started first (its hostname recorded in its volume): the copy, with a
    # new hostname, exits at once. The old one must get its name back and run again.
    vol = engine.volume()
    cmd = ("h=$(cat /etc/hostname); if [ -e /v/host ] && [ \"$(cat /v/host)\" != \"$h\" ]; then exit 3; fi; "
           "echo $h > /v/host; trap 'exit 0' TERM; while :; do echo flood; sleep 1; done")
    name = engine.run("fails", "-v", f"{vol}:/v", cmd=cmd)
    before = _inspect(name)
    result = module_runner("docker_container_log_limits", {"name": name, "max_size": "1m", "settle_seconds": 2})
    assert result["failed"] is True, result
    assert name in result["msg"] and "start the new" in result["msg"] and "exit code 3" in result["msg"]
    assert "old container has its name back" in result["msg"] and "runs again" in result["msg"]
    after = _inspect(name)
    assert after["Id"] == before["Id"] and after["State"]["Running"] is True
    names = _docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert not [n for n in names if n.startswith(name + rc.BACKUP_SUFFIX)]
