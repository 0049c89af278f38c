"""docker_daemon_state with settings and log_report: the one read of docker_log_rotation says what the three modules
it replaces said (docker_daemon_config in check mode, docker_daemon_state, docker_log_info), run for real against
files in a temporary directory and a small Engine API on a Unix socket."""

from __future__ import annotations

import json
import threading

import pytest
from unit_support import FakeEngine

SERVICE = "pmr-logread-no-such-unit"  # nothing of the machine's own docker unit is read


def _container(cid: str, name: str, driver: str, options: dict, policy: str, log_path: str) -> dict:
    return {"Id": cid, "Name": "/" + name, "Driver": "overlay2", "LogPath": log_path,
            "State": {"Status": "running", "Running": True, "Pid": 4242},
            "HostConfig": {"LogConfig": {"Type": driver, "Config": options}, "RestartPolicy": {"Name": policy}}}


class LogEngine(FakeEngine):
    """Two running containers: 'chatty' logs without limits and has no restart policy, 'bounded' has both."""

    def __init__(self, path, data_root) -> None:
        super().__init__(path, data_root)
        chatty_log = data_root / "chatty-json.log"
        chatty_log.write_bytes(b"x" * 3000)
        (data_root / "chatty-json.log.1").write_bytes(b"x" * 1000)
        self.inspected = {
            "aaa": _container("aaa", "bounded", "json-file", {"max-size": "10m"}, "always", str(data_root / "b.log")),
            "bbb": _container("bbb", "chatty", "json-file", {}, "no", str(chatty_log)),
        }
        self.info = {"DockerRootDir": str(data_root), "LoggingDriver": "local", "Driver": "overlay2",
                     "LiveRestoreEnabled": False}

    def answer(self, method: str, path: str) -> tuple[int, object]:
        self.requests.append((method, path))
        if path == "/info":
            return 200, self.info
        if path == "/containers/json":
            return 200, [{"Id": cid} for cid in self.inspected]
        cid = path.split("/")[2] if path.startswith("/containers/") else ""
        if cid in self.inspected:
            return 200, self.inspected[cid]
        return 404, {"message": f"no such object {path}"}


@pytest.fixture
def engine(tmp_path):
    server = LogEngine(tmp_path / "docker.sock", tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _state(module_runner, engine, daemon_json, check_mode=False, **args):
    return module_runner("docker_daemon_state", dict(
        daemon_config=str(daemon_json), record_file=str(daemon_json.parent / "record.json"), service_name=SERVICE,
        docker_host=f"unix://{engine.server_address}", **args), check_mode=check_mode)


LIMITS = {"log-driver": "local", "log-opts": {"max-size": "10m", "max-file": 3}}
PLANS = [
    # (daemon.json before, settings): the plan must be docker_daemon_config's in check mode, key for key
    (None, LIMITS),
    ({"log-driver": "local", "log-opts": {"max-size": "10m", "max-file": "3"}}, LIMITS),
    ({"log-driver": "local", "log-opts": {"max-size": "20m", "max-file": "3"}, "labels": ["owner=x"]}, LIMITS),
    ({"log-driver": "local"}, {"debug": True}),
    ({"log-driver": "local"}, dict(LIMITS, **{"live-restore": True})),
    ({"log-driver": "local", "log-opts": {"max-size": "10m", "compress": "true"}},
     {"log-opts": {"compress": None}}),
]


@pytest.mark.parametrize(("before", "settings"), PLANS)
def test_the_plan_is_docker_daemon_configs_in_check_mode(module_runner, engine, tmp_path, before, settings):
    daemon_json = tmp_path / "daemon.json"
    if before is not None:
        daemon_json.write_text(json.dumps(before))
    config = module_runner("docker_daemon_config", dict(path=str(daemon_json), settings=settings,
                                                        service_name=SERVICE), check_mode=True)
    state = _state(module_runner, engine, daemon_json, settings=settings)
    assert not state.get("failed"), state
    assert state["plan"] == {key: config[key] for key in ("changed_keys", "restart_needed", "reload_enough", "config")}
    assert state["decision"]["write"] is bool(config["changed_keys"])
    assert state["changed"] is False
    assert (daemon_json.read_text() if before is not None else None) == (
        json.dumps(before) if before is not None else None), "the plan wrote the file"


def test_a_file_that_already_says_it_needs_nothing(module_runner, engine, tmp_path):
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"log-driver": "local", "log-opts": {"max-size": "10m", "max-file": "3"}}))
    state = _state(module_runner, engine, daemon_json, settings=LIMITS)
    assert state["pending"] == ""
    assert state["decision"] == dict(action="", check_keys=[], write=False, live_restore_first=False)


def test_a_file_the_daemon_does_not_run_yet_is_applied_with_every_key_checked(module_runner, engine, tmp_path):
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}}))
    state = _state(module_runner, engine, daemon_json, settings={"log-driver": "json-file"})
    assert state["pending"] == "restart" and "log-driver" in state["pending_reasons"][0]
    assert state["decision"] == dict(action="restart", check_keys=["log-driver", "log-opts"], write=False,
                                     live_restore_first=False)


def test_a_restart_names_the_container_no_policy_starts_again(module_runner, engine, tmp_path):
    state = _state(module_runner, engine, tmp_path / "daemon.json", settings=LIMITS)
    assert state["decision"]["action"] == "restart" and state["decision"]["live_restore_first"] is False
    assert [c["name"] for c in state["will_stop"]] == ["chatty"]
    assert [c["name"] for c in state["will_return"]] == ["bounded"]


def test_live_restore_turned_on_by_the_plan_is_reloaded_first_and_stops_nothing(module_runner, engine, tmp_path):
    state = _state(module_runner, engine, tmp_path / "daemon.json", settings=dict(LIMITS, **{"live-restore": True}))
    assert state["decision"]["action"] == "restart" and state["decision"]["live_restore_first"] is True
    assert state["will_stop"] == []
    assert sorted(c["name"] for c in state["will_return"]) == ["bounded", "chatty"]


def test_an_explicit_live_restore_wins_over_the_plan(module_runner, engine, tmp_path):
    state = _state(module_runner, engine, tmp_path / "daemon.json", settings=dict(LIMITS, **{"live-restore": True}),
                   live_restore=False)
    assert [c["name"] for c in state["will_stop"]] == ["chatty"]


def test_the_log_report_is_docker_log_infos(module_runner, engine, tmp_path):
    state = _state(module_runner, engine, tmp_path / "daemon.json", settings=LIMITS, log_report=True)
    info = module_runner("docker_log_info", dict(docker_host=f"unix://{engine.server_address}"))
    assert not info.get("failed"), info
    assert state["log_report"] == {key: info[key] for key in
                                   ("daemon_log_driver", "containers", "unbounded", "unbounded_log_bytes")}
    assert [c["name"] for c in state["log_report"]["unbounded"]] == ["chatty"]
    assert state["log_report"]["unbounded_log_bytes"] == 4000


def test_without_log_report_or_settings_the_result_is_as_before(module_runner, engine, tmp_path):
    state = _state(module_runner, engine, tmp_path / "daemon.json")
    assert not state.get("failed"), state
    assert "plan" not in state and "decision" not in state and "log_report" not in state


def test_an_unreachable_engine_still_plans_and_leaves_the_report_to_docker_log_info(module_runner, tmp_path):
    daemon_json = tmp_path / "daemon.json"
    state = module_runner("docker_daemon_state", dict(
        daemon_config=str(daemon_json), record_file=str(tmp_path / "record.json"), service_name=SERVICE,
        docker_host="unix://%s" % (tmp_path / "no.sock"), settings=LIMITS, log_report=True))
    assert state["daemon"]["reachable"] is False
    assert state["decision"]["action"] == "restart" and state["decision"]["write"] is True
    assert "log_report" not in state


REFUSALS = [
    # (daemon.json text or a dangling link, settings, fragment of the message both modules give)
    ('{"log-driver": ', LIMITS, "is not valid JSON"),
    ('{"debug": NaN}', LIMITS, "is not valid JSON"),
    ('["log-driver"]', LIMITS, "not an object"),
    ("{}", {"log-rotate": "daily"}, "unknown top-level key(s) log-rotate"),
    ("{}", {"log-opts": {"max-size": 1.5}}, "log-opts.max-size is a number with a fraction"),
    ("->missing", LIMITS, "Refusing to write"),
]


@pytest.mark.parametrize(("text", "settings", "fragment"), REFUSALS)
def test_a_refused_plan_is_refused_with_docker_daemon_configs_message(module_runner, engine, tmp_path, text,
                                                                      settings, fragment):
    daemon_json = tmp_path / "daemon.json"
    if text == "->missing":
        daemon_json.symlink_to(tmp_path / "missing.json")
    else:
        daemon_json.write_text(text)
    config = module_runner("docker_daemon_config", dict(path=str(daemon_json), settings=settings,
                                                        service_name=SERVICE), check_mode=True)
    state = _state(module_runner, engine, daemon_json, settings=settings)
    assert config["failed"] is True and state["failed"] is True
    assert fragment in state["msg"]
    assert state["msg"] == config["msg"]


# -- timer_bundles: the timer roles' bundles installed in the same call as the read (one module call per host) ------
def _bundle(tmp_path, name: str, text: str = "print(1)\n", **overrides) -> dict:
    return dict(dict(name=name, directories=[str(tmp_path / name)],
                     files=[dict(dest=str(tmp_path / name / "script.py"), content=text)],
                     units=[dict(name=f"pmr-{name}.service",
                                 content="[Unit]\nDescription=t\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n")],
                     unit_dir=str(tmp_path / "units"), daemon_reload=False, verify_units=False), **overrides)


def test_timer_bundles_are_installed_then_read_and_a_second_call_changes_nothing(module_runner, engine, tmp_path):
    daemon_json = tmp_path / "daemon.json"
    bundles = [_bundle(tmp_path, "prune"), _bundle(tmp_path, "signals", "print(2)\n")]
    first = _state(module_runner, engine, daemon_json, settings=LIMITS, timer_bundles=bundles)
    assert not first.get("failed"), first
    assert first["changed"] is True
    assert [b["name"] for b in first["timer_bundles"]] == ["prune", "signals"]
    assert first["timer_bundles"][1]["changed_files"] == [str(tmp_path / "signals" / "script.py")]
    assert (tmp_path / "signals" / "script.py").read_text() == "print(2)\n"
    assert (tmp_path / "units" / "pmr-prune.service").exists()
    assert first["decision"]["action"] == "restart", "the read after the bundles is the read without them"
    # The text of the files is neither logged nor echoed back: its size and digest are.
    echoed = json.dumps(first["invocation"])
    assert "print(2)" not in echoed and "sha256" in echoed, echoed
    second = _state(module_runner, engine, daemon_json, settings=LIMITS, timer_bundles=bundles)
    assert second["changed"] is False, second["timer_bundles"]
    assert all(not b["changed"] and b["changed_files"] == [] for b in second["timer_bundles"])
    alone = _state(module_runner, engine, daemon_json, settings=LIMITS)
    assert alone["changed"] is False and alone["timer_bundles"] == []


def test_timer_bundles_in_check_mode_plan_and_diff_and_write_nothing(module_runner, engine, tmp_path):
    state = module_runner("docker_daemon_state", dict(
        daemon_config=str(tmp_path / "daemon.json"), record_file=str(tmp_path / "record.json"), service_name=SERVICE,
        docker_host=f"unix://{engine.server_address}", timer_bundles=[_bundle(tmp_path, "prune")]),
        check_mode=True, diff=True)
    assert state["changed"] is True and str(tmp_path / "prune") in state["timer_bundles"][0]["created_directories"]
    assert any(d.get("after") == "print(1)\n" for d in state["diff"]), state["diff"]
    assert not (tmp_path / "prune").exists()


def test_a_bad_timer_bundle_is_refused_before_any_bundle_is_installed(module_runner, engine, tmp_path):
    bad = _bundle(tmp_path, "signals", files=[dict(content="x")])  # no dest
    state = _state(module_runner, engine, tmp_path / "daemon.json", timer_bundles=[_bundle(tmp_path, "prune"), bad])
    assert state["failed"] and state["msg"].startswith("timer bundle signals: "), state["msg"]
    assert "dest" in state["msg"]
    assert not (tmp_path / "prune").exists(), "a bundle was installed before every bundle was checked"
    twice = _state(module_runner, engine, tmp_path / "daemon.json",
                   timer_bundles=[_bundle(tmp_path, "prune"), _bundle(tmp_path, "prune")])
    assert twice["failed"] and "prune is given more than once" in twice["msg"], twice["msg"]
    unnamed = _state(module_runner, engine, tmp_path / "daemon.json", timer_bundles=[{"files": []}])
    assert unnamed["failed"] and "timer_bundles[0] has no name" in unnamed["msg"], unnamed["msg"]


def test_a_failing_timer_bundle_names_itself_and_reports_what_was_installed_before(module_runner, engine, tmp_path):
    refused = _bundle(tmp_path, "signals")
    refused["files"][0]["validate"] = "false %s"
    state = _state(module_runner, engine, tmp_path / "daemon.json", settings=LIMITS,
                   timer_bundles=[_bundle(tmp_path, "prune"), refused])
    assert state["failed"], state
    assert state["msg"].startswith("timer bundle signals: ") and "script.py was not written" in state["msg"]
    assert [b["name"] for b in state["timer_bundles"]] == ["prune"] and state["changed"] is True
    assert (tmp_path / "prune" / "script.py").exists() and not (tmp_path / "signals" / "script.py").exists()


@pytest.mark.parametrize("bad", [
    dict(units=[dict(name="not a unit", content="[Unit]\n")]),
    dict(files=[dict(dest="relative/script.py", content="x")]),
    dict(files=[dict(dest="/abs/script.py", content="x", validate="true")]),
    dict(timer="pmr-signals.service"),
], ids=["unit name", "relative dest", "validate without %s", "timer name"])
def test_a_bundle_its_own_checks_refuse_is_refused_before_any_bundle_is_installed(
        module_runner, engine, tmp_path, bad):
    """The checks timer_bundle makes of its names and paths before it writes anything (not only the argument spec)
    refuse the call before the first bundle is installed, not after it."""
    state = _state(module_runner, engine, tmp_path / "daemon.json",
                   timer_bundles=[_bundle(tmp_path, "prune"), _bundle(tmp_path, "signals", **bad)])
    assert state["failed"] and state["msg"].startswith("timer bundle signals: "), state["msg"]
    assert not (tmp_path / "prune").exists(), "a bundle was installed before every bundle was checked"
    assert not (tmp_path / "units" / "pmr-prune.service").exists()
    assert state["changed"] is False and state["timer_bundles"] == []


def test_a_failing_bundle_that_changed_nothing_itself_still_reports_the_changes_before_it(module_runner, engine,
                                                                                          tmp_path):
    """changed says what the call changed: the bundles installed before the failure, and what the failing one wrote
    before it failed, even when the failing bundle created no directory."""
    (tmp_path / "signals").mkdir()
    refused = _bundle(tmp_path, "signals")
    refused["files"][0]["validate"] = "false %s"
    state = _state(module_runner, engine, tmp_path / "daemon.json", timer_bundles=[_bundle(tmp_path, "prune"), refused])
    assert state["failed"] and state["msg"].startswith("timer bundle signals: "), state["msg"]
    assert [b["name"] for b in state["timer_bundles"]] == ["prune"]
    assert state["changed"] is True, "the prune bundle was installed by this call"
    # The failing bundle wrote its first file, then its second was refused: that write is a change of the call too.
    second = _bundle(tmp_path, "signals")
    second["files"].append(dict(dest=str(tmp_path / "signals" / "config.json"), content="{}", validate="false %s"))
    state = _state(module_runner, engine, tmp_path / "daemon.json", timer_bundles=[_bundle(tmp_path, "prune"), second])
    assert state["failed"] and "config.json was not written" in state["msg"], state["msg"]
    assert (tmp_path / "signals" / "script.py").exists()
    assert state["changed"] is True and state["changed_files"] == [str(tmp_path / "signals" / "script.py")], state
