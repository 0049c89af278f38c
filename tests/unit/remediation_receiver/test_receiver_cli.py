"""Command line: check, replay, runs, approve, pause/resume; configuration errors name the key and the cause."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import receiver_helpers
import yaml
from receiver_helpers import alert, payload, write_config

from remediation_receiver.cli import main
from remediation_receiver.config import ConfigError, parse_config
from remediation_receiver.journal import Journal

BASE = {"auth": {"token_file": "t"}, "rules": [{"name": "r", "when": "labels.a", "playbook": "p.yml"}]}


@pytest.mark.parametrize(("change", "error"), [
    ({"auth": {}}, "auth: set token_file or token_env"),
    ({"rules": []}, "rules: expected a non-empty list"),
    ({"rules": [{"name": "r", "when": "labels.[", "playbook": "p.yml"}]}, "invalid jmespath expression"),
    ({"rules": [{"name": "r", "when": "labels.a", "playbook": "p.yml", "mode": "yolo"}]},
     "mode: expected one of auto, observe, approve"),
    ({"rules": [{"name": "r", "when": "labels.a", "playbook": "p.yml", "vars": {"ansible_host": "labels.x"}}]},
     "'ansible_host' is not an allowed variable name"),
    ({"rules": [{"name": "r", "when": "labels.a", "playbook": "p.yml", "vars": {"x y": "labels.x"}}]},
     "'x y' is not an allowed variable name"),
    ({"rules": [{"name": "r", "when": "labels.a", "playbook": "p.yml", "cooldown": -1}]},
     "cooldown: expected a number >= 0"),
    ({"rules": [{"name": "r", "when": "labels.a", "playbook": "p.yml", "max_runs_per_hour": 0}]},
     "max_runs_per_hour: expected an integer >= 1"),
    ({"rules": [{"name": "r", "when": "labels.a", "playbook": "p.yml"}] * 2}, "duplicate rule name 'r'"),
    ({"rules": [{"name": "r", "when": "labels.a", "playbook": "p.yml", "whne": "x"}]}, "unknown key 'whne'"),
    ({"listen": {"port": "80"}}, "listen.port: expected an integer"),
    ({"notify": {"webhooks": [{"url": "ftp://x"}]}}, "expected an http(s) URL"),
    ({"redact": ["("]}, "redact[0]: invalid regular expression"),
])
def test_config_errors_name_the_key_and_the_cause(change: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({**BASE, **change}, "/etc/remediation-receiver/config.yml")
    assert any(error in e for e in raised.value.errors), raised.value.errors


def test_check_accepts_a_good_configuration(tmp_path: Path, capsys: Any) -> None:
    cfg = write_config(tmp_path)
    assert main(["check", "--config", cfg.path]) == 0
    out = capsys.readouterr().out
    assert "ok: rule probe: mode auto, playbook receiver_probe.yml" in out


@pytest.mark.parametrize(("rule", "error"), [
    ({"playbook": "missing.yml"}, "missing.yml does not exist"),
])
def test_check_reports_broken_playbooks(tmp_path: Path, capsys: Any, rule: dict[str, str], error: str) -> None:
    cfg = write_config(tmp_path, rules=[{"name": "probe", "when": "labels.x", **rule}])
    assert main(["check", "--config", cfg.path]) == 1
    assert error in capsys.readouterr().err


@pytest.mark.parametrize(("token_text", "error"), [
    (None, "notify.webhooks[0].token_file"),
    ("\n", "is empty"),
])
def test_check_reports_an_unusable_notify_token(tmp_path: Path, capsys: Any, token_text: str | None,
                                                error: str) -> None:
    # `serve` refuses to start without it: `check` (the unit's ExecStartPre, the role's validate) must say so first.
    if token_text is not None:
        (tmp_path / "notify.token").write_text(token_text)
    cfg = write_config(tmp_path, notify={"webhooks": [{"url": "http://127.0.0.1:9/", "token_file": "notify.token"}]})
    assert main(["check", "--no-syntax-check", "--config", cfg.path]) == 1
    assert error in capsys.readouterr().err


def private(cfg_path: str, *paths: Path) -> None:
    for path in (Path(cfg_path), *paths):
        path.chmod(0o600)


@pytest.mark.parametrize(("exposure", "warning"), [
    ("config", "configuration {tmp}/config.yml is readable by every user (mode 0644)"),
    ("token", "auth.token_file {tmp}/token is readable by every user (mode 0644)"),
    ("notify_token", "notify.webhooks[0].token_file {tmp}/notify.token is readable by every user (mode 0644)"),
    ("bearer_header", "notify.webhooks[0].headers.Authorization is a credential written inline"),
    ("key_header", "notify.webhooks[0].headers.X-Api-Key is a credential written inline"),
    ("secret_env", "executor.envvars.DB_PASSWORD looks like a secret written inline"),
    ("journal", "journal {tmp}/state/journal.sqlite is readable by every user (mode 0644)"),
])
@pytest.mark.sqlite_only
def test_check_warns_about_exposed_secrets_and_fails_under_strict(tmp_path: Path, capsys: Any, exposure: str,
                                                                  warning: str) -> None:
    (tmp_path / "notify.token").write_text("notify-token-0123456789\n")
    hook: dict[str, Any] = {"url": "http://127.0.0.1:9/", "token_file": "notify.token"}
    if exposure == "bearer_header":
        hook["headers"] = {"Authorization": "Bearer s3cr3t-0123456789"}
    if exposure == "key_header":
        hook["headers"] = {"X-Api-Key": "k-0123456789"}
    envvars = {"DB_PASSWORD": "hunter2hunter2"} if exposure == "secret_env" else {}
    cfg = write_config(tmp_path, notify={"webhooks": [hook]},
                       executor={"workers": 1, "envvars": {"ANSIBLE_HOME": str(tmp_path / "ah"), **envvars}})
    Journal(cfg.journal).close()
    files = {"config": Path(cfg.path), "token": tmp_path / "token", "notify_token": tmp_path / "notify.token",
             "journal": Path(cfg.journal)}
    private(cfg.path, *files.values())
    if exposure in files:
        files[exposure].chmod(0o644)
    argv = ["check", "--no-syntax-check", "--config", cfg.path]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"warning: {warning.format(tmp=tmp_path)}" in err, err
    assert err.count("warning:") == 1, err
    assert main([*argv, "--strict"]) == 1
    assert "--strict: 1 warning(s)" in capsys.readouterr().err


def test_check_strict_passes_a_private_configuration(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "notify.token").write_text("notify-token-0123456789\n")
    cfg = write_config(tmp_path, notify={"webhooks": [{"url": "http://127.0.0.1:9/", "token_file": "notify.token",
                                                       "headers": {"X-Team": "ops"}}]})
    Journal(cfg.journal).close()
    private(cfg.path, tmp_path / "token", tmp_path / "notify.token")
    assert main(["check", "--no-syntax-check", "--strict", "--config", cfg.path]) == 0
    assert "warning" not in capsys.readouterr().err


def test_check_reports_a_playbook_that_fails_the_syntax_check(tmp_path: Path, capsys: Any) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "bad.yml").write_text("- hosts: all\n  tasks:\n    - name: Bad\n      no.such.module: {}\n")
    cfg = write_config(tmp_path, rules=[{"name": "probe", "when": "labels.x", "playbook": "bad.yml"}],
                       project_dir=str(project))
    assert main(["check", "--config", cfg.path]) == 1
    assert "fails --syntax-check" in capsys.readouterr().err


def test_replay_prints_decisions_and_writes_nothing(tmp_path: Path, capsys: Any) -> None:
    cfg = write_config(tmp_path)
    body = payload(alert(), alert(instance="web1,web2", fingerprint="beef"), alert(name="Other"))
    (tmp_path / "payload.json").write_text(json.dumps(body))
    assert main(["replay", "--config", cfg.path, str(tmp_path / "payload.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    outcomes = [[d["outcome"] for d in a["decisions"]] for a in out["alerts"]]
    assert outcomes == [["run"], ["refused"], ["no_rule"]]
    assert out["alerts"][0]["would_run"][0]["host"] == "web1"
    if receiver_helpers.JOURNAL:
        assert Journal(cfg.journal, readonly=True).schema_version() == 0
    else:
        assert not Path(cfg.journal).exists()


@pytest.mark.parametrize(("content", "why"), [
    (b"[" * 30000 + b"]" * 30000, "nested more than 32 levels"),
    (json.dumps({**payload(alert()), "truncatedAlerts": "many"}).encode(), "truncatedAlerts must be an integer"),
])
def test_replay_says_what_the_receiver_would_refuse(tmp_path: Path, capsys: Any, content: bytes, why: str) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "payload.json").write_bytes(content)
    assert main(["replay", "--config", cfg.path, str(tmp_path / "payload.json")]) == 1
    err = capsys.readouterr().err
    assert "the receiver would answer 400" in err and why in err


def test_a_configuration_nested_too_deep_is_an_error_not_a_traceback(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "config.yml").write_text("rules: " + "[" * 1500 + "]" * 1500 + "\n")
    with pytest.raises(SystemExit) as raised:
        main(["check", "--config", str(tmp_path / "config.yml")])
    assert raised.value.code == 2
    assert "nested too deep" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["pause", "--reason", "disk \udcff"], ["cancel", "r\udcff"],
                                  ["runs", "--status", "\udcff"]])
def test_arguments_that_are_not_utf8_are_refused_before_the_journal(tmp_path: Path, capsys: Any,
                                                                   argv: list[str]) -> None:
    cfg = write_config(tmp_path)
    Journal(cfg.journal).close()
    with pytest.raises(SystemExit) as raised:
        main([*argv[:1], "--config", cfg.path, *argv[1:]])
    assert raised.value.code == 2
    assert "is not UTF-8 text" in capsys.readouterr().err


def test_approve_pause_resume_and_runs(tmp_path: Path, capsys: Any) -> None:
    cfg = write_config(tmp_path)
    journal = Journal(cfg.journal)
    for status, run_id in (("awaiting_approval", "r-wait"), ("queued", "r-queued")):
        journal.add_run({"id": run_id, "rule": "probe", "playbook": "p.yml", "host": "web1", "fingerprint": "f",
                         "starts_at": "s", "dedup_key": run_id, "attempt": 1, "mode": "approve", "status": status,
                         "extravars": {}})
    assert main(["approve", "--config", cfg.path, "r-wait"]) == 0
    assert main(["approve", "--config", cfg.path, "r-queued"]) == 1
    assert main(["approve", "--config", cfg.path, "nope"]) == 1
    run = journal.get_run("r-wait")
    assert run is not None and run.status == "queued" and run.approved_at
    assert main(["pause", "--config", cfg.path, "--reason", "disk swap"]) == 0
    assert "disk swap" in (journal.get_state("paused") or "")
    assert main(["resume", "--config", cfg.path]) == 0
    assert journal.get_state("paused") is None
    capsys.readouterr()
    assert main(["runs", "--config", cfg.path, "--json"]) == 0
    assert sorted(r["id"] for r in json.loads(capsys.readouterr().out)) == ["r-queued", "r-wait"]


@pytest.mark.parametrize(("status", "rc", "after", "requested"), [
    ("queued", 0, "canceled", False),
    ("awaiting_approval", 0, "canceled", False),
    ("running", 0, "running", True),   # the service stops it: the request waits in the journal
    ("starting", 0, "starting", True),
    ("successful", 1, "successful", False),
    ("interrupted", 1, "interrupted", False),
])
def test_cancel(tmp_path: Path, capsys: Any, status: str, rc: int, after: str, requested: bool) -> None:
    cfg = write_config(tmp_path)
    journal = Journal(cfg.journal)
    journal.add_run({"id": "r1", "rule": "probe", "playbook": "p.yml", "host": "web1", "fingerprint": "f",
                     "starts_at": "s", "dedup_key": "r1", "attempt": 1, "mode": "auto", "status": status,
                     "extravars": {}})
    assert main(["cancel", "--config", cfg.path, "r1", "--reason", "wrong host"]) == rc
    run = journal.get_run("r1", with_events=True)
    assert run is not None and run.status == after
    request = journal.get_state("cancel:r1")
    assert (request is not None) == requested
    if after == "canceled":
        assert run.reason.startswith("canceled by ") and run.reason.endswith(": wrong host")
        assert run.handled and run.finished_at
    if requested:
        assert request is not None and request.endswith(": wrong host")
        assert [e["event"] for e in run.events] == ["cancel_requested"]
    if rc:
        assert f"is {status}: nothing to cancel" in capsys.readouterr().err
    assert main(["cancel", "--config", cfg.path, "nope"]) == 1


def test_the_example_configuration_in_the_docs_is_valid() -> None:
    example = Path(__file__).resolve().parents[3] / "docs" / "receiver.example.yml"
    data = yaml.safe_load(example.read_text())
    cfg = parse_config(data, str(example))
    # Which alert runs which playbook is tested in tests/unit/playbooks/test_receiver_example.py.
    assert {r.mode for r in cfg.rules} <= {"auto", "observe", "approve"} and cfg.rules


@pytest.mark.parametrize(("auth", "file_text", "environ", "result"), [
    ({"token_file": "tok"}, "a-long-enough-token-0123\n", {}, "a-long-enough-token-0123"),
    ({"token_env": "RR_TOKEN"}, None, {"RR_TOKEN": " env-token-0123456789 "}, "env-token-0123456789"),
    ({"token_env": "RR_TOKEN"}, None, {}, "environment variable RR_TOKEN is empty or unset"),
    ({"token_file": "tok"}, None, {}, "cannot read"),
    ({"token_file": "tok"}, "short\n", {}, "shorter than 16 characters"),
])
def test_the_token_comes_from_a_file_or_the_environment(tmp_path: Path, auth: dict[str, str], file_text: str | None,
                                                        environ: dict[str, str], result: str) -> None:
    from remediation_receiver.config import read_token

    if file_text is not None:
        (tmp_path / "tok").write_text(file_text)
    cfg = parse_config({**BASE, "auth": auth}, str(tmp_path / "config.yml"))
    if result.startswith(("a-long", "env-token")):
        assert read_token(cfg, environ) == result
    else:
        with pytest.raises(ConfigError, match=result):
            read_token(cfg, environ)


def test_a_token_from_the_environment_is_not_inherited_by_playbooks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from remediation_receiver.service import Service

    monkeypatch.setenv("RR_TEST_TOKEN", "env-token-0123456789-abcdef")
    cfg = write_config(tmp_path, auth={"token_env": "RR_TEST_TOKEN"})
    service = Service(cfg)
    try:
        assert "RR_TEST_TOKEN" not in os.environ
        assert "env-token-0123456789-abcdef" in service.redactor.secrets
    finally:
        service.server.server_close()


@pytest.mark.parametrize("command", [["runs"], ["show", "r1"], ["approve", "r1"], ["cancel", "r1"], ["pause"],
                                     ["resume"]])
def test_a_journal_that_cannot_be_read_is_a_clear_error_naming_it(tmp_path: Path, journal_backend: str,
                                                                   capsys: Any, command: list[str]) -> None:
    """PostgreSQL down (nothing listens on the URL's socket) or an SQLite file that is not a journal: every command
    exits with one line that names the journal and the cause, never a traceback, never the password."""
    secret = "pmr-cli-s3cret-Qz27"
    (tmp_path / "pgpass").write_text(secret + "\n")
    (tmp_path / "pgpass").chmod(0o600)
    if journal_backend == "postgresql":
        (tmp_path / "nothing-listens").mkdir()
        journal = f"postgresql://pmr_pw@/pmr_unit?host={tmp_path / 'nothing-listens'}"
        cfg = write_config(tmp_path, journal=journal, journal_password_file="pgpass")
    else:
        journal = str(tmp_path / "journal.sqlite")
        Path(journal).write_bytes(b"not a journal, " * 100)
        cfg = write_config(tmp_path, journal=journal)
    with pytest.raises(SystemExit) as exited:
        main([command[0], "--config", cfg.path, *command[1:]])
    message = str(exited.value.code)
    out = capsys.readouterr()
    assert f"journal {journal}" in message and ("cannot connect" in message or "not a database" in message), message
    assert secret not in message + out.out + out.err


def test_serve_refuses_to_start_on_a_journal_it_cannot_open_and_names_it(tmp_path: Path, journal_backend: str,
                                                                        capsys: Any) -> None:
    """An SQLite file that is no journal; a PostgreSQL URL whose search_path names a schema that does not exist (the
    schema cannot be created): `serve` exits 2 with one message naming the journal, not a traceback."""
    if journal_backend == "postgresql":
        journal = (receiver_helpers.JOURNAL or "").split("&options=")[0] + "&options=-csearch_path%3Dpmr_missing"
    else:
        journal = str(tmp_path / "journal.sqlite")
        Path(journal).write_bytes(b"not a journal, " * 100)
    cfg = write_config(tmp_path, journal=journal)
    assert main(["serve", "--config", cfg.path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cannot start: journal {journal}: "), err
