"""Background processes the demo starts (Prometheus, Alertmanager, the receiver, the sink), each recorded in the
state directory with its pid and start time, so `make demo-down` stops exactly those and nothing else."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat): a pid that was reused by
    another process after ours ended has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class Started:
    name: str
    pid: int
    ticks: int
    log: Path

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.ticks and _state(self.pid) not in ("Z", "X", None)


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _pid_dir(state: Path) -> Path:
    return state / "pids"


def start(state: Path, name: str, argv: list[str], *, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Started:
    """Start `argv` in its own session (it outlives `make demo` when the demo is kept), output to logs/NAME.log."""
    (state / "logs").mkdir(parents=True, exist_ok=True)
    _pid_dir(state).mkdir(parents=True, exist_ok=True)
    log = state / "logs" / f"{name}.log"
    with open(log, "ab") as handle:
        proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
    ticks = _start_ticks(proc.pid)
    if ticks is None:
        raise RuntimeError(f"{name} exited at once: {log.read_text()[-2000:]}")
    started = Started(name, proc.pid, ticks, log)
    (_pid_dir(state) / f"{name}.json").write_text(json.dumps({"pid": proc.pid, "ticks": ticks, "log": str(log),
                                                               "argv": argv}))
    return started


def recorded(state: Path) -> list[Started]:
    out = []
    for path in sorted(_pid_dir(state).glob("*.json")) if _pid_dir(state).is_dir() else []:
        data = json.loads(path.read_text())
        out.append(Started(path.stem, int(data["pid"]), int(data["ticks"]), Path(data["log"])))
    return out


def stop(state: Path, started: Started, timeout: float = 15.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout`; only when the pid is still the process we started. True if it ran."""
    pidfile = _pid_dir(state) / f"{started.name}.json"
    was_running = started.alive()
    if was_running:
        os.kill(started.pid, signal.SIGTERM)
        deadline = time.time() + timeout
        while started.alive() and time.time() < deadline:
            _reap(started.pid)
            time.sleep(0.2)
        if started.alive():
            os.kill(started.pid, signal.SIGKILL)
            time.sleep(0.2)
        _reap(started.pid)
    pidfile.unlink(missing_ok=True)
    return was_running


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.5) -> object:
    """Poll until `predicate` returns something true; raise TimeoutError naming `what` otherwise."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
