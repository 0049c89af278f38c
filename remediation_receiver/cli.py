"""Command line: serve, check, replay, runs, show, approve, cancel, pause, resume."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
import time
from typing import Any

import yaml

from .config import DEFAULT_CONFIG, Config, ConfigError, is_postgresql_url, journal_password, load_config, read_token
from .guards import CANCEL_PREFIX, PAUSE_KEY
from .ingress import PayloadError, parse_payload
from .journal import ACTIVE, WAITING, AlertRecord, Journal, JournalError, RunRecord, storable_text
from .redact import SECRET_NAME, redact_url
from .targets import InventoryCache, InventoryError, load_inventory


def _config(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"configuration {args.config} is invalid:", file=sys.stderr)
        for error in exc.errors:
            print(f"  - {error}", file=sys.stderr)
        raise SystemExit(2) from exc


def _journal(cfg: Config, *, write: bool = False) -> Journal:
    """The journal the configuration names: a file, or a PostgreSQL database shared by several receivers (then
    `pause`, `approve` and `cancel` act on every receiver, whichever one's CLI runs them)."""
    postgresql = is_postgresql_url(cfg.journal)
    if not postgresql and not os.path.exists(cfg.journal) and not write:
        raise SystemExit(f"no journal at {cfg.journal} (has the receiver run yet?)")
    password = None
    try:
        password = journal_password(cfg)
        journal = Journal(cfg.journal, readonly=not write, password=password)  # type: ignore[abstract]  # Journal.__new__ picks the backend
    except Exception as exc:  # ConfigError, JournalError, the driver's error (a file that is no journal)
        text = _error_text(exc) if isinstance(exc, ConfigError | JournalError) else f"{type(exc).__name__}: {exc}"
        if password:
            text = text.replace(password, "***")
        name = redact_url(cfg.journal) if postgresql else cfg.journal
        prefix = "" if text.startswith(f"journal {name}") else f"journal {name}: "
        raise SystemExit(f"cannot open the journal: {prefix}{text}") from None
    _opened.append(journal)
    return journal


# The journals this command opened: an error of theirs (the database went away, a file that is no journal) ends the
# command with a message that names the journal, not with a traceback.
_opened: list[Journal] = []


def _error_text(exc: Exception) -> str:
    return "; ".join(exc.errors) if isinstance(exc, ConfigError) else str(exc)


def _text(value: str) -> str:
    """A command-line argument the journal can store: a byte that is not UTF-8 reaches Python as a lone surrogate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise argparse.ArgumentTypeError(f"{storable_text(value)!r} is not UTF-8 text") from exc
    return value


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return f"uid {os.getuid()}"


def cmd_serve(args: argparse.Namespace) -> int:
    from .service import Service

    cfg = _config(args)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        service = Service(cfg)
    except (ConfigError, JournalError) as exc:
        print(f"cannot start: {_error_text(exc)}", file=sys.stderr)
        return 2
    service.serve_forever()
    return 0


def check_config(cfg: Config, *, syntax: bool = True) -> tuple[list[str], list[str]]:
    """Everything `check` verifies; returns (ok lines, error lines)."""
    ok: list[str] = [f"configuration {cfg.path}: {len(cfg.rules)} rule(s)"]
    errors: list[str] = []
    try:
        read_token(cfg)
        ok.append("bearer token: readable, long enough")
    except ConfigError as exc:
        errors.extend(exc.errors)
    for index, target in enumerate(cfg.notify):
        if target.token_file:
            path = cfg.resolve(target.token_file)
            try:
                with open(path, encoding="utf-8") as handle:
                    empty = not handle.read().strip()
            except OSError as exc:
                errors.append(f"notify.webhooks[{index}].token_file {path}: cannot read: {exc.strerror}")
                continue
            if empty:
                errors.append(f"notify.webhooks[{index}].token_file {path}: is empty")
    try:
        inventory = load_inventory(cfg.inventory)
        if not inventory.hosts:
            errors.append(f"inventory {cfg.inventory}: no hosts")
        else:
            ok.append(f"inventory {cfg.inventory}: {len(inventory.hosts)} host(s)")
    except Exception as exc:  # InventoryError, or whatever Ansible raised
        errors.append(f"inventory {cfg.inventory}: cannot be loaded: {exc}")
    for rule in cfg.rules:
        path = os.path.join(cfg.project_dir, rule.playbook)
        if not os.path.isfile(path):
            errors.append(f"rule {rule.name}: playbook {path} does not exist")
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                plays = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            errors.append(f"rule {rule.name}: playbook {path} is not valid YAML: {exc}")
            continue
        if not isinstance(plays, list) or not plays:
            errors.append(f"rule {rule.name}: playbook {path} is not a list of plays")
            continue
        if syntax:
            binary = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
            proc = subprocess.run([binary if os.path.exists(binary) else "ansible-playbook", "--syntax-check",
                                   "-i", cfg.inventory, path], capture_output=True, text=True, check=False,
                                  cwd=cfg.project_dir)
            if proc.returncode != 0:
                errors.append(f"rule {rule.name}: playbook {path} fails --syntax-check: "
                              f"{(proc.stderr or proc.stdout).strip()[-500:]}")
                continue
        ok.append(f"rule {rule.name}: mode {rule.mode}, playbook {rule.playbook}")
    directories = [cfg.artifacts_dir]
    if is_postgresql_url(cfg.journal):
        try:
            journal = Journal(cfg.journal, readonly=True, password=journal_password(cfg))  # type: ignore[abstract]  # Journal.__new__ picks the backend
            try:
                version = journal.schema_version()
                ok.append(f"journal {journal.describe()}: reachable, " + (
                    f"schema version {version}" if version else "no schema yet (the receiver creates it at start)")
                    + "; several receivers may share it")
            finally:
                journal.close()
        except Exception as exc:  # JournalError, ConfigError, the driver's error for a missing schema
            errors.append(f"journal {redact_url(cfg.journal)}: {_error_text(exc)}")
    else:
        directories.insert(0, os.path.dirname(cfg.journal))
    for directory in directories:
        probe = directory
        while probe and not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.access(probe or "/", os.W_OK):
            errors.append(f"{directory}: not writable by uid {os.getuid()}")
    return ok, errors


def _readable_by_everyone(path: str) -> str | None:
    """The file's mode when every local user can read it (None when it cannot be read that way or is absent)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    return f"{mode:04o}" if mode & stat.S_IROTH else None


def _inline_secret(name: str, value: str) -> bool:
    return name.lower() == "authorization" or bool(SECRET_NAME.search(name)) or \
        value.lower().startswith(("bearer ", "basic "))


def exposure_warnings(cfg: Config) -> list[str]:
    """Secrets and alert data other local users could read: `check` warns, `check --strict` fails."""
    warnings: list[str] = []
    files = [("configuration", cfg.path, "it can hold credentials")]
    if cfg.token_file:
        files.append(("auth.token_file", cfg.token_file, "it is the bearer token"))
    files += [(f"notify.webhooks[{i}].token_file", cfg.resolve(t.token_file), "it is a credential")
              for i, t in enumerate(cfg.notify) if t.token_file]
    if not is_postgresql_url(cfg.journal):
        files.append(("journal", cfg.journal, "it holds alert data and run output"))
    if cfg.journal_password_file:
        files.append(("journal_password_file", cfg.journal_password_file, "it is the journal's password"))
    files.append(("artifacts.dir", cfg.artifacts_dir, "it holds run output"))
    for what, path, why in files:
        mode = _readable_by_everyone(path)
        if mode:
            warnings.append(f"{what} {path} is readable by every user (mode {mode}) and {why}: chmod o-rwx")
    for i, target in enumerate(cfg.notify):
        for name, value in target.headers.items():
            if _inline_secret(name, value):
                warnings.append(f"notify.webhooks[{i}].headers.{name} is a credential written inline in the "
                                "configuration: put the token in a file readable only by the receiver (token_file)")
    for name, value in cfg.envvars.items():
        if _inline_secret(name, value):
            warnings.append(f"executor.envvars.{name} looks like a secret written inline in the configuration: give "
                            "it to the service's environment instead (a systemd EnvironmentFile readable only by it)")
    return warnings


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _config(args)
    ok, errors = check_config(cfg, syntax=not args.no_syntax_check)
    warnings = exposure_warnings(cfg)
    for line in ok:
        print(f"ok: {line}")
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if warnings and args.strict and not errors:
        print(f"error: --strict: {len(warnings)} warning(s)", file=sys.stderr)
    return 1 if errors or (warnings and args.strict) else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .dispatcher import plan_alert

    cfg = _config(args)
    try:
        with open(args.payload, "rb") as handle:
            body = handle.read()
        payload, alerts = parse_payload(body)
    except OSError as exc:
        print(f"cannot read {args.payload}: {exc.strerror}", file=sys.stderr)
        return 2
    except PayloadError as exc:
        print(f"{args.payload}: the receiver would answer 400: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        # Guards read the live journal when there is one; nothing is ever written to it.
        journal = _journal(cfg) if is_postgresql_url(cfg.journal) or os.path.exists(cfg.journal) else None
        if journal is not None and not journal.schema_version():  # a database no receiver has used yet
            journal.close()
            journal = None
        if journal is None:
            journal = Journal(os.path.join(scratch, "empty.sqlite"))  # type: ignore[abstract]  # Journal.__new__ picks the backend
        inventory = InventoryCache(cfg.inventory)
        out: list[dict[str, Any]] = []
        for index, alert in enumerate(alerts):
            record = AlertRecord(id=0, delivery_id=0, fingerprint=alert["fingerprint"], status=alert["status"],
                                 starts_at=alert["startsAt"], ends_at=alert.get("endsAt"), labels=alert["labels"],
                                 annotations=alert["annotations"], generator_url=alert.get("generatorURL"),
                                 received_at=time.time())
            try:
                plan = plan_alert(cfg, journal, inventory, record)
            except InventoryError as exc:
                print(f"cannot decide: {exc}", file=sys.stderr)
                return 2
            out.append({"alert": index, "alertname": alert["labels"].get("alertname"), "status": alert["status"],
                        "decisions": plan.decisions,
                        "would_run": [{k: r[k] for k in ("rule", "playbook", "host", "mode", "check_mode", "status",
                                                         "extravars")} for r in plan.runs],
                        "would_cancel": [cancel[0] for cancel in plan.cancel]})
    print(json.dumps({"receiver": payload.get("receiver"), "alerts": out}, indent=2, sort_keys=True, default=str))
    return 0


def _fmt_time(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value)) if value else "-"


def cmd_runs(args: argparse.Namespace) -> int:
    journal = _journal(_config(args))
    runs = journal.list_runs(limit=args.limit, status=args.status)
    if args.json:
        print(json.dumps([r.summary() for r in runs], indent=2, sort_keys=True, default=str))
        return 0
    print(f"{'RUN':<25} {'CREATED (UTC)':<19} {'STATUS':<17} {'RULE':<20} {'HOST':<20} {'TRY':>3}  REASON")
    for r in runs:
        reason = r.held if r.status == "queued" and r.held else r.reason
        print(f"{r.id:<25} {_fmt_time(r.created_at):<19} {r.status:<17} {r.rule[:20]:<20} {r.host[:20]:<20} "
              f"{r.attempt:>3}  {reason}")
    return 0


def _find_run(
    args: argparse.Namespace, write: bool = False, with_events: bool = False
) -> tuple[Journal, RunRecord | None]:
    """The journal and the run named on the command line; says so on stderr when there is no such run."""
    journal = _journal(_config(args), write=write)
    run = journal.get_run(args.run_id, with_events=with_events)
    if run is None:
        print(f"no run {args.run_id}", file=sys.stderr)
    return journal, run


def cmd_show(args: argparse.Namespace) -> int:
    _, run = _find_run(args, with_events=True)
    if run is None:
        return 1
    data = run.summary()
    data["events"] = run.events
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    journal, run = _find_run(args, write=True)
    if run is None:
        return 1
    if run.status != "awaiting_approval":
        print(f"run {run.id} is {run.status}, not awaiting approval", file=sys.stderr)
        return 1
    now = time.time()
    if run.approve_by is not None and run.approve_by < now:
        print(f"run {run.id}: the approval window closed at {_fmt_time(run.approve_by)} UTC", file=sys.stderr)
        return 1
    with journal.transaction():  # the approval and its record commit together
        if not journal.set_run_status(run.id, "queued", reason=f"approved by {_who()}", approved_at=now,
                                      expect=("awaiting_approval",)):
            print(f"run {run.id} changed state meanwhile; not approved", file=sys.stderr)
            return 1
        journal.add_run_events(run.id, [{"event": "approved", "data": {"by": _who()}}])
    print(f"approved run {run.id}: {run.playbook} on {run.host} (rule {run.rule})")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    journal, run = _find_run(args, write=True)
    if run is None:
        return 1
    reason = f"canceled by {_who()}" + (f": {args.reason}" if args.reason else "")
    if run.status in WAITING:
        with journal.transaction():  # the cancel and its record commit together
            if not journal.set_run_status(run.id, "canceled", reason=reason, finished_at=time.time(), handled=1,
                                          expect=WAITING):
                print(f"run {run.id} started meanwhile; run `cancel` again to stop it", file=sys.stderr)
                return 1
            journal.add_run_events(run.id, [{"event": "canceled", "data": {"by": _who(), "reason": args.reason}}])
        print(f"canceled run {run.id} ({run.status} before): {run.playbook} on {run.host}")
        return 0
    if run.status in ACTIVE:
        # The service owns the running playbook: it picks the request up within a second and stops it.
        with journal.transaction():
            journal.set_state(CANCEL_PREFIX + run.id, reason)
            journal.add_run_events(run.id, [{"event": "cancel_requested",
                                             "data": {"by": _who(), "reason": args.reason}}])
        print(f"cancel requested for run {run.id} ({run.status}): the receiver stops {run.playbook} on {run.host}; "
              f"see `remediation-receiver show {run.id}`")
        return 0
    print(f"run {run.id} is {run.status}: nothing to cancel", file=sys.stderr)
    return 1


def cmd_pause(args: argparse.Namespace) -> int:
    journal = _journal(_config(args), write=True)
    reason = f"{args.reason or 'paused'} (by {_who()} at {_fmt_time(time.time())} UTC)"
    journal.set_state(PAUSE_KEY, reason)
    print(f"paused: {reason}; alerts are still stored and decided, no run starts until `resume`")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    journal = _journal(_config(args), write=True)
    was = journal.get_state(PAUSE_KEY)
    journal.set_state(PAUSE_KEY, None)
    print(f"resumed (was: {was})" if was else "was not paused")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remediation-receiver",
                                     description="Alertmanager webhook -> remediation playbooks through ansible-runner")
    default_config = os.environ.get("REMEDIATION_RECEIVER_CONFIG", DEFAULT_CONFIG)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default=default_config,
                        help=f"configuration file (default: $REMEDIATION_RECEIVER_CONFIG or {DEFAULT_CONFIG})")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", parents=[common], help="run the HTTP receiver, the dispatcher and the workers")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("check", parents=[common], help="validate the configuration, rules, inventory and playbooks")
    p.add_argument("--no-syntax-check", action="store_true", help="skip ansible-playbook --syntax-check")
    p.add_argument("--strict", action="store_true",
                   help="fail on warnings too (secrets or alert data readable by every user, inline credentials)")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("replay", parents=[common], help="print the decision for each alert of a payload; run nothing")
    p.add_argument("payload", help="an Alertmanager webhook payload (JSON file)")
    p.set_defaults(func=cmd_replay)
    p = sub.add_parser("runs", parents=[common], help="list runs from the journal")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--status", type=_text)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("show", parents=[common], help="one run with its events")
    p.add_argument("run_id", type=_text)
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("approve", parents=[common], help="approve a run waiting for approval")
    p.add_argument("run_id", type=_text)
    p.set_defaults(func=cmd_approve)
    p = sub.add_parser("cancel", parents=[common], help="cancel a queued, waiting or running run")
    p.add_argument("run_id", type=_text)
    p.add_argument("--reason", default="", type=_text)
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("pause", parents=[common], help="stop starting runs (alerts are still stored and decided)")
    p.add_argument("--reason", default="", type=_text)
    p.set_defaults(func=cmd_pause)
    p = sub.add_parser("resume", parents=[common], help="start runs again")
    p.set_defaults(func=cmd_resume)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    del _opened[:]
    try:
        return int(args.func(args))
    except Exception as exc:
        failed = [journal for journal in _opened if isinstance(exc, (JournalError, *journal.errors))]
        if not failed:
            raise
        raise SystemExit(failed[-1].error_text(exc)) from None
    finally:
        del _opened[:]


if __name__ == "__main__":
    sys.exit(main())
