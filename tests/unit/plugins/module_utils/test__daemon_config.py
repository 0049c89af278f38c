"""The daemon.json rules, as a specification."""

from __future__ import annotations

import pytest
from ansible_collections.postmortem.remediation.plugins.module_utils import _daemon_config as dc

MERGE = [
    # (current, settings, remove, exclusive, expected)
    ({}, {"log-driver": "local"}, [], False, {"log-driver": "local"}),
    (
        {"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}},
        {"log-driver": "local"},
        [],
        False,
        {"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}, "log-driver": "local"},
    ),
    (
        {"log-opts": {"max-size": "10m", "labels": "team"}},
        {"log-opts": {"max-size": "50m", "max-file": "3"}},
        [],
        False,
        {"log-opts": {"max-size": "50m", "labels": "team", "max-file": "3"}},
    ),
    ({"dns": ["1.1.1.1"]}, {"dns": ["9.9.9.9"]}, [], False, {"dns": ["9.9.9.9"]}),
    ({"debug": True, "log-driver": "json-file"}, {"log-driver": "local"}, [], True, {"log-driver": "local"}),
    ({"debug": True, "log-level": "warn"}, {}, ["debug"], False, {"log-level": "warn"}),
    ({"log-opts": {"max-size": "1m", "compress": "true"}}, {}, ["log-opts.compress"], False,
     {"log-opts": {"max-size": "1m"}}),
    ({"debug": True}, {}, ["no-such-key", "log-opts.max-size"], False, {"debug": True}),
]


@pytest.mark.parametrize(("current", "settings", "remove", "exclusive", "expected"), MERGE)
def test_plan_merges_removes_and_owns(current, settings, remove, exclusive, expected):
    assert dc.plan(current, settings, remove, exclusive) == expected


def test_plan_does_not_mutate_its_inputs():
    current = {"log-opts": {"max-size": "1m"}}
    settings = {"log-opts": {"max-file": 2}}
    dc.plan(current, settings)
    assert current == {"log-opts": {"max-size": "1m"}}
    assert settings == {"log-opts": {"max-file": 2}}


COERCE = [
    ({"log-opts": {"max-file": 3}}, {"log-opts": {"max-file": "3"}}),
    ({"log-opts": {"compress": True}}, {"log-opts": {"compress": "true"}}),
    ({"log-opts": {"compress": False, "max-size": "10m"}}, {"log-opts": {"compress": "false", "max-size": "10m"}}),
    # Only log-opts is a string map; booleans elsewhere stay booleans (dockerd wants "live-restore": true).
    ({"live-restore": True, "max-concurrent-downloads": 3}, {"live-restore": True, "max-concurrent-downloads": 3}),
]


@pytest.mark.parametrize(("given", "written"), COERCE)
def test_coerce_writes_log_opts_as_strings(given, written):
    assert dc.coerce(given) == written


LAB_UNIT = "/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock $DOCKER_OPTS"

VALIDATE = [
    # (config, allow_unknown, exec_start, fragment of the expected reason or None)
    ({"log-driver": "local"}, False, "", None),
    ({"log-driver": "local", "log-rotation": "yes"}, False, "", "unknown top-level key(s) log-rotation"),
    ({"log-rotation": "yes"}, True, "", None),
    ({"log-opts": "max-size=10m"}, False, "", "log-opts must be a mapping"),
    ({"hosts": ["unix:///var/run/docker.sock"]}, False, "/usr/sbin/dockerd -H fd:// --containerd=/run/c.sock",
     "-H fd://"),
    ({"hosts": ["unix:///var/run/docker.sock"]}, False, "/usr/sbin/dockerd --containerd=/run/c.sock", None),
    ({"hosts": ["tcp://127.0.0.1:2375"]}, False, "/usr/sbin/dockerd --host=fd://", "-H fd://"),
    ({"data-root": "var/lib/docker"}, False, "", "data-root must be an absolute path"),
    # Any setting given both as a flag in the unit and in the file stops dockerd (checked on the lab's real unit).
    ({"containerd": "/run/containerd/containerd.sock"}, False, LAB_UNIT, "'containerd' set in daemon.json"),
    ({"containerd": "/run/containerd/containerd.sock"}, False, LAB_UNIT, "passes --containerd in ExecStart"),
    ({"log-driver": "local"}, False, "/usr/bin/dockerd --log-driver=journald", "passes --log-driver in"),
    ({"log-opts": {"max-size": "1m"}}, False, "/usr/bin/dockerd --log-opt max-size=5m", "'log-opts' set"),
    ({"debug": True, "log-level": "warn"}, False, "/usr/bin/dockerd -D -l info", "passes -D, -l in"),
    ({"labels": ["a=b"]}, False, "/usr/bin/dockerd --label=c=d", "'labels' set"),
    ({"storage-driver": "vfs"}, False, "/usr/bin/dockerd -s overlay2", "passes -s in"),
    ({"runtimes": {"x": {"path": "/x"}}}, False, "/usr/bin/dockerd --add-runtime y=/y", None),  # dockerd merges
    ({"log-driver": "local"}, False, LAB_UNIT, None),
    ({"log-driver": "local"}, False, "/usr/bin/dockerd $DOCKER_OPTS --containerd /c.sock", None),
    ({"log-level": "info"}, False, "/usr/sbin/dockerd -H fd:// --log-level-x=1 -", None),
]


# Keys a real dockerd 20.10 (the lab's) accepts in daemon.json: refusing one would block a valid configuration.
DOCKERD_20_10_KEYS = [
    "cri-containerd", "network-control-plane-mtu", "network-diagnostic-port", "node-generic-resources",
    "containerd-namespace", "default-cgroupns-mode", "oom-score-adjust", "swarm-default-advertise-addr",
]


@pytest.mark.parametrize("key", DOCKERD_20_10_KEYS)
def test_keys_dockerd_accepts_are_not_refused(key):
    assert dc.validate({key: None}) == []


@pytest.mark.parametrize(("config", "allow_unknown", "exec_start", "reason"), VALIDATE)
def test_validate_refuses_what_dockerd_refuses(config, allow_unknown, exec_start, reason):
    problems = dc.validate(config, allow_unknown, exec_start)
    if reason is None:
        assert problems == []
    else:
        assert any(reason in problem for problem in problems), problems


PARSE = [
    ("", {}),
    ("  \n", {}),
    ('{"debug": true}', {"debug": True}),
]


@pytest.mark.parametrize(("text", "expected"), PARSE)
def test_parse_existing_accepts_json_objects_and_empty_files(text, expected):
    assert dc.parse_existing(text, "/etc/docker/daemon.json") == expected


@pytest.mark.parametrize("text", ['{"debug": true,}', "[1, 2]", "log-driver: local", '"just a string"'])
def test_parse_existing_refuses_what_it_cannot_merge_into(text):
    with pytest.raises(dc.ConfigError, match=r"/etc/docker/daemon\.json"):
        dc.parse_existing(text, "/etc/docker/daemon.json")


RESTART = [
    (["log-opts"], True),
    (["storage-driver"], True),
    (["debug"], False),
    (["live-restore", "registry-mirrors"], False),
    (["debug", "log-driver"], True),
]


@pytest.mark.parametrize(("keys", "restart"), RESTART)
def test_reload_is_enough_only_for_reloadable_keys(keys, restart):
    assert dc.needs_restart(keys) is restart


def test_changed_keys_sees_additions_removals_and_type_changes():
    before = {"debug": True, "log-opts": {"max-file": 3}, "gone": 1}
    after = {"debug": True, "log-opts": {"max-file": "3"}, "new": 2}
    assert dc.changed_keys(before, after) == ["gone", "log-opts", "new"]


def test_render_is_stable():
    assert dc.render({"b": 1, "a": {"d": "x", "c": "y"}}) == dc.render({"a": {"c": "y", "d": "x"}, "b": 1})
    assert dc.render({}).endswith("\n")


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"max-concurrent-downloads": float("nan")}, "max-concurrent-downloads: NaN and Infinity"),
        ({"default-ulimits": {"nofile": {"Hard": float("inf")}}}, "default-ulimits.nofile.Hard: NaN"),
        ({"log-opts": {"max-file": 3.0}}, "log-opts.max-file is a number with a fraction (3.0)"),
        ({"log-opts": {"labels": ["a"]}}, "log-opts.labels is a list"),
    ],
)
def test_validate_refuses_values_json_or_dockerd_cannot_hold(config, fragment):
    assert any(fragment in problem for problem in dc.validate(config)), dc.validate(config)


def test_null_removes_a_key_when_merging_and_when_owning_the_file():
    current = {"debug": True, "log-opts": {"max-size": "1m", "compress": "true"}}
    assert dc.plan(current, {"debug": None, "log-opts": {"compress": None}}) == {"log-opts": {"max-size": "1m"}}
    assert dc.plan(current, {"log-opts": {"max-size": "5m", "compress": None}}, exclusive=True) == {
        "log-opts": {"max-size": "5m"}}
    assert dc.render({"a": 1}) == '{\n  "a": 1\n}\n'
