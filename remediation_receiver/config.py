"""Configuration: one YAML file, validated up front with errors that name the key and the cause."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

import jmespath
import jmespath.exceptions
import yaml

from .redact import url_has_password

DEFAULT_CONFIG = "/etc/remediation-receiver/config.yml"
MODES = ("auto", "observe", "approve")
OBSERVE_KINDS = ("record", "check")
ON_INTERRUPTED = ("escalate", "rerun")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Variables a rule may not set from alert data: connection and privilege settings, and our own namespace.
FORBIDDEN_VAR_PREFIXES = ("ansible_", "remediation_")


class ConfigError(Exception):
    """The configuration is invalid; `errors` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class FleetBreaker:
    max_hosts: int = 3
    window: float = 600.0


@dataclass
class Rule:
    name: str
    when: str
    playbook: str
    mode: str = "auto"
    observe: str = "record"
    vars: dict[str, str] = field(default_factory=dict)
    target_label: str | None = None
    cooldown: float = 900.0
    max_runs_per_hour: int = 6
    max_attempts: int = 1
    approval_ttl: float = 3600.0
    on_interrupted: str = "escalate"
    fleet_breaker: FleetBreaker = field(default_factory=FleetBreaker)
    job_timeout: float | None = None
    idle_timeout: float | None = None
    compiled_when: Any = None
    compiled_vars: dict[str, Any] = field(default_factory=dict)


@dataclass
class NotifyTarget:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    token_file: str | None = None


@dataclass
class Config:
    path: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 9095
    max_connections: int = 128
    request_timeout: float = 10.0
    token_file: str | None = None
    token_env: str | None = None
    max_body_bytes: int = 1_048_576
    journal: str = "/var/lib/remediation-receiver/journal.sqlite"
    journal_retention_days: float = 90.0
    # PostgreSQL journal: the password's file (else libpq's passfile or PGPASSWORD), the run lease, this receiver's
    # name in the journal (default: host name and process id).
    journal_password_file: str | None = None
    journal_lease: float = 30.0
    receiver_id: str = ""
    artifacts_dir: str = "/var/lib/remediation-receiver/runs"
    keep_runs: int = 200
    max_artifact_age_days: float = 30.0
    inventory: str = "/etc/remediation-receiver/inventory.ini"
    project_dir: str = "/etc/remediation-receiver/playbooks"
    target_label: str = "instance"
    workers: int = 2
    job_timeout: float = 900.0
    idle_timeout: float = 300.0
    envvars: dict[str, str] = field(default_factory=dict)
    max_concurrent_runs: int = 2
    shutdown_grace: float = 20.0
    notify: list[NotifyTarget] = field(default_factory=list)
    notify_retries: int = 5
    notify_backoff: float = 2.0
    notify_timeout: float = 5.0
    redact_patterns: list[str] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def resolve(self, path: str) -> str:
        """Paths in the config are relative to the config file's directory."""
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(os.path.dirname(self.path), path))


def _number(errors: list[str], where: str, value: Any, *, minimum: float = 0, integer: bool = False) -> Any:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        errors.append(f"{where}: expected {'an integer' if integer else 'a number'} >= {minimum}, got {value!r}")
        return None
    return value


def _mapping(errors: list[str], where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(f"{where}: expected a mapping, got {type(value).__name__}")
        return {}
    return value


def _unknown(errors: list[str], where: str, data: dict[str, Any], known: set[str]) -> None:
    for key in sorted(set(data) - known):
        errors.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")


def _compile(errors: list[str], where: str, expression: Any) -> Any:
    if not isinstance(expression, str) or not expression.strip():
        errors.append(f"{where}: expected a jmespath expression string, got {expression!r}")
        return None
    try:
        return jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        errors.append(f"{where}: invalid jmespath expression {expression!r}: {exc}")
        return None


def _parse_rule(errors: list[str], index: int, data: Any, defaults: Config) -> Rule | None:
    where = f"rules[{index}]"
    if not isinstance(data, dict):
        errors.append(f"{where}: expected a mapping")
        return None
    known = {"name", "when", "playbook", "mode", "observe", "vars", "target_label", "cooldown", "max_runs_per_hour",
             "max_attempts", "approval_ttl", "on_interrupted", "fleet_breaker", "job_timeout", "idle_timeout"}
    _unknown(errors, where, data, known)
    name = data.get("name")
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.-]{1,64}$", name):
        errors.append(f"{where}.name: expected 1-64 characters of [A-Za-z0-9_.-], got {name!r}")
        name = f"rule{index}"
    where = f"rules[{index}] ({name})"
    playbook = data.get("playbook")
    if not isinstance(playbook, str) or not playbook:
        errors.append(f"{where}.playbook: expected a path relative to project_dir")
        playbook = ""
    rule = Rule(name=name, when=data.get("when", ""), playbook=playbook)
    rule.compiled_when = _compile(errors, f"{where}.when", data.get("when"))
    rule.mode = data.get("mode", "auto")
    if rule.mode not in MODES:
        errors.append(f"{where}.mode: expected one of {', '.join(MODES)}, got {rule.mode!r}")
    rule.observe = data.get("observe", "record")
    if rule.observe not in OBSERVE_KINDS:
        errors.append(f"{where}.observe: expected one of {', '.join(OBSERVE_KINDS)}, got {rule.observe!r}")
    rule.on_interrupted = data.get("on_interrupted", "escalate")
    if rule.on_interrupted not in ON_INTERRUPTED:
        errors.append(f"{where}.on_interrupted: expected one of {', '.join(ON_INTERRUPTED)}")
    for key, expression in _mapping(errors, f"{where}.vars", data.get("vars")).items():
        if not isinstance(key, str) or not VAR_NAME.match(key) or key.startswith(FORBIDDEN_VAR_PREFIXES):
            errors.append(f"{where}.vars: {key!r} is not an allowed variable name (identifier, not ansible_*"
                          " or remediation_*)")
            continue
        rule.vars[key] = expression
        rule.compiled_vars[key] = _compile(errors, f"{where}.vars.{key}", expression)
    label = data.get("target_label")
    if label is not None and (not isinstance(label, str) or not label):
        errors.append(f"{where}.target_label: expected a label name")
    rule.target_label = label
    for key, integer in (("cooldown", False), ("max_runs_per_hour", True), ("max_attempts", True),
                         ("approval_ttl", False), ("job_timeout", False), ("idle_timeout", False)):
        if key in data:
            value = _number(errors, f"{where}.{key}", data[key], minimum=1 if key.startswith("max_") else 0,
                            integer=integer)
            if value is not None:
                setattr(rule, key, value)
    breaker = _mapping(errors, f"{where}.fleet_breaker", data.get("fleet_breaker"))
    _unknown(errors, f"{where}.fleet_breaker", breaker, {"max_hosts", "window"})
    if "max_hosts" in breaker:
        rule.fleet_breaker.max_hosts = _number(errors, f"{where}.fleet_breaker.max_hosts", breaker["max_hosts"],
                                               minimum=1, integer=True) or rule.fleet_breaker.max_hosts
    if "window" in breaker:
        rule.fleet_breaker.window = _number(errors, f"{where}.fleet_breaker.window", breaker["window"],
                                            minimum=1) or rule.fleet_breaker.window
    return rule


def parse_config(data: Any, path: str) -> Config:
    """Build a Config from parsed YAML; raise ConfigError listing every problem."""
    errors: list[str] = []
    cfg = Config(path=os.path.abspath(path))
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level"])
    known = {"listen", "auth", "max_body_bytes", "journal", "journal_retention_days", "journal_password_file",
             "journal_lease", "receiver_id", "artifacts", "inventory", "project_dir", "target", "executor", "guards",
             "notify", "redact", "rules"}
    _unknown(errors, "config", data, known)

    listen = _mapping(errors, "listen", data.get("listen"))
    _unknown(errors, "listen", listen, {"host", "port", "max_connections", "request_timeout"})
    cfg.listen_host = str(listen.get("host", cfg.listen_host))
    cfg.listen_port = _number(errors, "listen.port", listen.get("port", cfg.listen_port), integer=True)
    cfg.max_connections = _number(errors, "listen.max_connections",
                                  listen.get("max_connections", cfg.max_connections), minimum=1, integer=True)
    cfg.request_timeout = _number(errors, "listen.request_timeout",
                                  listen.get("request_timeout", cfg.request_timeout), minimum=0.1)

    auth = _mapping(errors, "auth", data.get("auth"))
    _unknown(errors, "auth", auth, {"token_file", "token_env"})
    cfg.token_file = auth.get("token_file")
    cfg.token_env = auth.get("token_env")
    if not cfg.token_file and not cfg.token_env:
        errors.append("auth: set token_file or token_env (the receiver never runs without a bearer token)")

    if "max_body_bytes" in data:
        cfg.max_body_bytes = _number(errors, "max_body_bytes", data["max_body_bytes"], minimum=1024, integer=True)
    if "journal_retention_days" in data:
        cfg.journal_retention_days = _number(errors, "journal_retention_days", data["journal_retention_days"],
                                             minimum=1)
    for key in ("journal", "inventory", "project_dir"):
        if key in data:
            if not isinstance(data[key], str) or not data[key]:
                errors.append(f"{key}: expected a path")
            else:
                setattr(cfg, key, data[key])
    if "journal_lease" in data:
        cfg.journal_lease = _number(errors, "journal_lease", data["journal_lease"], minimum=3)
    for key in ("journal_password_file", "receiver_id"):
        if key in data:
            if not isinstance(data[key], str) or not data[key]:
                errors.append(f"{key}: expected a string")
            else:
                setattr(cfg, key, data[key])
    if is_postgresql_url(cfg.journal):
        if url_has_password(cfg.journal):
            errors.append("journal: the URL holds a password: put it in journal_password_file (or a libpq "
                          "passfile, or PGPASSWORD in the service's environment)")
    elif cfg.journal_password_file:
        errors.append("journal_password_file: only for a postgresql:// journal")

    artifacts = _mapping(errors, "artifacts", data.get("artifacts"))
    _unknown(errors, "artifacts", artifacts, {"dir", "keep_runs", "max_age_days"})
    cfg.artifacts_dir = str(artifacts.get("dir", cfg.artifacts_dir))
    cfg.keep_runs = _number(errors, "artifacts.keep_runs", artifacts.get("keep_runs", cfg.keep_runs), minimum=1,
                            integer=True)
    cfg.max_artifact_age_days = _number(errors, "artifacts.max_age_days",
                                        artifacts.get("max_age_days", cfg.max_artifact_age_days))

    target = _mapping(errors, "target", data.get("target"))
    _unknown(errors, "target", target, {"label"})
    cfg.target_label = str(target.get("label", cfg.target_label))

    executor = _mapping(errors, "executor", data.get("executor"))
    _unknown(errors, "executor", executor, {"workers", "job_timeout", "idle_timeout", "envvars", "shutdown_grace"})
    cfg.workers = _number(errors, "executor.workers", executor.get("workers", cfg.workers), minimum=1, integer=True)
    cfg.job_timeout = _number(errors, "executor.job_timeout", executor.get("job_timeout", cfg.job_timeout), minimum=1)
    cfg.idle_timeout = _number(errors, "executor.idle_timeout", executor.get("idle_timeout", cfg.idle_timeout),
                               minimum=1)
    cfg.shutdown_grace = _number(errors, "executor.shutdown_grace",
                                 executor.get("shutdown_grace", cfg.shutdown_grace))
    cfg.envvars = {str(k): str(v) for k, v in _mapping(errors, "executor.envvars", executor.get("envvars")).items()}

    guards = _mapping(errors, "guards", data.get("guards"))
    _unknown(errors, "guards", guards, {"max_concurrent_runs"})
    cfg.max_concurrent_runs = _number(errors, "guards.max_concurrent_runs",
                                      guards.get("max_concurrent_runs", cfg.max_concurrent_runs), minimum=1,
                                      integer=True)

    notify = _mapping(errors, "notify", data.get("notify"))
    _unknown(errors, "notify", notify, {"webhooks", "retries", "backoff", "timeout"})
    for i, hook in enumerate(notify.get("webhooks") or []):
        hook = _mapping(errors, f"notify.webhooks[{i}]", hook)
        _unknown(errors, f"notify.webhooks[{i}]", hook, {"url", "headers", "token_file"})
        url = hook.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            errors.append(f"notify.webhooks[{i}].url: expected an http(s) URL, got {url!r}")
            continue
        headers = {str(k): str(v) for k, v in _mapping(errors, f"notify.webhooks[{i}].headers",
                                                       hook.get("headers")).items()}
        cfg.notify.append(NotifyTarget(url=url, headers=headers, token_file=hook.get("token_file")))
    cfg.notify_retries = _number(errors, "notify.retries", notify.get("retries", cfg.notify_retries), integer=True)
    cfg.notify_backoff = _number(errors, "notify.backoff", notify.get("backoff", cfg.notify_backoff))
    cfg.notify_timeout = _number(errors, "notify.timeout", notify.get("timeout", cfg.notify_timeout), minimum=0.1)

    redact = data.get("redact") or []
    if not isinstance(redact, list):
        errors.append("redact: expected a list of regular expressions")
        redact = []
    for i, pattern in enumerate(redact):
        try:
            re.compile(str(pattern))
            cfg.redact_patterns.append(str(pattern))
        except re.error as exc:
            errors.append(f"redact[{i}]: invalid regular expression {pattern!r}: {exc}")

    rules = data.get("rules")
    if not isinstance(rules, list) or not rules:
        errors.append("rules: expected a non-empty list of rules")
        rules = []
    seen: set[str] = set()
    for i, item in enumerate(rules):
        rule = _parse_rule(errors, i, item, cfg)
        if rule is None:
            continue
        if rule.name in seen:
            errors.append(f"rules[{i}].name: duplicate rule name {rule.name!r}")
        seen.add(rule.name)
        cfg.rules.append(rule)
    if errors:
        raise ConfigError(errors)
    for key in ("inventory", "project_dir", "artifacts_dir"):
        setattr(cfg, key, cfg.resolve(getattr(cfg, key)))
    if not is_postgresql_url(cfg.journal):
        cfg.journal = cfg.resolve(cfg.journal)
    if cfg.journal_password_file:
        cfg.journal_password_file = cfg.resolve(cfg.journal_password_file)
    if cfg.token_file:
        cfg.token_file = cfg.resolve(cfg.token_file)
    return cfg


def is_postgresql_url(journal: str) -> bool:
    return journal.startswith(("postgresql://", "postgres://"))


def receiver_id(cfg: Config) -> str:
    """This receiver's name in a shared journal (the owner of the runs it claims)."""
    return cfg.receiver_id or f"{socket.gethostname()}:{os.getpid()}"


def journal_password(cfg: Config, environ: dict[str, str] | None = None) -> str | None:
    """The PostgreSQL journal's password: from journal_password_file, else PGPASSWORD (None: libpq's passfile or no
    password). Never logged."""
    if not is_postgresql_url(cfg.journal):
        return None
    if cfg.journal_password_file:
        try:
            with open(cfg.journal_password_file, encoding="utf-8") as handle:
                password = handle.read().strip()
        except OSError as exc:
            raise ConfigError([f"journal_password_file {cfg.journal_password_file}: cannot read: "
                               f"{exc.strerror}"]) from exc
        if not password:
            raise ConfigError([f"journal_password_file {cfg.journal_password_file}: is empty"])
        return password
    return (os.environ if environ is None else environ).get("PGPASSWORD") or None


def load_config(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the configuration: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    except RecursionError as exc:
        raise ConfigError([f"{path}: nested too deep to be a configuration"]) from exc
    return parse_config(data, path)


def read_token(cfg: Config, environ: dict[str, str] | None = None) -> str:
    """The bearer token, from the file or the environment variable. Never logged."""
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    if cfg.token_file:
        try:
            with open(cfg.token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise ConfigError([f"auth.token_file {cfg.token_file}: cannot read: {exc.strerror}"]) from exc
    else:
        token = (environ or {}).get(cfg.token_env or "", "").strip()
        if not token:
            raise ConfigError([f"auth.token_env: environment variable {cfg.token_env} is empty or unset"])
    if len(token) < 16:
        raise ConfigError(["auth: the bearer token is shorter than 16 characters"])
    return token
