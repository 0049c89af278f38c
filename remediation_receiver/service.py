"""The running service: wires journal -> ingress, dispatcher -> executor -> notify, and the read-only views."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
from typing import Any

from .config import Config, journal_password, read_token
from .dispatcher import Dispatcher
from .executor import Executor
from .guards import PAUSE_KEY
from .ingress import Ingress, make_server
from .journal import Journal
from .metrics import Metrics
from .notify import Notifier
from .redact import Redactor, secret_env_values

log = logging.getLogger("remediation_receiver.service")

# What /healthz writes to learn whether a journal that refused a delivery takes writes again.
HEALTH_KEY = "health_write_probe"


class Views:
    """What GET answers: health, metrics, runs. Reads only."""

    def __init__(self, journal: Journal, metrics: Metrics, dispatcher: Dispatcher) -> None:
        self.journal = journal
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.ingress: Ingress | None = None  # set once the ingress exists: its last delivery's outcome

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            counts = self.journal.counts()
        except Exception as exc:
            return 503, {"status": "journal unavailable", "error": str(exc)}
        failure = self.ingress.store_failure if self.ingress is not None else None
        if failure is not None and self.ingress is not None:
            # Written again here, so that a journal that recovered while no delivery came is seen healthy.
            try:
                self.journal.set_state(HEALTH_KEY, str(time.time()))
                self.ingress.store_failure = None
            except Exception:
                return 503, {"status": "journal refuses deliveries", "since": round(failure[0], 3),
                             "error": failure[1]}
        lag = time.time() - self.dispatcher.last_loop
        body = {"status": "ok" if lag < 30 else "dispatcher stalled", "paused": self.journal.get_state(PAUSE_KEY),
                "undecided_alerts": counts["undecided"]["all"], "runs": counts["runs"],
                "dispatcher_lag_seconds": round(lag, 3)}
        return (200 if lag < 30 else 503), body

    def gauges(self) -> list[tuple[str, dict[str, str], float, str]]:
        counts = self.journal.counts()
        out: list[tuple[str, dict[str, str], float, str]] = []
        out.append(("remediation_receiver_journal_deliveries", {}, counts["deliveries"]["all"],
                    "Deliveries in the journal."))
        for status, n in sorted(counts["alerts"].items()):
            out.append(("remediation_receiver_journal_alerts", {"status": status}, n, "Alerts in the journal."))
        out.append(("remediation_receiver_undecided_alerts", {}, counts["undecided"]["all"],
                    "Alerts stored but not decided yet."))
        for outcome, n in sorted(counts["decisions"].items()):
            out.append(("remediation_receiver_journal_decisions", {"outcome": outcome}, n,
                        "Decisions in the journal, by outcome."))
        for status, n in sorted(counts["runs"].items()):
            out.append(("remediation_receiver_journal_runs", {"status": status}, n, "Runs in the journal, by status."))
        for status, n in sorted(counts["notifications"].items()):
            out.append(("remediation_receiver_journal_notifications", {"status": status}, n,
                        "Notifications in the journal, by status."))
        for sync, n in sorted(self.journal.commits.items()):
            out.append(("remediation_receiver_journal_commits", {"sync": sync}, float(n),
                        "Journal commits since start: full waited for the disk (fsync), normal did not."))
        out.append(("remediation_receiver_journal_checkpoints", {}, float(self.journal.checkpoints),
                    "WAL checkpoints since start that copied pages into the database (two fsyncs each)."))
        out.append(("remediation_receiver_paused", {}, 1.0 if self.journal.get_state(PAUSE_KEY) else 0.0,
                    "1 while the receiver is paused."))
        out.append(("remediation_receiver_runs_active", {}, float(len(self.dispatcher.executor.active())),
                    "Runs executing now."))
        return out

    def metrics_text(self) -> str:
        return self.metrics.render()

    def runs(self, limit: int = 100) -> list[dict[str, Any]]:
        return [r.summary() for r in self.journal.list_runs(limit=limit)]

    def run(self, run_id: str) -> dict[str, Any] | None:
        run = self.journal.get_run(run_id, with_events=True)
        if run is None:
            return None
        data = run.summary()
        data["events"] = run.events
        data["decisions"] = self.journal.query("SELECT * FROM decisions WHERE run_id=?", (run_id,))
        return data


class Service:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        token = read_token(cfg)
        if cfg.token_env:
            # Children (ansible-playbook) must not inherit the token; runner writes their environment to disk.
            os.environ.pop(cfg.token_env, None)
        password = journal_password(cfg)
        # Children (ansible-playbook) must not inherit the journal's password either.
        os.environ.pop("PGPASSWORD", None)
        secrets = [token, *secret_env_values(cfg.envvars), *secret_env_values(dict(os.environ))]
        if password:
            secrets.append(password)
        for target in cfg.notify:
            if target.token_file:
                try:
                    with open(cfg.resolve(target.token_file), encoding="utf-8") as handle:
                        secrets.append(handle.read().strip())
                except OSError as exc:
                    raise SystemExit(f"notify token_file {target.token_file}: {exc.strerror}") from exc
        self.redactor = Redactor(secrets, cfg.redact_patterns)
        self.metrics = Metrics()
        self.journal = Journal(cfg.journal, password=password)  # type: ignore[abstract]  # Journal.__new__ picks the backend
        self.notifier = Notifier(cfg, self.journal, self.redactor)
        self.executor = Executor(cfg, self.journal, self.redactor,
                                 on_finished=lambda run_id: self.dispatcher.wake.set())
        self.dispatcher = Dispatcher(cfg, self.journal, self.executor, self.notifier, self.metrics)
        self.views = Views(self.journal, self.metrics, self.dispatcher)
        self.metrics.add_gauges(self.views.gauges)
        self.ingress = Ingress(self.journal, token, cfg.max_body_bytes, self.metrics,
                               on_stored=self.dispatcher.wake.set)
        self.views.ingress = self.ingress
        self.server = make_server(cfg.listen_host, cfg.listen_port, self.ingress, self.views,
                                  max_connections=cfg.max_connections, request_timeout=cfg.request_timeout)
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.executor.start_leases()
        self.notifier.start()
        self.dispatcher.start()
        self._http = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                      name="http", daemon=True)
        self._http.start()
        log.info("listening on %s:%d (journal %s%s)", self.cfg.listen_host, self.port, self.journal.describe(),
                 f", shared, as {self.executor.owner}" if self.journal.shared else "")

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("stopping: no new deliveries; waiting up to %.0fs for running playbooks", self.cfg.shutdown_grace)
        self.server.shutdown()
        self.server.server_close()
        self.dispatcher.stop()
        self.executor.shutdown(self.cfg.shutdown_grace)
        self.notifier.stop()

    def serve_forever(self) -> None:
        stop_signals = StopSignals()
        self.start()
        _notify_systemd("READY=1")
        signum = stop_signals.wait()
        log.info("signal %s received", signal.Signals(signum).name)
        _notify_systemd("STOPPING=1")
        self.stop()


class StopSignals:
    """SIGTERM and SIGINT, received from the moment this is made and waited for in the main thread.

    The handler takes no lock: Python runs a handler in the main thread between any two of its bytecodes, including
    while that thread holds a lock. The handler used to set a threading.Event that the main thread was waiting on;
    a signal landing while the main thread held the Event's own lock (the moment its 1 s wait timed out) blocked the
    handler on that lock for good, and the receiver never stopped (a SIGTERM, then a SIGKILL 90 s later under
    systemd). Here the handler only appends to a list; the wake-up file descriptor that Python's C-level handler
    writes to ends the wait at once. A later signal, during the stop, is recorded and changes nothing: the grace
    period of running playbooks is kept."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.received: list[int] = []
        self._reader, self._writer = socket.socketpair()
        for end in (self._reader, self._writer):
            end.setblocking(False)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in signals:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)  # list.append takes no lock (see the class's docstring)

    def wait(self, poll: float = 1.0) -> int:
        """The first signal received; waits for it. `poll` only bounds each wait (the wake-up ends it sooner)."""
        while not self.received:
            select.select([self._reader], [], [], poll)
            with contextlib.suppress(BlockingIOError):  # woken by the poll, not by a signal
                self._reader.recv(4096)
        return self.received[0]


def _notify_systemd(state: str) -> None:
    """sd_notify without a dependency (Type=notify units)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError:
            log.warning("could not notify systemd")
