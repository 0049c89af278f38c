"""_daemon_state: what the running dockerd uses against daemon.json, and what a restart does to containers."""

from __future__ import annotations

import pytest
from ansible_collections.postmortem.remediation.plugins.module_utils import _daemon_state as ds

INFO = {
    "LoggingDriver": "json-file",
    "Driver": "overlay2",
    "LiveRestoreEnabled": False,
    "Debug": False,
    "DockerRootDir": "/var/lib/docker",
    "Labels": ["owner=another-tool"],
    "DefaultRuntime": "runc",
    "Runtimes": {"runc": {"path": "runc"}, "io.containerd.runc.v2": {"path": "runc"}},
    "ExperimentalBuild": False,
    "RegistryConfig": {
        "Mirrors": ["https://mirror.example/"],
        "InsecureRegistryCIDRs": ["127.0.0.0/8"],
        "IndexConfigs": {"docker.io": {"Secure": True}, "registry.lan:5000": {"Secure": False}},
    },
}

SAME = [
    # (key, in daemon.json, what the daemon reports, same?)
    ("log-driver", "json-file", "json-file", True),
    ("log-driver", "local", "json-file", False),
    ("live-restore", True, False, False),
    ("live-restore", False, None, True),  # absent from the reload log: the default
    ("debug", "yes", False, False),  # a string where dockerd wants a bool
    ("max-concurrent-downloads", 4, 4, True),
    ("max-concurrent-downloads", -1, 3, False),
    ("max-concurrent-downloads", 3, None, False),
    ("registry-mirrors", ["https://mirror.example"], ["https://mirror.example/"], True),
    ("labels", ["a=1", "b=2"], ["b=2", "a=1"], True),
    ("labels", ["a=1"], ["a=1", "b=2"], False),
    ("insecure-registries", ["registry.lan:5000"], ["127.0.0.0/8", "registry.lan:5000"], True),
    ("runtimes", {"runc": {"path": "runc"}}, INFO["Runtimes"], True),
    ("runtimes", {"crun": {"path": "/usr/bin/crun"}}, INFO["Runtimes"], False),
]


@pytest.mark.parametrize(("key", "wanted", "actual", "expected"), SAME)
def test_same_compares_as_dockerd_reports(key, wanted, actual, expected):
    assert ds.same(key, wanted, actual) is expected


def test_info_reports_the_registry_keys_as_daemon_json_names_them():
    values = ds.daemon_values(INFO)
    assert values["insecure-registries"] == ["127.0.0.0/8", "registry.lan:5000"]
    assert values["registry-mirrors"] == ["https://mirror.example/"]
    assert values["storage-driver"] == "overlay2"


RELOAD_OK = [
    'time="t" level=info msg="Got signal to reload configuration, reloading from: /etc/docker/daemon.json"',
    'time="t" level=info msg="Reloaded configuration: {\\"live-restore\\":true,\\"max-concurrent-downloads\\":4,'
    '\\"log-driver\\":\\"json-file\\"}"',
]
RELOAD_REFUSED = [
    'time="t" level=info msg="Got signal to reload configuration, reloading from: /etc/docker/daemon.json"',
    'time="t" level=error msg="file configuration validation failed: invalid max concurrent downloads: -1"',
]


def test_reload_outcome_reads_the_configuration_dockerd_applied():
    config, errors = ds.reload_outcome(RELOAD_OK)
    assert config == {"live-restore": True, "max-concurrent-downloads": 4, "log-driver": "json-file"}
    assert errors == []


def test_reload_outcome_reads_the_refusal_and_only_for_the_last_signal():
    config, errors = ds.reload_outcome(RELOAD_OK + RELOAD_REFUSED)
    assert config is None
    assert errors == ["file configuration validation failed: invalid max concurrent downloads: -1"]
    assert ds.reload_outcome(RELOAD_REFUSED + RELOAD_OK) == (
        {"live-restore": True, "max-concurrent-downloads": 4, "log-driver": "json-file"}, [])


def test_reload_outcome_reads_a_config_field_of_newer_engines():
    line = 'time="t" level=info msg="Reloaded configuration" config="{\\"debug\\":true}"'
    assert ds.reload_outcome([line]) == ({"debug": True}, [])


def test_a_refused_reload_of_a_key_info_does_not_report_fails_naming_the_key():
    file_config = {"max-concurrent-downloads": -1, "log-driver": "json-file"}
    reloaded = {"max-concurrent-downloads": 3, "log-driver": "json-file"}
    checks = ds.key_checks(file_config, ["max-concurrent-downloads", "log-driver"], INFO, reloaded)
    assert [(c["key"], c["ok"]) for c in checks] == [("max-concurrent-downloads", False), ("log-driver", True)]
    assert ds.describe_mismatch(checks[0]).startswith("max-concurrent-downloads: daemon.json says -1, dockerd runs 3")


def test_keys_nothing_reports_are_unverified_unless_the_daemon_started_after_the_write():
    file_config = {"log-opts": {"max-size": "1m"}}
    assert ds.key_checks(file_config, ["log-opts"], INFO)[0]["ok"] is None
    assert ds.key_checks(file_config, ["log-opts"], INFO, read_at_start=True)[0]["ok"] is True


PENDING = [
    # (file, mtime, started_at, covered by the record, kind, fragment of a reason)
    ({"log-driver": "json-file"}, 100.0, 200.0, False, "", None),
    ({"log-driver": "local"}, 100.0, 200.0, False, "restart", "log-driver: daemon.json says \"local\""),
    ({"live-restore": True}, 100.0, 200.0, False, "reload", "live-restore"),
    # An interrupted run: log-opts, which /info does not report, written after the daemon started.
    ({"log-opts": {"max-size": "1m"}}, 300.0, 200.0, False, "restart", "written after dockerd started"),
    # The same file applied by a verified reload: the record covers it.
    ({"log-opts": {"max-size": "1m"}}, 300.0, 200.0, True, "", None),
]


@pytest.mark.parametrize(("file_config", "mtime", "started", "covered", "kind", "reason"), PENDING)
def test_pending_apply_finds_what_the_daemon_never_read(file_config, mtime, started, covered, kind, reason):
    got_kind, reasons = ds.pending_apply(file_config, INFO, mtime, started, covered)
    assert got_kind == kind
    assert (reason is None and reasons == []) or any(reason in r for r in reasons)


def _c(name, policy):
    return dict(id=name * 4, name=name, restart_policy=policy, running=True, pid=1, driver="overlay2")


RUNNING = [_c("a", "no"), _c("b", "always"), _c("c", "unless-stopped"), _c("d", "on-failure")]


def test_restart_plan_without_live_restore_stops_what_no_policy_starts_again():
    stop, may, back = ds.restart_plan(RUNNING, live_restore=False, driver_change=False)
    assert [c["name"] for c in stop] == ["a"]
    assert [c["name"] for c in may] == ["d"]
    assert [c["name"] for c in back] == ["b", "c"]


def test_restart_plan_with_live_restore_keeps_them_all():
    stop, may, back = ds.restart_plan(RUNNING, live_restore=True, driver_change=False)
    assert (stop, may, [c["name"] for c in back]) == ([], [], ["a", "b", "c", "d"])


@pytest.mark.parametrize("live_restore", [False, True])
def test_a_driver_switch_stops_every_running_container_whatever_its_policy(live_restore):
    stop, may, back = ds.restart_plan(RUNNING, live_restore=live_restore, driver_change=True)
    assert [c["name"] for c in stop] == ["a", "b", "c", "d"] and may == [] and back == []
    assert ("outside Docker's control" in stop[0]["why"]) is live_restore


def test_after_restart_tells_came_back_stopped_and_orphaned_apart():
    now = {"bbbb": dict(RUNNING[1]), "aaaa": dict(RUNNING[0], running=False)}
    came_back, stopped, orphans = ds.after_restart(RUNNING[:3], now, leftover_ids={"cccc"})
    assert [c["name"] for c in came_back] == ["b"]
    assert [(c["name"], c["visible"]) for c in stopped] == [("a", True)]
    # Not listed by docker any more (another driver) while its shim still runs: orphaned.
    assert [(c["name"], c["visible"]) for c in orphans] == [("c", False)]


def _plan(changed_keys, restart_needed, config):
    return dict(changed_keys=changed_keys, restart_needed=restart_needed,
                reload_enough=bool(changed_keys) and not restart_needed, config=config)


LOGS = {"log-driver": "local", "log-opts": {"max-size": "10m"}}
DECISIONS = [
    # (plan, pending, live-restore now, action, check_keys, write, live_restore_first)
    (_plan([], False, LOGS), "", False, "", [], False, False),
    (_plan(["log-opts"], True, LOGS), "", False, "restart", ["log-opts"], True, False),
    (_plan(["debug"], False, dict(LOGS, debug=True)), "", False, "reload", ["debug"], True, False),
    # an earlier run wrote the file and never applied it: every key of the file is checked afterwards
    (_plan([], False, LOGS), "restart", False, "restart", ["log-driver", "log-opts"], False, False),
    (_plan([], False, dict(LOGS, debug=True)), "reload", False, "reload", ["debug", "log-driver", "log-opts"], False,
     False),
    (_plan(["debug"], False, dict(LOGS, debug=True)), "restart", False, "restart", ["debug", "log-driver", "log-opts"],
     True, False),
    # live-restore turned on with a restart: reloaded first, unless the daemon already runs it
    (_plan(["live-restore", "log-opts"], True, dict(LOGS, **{"live-restore": True})), "", False, "restart",
     ["live-restore", "log-opts"], True, True),
    (_plan(["log-opts"], True, dict(LOGS, **{"live-restore": True})), "", True, "restart", ["log-opts"], True, False),
    # a reload applies live-restore by itself; a string "true" is not the boolean dockerd needs
    (_plan(["live-restore"], False, dict(LOGS, **{"live-restore": True})), "", False, "reload", ["live-restore"], True,
     False),
    (_plan(["log-opts"], True, dict(LOGS, **{"live-restore": "true"})), "", False, "restart", ["log-opts"], True,
     False),
]


@pytest.mark.parametrize(("plan", "pending", "live_restore_now", "action", "check_keys", "write", "first"), DECISIONS)
def test_apply_decision_restarts_reloads_or_leaves_alone(plan, pending, live_restore_now, action, check_keys, write,
                                                         first):
    decision = ds.apply_decision(plan, pending, live_restore_now)
    assert decision == dict(action=action, check_keys=check_keys, write=write, live_restore_first=first)
