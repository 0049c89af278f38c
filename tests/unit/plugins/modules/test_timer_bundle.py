"""timer_bundle run for real against a temporary tree (the machine's own systemd-analyze verifies the units).

Enabling and starting the timer needs a running systemd: the Molecule scenario docker_prune_timer checks that on a
lab host (the timer active and enabled, and an idempotent run that verifies nothing and leaves the timer alone).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

SERVICE = "[Unit]\nDescription=test\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n"
TIMER = "[Unit]\nDescription=test\n\n[Timer]\nOnCalendar=daily\nRandomizedDelaySec=30min\nUnit=pmr-t.service\n"
BAD_TIMER = TIMER.replace("30min", "half an hour")

Runner = Callable[..., dict]


def bundle(tmp: Path, **overrides: object) -> dict:
    """A script, a helper, a configuration checked by a validate command, a service, a timer and a drop-in."""
    args: dict = dict(
        directories=[str(tmp / "lib"), str(tmp / "etc"), str(tmp / "metrics")],
        files=[
            dict(dest=str(tmp / "lib" / "script.py"), content="import helper\n"),
            dict(dest=str(tmp / "lib" / "helper.py"), content="VALUE = 1\n", mode="0600"),
            dict(dest=str(tmp / "etc" / "config.json"), content='{"a": 1}\n',
                 validate="python3 -c 'import json, sys; json.load(open(sys.argv[1]))' %s"),
        ],
        units=[dict(name="pmr-t.service", content=SERVICE), dict(name="pmr-t.timer", content=TIMER),
               dict(name="docker.service.d/pmr-t.conf", content="[Service]\nExecStartPost=-/bin/true\n")],
        unit_dir=str(tmp / "units"),
        # No systemd runs on the machine that runs the unit tests.
        daemon_reload=False,
    )
    args.update(overrides)
    return args


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_installs_everything_then_an_idempotent_run_changes_and_verifies_nothing(
        module_runner: Runner, tmp_path: Path) -> None:
    first = module_runner("timer_bundle", bundle(tmp_path))
    assert first["changed"] is True, first
    assert first["created_directories"] == [
        str(tmp_path / d) for d in ("lib", "etc", "metrics", "units", "units/docker.service.d")]
    assert first["changed_files"] == [str(tmp_path / f) for f in ("lib/script.py", "lib/helper.py", "etc/config.json")]
    assert first["changed_units"] == ["pmr-t.service", "pmr-t.timer", "docker.service.d/pmr-t.conf"]
    assert first["verified_units"] == ["pmr-t.service", "pmr-t.timer"]  # a drop-in is not a unit of its own
    assert first["backup_files"] == {}  # nothing was replaced
    assert (tmp_path / "units" / "pmr-t.timer").read_text() == TIMER
    assert (tmp_path / "lib" / "script.py").read_text() == "import helper\n"
    assert mode(tmp_path / "lib" / "helper.py") == 0o600 and mode(tmp_path / "lib" / "script.py") == 0o644
    assert mode(tmp_path / "metrics") == 0o755

    second = module_runner("timer_bundle", bundle(tmp_path))
    assert second["changed"] is False, second
    assert second["changed_files"] == second["changed_units"] == second["verified_units"] == []
    assert second["daemon_reloaded"] is False


@pytest.mark.parametrize(("what", "change", "changed_files", "changed_units", "verified"), [
    ("a helper's content", lambda t: (t / "lib/helper.py").write_text("VALUE = 0\n"),
     ["lib/helper.py"], [], []),
    ("a helper's mode", lambda t: (t / "lib/helper.py").chmod(0o644), ["lib/helper.py"], [], []),
    ("the timer unit", lambda t: (t / "units/pmr-t.timer").write_text("edited by hand\n"),
     [], ["pmr-t.timer"], ["pmr-t.timer"]),
    ("the drop-in", lambda t: (t / "units/docker.service.d/pmr-t.conf").write_text("[Service]\n"),
     [], ["docker.service.d/pmr-t.conf"], []),
])
def test_puts_back_only_what_differs_and_verifies_only_changed_units(
        module_runner: Runner, tmp_path: Path, what: str, change: Callable[[Path], object], changed_files: list[str],
        changed_units: list[str], verified: list[str]) -> None:
    module_runner("timer_bundle", bundle(tmp_path))
    change(tmp_path)
    result = module_runner("timer_bundle", bundle(tmp_path), diff=True)
    assert result["changed"] is True, (what, result)
    assert result["changed_files"] == [str(tmp_path / f) for f in changed_files], what
    assert result["changed_units"] == changed_units, what
    assert result["verified_units"] == verified, what
    assert module_runner("timer_bundle", bundle(tmp_path))["changed"] is False, what


def test_backs_up_what_it_replaces_and_diffs_it(module_runner: Runner, tmp_path: Path) -> None:
    module_runner("timer_bundle", bundle(tmp_path))
    helper = tmp_path / "lib" / "helper.py"
    helper.write_text("VALUE = 0\n")
    result = module_runner("timer_bundle", bundle(tmp_path), diff=True)
    backup = Path(result["backup_files"][str(helper)])
    assert backup.parent == helper.parent and backup.read_text() == "VALUE = 0\n"
    assert helper.read_text() == "VALUE = 1\n"
    assert [(d["before"], d["after"]) for d in result["diff"] if d.get("before_header") == str(helper)] == [
        ("VALUE = 0\n", "VALUE = 1\n")]


def test_check_mode_reports_and_diffs_but_writes_nothing(module_runner: Runner, tmp_path: Path) -> None:
    result = module_runner("timer_bundle", bundle(tmp_path), check_mode=True, diff=True)
    assert result["changed"] is True
    assert len(result["changed_files"]) == 3 and len(result["changed_units"]) == 3
    assert str(tmp_path / "units/docker.service.d") in result["created_directories"]
    assert any(d.get("after") == TIMER for d in result["diff"])
    assert list(tmp_path.iterdir()) == []  # no directory, file or candidate left behind

    module_runner("timer_bundle", bundle(tmp_path))
    (tmp_path / "lib" / "helper.py").write_text("VALUE = 0\n")
    planned = module_runner("timer_bundle", bundle(tmp_path), check_mode=True)
    assert planned["changed_files"] == [str(tmp_path / "lib/helper.py")]
    assert (tmp_path / "lib" / "helper.py").read_text() == "VALUE = 0\n"


def test_a_file_its_validate_command_refuses_is_not_written(module_runner: Runner, tmp_path: Path) -> None:
    module_runner("timer_bundle", bundle(tmp_path))
    args = bundle(tmp_path)
    args["files"][2]["content"] = '{"a": 1,,}\n'
    result = module_runner("timer_bundle", args)
    assert result["failed"] is True
    assert result["msg"].startswith(f"{tmp_path / 'etc/config.json'} was not written: python3 -c")
    assert "Expecting" in result["msg"]  # what the command said
    assert (tmp_path / "etc" / "config.json").read_text() == '{"a": 1}\n'
    assert sorted(os.listdir(tmp_path / "etc")) == ["config.json"]  # no candidate left behind


def test_a_failure_after_a_write_says_the_run_changed_the_host(module_runner: Runner, tmp_path: Path) -> None:
    """A run that wrote the script and then had its configuration refused changed the host: its result says so (it
    said changed false whenever no directory was created, so a handler or a report took it for a no-op)."""
    module_runner("timer_bundle", bundle(tmp_path))
    args = bundle(tmp_path)
    args["files"][0]["content"] = "import helper  # new\n"
    args["files"][2]["content"] = '{"a": 1,,}\n'
    result = module_runner("timer_bundle", args)
    assert result["failed"] is True and "config.json was not written" in result["msg"], result["msg"]
    assert (tmp_path / "lib" / "script.py").read_text() == "import helper  # new\n"
    assert result["changed_files"] == [str(tmp_path / "lib" / "script.py")]
    assert result["changed"] is True


def test_a_unit_systemd_analyze_warns_about_is_refused_and_nothing_of_the_units_is_written(
        module_runner: Runner, tmp_path: Path) -> None:
    module_runner("timer_bundle", bundle(tmp_path))
    args = bundle(tmp_path)
    args["units"][1]["content"] = BAD_TIMER
    args["units"][0]["content"] = SERVICE.replace("test", "changed too")
    result = module_runner("timer_bundle", args)
    assert result["failed"] is True
    assert "systemd-analyze verify refused pmr-t.service, pmr-t.timer" in result["msg"]
    assert "pmr-t.timer:6: Failed to parse sec value, ignoring: half an hour" in result["msg"]
    assert (tmp_path / "units" / "pmr-t.timer").read_text() == TIMER
    assert (tmp_path / "units" / "pmr-t.service").read_text() == SERVICE


def test_an_unchanged_unit_is_not_verified_again(module_runner: Runner, tmp_path: Path) -> None:
    """A unit already installed as asked is left alone, even one verify would warn about (verify_units: false once)."""
    args = bundle(tmp_path)
    args["units"][1]["content"] = BAD_TIMER
    module_runner("timer_bundle", dict(args, verify_units=False))
    again = module_runner("timer_bundle", args)
    assert again["changed"] is False and again["verified_units"] == [], again


def test_a_symlinked_file_is_written_through_its_link(module_runner: Runner, tmp_path: Path) -> None:
    real = tmp_path / "real-config.json"
    real.write_text("{}\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "config.json").symlink_to(real)
    module_runner("timer_bundle", bundle(tmp_path))
    assert (tmp_path / "etc" / "config.json").is_symlink()
    assert real.read_text() == '{"a": 1}\n'


@pytest.mark.parametrize(("override", "message"), [
    ({"units": [{"name": "../evil.service", "content": SERVICE}]},
     "Unit '../evil.service' is neither a unit file name"),
    ({"units": [{"name": "pmr-t.conf", "content": SERVICE}]}, "Unit 'pmr-t.conf' is neither a unit file name"),
    ({"timer": "pmr-t.service"}, "timer 'pmr-t.service' is not the name of a timer unit"),
    ({"files": [{"dest": "relative/file", "content": ""}]}, "files: dest 'relative/file' is not an absolute path"),
    ({"files": [{"dest": "/tmp/x", "content": "", "validate": "true"}]}, "must name the candidate as %s"),
])
def test_refuses_what_it_cannot_install_and_says_why(module_runner: Runner, tmp_path: Path, override: dict,
                                                     message: str) -> None:
    if "files" in override and override["files"][0]["dest"] == "/tmp/x":
        override = {"files": [dict(override["files"][0], dest=str(tmp_path / "x"))]}
    result = module_runner("timer_bundle", bundle(tmp_path, **override))
    assert result["failed"] is True
    assert message in result["msg"], result["msg"]


def test_a_directory_where_a_file_should_be_is_refused(module_runner: Runner, tmp_path: Path) -> None:
    (tmp_path / "lib" / "script.py").mkdir(parents=True)
    result = module_runner("timer_bundle", bundle(tmp_path))
    assert result["failed"] is True
    assert f"{tmp_path / 'lib/script.py'} is a directory" in result["msg"]


def test_the_result_and_the_log_carry_no_file_text_but_its_size_and_digest(
        module_runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every run logged its arguments to the host's journal and echoed them in the result, with the text of every file
    # and unit (some 75 kB each way for the prune timer): now only their size and SHA-256 go there.
    args = bundle(tmp_path)
    module_runner("timer_bundle", args)
    again = module_runner("timer_bundle", args)
    assert again["changed"] is False, again
    echoed = again["invocation"]["module_args"]
    assert [f["dest"] for f in echoed["files"]] == [f["dest"] for f in args["files"]]
    script = hashlib.sha256(b"import helper\n").hexdigest()
    assert echoed["files"][0]["content"] == f"(14 bytes, sha256 {script})"
    assert echoed["units"][1]["content"].startswith(f"({len(TIMER)} bytes, sha256 ")
    assert TIMER not in json.dumps(again)

    from ansible.module_utils.testing import patch_module_args
    from ansible_collections.postmortem.remediation.plugins.modules import timer_bundle

    logged: list[str] = []
    monkeypatch.setattr(timer_bundle.BundleModule, "log", lambda self, msg, log_args=None: logged.append(msg))
    with patch_module_args(dict(args, _ansible_check_mode=True)):
        module = timer_bundle.BundleModule(argument_spec=timer_bundle.ARGUMENT_SPEC, supports_check_mode=True)
    assert len(logged) == 1 and script in logged[0] and "import helper" not in logged[0], logged
    assert module.params["files"][0]["content"] == "import helper\n"  # the module itself still has the text


def test_a_changed_file_still_diffs_its_text(module_runner: Runner, tmp_path: Path) -> None:
    args = bundle(tmp_path)
    module_runner("timer_bundle", args)
    args["files"][1]["content"] = "VALUE = 2\n"
    result = module_runner("timer_bundle", args, diff=True)
    assert result["changed_files"] == [str(tmp_path / "lib" / "helper.py")]
    assert [d for d in result["diff"] if d.get("after") == "VALUE = 2\n" and d.get("before") == "VALUE = 1\n"], result
