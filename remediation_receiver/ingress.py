"""Ingress: authenticate, bound, parse and store an Alertmanager webhook delivery, then acknowledge.

The contract with Alertmanager: 202 only after the delivery is committed to the journal; 5xx only when it could
not be stored (Alertmanager retries those); 4xx for a bad token or a malformed payload (never retried), with a body
that says why. Nothing here decides or runs anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .journal import Journal, JournalError
from .journal import storable_text as printable
from .metrics import Metrics

log = logging.getLogger("remediation_receiver.ingress")

ALERT_PATHS = ("/alerts", "/")
MAX_ALERTS_PER_DELIVERY = 5000
MAX_LABELS = 200
MAX_LABEL_VALUE = 4096
# An Alertmanager payload is 4 levels deep (payload, alerts, alert, labels); extra fields get some room.
MAX_DEPTH = 32
# What the journal's INTEGER column holds.
MAX_COUNT = 2**63 - 1
RUN_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
FINGERPRINT = re.compile(r"^[0-9A-Za-z]{1,64}$")
# What Alertmanager writes for startsAt and endsAt (Go's RFC 3339 with up to nanoseconds). Part of every dedup key:
# anything longer or freer would be stored and then refused by a run's unique index (or grow every key).
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
STATUSES = ("firing", "resolved")


class PayloadError(ValueError):
    """The body is not an Alertmanager v4 webhook payload."""


@dataclass
class Reply:
    status: int
    body: dict[str, Any]


def _refuse_constant(name: str) -> Any:
    raise PayloadError(f"{name} is not a JSON value")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_tree(payload: Any) -> None:
    """Every part of the body can be stored as it is: no more than MAX_DEPTH levels, no lone surrogate in any string
    or key (JSON's `\\ud800` escapes decode to text that is not UTF-8 and that SQLite refuses)."""
    stack: list[tuple[Any, int, str]] = [(payload, 1, "body")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, str):
            if not _is_utf8(value):
                raise PayloadError(f"{printable(where)} holds a lone surrogate: not UTF-8 text")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise PayloadError(f"nested more than {MAX_DEPTH} levels deep (at {printable(where)})")
        if isinstance(value, dict):
            for key, item in value.items():
                if not _is_utf8(key):
                    raise PayloadError(f"a key in {printable(where)} holds a lone surrogate: not UTF-8 text")
                stack.append((item, depth + 1, f"{where}.{key}"))
        else:
            stack.extend((item, depth + 1, f"{where}[{index}]") for index, item in enumerate(value))


def _string_map(where: str, value: Any, *, required: bool) -> dict[str, str]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be an object of strings")
    if len(value) > MAX_LABELS:
        raise PayloadError(f"{where} has more than {MAX_LABELS} entries")
    for key, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(f"{where}.{printable(key)} must be a string")
        if len(item) > MAX_LABEL_VALUE:
            raise PayloadError(f"{where}.{printable(key)} is longer than {MAX_LABEL_VALUE} characters")
    return value


def _optional_string(where: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise PayloadError(f"{where} must be a string, got {type(value).__name__}")
    return value


def _time(where: str, value: Any, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not RFC3339.match(value):
        shown = printable(repr(value))[:80]
        raise PayloadError(f"{where} must be an RFC 3339 time such as 2026-11-30T10:00:00Z, got {shown}")
    return value


def _count(where: str, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise PayloadError(f"{where} must be an integer from 0 to {MAX_COUNT}, got {printable(repr(value))[:80]}")
    return value


def label_fingerprint(labels: dict[str, str]) -> str:
    """A stable fingerprint when the sender did not give one (Alertmanager always does)."""
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def _load(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError(f"nested more than {MAX_DEPTH} levels deep") from exc


def _check_top_level(payload: dict[str, Any]) -> None:
    """The fields Alertmanager sends, each of its type: what can never be stored is refused here, not at insert."""
    version = payload.get("version")
    if version != "4":
        raise PayloadError(f"unsupported payload version {printable(repr(version))[:80]}: expected \"4\" "
                           "(Alertmanager webhook)")
    for key in ("receiver", "groupKey", "externalURL"):
        _optional_string(key, payload.get(key))
    status = payload.get("status")
    if status is not None and status not in STATUSES:
        raise PayloadError(f"status must be 'firing' or 'resolved', got {printable(repr(status))[:80]}")
    _count("truncatedAlerts", payload.get("truncatedAlerts"))
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        _string_map(key, payload.get(key), required=False)


def _alert(where: str, alert: Any) -> dict[str, Any]:
    if not isinstance(alert, dict):
        raise PayloadError(f"{where} must be an object")
    status = alert.get("status")
    if status not in STATUSES:
        raise PayloadError(f"{where}.status must be 'firing' or 'resolved', got {printable(repr(status))[:80]}")
    labels = _string_map(f"{where}.labels", alert.get("labels"), required=True)
    annotations = _string_map(f"{where}.annotations", alert.get("annotations"), required=False)
    starts_at = _time(f"{where}.startsAt", alert.get("startsAt"), required=True)
    fingerprint = alert.get("fingerprint")
    if fingerprint is not None and not (isinstance(fingerprint, str) and FINGERPRINT.match(fingerprint)):
        raise PayloadError(f"{where}.fingerprint must be a short hexadecimal string")
    return {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": starts_at,
        "endsAt": _time(f"{where}.endsAt", alert.get("endsAt"), required=False),
        "generatorURL": _optional_string(f"{where}.generatorURL", alert.get("generatorURL")),
        "fingerprint": fingerprint or label_fingerprint(labels),
    }


def parse_payload(body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validate a webhook body; return the payload and its normalised alerts, or raise PayloadError.

    Everything that passes can be stored: a refusal here is a 400 (Alertmanager does not retry), while a failure
    to store is a 503 (it does)."""
    payload = _load(body)
    if not isinstance(payload, dict):
        raise PayloadError("body must be a JSON object (the Alertmanager webhook payload)")
    check_tree(payload)
    _check_top_level(payload)
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("payload has no 'alerts' list")
    if len(alerts) > MAX_ALERTS_PER_DELIVERY:
        raise PayloadError(f"payload has more than {MAX_ALERTS_PER_DELIVERY} alerts")
    return payload, [_alert(f"alerts[{index}]", alert) for index, alert in enumerate(alerts)]


def bearer_ok(header: str | None, token: bytes) -> bool:
    """Constant-time comparison of an `Authorization: Bearer ...` header with the token."""
    if not header:
        # Still compare, so a missing header costs the same as a wrong one.
        hmac.compare_digest(b"", token)
        return False
    scheme, _space, presented = header.partition(" ")
    good_scheme = scheme.lower() == "bearer"
    same = hmac.compare_digest(presented.strip().encode("utf-8", "replace"), token)
    return good_scheme and same


class Ingress:
    """The request logic, separate from the HTTP plumbing so unit tests can call it directly."""

    def __init__(self, journal: Journal, token: str, max_body_bytes: int, metrics: Metrics,
                 on_stored: Any = None) -> None:
        self.journal = journal
        self._token = token.encode()
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.on_stored = on_stored
        # (since when, why) while deliveries cannot be stored: the last one failed and none was stored since.
        # /healthz answers 503 meanwhile (a journal that reads but cannot write, a full disk, is not healthy).
        self.store_failure: tuple[float, str] | None = None

    def refuse(self, remote: str, status: int, reason: str, size: int | None) -> Reply:
        self.metrics.inc("remediation_receiver_deliveries_refused_total", {"code": str(status)})
        try:
            self.journal.record_rejection(remote=remote, http_status=status, reason=reason, size=size)
        except Exception:  # a full disk must not turn a 4xx into a crash
            log.exception("could not record a rejection")
        log.warning("refused delivery from %s: %d %s", remote, status, reason)
        return Reply(status, {"error": reason})

    def authenticate(self, remote: str, authorization: str | None) -> Reply | None:
        if bearer_ok(authorization, self._token):
            return None
        return self.refuse(remote, 401, "missing or wrong bearer token", None)

    def check_length(self, remote: str, content_length: str | None) -> tuple[int, Reply | None]:
        if content_length is None:
            return 0, self.refuse(remote, 411, "Content-Length is required", None)
        try:
            length = int(content_length)
        except ValueError:
            return 0, self.refuse(remote, 400, "Content-Length is not a number", None)
        if length < 0:
            return 0, self.refuse(remote, 400, "Content-Length is negative", None)
        if length > self.max_body_bytes:
            return length, self.refuse(remote, 413, f"body of {length} bytes exceeds the limit of "
                                                    f"{self.max_body_bytes} bytes", length)
        return length, None

    def accept(self, remote: str, body: bytes) -> Reply:
        try:
            payload, alerts = parse_payload(body)
        except PayloadError as exc:
            return self.refuse(remote, 400, f"malformed payload: {exc}", len(body))
        try:
            delivery_id = self.journal.store_delivery(
                remote=remote, payload=payload, raw_sha256=hashlib.sha256(body).hexdigest(), alerts=alerts)
        except JournalError as exc:
            since = self.store_failure[0] if self.store_failure else time.time()
            self.store_failure = (since, str(exc))
            # 5xx makes Alertmanager retry: the only honest answer when the alert is not stored.
            self.metrics.inc("remediation_receiver_deliveries_refused_total", {"code": "503"})
            log.error("could not store a delivery from %s: %s", remote, exc)
            return Reply(503, {"error": "could not store the delivery; retry"})
        self.store_failure = None
        self.metrics.inc("remediation_receiver_deliveries_total")
        self.metrics.inc("remediation_receiver_alerts_received_total", value=len(alerts))
        if int(payload.get("truncatedAlerts") or 0) > 0:
            log.warning("delivery %d: Alertmanager truncated %s alerts (max_alerts)", delivery_id,
                        payload.get("truncatedAlerts"))
        if self.on_stored is not None:
            self.on_stored()
        return Reply(202, {"status": "stored", "delivery": delivery_id, "alerts": len(alerts)})


class Handler(BaseHTTPRequestHandler):
    server_version = "remediation-receiver"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # Per read: a connection idle this long is closed (the server's watchdog also bounds each request in total).
    timeout = 30
    # Set per server in make_server.
    ingress: Ingress
    views: Any
    server: Server
    _started = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def handle_one_request(self) -> None:
        super().handle_one_request()
        # Between requests a kept-alive connection is idle: bounded by the idle timeout, evictable under load.
        self.server.enter(self.connection, IDLE)

    def parse_request(self) -> bool:
        # The request line has arrived: the ack latency and the request's deadline count from here.
        self._started = time.perf_counter()
        self.server.enter(self.connection, READING)
        if not super().parse_request():
            return False
        if self.server.cut_reason(self.connection):
            # Cut while its headers trickled in: answer that, never act on (or record) half a request.
            self._send(Reply(408, {"error": f"request not received within {self.server.request_timeout:g}s"}))
            return False
        return True

    def _send(self, reply: Reply | None = None, *, status: int = 200, text: str | None = None,
              content_type: str = "application/json") -> None:
        """The whole answer in one write: headers and body in two writes leave the body waiting for the client's
        delayed ACK (Nagle), about 40 ms on every kept-alive delivery."""
        if reply is not None:
            status = reply.status
            text = json.dumps(reply.body, sort_keys=True, default=str) + "\n"
        data = (text or "").encode()
        lines = [f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}",
                 f"Server: {self.version_string()}", f"Date: {self.date_time_string()}",
                 f"Content-Type: {content_type}", f"Content-Length: {len(data)}", "Cache-Control: no-store"]
        if status >= 400:
            lines.append("Connection: close")
            self.close_connection = True
        self.log_request(status)
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)

    def do_POST(self) -> None:
        remote = self.client_address[0]
        path = urlsplit(self.path).path
        if path not in ALERT_PATHS:
            self._send(self.ingress.refuse(remote, 404, f"unknown path {path!r}: POST alerts to /alerts", None))
            return
        refused = self.ingress.authenticate(remote, self.headers.get("Authorization"))
        if refused is None:
            length, refused = self.ingress.check_length(remote, self.headers.get("Content-Length"))
        if refused is not None:
            self._send(refused)
            return
        body = self.rfile.read(length)
        if self.server.cut_reason(self.connection):
            # The watchdog closed the reading side: the request missed its deadline (a slow or stalled sender).
            self._send(Reply(408, {"error": f"request not received within {self.server.request_timeout:g}s"}))
            return
        if len(body) != length:
            self._send(self.ingress.refuse(remote, 400, "body shorter than Content-Length", len(body)))
            return
        self.server.enter(self.connection, BUSY)
        reply = self.ingress.accept(remote, body)
        self._send(reply)
        # After the write: the acknowledgement has left (one write, TCP_NODELAY).
        self.ingress.metrics.observe("remediation_receiver_ack_seconds", time.perf_counter() - self._started)

    def do_GET(self) -> None:
        self.server.enter(self.connection, BUSY)
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path == "/healthz":
            status, body = self.views.health()
            # Without the token: the status word only (a pause reason names a person and a plan).
            if not bearer_ok(self.headers.get("Authorization"), self.ingress._token):
                body = {"status": body.get("status")}
            self._send(Reply(status, body))
        elif path == "/metrics":
            self._send(text=self.views.metrics_text(), content_type="text/plain; version=0.0.4")
        elif path in ("/runs", "/runs/"):
            if not self._read_allowed():
                return
            self._send(Reply(200, {"runs": self.views.runs()}))
        elif path.startswith("/runs/"):
            if not self._read_allowed():
                return
            run_id = path[len("/runs/"):]
            run = self.views.run(run_id) if RUN_ID.match(run_id) else None
            self._send(Reply(200, run) if run else Reply(404, {"error": f"no run {run_id!r}"}))
        else:
            self._send(Reply(404, {"error": f"unknown path {path!r}"}))

    def _read_allowed(self) -> bool:
        """Runs carry alert data: reading them needs the same token as posting."""
        if bearer_ok(self.headers.get("Authorization"), self.ingress._token):
            return True
        self._send(Reply(401, {"error": "missing or wrong bearer token"}))
        return False

    def do_PUT(self) -> None:
        self._send(Reply(405, {"error": "method not allowed: POST alerts to /alerts"}))

    do_DELETE = do_PATCH = do_PUT


# What a connection is doing, for the watchdog and for eviction.
READING, IDLE, BUSY = "reading", "idle", "busy"
# A request still being read after this long, when the server is full, is the first to go.
SLOW_READER = 1.0


@dataclass
class _Connection:
    sock: socket.socket
    phase: str
    since: float
    cut: str | None = None


class Server(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` of them; every request must arrive in full within
    `request_timeout` (a sender that trickles bytes keeps no thread beyond that), and when the server is full the
    slowest reader (else the longest idle keep-alive connection) makes room for the new connection."""

    daemon_threads = True
    # A burst of Alertmanager connections must queue in the kernel, not be dropped (the default is 5).
    request_queue_size = 1024
    allow_reuse_address = True
    # How long the acceptor waits for an evicted connection to give its slot back before answering 503.
    admit_wait = 2.0

    def __init__(self, address: tuple[str, int], handler: type[Handler], *, metrics: Metrics,
                 max_connections: int = 128, request_timeout: float = 10.0, idle_timeout: float = 30.0) -> None:
        self.metrics = metrics
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self._slots = threading.Condition()
        self._connections: dict[socket.socket, _Connection] = {}
        self._closing = threading.Event()
        super().__init__(address, handler)
        self._watchdog = threading.Thread(target=self._watch, name="http-deadlines", daemon=True)
        self._watchdog.start()

    # -- what the handler reports -------------------------------------------------------------------------------
    def enter(self, sock: socket.socket, phase: str) -> None:
        with self._slots:
            conn = self._connections.get(sock)
            if conn is None or conn.phase == phase:
                return  # a first request is timed from the accept: it stays READING
            conn.phase, conn.since = phase, time.monotonic()

    def cut_reason(self, sock: socket.socket) -> str | None:
        with self._slots:
            conn = self._connections.get(sock)
            return conn.cut if conn else None

    # -- admission ----------------------------------------------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        with contextlib.suppress(OSError):
            # Belt and braces with the one-write answer: nothing this server sends waits for a delayed ACK.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self._admit(request):
            self._refuse_busy(request)
            return
        super().process_request(request, client_address)

    def _admit(self, sock: socket.socket) -> bool:
        with self._slots:
            if len(self._connections) >= self.max_connections:
                # A few at a time: the next accepts find room while these threads end, instead of one wait each.
                for victim in self._victims(max(1, self.max_connections // 16)):
                    self._cut(victim, "evicted")
                deadline = time.monotonic() + self.admit_wait
                while len(self._connections) >= self.max_connections:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._slots.wait(remaining)
            self._connections[sock] = _Connection(sock, READING, time.monotonic())
            return True

    def _victims(self, count: int) -> list[_Connection]:
        """The slowest readers, then the longest idle connections; never one whose request is being answered."""
        now = time.monotonic()

        def rank(conn: _Connection) -> tuple[int, float]:
            if conn.phase == READING and now - conn.since > SLOW_READER:
                return 0, conn.since
            return (1 if conn.phase == IDLE else 2), conn.since

        candidates = [c for c in self._connections.values() if c.phase != BUSY and c.cut is None]
        return sorted(candidates, key=rank)[:count]

    def _refuse_busy(self, sock: socket.socket) -> None:
        self.metrics.inc("remediation_receiver_connections_cut_total", {"reason": "busy"})
        body = b'{"error": "too many connections; retry"}\n'
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        with contextlib.suppress(OSError):
            sock.settimeout(1.0)
            sock.sendall(head + body)
        self.shutdown_request(sock)

    def _cut(self, conn: _Connection, reason: str) -> None:
        """End a connection's reading side: its thread's blocked read returns at once, and it answers or closes."""
        conn.cut = reason
        self.metrics.inc("remediation_receiver_connections_cut_total", {"reason": reason})
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RD if reason == "deadline" else socket.SHUT_RDWR)

    def _watch(self) -> None:
        while not self._closing.wait(0.1):
            now = time.monotonic()
            with self._slots:
                for conn in self._connections.values():
                    if conn.cut is not None:
                        continue
                    if conn.phase == READING and now - conn.since > self.request_timeout:
                        self._cut(conn, "deadline")
                    elif conn.phase == IDLE and now - conn.since > self.idle_timeout:
                        self._cut(conn, "idle")

    # -- the end of a connection --------------------------------------------------------------------------------
    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self._slots:
                self._connections.pop(request, None)
                self._slots.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # a client that went away, or a connection the watchdog cut
            log.debug("connection from %s ended: %s", client_address[0], error)
            return
        log.exception("error while serving %s", client_address[0])

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()


class Server6(Server):
    address_family = socket.AF_INET6


def make_server(host: str, port: int, ingress: Ingress, views: Any, *, max_connections: int = 128,
                request_timeout: float = 10.0) -> Server:
    handler = type("BoundHandler", (Handler,), {"ingress": ingress, "views": views})
    server_class: type[Server] = Server6 if ":" in host else Server
    return server_class((host.strip("[]"), port), handler, metrics=ingress.metrics, max_connections=max_connections,
                        request_timeout=request_timeout, idle_timeout=float(Handler.timeout))
