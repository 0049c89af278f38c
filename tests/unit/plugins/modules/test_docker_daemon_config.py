"""docker_daemon_config run for real against files in a temporary directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest


@pytest.fixture
def daemon_json(tmp_path):
    return tmp_path / "docker" / "daemon.json"


def args(path, **kwargs):
    # No systemd unit to read and rules-only validation: the dockerd path is covered by its own test below.
    return dict(path=str(path), service_name="pmr-no-such-unit", validate=False, **kwargs)


def test_creates_file_with_string_log_opts_and_is_idempotent(module_runner, daemon_json):
    settings = {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": 3}}
    first = module_runner("docker_daemon_config", args(daemon_json, settings=settings))
    assert first["changed"] is True, first
    assert first["changed_keys"] == ["log-driver", "log-opts"]
    assert first["restart_needed"] is True and first["reload_enough"] is False
    assert json.loads(daemon_json.read_text()) == {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
    }
    assert "backup_file" not in first  # nothing was replaced
    second = module_runner("docker_daemon_config", args(daemon_json, settings=settings))
    assert second["changed"] is False, second


def test_keeps_unmanaged_keys_and_backs_up_what_it_replaces(module_runner, daemon_json):
    daemon_json.parent.mkdir(parents=True)
    original = '{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}\n'
    daemon_json.write_text(original)
    result = module_runner("docker_daemon_config", args(daemon_json, settings={"log-driver": "local"}))
    assert result["changed"] is True
    assert json.loads(daemon_json.read_text())["runtimes"] == {"nvidia": {"path": "nvidia-container-runtime"}}
    with open(result["backup_file"]) as handle:
        assert handle.read() == original


def test_check_mode_reports_and_diffs_but_writes_nothing(module_runner, daemon_json):
    daemon_json.parent.mkdir(parents=True)
    daemon_json.write_text('{"debug": true}\n')
    result = module_runner(
        "docker_daemon_config", args(daemon_json, settings={"debug": False}), check_mode=True, diff=True
    )
    assert result["changed"] is True
    assert result["reload_enough"] is True and result["restart_needed"] is False
    assert '"debug": true' in result["diff"]["before"] and '"debug": false' in result["diff"]["after"]
    assert daemon_json.read_text() == '{"debug": true}\n'
    assert sorted(os.listdir(daemon_json.parent)) == ["daemon.json"]  # no candidate or backup left behind


def test_check_mode_on_a_host_without_the_directory(module_runner, tmp_path):
    path = tmp_path / "absent" / "daemon.json"
    result = module_runner("docker_daemon_config", args(path, settings={"debug": True}), check_mode=True)
    assert result["changed"] is True
    assert not path.parent.exists()


def test_invalid_json_is_never_overwritten(module_runner, daemon_json):
    daemon_json.parent.mkdir(parents=True)
    daemon_json.write_text('{"debug": true,,}')
    result = module_runner("docker_daemon_config", args(daemon_json, settings={"log-driver": "local"}))
    assert result["failed"] is True
    assert str(daemon_json) in result["msg"] and "not valid JSON" in result["msg"]
    assert daemon_json.read_text() == '{"debug": true,,}'


def test_unknown_key_is_refused_with_its_name(module_runner, daemon_json):
    result = module_runner("docker_daemon_config", args(daemon_json, settings={"log-rotate": "daily"}))
    assert result["failed"] is True and "log-rotate" in result["msg"]
    assert not daemon_json.exists()
    allowed = module_runner(
        "docker_daemon_config", args(daemon_json, settings={"log-rotate": "daily"}, allow_unknown_keys=True)
    )
    assert allowed["changed"] is True


def test_exclusive_owns_the_file_and_remove_keys_removes(module_runner, daemon_json):
    daemon_json.parent.mkdir(parents=True)
    daemon_json.write_text('{"debug": true, "log-opts": {"max-size": "1m", "compress": "true"}}')
    removed = module_runner("docker_daemon_config", args(daemon_json, remove_keys=["log-opts.compress"]))
    assert json.loads(daemon_json.read_text()) == {"debug": True, "log-opts": {"max-size": "1m"}}
    assert removed["changed_keys"] == ["log-opts"]
    module_runner("docker_daemon_config", args(daemon_json, settings={"log-driver": "local"}, exclusive=True))
    assert json.loads(daemon_json.read_text()) == {"log-driver": "local"}


def test_failing_dockerd_validate_leaves_the_file_alone(module_runner, daemon_json, tmp_path):
    # A stand-in dockerd that has --validate and refuses: the fault a real Engine >= 23 produces.
    fake = tmp_path / "dockerd"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in --help) echo "  --validate  Validate daemon configuration and exit";; '
        '--validate) echo "unable to configure the Docker daemon with file $3: bad value" >&2; exit 1;; esac\n'
    )
    fake.chmod(0o755)
    daemon_json.parent.mkdir(parents=True)
    daemon_json.write_text('{"debug": true}\n')
    result = module_runner(
        "docker_daemon_config",
        dict(path=str(daemon_json), settings={"debug": False}, dockerd_path=str(fake), service_name="pmr-none"),
    )
    assert result["failed"] is True and "dockerd --validate refused" in result["msg"] and "bad value" in result["msg"]
    assert daemon_json.read_text() == '{"debug": true}\n'
    assert sorted(os.listdir(daemon_json.parent)) == ["daemon.json"]


def test_missing_dockerd_path_is_a_clear_error(module_runner, daemon_json):
    missing = dict(path=str(daemon_json), settings={"debug": True}, dockerd_path="/nonexistent/dockerd")
    result = module_runner("docker_daemon_config", missing)
    assert result["failed"] is True and "/nonexistent/dockerd is not an executable" in result["msg"]
    assert not daemon_json.exists()


def fake_systemctl(directory, argv):
    """A systemctl that shows the docker unit's ExecStart the way systemd prints it (molecule reads a real one)."""
    directory.mkdir(exist_ok=True)
    script = directory / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        f"echo '{{ path=/usr/sbin/dockerd ; argv[]={argv} ; ignore_errors=no ; start_time=[n/a] ; pid=0 }}'\n"
    )
    script.chmod(0o755)
    return {"PATH": f"{directory}:{os.environ['PATH']}"}


WITH_FD_FLAG = "/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock"

REFUSALS = [
    # (existing file or None, settings, remove_keys, unit ExecStart or None, fragments the message must hold)
    ("[1, 2]", {"debug": True}, [], None, ["holds a JSON list, not an object", "left untouched"]),
    ('"log-driver"', {"debug": True}, [], None, ["holds a JSON str"]),
    (None, {"log-opts": "max-size=10m"}, [], None, ["Refusing to write", "log-opts must be a mapping"]),
    (None, {"data-root": "srv/docker"}, [], None, ["Refusing to write", "data-root must be an absolute path"]),
    (None, {"log-driver": "local", "log-rotate": "daily"}, [], None, ["unknown top-level key(s) log-rotate"]),
    (None, {"hosts": ["unix:///var/run/docker.sock"]}, [], WITH_FD_FLAG, ["'hosts' is set", "-H fd://"]),
    (None, {"containerd": "/run/containerd/containerd.sock"}, [], WITH_FD_FLAG, ["'containerd' set", "--containerd"]),
    # A hosts key already in the file blocks any change while the unit passes -H: the way out is named.
    ('{"hosts": ["tcp://127.0.0.1:2375"]}\n', {"debug": True}, [], WITH_FD_FLAG, ["-H fd://", "remove_keys: [hosts]"]),
    # Removing a key does not make unknown keys already in the file acceptable.
    ('{"log-rotate": "daily", "debug": true}\n', {}, ["debug"], None, ["unknown top-level key(s) log-rotate"]),
]


@pytest.mark.parametrize(("existing", "settings", "remove", "exec_start", "fragments"), REFUSALS)
@pytest.mark.parametrize("check_mode", [False, True])
def test_refusals_name_the_file_and_the_cause_and_touch_nothing(
    module_runner, daemon_json, tmp_path, existing, settings, remove, exec_start, fragments, check_mode
):
    if existing is not None:
        daemon_json.parent.mkdir(parents=True)
        daemon_json.write_text(existing)
    env = fake_systemctl(tmp_path / "bin", exec_start) if exec_start else None
    module_args = dict(path=str(daemon_json), settings=settings, remove_keys=remove, validate=False)
    result = module_runner("docker_daemon_config", module_args, check_mode=check_mode, env=env)
    assert result.get("failed") is True, result
    assert str(daemon_json) in result["msg"]
    for fragment in fragments:
        assert fragment in result["msg"], result["msg"]
    if existing is None:
        assert not daemon_json.exists()
    else:
        assert daemon_json.read_text() == existing
        assert sorted(os.listdir(daemon_json.parent)) == ["daemon.json"]  # no candidate or backup left behind


def test_hosts_is_written_when_the_unit_passes_no_host_flag(module_runner, daemon_json, tmp_path):
    env = fake_systemctl(tmp_path / "bin", "/usr/sbin/dockerd --containerd=/run/containerd/containerd.sock")
    settings = {"hosts": ["unix:///var/run/docker.sock"]}
    module_args = dict(path=str(daemon_json), settings=settings, validate=False)
    result = module_runner("docker_daemon_config", module_args, env=env)
    assert result["changed"] is True, result
    assert json.loads(daemon_json.read_text()) == settings


def test_reload_only_change_and_removal_report_changed_keys(module_runner, daemon_json):
    daemon_json.parent.mkdir(parents=True)
    daemon_json.write_text('{"log-driver": "local", "live-restore": false}\n')
    reload = module_runner("docker_daemon_config", args(daemon_json, settings={"live-restore": True}))
    assert reload["changed_keys"] == ["live-restore"]
    assert reload["reload_enough"] is True and reload["restart_needed"] is False
    removed = module_runner("docker_daemon_config", args(daemon_json, remove_keys=["log-driver"]))
    assert removed["changed_keys"] == ["log-driver"]
    assert removed["restart_needed"] is True and removed["reload_enough"] is False
    assert json.loads(daemon_json.read_text()) == {"live-restore": True}


def test_same_content_with_a_mode_given_only_fixes_the_mode(module_runner, daemon_json):
    daemon_json.parent.mkdir(parents=True)
    daemon_json.write_text('{"debug": true}\n')
    daemon_json.chmod(0o600)
    wanted = args(daemon_json, settings={"debug": True}, mode="0640")
    predicted = module_runner("docker_daemon_config", wanted, check_mode=True)
    assert predicted["changed"] is True and predicted["restart_needed"] is False
    assert oct(daemon_json.stat().st_mode & 0o777) == "0o600"
    fixed = module_runner("docker_daemon_config", wanted)
    assert fixed["changed"] is True and fixed["changed_keys"] == [] and fixed["restart_needed"] is False
    assert oct(daemon_json.stat().st_mode & 0o777) == "0o640"
    assert daemon_json.read_text() == '{"debug": true}\n'  # content left as it was written
    again = module_runner("docker_daemon_config", wanted)
    assert again["changed"] is False


def test_a_replace_that_fails_leaves_no_candidate_behind(module_runner, daemon_json):
    """Issue 10.23: an immutable daemon.json (chattr +i: even root cannot replace it) makes the final move fail."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed")
    daemon_json.parent.mkdir(parents=True)
    daemon_json.write_text('{"debug": true}\n')
    if subprocess.run(["chattr", "+i", str(daemon_json)], capture_output=True, check=False).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute")
    try:
        result = module_runner("docker_daemon_config", args(daemon_json, settings={"debug": False}, backup=False))
    finally:
        subprocess.run(["chattr", "-i", str(daemon_json)], check=True)
    assert result.get("failed") is True, result
    assert daemon_json.read_text() == '{"debug": true}\n'
    assert sorted(os.listdir(daemon_json.parent)) == ["daemon.json"]


# --- issue 10, items 9 to 13 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings", [{"debug": True}, {"log-driver": "local"}])
def test_existing_mode_and_owner_are_kept_unless_mode_is_given(module_runner, daemon_json, settings):
    """A 0600 daemon.json holding proxy credentials stays 0600, owned by whoever owned it."""
    daemon_json.parent.mkdir(parents=True)
    daemon_json.write_text('{"debug": true, "proxies": {"http-proxy": "http://user:secret@proxy:3128"}}\n')
    daemon_json.chmod(0o600)
    os.chown(daemon_json, 4242, 4343)
    result = module_runner("docker_daemon_config", args(daemon_json, settings=settings))
    # The same content is no change at all; new content keeps the file's mode and owner.
    assert result["changed"] is (settings != {"debug": True}), result
    stat = daemon_json.stat()
    assert (oct(stat.st_mode & 0o777), stat.st_uid, stat.st_gid) == ("0o600", 4242, 4343)


def test_a_new_file_gets_0644(module_runner, daemon_json):
    module_runner("docker_daemon_config", args(daemon_json, settings={"debug": True}))
    assert oct(daemon_json.stat().st_mode & 0o777) == "0o644"


def test_a_symlinked_daemon_json_is_written_through_the_link(module_runner, tmp_path):
    """The link stays a link: replacing it with a regular file would split the configuration in two."""
    real = tmp_path / "managed" / "daemon.json"
    real.parent.mkdir()
    real.write_text('{"debug": true}\n')
    real.chmod(0o600)
    link = tmp_path / "docker" / "daemon.json"
    link.parent.mkdir()
    link.symlink_to(real)
    result = module_runner("docker_daemon_config", args(link, settings={"log-driver": "local"}))
    assert result["changed"] is True, result
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert json.loads(real.read_text()) == {"debug": True, "log-driver": "local"}
    assert oct(real.stat().st_mode & 0o777) == "0o600"
    with open(result["backup_file"]) as handle:
        assert handle.read() == '{"debug": true}\n'
    again = module_runner("docker_daemon_config", args(link, settings={"log-driver": "local"}))
    assert again["changed"] is False


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_dangling_symlink_is_refused_and_left_alone(module_runner, tmp_path, check_mode):
    link = tmp_path / "docker" / "daemon.json"
    link.parent.mkdir()
    link.symlink_to(tmp_path / "nowhere" / "daemon.json")
    result = module_runner("docker_daemon_config", args(link, settings={"debug": True}), check_mode=check_mode)
    assert result.get("failed") is True, result
    assert "symbolic link" in result["msg"] and "does not exist" in result["msg"] and str(link) in result["msg"]
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


LOG_OPTS_VALUES = [
    # (log-opts given, written log-opts or None when refused, fragment of the refusal)
    ({"max-size": "10m", "compress": None}, {"max-size": "10m"}, None),
    ({"max-file": 3, "compress": True}, {"max-size": "1m", "max-file": "3", "compress": "true"}, None),
    ({"labels": ["a", "b"]}, None, "log-opts.labels is a list"),
    ({"max-file": 3.0}, None, "log-opts.max-file is a number with a fraction (3.0)"),
    ({"tag": {"x": 1}}, None, "log-opts.tag is a mapping"),
]


@pytest.mark.parametrize(("given", "written", "refusal"), LOG_OPTS_VALUES)
def test_log_opts_null_removes_and_lists_and_floats_are_refused(module_runner, daemon_json, given, written, refusal):
    daemon_json.parent.mkdir(parents=True)
    daemon_json.write_text('{"log-opts": {"max-size": "1m", "compress": "true"}}\n')
    result = module_runner("docker_daemon_config", args(daemon_json, settings={"log-opts": given}))
    if refusal is None:
        assert result.get("failed") is not True, result
        assert json.loads(daemon_json.read_text())["log-opts"] == written
        assert "None" not in daemon_json.read_text()
    else:
        assert result.get("failed") is True and refusal in result["msg"], result
        assert daemon_json.read_text() == '{"log-opts": {"max-size": "1m", "compress": "true"}}\n'


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_in_the_existing_file_is_not_json(module_runner, daemon_json, constant):
    daemon_json.parent.mkdir(parents=True)
    text = '{"debug": true, "max-concurrent-downloads": ' + constant + "}\n"
    daemon_json.write_text(text)
    result = module_runner("docker_daemon_config", args(daemon_json, settings={"log-driver": "local"}))
    assert result.get("failed") is True and "not valid JSON" in result["msg"] and constant.lstrip("-") in result["msg"]
    assert daemon_json.read_text() == text


def slow_validating_dockerd(directory, seconds):
    """A dockerd with --validate that takes its time, as a real one does on a busy host."""
    directory.mkdir(exist_ok=True)
    script = directory / "dockerd"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in --help) echo "  --validate  Validate daemon configuration and exit";; '
        f"--validate) sleep {seconds}; exit 0;; esac\n"
    )
    script.chmod(0o755)
    return script


def test_two_runs_at_once_lose_no_update(daemon_json, tmp_path):
    """Two real module processes started together, each validating for a second: both changes end up in the file."""
    from unit_support import COLLECTIONS, REPO_ROOT

    daemon_json.parent.mkdir(parents=True)
    daemon_json.write_text('{"debug": false}\n')
    dockerd = slow_validating_dockerd(tmp_path / "bin", 1)
    module = REPO_ROOT / "plugins" / "modules" / "docker_daemon_config.py"
    processes = []
    for index, settings in enumerate([{"log-level": "warn"}, {"live-restore": True}]):
        module_args = dict(path=str(daemon_json), settings=settings, dockerd_path=str(dockerd),
                           service_name="pmr-no-such-unit", _ansible_check_mode=False, _ansible_diff=False)
        args_file = tmp_path / f"args-{index}.json"
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
        processes.append(subprocess.Popen(
            [sys.executable, str(module), str(args_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=dict(os.environ, PYTHONPATH=str(COLLECTIONS)),
        ))
    for process in processes:
        out, err = process.communicate(timeout=60)
        result = json.loads(out)
        assert result.get("failed") is not True and result["validated_with"] == "dockerd --validate", (result, err)
    assert json.loads(daemon_json.read_text()) == {"debug": False, "log-level": "warn", "live-restore": True}


def test_daemon_config_is_the_same_file_as_path(module_runner, daemon_json):
    """The name the other modules give daemon.json (docs/names.md) works here too, as an alias of path."""
    arguments = args(daemon_json, settings={"log-driver": "local"})
    arguments["daemon_config"] = arguments.pop("path")
    result = module_runner("docker_daemon_config", arguments)
    assert result["changed"] is True, result
    assert json.loads(daemon_json.read_text()) == {"log-driver": "local"}
