# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scheduled Docker hygiene, run by docker-prune.service (installed by postmortem.remediation.docker_prune_timer).

Removes, by age and never when they carry the keep label: build cache, stopped containers (not services with a
restart policy or Compose projects), dangling images, and when enabled unused images and unused volumes.
Skips when the clock is inside a configured window (the backup). One run at a time (a lock shared with the
docker_reclaim module). Writes node_exporter textfile metrics atomically and one readable line to the journal.

The rules live in _prune_policy.py (and the files it names: _prune_units.py, _prune_rules.py, _prune_reclaimer.py,
_prune_metrics.py, _files.py) and the engine client in _docker_api.py, copied beside this script from the
collection's plugins/module_utils: one source of truth for the module and the timer.

Run as `python3 docker_prune.py [--dry-run] [--ignore-window] [--check-config]`.
Exit status: 0 for a run that finished or was skipped, 1 when the run failed, 2 for an unusable configuration,
3 when the run finished but its metrics file could not be written (the journal line before says how the run ended).
Every run that is not skipped for the lock writes the metrics, a failed one too (docker_prune_last_run_success 0):
an unexpected error, SIGTERM (a stop, TimeoutStartSec), and an unusable configuration whose "textfile" can still be
read, included.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Copied beside this script by the role, found through the path set above.
import _docker_api
import _prune_policy as policy

TIMER_TIERS = ("build_cache", "stopped_containers", "dangling_images", "unused_images", "volumes")


def say(message: str) -> None:
    """One line to stdout, which systemd sends to the journal under the unit's SyslogIdentifier."""
    sys.stdout.write(f"{message}\n")
    sys.stdout.flush()


# Every key the configuration may hold, with the types it may have: anything else is refused, not ignored.
TOP_LEVEL = {"_comment": (str,), "docker_socket": (str,), "keep_label": (str,), "textfile": (str, type(None)),
             "lock_file": (str,), "windows": (list,), "tiers": (dict,), "build_cache_all": (bool,),
             "timeout": (int,)}
TIER_KEYS = {"enabled": (bool,), "until": (str, int)}
WINDOW_KEYS = {"name": (str,), "start": (str,), "end": (str,)}


def _checked(mapping: object, allowed: dict, where: str) -> dict:
    """``mapping`` as a dict whose keys are all known and whose values have their types (a bool is no int here)."""
    if not isinstance(mapping, dict):
        raise policy.PolicyError(f"{where}: expected an object, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise policy.PolicyError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    for key, value in mapping.items():
        types = allowed[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise policy.PolicyError(f"{where}.{key}: expected {names}, got {json.dumps(value)}")
    return mapping


def load_config(path: str) -> dict:
    with open(path) as handle:
        config = _checked(json.load(handle), TOP_LEVEL, "configuration")
    tiers = config.get("tiers") or {}
    unknown = sorted(set(tiers) - set(TIMER_TIERS))
    if unknown:
        raise policy.PolicyError(f"tiers: unknown tier(s) {', '.join(unknown)}; known: {', '.join(TIMER_TIERS)}")
    for tier, settings in tiers.items():
        _checked(settings, TIER_KEYS, f"tiers.{tier}")
    # Only a JSON true enables a tier: the string "false" is refused above, never read as true.
    enabled = [t for t in TIMER_TIERS if tiers.get(t, {}).get("enabled") is True]
    min_age = {t: policy.parse_duration(tiers[t].get("until", 0)) for t in enabled}
    for index, window in enumerate(config.get("windows") or []):
        _checked(window, WINDOW_KEYS, f"windows[{index}]")
        policy.parse_clock(window["start"])
        policy.parse_clock(window["end"])
    if config.get("timeout", 600) <= 0:
        raise policy.PolicyError(f"timeout: expected a number of seconds above 0, got {config['timeout']}")
    return {
        "socket": config.get("docker_socket", _docker_api.DEFAULT_SOCKET),
        "keep_label": config.get("keep_label", policy.DEFAULT_KEEP_LABEL),
        "textfile": config.get("textfile"),
        "lock_file": config.get("lock_file", policy.DEFAULT_LOCK_FILE),
        "windows": config.get("windows") or [],
        "tiers": enabled,
        "min_age": min_age,
        "build_cache_all": config.get("build_cache_all", True),
        "timeout": config.get("timeout", 600),
    }


def previous_success(textfile: str | None) -> float | None:
    """The last success time carried over from the previous metrics file, so a failed run does not erase it."""
    if not textfile or not os.path.exists(textfile):
        return None
    try:
        with open(textfile) as handle:
            for line in handle:
                if line.startswith("docker_prune_last_success_timestamp_seconds "):
                    return float(line.split()[1])
    except (OSError, UnicodeDecodeError, IndexError, ValueError):
        return None  # unreadable: writing this run's metrics will say so, if it fails too
    return None


def write_metrics(config: dict, run: dict) -> bool:
    """Whether the metrics of ``run`` are in the textfile (or none is configured); a failure is said, never raised."""
    if not config["textfile"]:
        return True
    try:
        directory = os.path.dirname(config["textfile"])
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755, exist_ok=True)
        policy.write_atomically(config["textfile"], policy.render_metrics(run))
    except OSError as exc:
        say(f"FAILED to write the metrics file {config['textfile']}: {exc}; the alerts cannot see this run")
        return False
    return True


def failed_run(textfile: str | None, started: float) -> dict:
    """The metrics of a run that an error ended before any tier ran."""
    now = time.time()
    return {"success": False, "skipped": False, "tiers": {}, "timestamp": now, "duration": now - started,
            "last_success_timestamp": previous_success(textfile)}


def textfile_of(path: str) -> str | None:
    """The "textfile" of a configuration load_config refused, when it can still be read: the failure is recorded."""
    try:
        with open(path) as handle:
            textfile = json.load(handle).get("textfile")
    except (OSError, ValueError, AttributeError):
        return None
    return textfile if isinstance(textfile, str) and textfile else None


def summary_line(run: dict) -> str:
    tiers = run["tiers"]
    reclaimed = sum(t["reclaimed_bytes"] for t in tiers.values())
    parts = [f"{name} {policy.human_bytes(t['reclaimed_bytes'])} ({t['removed']} removed)" for name, t in tiers.items()]
    failed = sum(t["failed"] for t in tiers.values())
    free = policy.human_bytes(run.get("free_bytes") or 0)
    size = policy.human_bytes(run.get("size_bytes") or 0)
    kinds = ", ".join(parts) or "no tier enabled"
    return (
        f"reclaimed {policy.human_bytes(reclaimed)} in {run['duration']:.1f} s: {kinds}; "
        f"{free} free of {size}; {failed} failure(s)"
    )


def record_tiers(run: dict, reports: list[dict]) -> None:
    for report in reports:
        run["tiers"][report["tier"]] = {"reclaimed_bytes": report["reclaimed_bytes"],
                                        "removed": len(report["removed"]), "failed": len(report["failed"])}
        for failure in report["failed"]:
            say(f"could not remove {failure['name']} ({report['tier']}): {failure['error']}")


def prune(config: dict, dry_run: bool) -> tuple[int, dict]:
    started = time.time()
    run = {"success": False, "skipped": False, "tiers": {},
           "last_success_timestamp": previous_success(config["textfile"])}
    api = _docker_api.DockerAPI(config["socket"], timeout=config["timeout"])
    try:
        data_root = api.info().get("DockerRootDir") or "/var/lib/docker"
        reclaimer = policy.Reclaimer(
            api, data_root, [t for t in policy.TIERS if t in config["tiers"]], keep_label=config["keep_label"],
            min_age=config["min_age"], build_cache_all=config["build_cache_all"],
        )
        if dry_run:
            plan = reclaimer.estimate(policy.EngineState(api, with_volumes="volumes" in config["tiers"]))[0]
            for tier in plan:
                would = ", ".join(tier["would_remove"]) or "-"
                say(f"dry run: {tier['tier']} would free about {policy.human_bytes(tier['estimated_bytes'])}: {would}")
            return 0, run
        reports = reclaimer.run(target=None, with_volumes="volumes" in config["tiers"])
    except (Exception, Terminated) as exc:
        # Whatever ended the run (an engine answer nothing expects and SIGTERM too), the tiers that ran before it
        # removed things: the metrics and the journal say so.
        record_tiers(run, getattr(exc, "reports", []))
        run.update(timestamp=time.time(), duration=time.time() - started)
        tier = getattr(exc, "tier", None)
        where = f" in tier {tier}" if tier else ""
        kind = "" if isinstance(exc, (_docker_api.DockerAPIError, policy.PolicyError, OSError, Terminated)) \
            else f"{type(exc).__name__}: "
        done = ", ".join(f"{name} {policy.human_bytes(t['reclaimed_bytes'])} ({t['removed']} removed)"
                         for name, t in run["tiers"].items())
        done = f"; the tiers before it: {done}" if done else ""
        say(f"FAILED after {run['duration']:.1f} s{where}: {kind}{exc}{done}")
        return 1, run
    record_tiers(run, reports)
    free, size = policy.filesystem_usage(data_root)
    now = time.time()
    run.update(success=True, timestamp=now, last_success_timestamp=now, duration=now - started,
               free_bytes=free, size_bytes=size)
    say(summary_line(run))
    return 0, run


class Terminated(BaseException):
    """SIGTERM: systemd stopping the unit, or TimeoutStartSec passed. Recorded as a failed run, then the exit."""


def terminate(signum: int, frame: object) -> None:
    raise Terminated(f"terminated by signal {signum} (the unit was stopped, or ran past TimeoutStartSec)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="/etc/docker-prune/config.json")
    parser.add_argument("--dry-run", action="store_true", help="print what each tier would free; remove nothing")
    parser.add_argument("--ignore-window", action="store_true", help="run even inside a configured window")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    args = parser.parse_args(argv)
    started = time.time()
    try:
        config = load_config(args.config)
    except (OSError, ValueError, KeyError, TypeError, policy.PolicyError) as exc:
        say(f"FAILED: unusable configuration {args.config}: {exc}")
        textfile = textfile_of(args.config)
        if textfile and not (args.check_config or args.dry_run):
            write_metrics({"textfile": textfile}, failed_run(textfile, started))
        return 2
    if args.check_config:
        say(f"configuration {args.config} is valid: tiers {', '.join(config['tiers']) or 'none'}")
        return 0

    window = None if args.ignore_window else policy.active_window(
        config["windows"], time.localtime().tm_hour * 60 + time.localtime().tm_min)
    if window is not None:
        name = window.get("name", "unnamed")
        reason = f"window {name}"
        say(f"skipped: {time.strftime('%H:%M')} is inside the {name} window {window['start']}-{window['end']}, "
            "when nothing may be pruned")
        if not args.dry_run:
            written = write_metrics(config, {"success": True, "skipped": True, "skip_reason": reason,
                                             "timestamp": time.time(), "duration": 0, "tiers": {},
                                             "last_success_timestamp": previous_success(config["textfile"])})
            return 0 if written else 3
        return 0

    signal.signal(signal.SIGTERM, terminate)
    try:
        lock = policy.acquire_lock(config["lock_file"], 0)
        if lock is None:
            say(f"skipped: another prune or reclaim holds {config['lock_file']}")
            return 0
        try:
            status, run = prune(config, args.dry_run)
        finally:
            lock.close()
    except (Exception, Terminated) as exc:  # what prune() does not expect: recorded like any failure, not a traceback
        say(f"FAILED after {time.time() - started:.1f} s: {type(exc).__name__}: {exc}")
        status, run = 1, failed_run(config["textfile"], started)
    if args.dry_run:
        return status
    return status if write_metrics(config, run) or status else 3


if __name__ == "__main__":
    sys.exit(main())
