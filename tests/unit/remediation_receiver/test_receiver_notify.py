"""Escalation: notifications are recorded, retried with backoff on failure, and given up on after the limit."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from receiver_helpers import fill, small_filesystem, write_config

from remediation_receiver.journal import NOTIFY_CLAIM, Journal
from remediation_receiver.notify import Notifier


class Sink(BaseHTTPRequestHandler):
    statuses: list[int] = []
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.append({"body": body, "auth": self.headers.get("Authorization"), "status": status})
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sink() -> Any:
    server = HTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("statuses", "rounds", "final", "attempts", "received"), [
    ([], 1, "sent", 1, 1),
    ([500, 503], 3, "sent", 3, 3),
    ([500, 500, 500, 500], 4, "failed", 3, 3),
])
def test_retry_with_backoff_then_record(tmp_path: Path, sink: Any, statuses: list[int], rounds: int, final: str,
                                        attempts: int, received: int) -> None:
    (tmp_path / "notify.token").write_text("notify-secret-token\n")
    cfg = write_config(tmp_path, notify={"webhooks": [{"url": f"http://127.0.0.1:{sink.server_address[1]}/hook",
                                                       "token_file": "notify.token"}],
                                         "retries": 2, "backoff": 10})
    Sink.statuses, Sink.received = list(statuses), []
    journal = Journal(cfg.journal)
    notifier = Notifier(cfg, journal)
    notifier.notify("run_failed", "probe on web1 failed", {"run": "r1"}, dedup="outcome|r1")
    notifier.notify("run_failed", "probe on web1 failed", {"run": "r1"}, dedup="outcome|r1")
    clock = 1e10
    for _round in range(rounds):
        notifier.send_due(now=clock)
        clock += 1000
    [row] = journal.notifications()
    assert (row["status"], row["attempts"]) == (final, attempts)
    assert len(Sink.received) == received
    assert Sink.received[0]["body"]["kind"] == "run_failed"
    assert Sink.received[0]["auth"] == "Bearer notify-secret-token"
    if final == "failed":
        assert "HTTP Error 500" in row["last_error"]


def test_backoff_delays_the_next_attempt(tmp_path: Path, sink: Any) -> None:
    cfg = write_config(tmp_path, notify={"webhooks": [{"url": f"http://127.0.0.1:{sink.server_address[1]}/"}],
                                         "retries": 5, "backoff": 10})
    Sink.statuses, Sink.received = [500, 500, 200], []
    journal = Journal(cfg.journal)
    notifier = Notifier(cfg, journal)
    notifier.notify("breaker_open", "too many hosts", {})
    t0 = 1e10
    notifier.send_due(now=t0)
    assert notifier.send_due(now=t0 + 9) == 0  # first retry after 10 s
    notifier.send_due(now=t0 + 10)
    assert notifier.send_due(now=t0 + 29) == 0  # second retry after 20 s more
    assert notifier.send_due(now=t0 + 30) == 1
    assert len(Sink.received) == 3


def test_without_a_webhook_the_escalation_is_still_recorded(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    journal = Journal(cfg.journal)
    notifier = Notifier(cfg, journal)
    notifier.notify("still_firing", "x", {})
    notifier.send_due()
    assert [(n["kind"], n["status"]) for n in journal.notifications()] == [("still_firing", "unconfigured")]


def test_what_leaves_the_machine_is_redacted(tmp_path: Path, sink: Any) -> None:
    from remediation_receiver.redact import MASK, Redactor

    cfg = write_config(tmp_path, notify={"webhooks": [{"url": f"http://127.0.0.1:{sink.server_address[1]}/"}]})
    Sink.statuses, Sink.received = [], []
    journal = Journal(cfg.journal)
    notifier = Notifier(cfg, journal, Redactor(["the-receiver-token-0123"]))
    run = {"id": "r1", "reason": "playbook failed (rc 2)",
           "extravars": {"remediation_alert": {"annotations": {"summary": "login with password=hunter2hunter2",
                                                               "runbook": "uses the-receiver-token-0123"}}}}
    notifier.notify("run_failed", "probe on web1 failed", {"run": run, "db_password": "s3cr3t-value"})
    assert notifier.send_due() == 1
    sent = json.dumps(Sink.received[0]["body"])
    stored = json.dumps(journal.notifications())
    for text in (sent, stored):
        assert "hunter2hunter2" not in text and "the-receiver-token-0123" not in text and "s3cr3t-value" not in text
        assert MASK in text
    assert Sink.received[0]["body"]["details"]["run"]["reason"] == "playbook failed (rc 2)"


class Trickle(BaseHTTPRequestHandler):
    """A webhook that answers one byte at a time: never slow enough for a per-read timeout."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with contextlib.suppress(OSError):
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 200:
                self.wfile.write(bytes([byte]))
                time.sleep(0.1)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_webhook_that_trickles_its_answer_fails_at_the_deadline(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        cfg = write_config(tmp_path, notify={"webhooks": [{"url": f"http://127.0.0.1:{server.server_address[1]}/"}],
                                             "timeout": 1, "retries": 3})
        journal = Journal(cfg.journal)
        notifier = Notifier(cfg, journal)
        notifier.notify("run_failed", "probe on web1 failed", {"run": "r1"})
        started = time.monotonic()
        assert notifier.send_due(now=1e10) == 0
        took = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    [row] = journal.notifications()
    assert took < 3, f"the notifier was held {took:.1f}s by a trickling webhook"
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert "no complete answer within 1s" in row["last_error"]


@pytest.mark.sqlite_only
def test_a_notification_is_not_sent_while_the_journal_cannot_record_it(tmp_path: Path, sink: Any) -> None:
    """The SQLite journal's disk is full: the notifier sends nothing it could not record as claimed (it would send
    the same notice again every second, the 'sent' never written); once the disk has room it is sent once."""
    with small_filesystem(tmp_path / "fs") as fs:
        cfg = write_config(tmp_path, journal=str(fs / "journal.sqlite"),
                           notify={"webhooks": [{"url": f"http://127.0.0.1:{sink.server_address[1]}/hook"}]})
        Sink.statuses, Sink.received = [], []
        journal = Journal(cfg.journal)
        notifier = Notifier(cfg, journal)
        notifier.notify("run_failed", "probe on web1 failed", {"run": "r1"}, dedup="outcome|r1")
        filler = fill(fs)
        for _ in range(3):
            with contextlib.suppress(*journal.errors):
                notifier.send_due()
        assert len(Sink.received) <= 1, f"sent {len(Sink.received)} times while the journal was full"
        filler.unlink()
        notifier.send_due(time.time() + NOTIFY_CLAIM + 1)  # a claim that was written has run out by then
        assert len(Sink.received) == 1
        assert [n["status"] for n in journal.notifications()] == ["sent"]
        journal.close()
