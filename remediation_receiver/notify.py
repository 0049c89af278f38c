"""Escalation: JSON webhook notifications, queued in the journal, retried with exponential backoff, recorded.

Kinds: run_failed, run_timeout, run_error, run_interrupted, held (cooldown/budget), breaker_open,
approval_needed, approval_expired, still_firing, paused.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from .config import Config
from .journal import Journal
from .redact import Redactor

log = logging.getLogger("remediation_receiver.notify")


class Notifier:
    def __init__(self, cfg: Config, journal: Journal, redactor: Redactor | None = None) -> None:
        self.cfg = cfg
        self.journal = journal
        # A notification leaves the machine (chat, pager): it carries run data, so it is redacted like the journal.
        self.redactor = redactor or Redactor()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tokens: dict[int, str] = {}

    def notify(self, kind: str, summary: str, details: dict[str, Any], *, dedup: str | None = None) -> None:
        """Queue one notification per configured webhook (once only when `dedup` is given)."""
        body = self.redactor.data({"kind": kind, "summary": summary, "details": details, "created_at": time.time(),
                                   "source": "remediation-receiver"})
        targets = range(len(self.cfg.notify)) or [None]
        for index in targets:
            key = f"{dedup}#{index}" if dedup else None
            queued = self.journal.add_notification(kind, {"target": index, "body": body}, dedup=key)
            if queued and index is None:
                # No webhook configured: the escalation is still recorded, and said loudly in the log.
                log.warning("escalation (no notify webhook configured): %s: %s", kind, summary)
        self._wake.set()

    # -- the sender thread -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.send_due()
            except Exception:
                log.exception("notification loop failed")
            self._wake.wait(timeout=1.0)
            self._wake.clear()

    def _token(self, index: int) -> str | None:
        target = self.cfg.notify[index]
        if not target.token_file:
            return None
        if index not in self._tokens:
            with open(self.cfg.resolve(target.token_file), encoding="utf-8") as handle:
                self._tokens[index] = handle.read().strip()
        return self._tokens[index]

    def send_due(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        sent = 0
        for row in self.journal.due_notifications(now):
            payload = json.loads(row["payload"])
            index = payload.get("target")
            if index is None or index >= len(self.cfg.notify):
                self.journal.update_notification(row["id"], status="unconfigured", attempts=row["attempts"])
                continue
            attempts = row["attempts"] + 1
            try:
                self._post(index, payload["body"])
            except Exception as exc:  # any failure is retried with backoff, then recorded as failed
                error = f"{type(exc).__name__}: {exc}"[:500]
                if attempts > self.cfg.notify_retries:
                    self.journal.update_notification(row["id"], status="failed", attempts=attempts, last_error=error)
                    log.error("notification %d (%s) failed after %d attempts: %s", row["id"], row["kind"],
                              attempts, error)
                else:
                    delay = self.cfg.notify_backoff * (2 ** (attempts - 1))
                    self.journal.update_notification(row["id"], attempts=attempts, last_error=error,
                                                     next_at=now + delay)
                continue
            self.journal.update_notification(row["id"], status="sent", attempts=attempts, sent_at=time.time(),
                                             last_error=None)
            sent += 1
        return sent

    def _post(self, index: int, body: dict[str, Any]) -> None:
        target = self.cfg.notify[index]
        headers = {"Content-Type": "application/json", "User-Agent": "remediation-receiver", **target.headers}
        token = self._token(index)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(target.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        # urllib's timeout is per socket operation: a webhook that trickles its answer would hold every escalation.
        deadline = _Deadline(self.cfg.notify_timeout)
        opener = urllib.request.build_opener(_DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))
        try:
            with opener.open(request, timeout=self.cfg.notify_timeout) as response:
                if not 200 <= response.status < 300:
                    raise RuntimeError(f"HTTP {response.status}")
        except (OSError, http.client.HTTPException) as exc:
            if deadline.expired:
                raise TimeoutError(f"no complete answer within {self.cfg.notify_timeout:g}s") from exc
            raise
        finally:
            deadline.cancel()


class _Deadline:
    """Closes every connection of one request once `seconds` have passed, whatever the pace of the bytes."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def track(self, connection: http.client.HTTPConnection) -> http.client.HTTPConnection:
        with self._lock:
            self._connections.append(connection)
        return connection

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for connection in self._connections:
                if connection.sock is not None:
                    with contextlib.suppress(OSError):
                        connection.sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(lambda host, **kw: self._deadline.track(http.client.HTTPConnection(host, **kw)), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(lambda host, **kw: self._deadline.track(http.client.HTTPSConnection(host, **kw)), req,
                            context=getattr(self, "_context", None))  # set by HTTPSHandler, not in its stubs
