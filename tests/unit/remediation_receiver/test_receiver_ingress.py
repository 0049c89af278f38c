"""Ingress: 202 only once stored, 4xx with a reason for what Alertmanager must not retry, 5xx when not stored."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import socket
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from receiver_helpers import TOKEN, alert, payload

from remediation_receiver.ingress import Ingress, PayloadError, bearer_ok, make_server, parse_payload
from remediation_receiver.journal import Journal
from remediation_receiver.metrics import Metrics


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


@pytest.mark.parametrize(("raw", "why"), [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (body({"alerts": []}), "unsupported payload version None"),
    (body({"version": 4, "alerts": []}), "unsupported payload version 4"),
    (body({"version": "4"}), "no 'alerts' list"),
    (body({"version": "4", "alerts": {}}), "no 'alerts' list"),
    (body({"version": "4", "alerts": ["x"]}), r"alerts\[0\] must be an object"),
    (body(payload(dict(alert(), status="pending"))), r"alerts\[0\].status must be"),
    (body(payload(dict(alert(), labels=None))), r"alerts\[0\].labels must be an object"),
    (body(payload(dict(alert(), labels={"instance": 5}))), r"alerts\[0\].labels.instance must be a string"),
    (body(payload(dict(alert(), annotations=[]))), r"alerts\[0\].annotations must be an object"),
    (body(payload({k: v for k, v in alert().items() if k != "startsAt"})), r"startsAt must be"),
    (body(payload(dict(alert(), fingerprint="../../etc"))), "fingerprint must be"),
    (body(payload(dict(alert(), labels={"x": "y" * 5000}))), "longer than 4096"),
    (b"[" * 20000 + b"]" * 20000, "nested more than 32 levels"),
    (body({**payload(alert()), "extra": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}),
     r"nested more than 32 levels deep \(at body.extra"),
])
def test_malformed_payloads_are_refused_with_the_reason(raw: bytes, why: str) -> None:
    with pytest.raises(PayloadError, match=why):
        parse_payload(raw)


def raw_payload(**top: str) -> bytes:
    """A delivery with top-level fields written as raw JSON text (NaN, huge numbers, escapes json.dumps won't write)."""
    fields = {"version": '"4"', "receiver": '"remediation"', "groupKey": '"g"', "status": '"firing"',
              "truncatedAlerts": "0", "alerts": json.dumps([alert()]), **top}
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


# Each of these failed at insert time and got 503, so Alertmanager retried it forever; or was stored silently wrong.
NEVER_STORABLE = [
    ("truncated as a string", raw_payload(truncatedAlerts='"many"'), "truncatedAlerts must be an integer"),
    ("truncated as a number in a string", raw_payload(truncatedAlerts='"3"'), "truncatedAlerts must be an integer"),
    ("truncated as a list", raw_payload(truncatedAlerts="[1]"), "truncatedAlerts must be an integer"),
    ("truncated huge", raw_payload(truncatedAlerts="1" + "0" * 30), "truncatedAlerts must be an integer"),
    ("truncated negative", raw_payload(truncatedAlerts="-1"), "truncatedAlerts must be an integer"),
    ("truncated NaN", raw_payload(truncatedAlerts="NaN"), "NaN is not a JSON value"),
    ("truncated Infinity", raw_payload(truncatedAlerts="Infinity"), "Infinity is not a JSON value"),
    ("truncated 1e999", raw_payload(truncatedAlerts="1e999"), "truncatedAlerts must be an integer"),
    ("truncated true", raw_payload(truncatedAlerts="true"), "truncatedAlerts must be an integer"),
    ("receiver as an object", raw_payload(receiver='{"a": 1}'), "receiver must be a string"),
    ("groupKey as a list", raw_payload(groupKey='["a"]'), "groupKey must be a string"),
    ("status as a number", raw_payload(status="1"), "status must be 'firing' or 'resolved'"),
    ("receiver with a lone surrogate", raw_payload(receiver=r'"r\ud800"'), "body.receiver holds a lone surrogate"),
    ("alertname with a lone surrogate", raw_payload(alerts='[{"status": "firing", "startsAt": "s", "labels": '
                                                            r'{"alertname": "A\udfff"}}]'), "lone surrogate"),
    ("label name with a lone surrogate", raw_payload(alerts='[{"status": "firing", "startsAt": "s", "labels": '
                                                             r'{"a\ud800": "x"}}]'), "a key in body.alerts[0].labels"),
    ("startsAt with a lone surrogate", raw_payload(alerts=r'[{"status": "firing", "startsAt": "\ud800", '
                                                           '"labels": {}}]'), "lone surrogate"),
    ("endsAt as a number", raw_payload(alerts='[{"status": "firing", "startsAt": "2026-11-30T10:00:00Z", "endsAt": 5,'
                                              ' "labels": {}}]'), "endsAt must be an RFC 3339 time"),
    # startsAt is part of every dedup key: a free-form or huge one was stored, then refused a run by PostgreSQL.
    ("startsAt free text", raw_payload(alerts='[{"status": "firing", "startsAt": "s", "labels": {}}]'),
     "startsAt must be an RFC 3339 time"),
    ("startsAt with a tail", raw_payload(alerts='[{"status": "firing", "startsAt": "2026-11-30T10:00:00Z'
                                                + "0" * 9000 + '", "labels": {}}]'), "startsAt must be an RFC 3339"),
    ("startsAt missing", raw_payload(alerts='[{"status": "firing", "labels": {}}]'), "startsAt must be an RFC 3339"),
    ("endsAt free text", raw_payload(alerts='[{"status": "resolved", "startsAt": "2026-11-30T10:00:00Z", '
                                            '"endsAt": "soon", "labels": {}}]'), "endsAt must be an RFC 3339"),
    ("commonLabels as a list", raw_payload(commonLabels="[]"), "commonLabels must be an object"),
]


@pytest.mark.parametrize(("case", "raw", "why"), NEVER_STORABLE, ids=[c[0] for c in NEVER_STORABLE])
def test_what_can_never_be_stored_is_refused_with_400_before_storing(tmp_path: Any, case: str, raw: bytes,
                                                                     why: str) -> None:
    journal = Journal(str(tmp_path / "journal.sqlite"))
    reply = Ingress(journal, TOKEN, 64 * 1024, Metrics()).accept("127.0.0.1", raw)
    assert (reply.status, why in reply.body["error"]) == (400, True), reply.body
    assert journal.counts()["deliveries"]["all"] == 0
    [rejection] = journal.query("SELECT http_status, reason FROM rejections")
    assert rejection["http_status"] == 400 and why in rejection["reason"]


def test_a_valid_payload_is_split_into_alerts_and_a_missing_fingerprint_is_derived() -> None:
    no_fp = {k: v for k, v in alert(fingerprint="x").items() if k != "fingerprint"}
    alerts = parse_payload(body(payload(alert(), dict(alert(status="resolved"), fingerprint="beef"), no_fp)))[1]
    assert [a["status"] for a in alerts] == ["firing", "resolved", "firing"]
    assert alerts[0]["fingerprint"] == "f00d"
    assert len(alerts[2]["fingerprint"]) == 16 and alerts[2]["fingerprint"] != "f00d"


@pytest.mark.parametrize(("header", "ok"), [
    (f"Bearer {TOKEN}", True),
    (f"bearer {TOKEN}", True),
    (f"Bearer {TOKEN} ", True),
    (f"Basic {TOKEN}", False),
    (f"Bearer {TOKEN}x", False),
    (f"Bearer {TOKEN[:-1]}", False),
    ("Bearer ", False),
    (TOKEN, False),
    (None, False),
    ("", False),
])
def test_bearer_token(header: str | None, ok: bool) -> None:
    assert bearer_ok(header, TOKEN.encode()) is ok


@pytest.fixture
def server(tmp_path: Any) -> Iterator[tuple[int, Journal, Metrics]]:
    journal = Journal(str(tmp_path / "journal.sqlite"))
    metrics = Metrics()
    ingress = Ingress(journal, TOKEN, 64 * 1024, metrics)

    class Views:
        def health(self) -> tuple[int, dict[str, Any]]:
            return 200, {"status": "ok"}

        def metrics_text(self) -> str:
            return metrics.render()

        def runs(self) -> list[dict[str, Any]]:
            return []

        def run(self, run_id: str) -> None:
            return None

    srv = make_server("127.0.0.1", 0, ingress, Views())
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv.server_address[1], journal, metrics
    srv.shutdown()
    srv.server_close()


def request(port: int, method: str, path: str, data: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=data, headers=headers or {})
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    try:
        return response.status, json.loads(text)
    except json.JSONDecodeError:
        return response.status, {"text": text}


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("method", "path", "data", "headers", "status", "why"), [
    ("POST", "/alerts", body(payload(alert())), AUTH, 202, "stored"),
    ("POST", "/", body(payload(alert())), AUTH, 202, "stored"),
    ("POST", "/alerts", body(payload(alert())), {}, 401, "bearer token"),
    ("POST", "/alerts", body(payload(alert())), {"Authorization": "Bearer wrong-token-0123456789"}, 401, "bearer"),
    ("POST", "/alerts", b"{broken", AUTH, 400, "not valid JSON"),
    ("POST", "/alerts", body({"version": "4"}), AUTH, 400, "no 'alerts' list"),
    ("POST", "/alerts", b"x" * (64 * 1024 + 1), AUTH, 413, "exceeds the limit"),
    ("POST", "/other", body(payload(alert())), AUTH, 404, "POST alerts to /alerts"),
    ("PUT", "/alerts", body(payload(alert())), AUTH, 405, "method not allowed"),
    ("GET", "/runs", None, {}, 401, "bearer token"),
    ("GET", "/runs", None, AUTH, 200, ""),
    ("GET", "/healthz", None, {}, 200, "ok"),
])
def test_http_contract(server: tuple[int, Journal, Metrics], method: str, path: str, data: bytes | None,
                       headers: dict[str, str], status: int, why: str) -> None:
    port, journal = server[0], server[1]
    got, reply = request(port, method, path, data, headers)
    assert got == status, reply
    assert why in json.dumps(reply)
    stored = journal.counts()["deliveries"]["all"]
    assert stored == (1 if status == 202 else 0)


def test_refused_requests_are_recorded_without_body_or_token(server: tuple[int, Journal, Metrics]) -> None:
    port, journal, metrics = server
    request(port, "POST", "/alerts", b"secret-body", {"Authorization": "Bearer the-wrong-secret-token"})
    rows = journal.query("SELECT * FROM rejections")
    assert [(r["http_status"], r["reason"]) for r in rows] == [(401, "missing or wrong bearer token")]
    dump = json.dumps(rows)
    assert "secret-body" not in dump and "the-wrong-secret-token" not in dump
    assert metrics.counter("remediation_receiver_deliveries_refused_total", {"code": "401"}) == 1


def test_a_delivery_that_cannot_be_stored_gets_503(tmp_path: Any) -> None:
    journal = Journal(str(tmp_path / "journal.sqlite"))
    ingress = Ingress(journal, TOKEN, 64 * 1024, Metrics())
    os.chmod(tmp_path / "journal.sqlite", 0o400)
    journal.close()
    readonly = Journal(str(tmp_path / "journal.sqlite"), readonly=True)
    ingress.journal = readonly
    reply = ingress.accept("127.0.0.1", body(payload(alert())))
    assert reply.status == 503
    assert "retry" in reply.body["error"]


def test_json_nested_too_deep_gets_a_400_with_the_reason_over_http(server: tuple[int, Journal, Metrics]) -> None:
    port, journal = server[0], server[1]
    got, reply = request(port, "POST", "/alerts", b"[" * 30000 + b"]" * 30000, AUTH)
    assert got == 400 and "nested more than 32 levels" in reply["error"], reply
    assert [r["http_status"] for r in journal.query("SELECT http_status FROM rejections")] == [400]


@pytest.mark.parametrize(("headers", "keys"), [
    ({}, ["status"]),
    ({"Authorization": "Bearer wrong-token-0123456789"}, ["status"]),
    (AUTH, ["dispatcher_lag_seconds", "paused", "runs", "status", "undecided_alerts"]),
])
def test_healthz_without_the_token_says_the_status_only(tmp_path: Any, headers: dict[str, str],
                                                        keys: list[str]) -> None:
    from remediation_receiver.guards import PAUSE_KEY
    from remediation_receiver.service import Views

    journal = Journal(str(tmp_path / "journal.sqlite"))
    journal.set_state(PAUSE_KEY, "storage migration of ci-7 (by alice at 2026-11-30 09:00:00 UTC)")
    views = Views(journal, Metrics(), types.SimpleNamespace(last_loop=time.time()))
    srv = make_server("127.0.0.1", 0, Ingress(journal, TOKEN, 64 * 1024, Metrics()), views)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        status, reply = request(srv.server_address[1], "GET", "/healthz", headers=headers)
    finally:
        srv.shutdown()
        srv.server_close()
    assert (status, sorted(reply), reply["status"]) == (200, keys, "ok")
    assert ("alice" in json.dumps(reply)) == (headers == AUTH)


def test_deliveries_on_a_kept_alive_connection_are_acknowledged_in_milliseconds(
        server: tuple[int, Journal, Metrics]) -> None:
    """Alertmanager keeps connections alive: an answer in two writes waited ~40 ms for the delayed ACK every time."""
    port, journal = server[0], server[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    first_socket = conn.sock
    latencies = []
    for i in range(100):
        data = body(payload(alert(fingerprint=f"a{i}")))
        started = time.perf_counter()
        conn.request("POST", "/alerts", body=data, headers=AUTH)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        assert response.status == 202
    assert conn.sock is first_socket, "the connection was not kept alive"
    conn.close()
    assert journal.counts()["deliveries"]["all"] == 100
    p50 = sorted(latencies)[len(latencies) // 2]
    assert p50 < 0.015, f"median acknowledgement {p50 * 1000:.1f} ms on a kept-alive connection"


def trickle_server(tmp_path: Any, **limits: float) -> tuple[Any, Journal, Metrics]:
    journal = Journal(str(tmp_path / "journal.sqlite"))
    metrics = Metrics()
    srv = make_server("127.0.0.1", 0, Ingress(journal, TOKEN, 64 * 1024, metrics), None)
    for key, value in limits.items():
        setattr(srv, key, value)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv, journal, metrics


HEAD = f"POST /alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 5000\r\n\r\n".encode()


def test_a_request_that_trickles_in_is_cut_at_its_deadline(tmp_path: Any) -> None:
    """One byte every 0.2 s never trips a per-read timeout; the request as a whole has 1.5 s."""
    srv, journal, _metrics = trickle_server(tmp_path, request_timeout=1.5)
    try:
        sock = socket.create_connection(srv.server_address, timeout=10)
        sock.sendall(HEAD)
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < 8:
            if select.select([sock], [], [], 0.2)[0]:
                answer = sock.recv(4096)
                break
            with contextlib.suppress(OSError):
                sock.send(b"{")
        elapsed = time.monotonic() - started
        sock.close()
    finally:
        srv.shutdown()
        srv.server_close()
    assert answer.startswith(b"HTTP/1.1 408"), f"after {elapsed:.1f}s: {answer[:80]!r}"
    assert elapsed < 4, f"cut after {elapsed:.1f}s"
    assert journal.counts()["deliveries"]["all"] == 0


def test_trickling_clients_hold_a_bounded_number_of_threads_and_a_delivery_still_gets_202(tmp_path: Any) -> None:
    before = threading.active_count()
    srv, journal, metrics = trickle_server(tmp_path, max_connections=16, request_timeout=30)
    socks: list[socket.socket] = []
    most = 0
    try:
        for _i in range(300):
            sock = socket.create_connection(srv.server_address, timeout=10)
            sock.sendall(HEAD[:20])
            socks.append(sock)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(b"X")
            most = max(most, threading.active_count())
            time.sleep(0.2)
        started = time.perf_counter()
        status, reply = request(srv.server_address[1], "POST", "/alerts", body(payload(alert())), AUTH)
        took = time.perf_counter() - started
        most = max(most, threading.active_count())
    finally:
        for sock in socks:
            sock.close()
        srv.shutdown()
        srv.server_close()
    assert most - before <= 16 + 3, f"{most - before} threads for 300 trickling connections"
    assert (status, reply.get("status")) == (202, "stored")
    assert took < 1.0, f"a delivery took {took:.2f}s behind trickling clients"
    assert journal.counts()["deliveries"]["all"] == 1
    assert metrics.counter("remediation_receiver_connections_cut_total", {"reason": "evicted"}) >= 284


def test_metrics_count_acknowledged_deliveries(server: tuple[int, Journal, Metrics]) -> None:
    port = server[0]
    for _round in range(3):
        request(port, "POST", "/alerts", body(payload(alert(), alert(fingerprint="beef"))), AUTH)
    # The ack time is observed once the reply has left, so the client may ask before the third is counted.
    deadline = time.time() + 10
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        if 'remediation_receiver_ack_seconds_bucket{le="+Inf"} 3' in text or time.time() > deadline:
            break
        time.sleep(0.05)
    assert "remediation_receiver_deliveries_total 3" in text
    assert "remediation_receiver_alerts_received_total 6" in text
    assert 'remediation_receiver_ack_seconds_bucket{le="+Inf"} 3' in text


@pytest.mark.parametrize("when", ["2026-11-30T10:00:00Z", "2026-11-30T10:00:00.123456789Z",
                                  "2026-11-30T11:00:00.5+01:00", "0001-01-01T00:00:00Z"])
def test_the_times_alertmanager_writes_are_accepted(when: str) -> None:
    [parsed] = parse_payload(body(payload(dict(alert(), startsAt=when, endsAt=when))))[1]
    assert (parsed["startsAt"], parsed["endsAt"]) == (when, when)


def test_healthz_is_503_while_the_journal_refuses_deliveries(tmp_path: Any) -> None:
    """A journal that still reads but cannot write (its disk full, produced for real on a tmpfs of the test's own):
    deliveries get 503 and so does /healthz, until a delivery is stored again. (Before: /healthz said 200, so a load
    balancer kept sending Alertmanager to a receiver that could store nothing.)"""
    from receiver_helpers import fill, small_filesystem

    from remediation_receiver.service import Views

    with small_filesystem(tmp_path / "fs") as fs:
        journal = Journal(str(fs / "journal.sqlite"))
        ingress = Ingress(journal, TOKEN, 64 * 1024, Metrics())
        views = Views(journal, Metrics(), types.SimpleNamespace(last_loop=time.time()))
        views.ingress = ingress
        assert ingress.accept("127.0.0.1", body(payload(alert(fingerprint="a0")))).status == 202
        assert views.health()[0] == 200
        filler = fill(fs)
        big = body(payload(*[alert(fingerprint=f"b{i}", note="x" * 2000) for i in range(20)]))
        assert ingress.accept("127.0.0.1", big).status == 503
        status, health = views.health()
        assert (status, health["status"]) == (503, "journal refuses deliveries"), health
        assert views.health()[0] == 503, "asked again while the disk is still full"
        filler.unlink()
        # Healthy again once the journal takes a write, even before Alertmanager sends the next delivery.
        assert views.health()[0] == 200
        assert ingress.store_failure is None
        assert ingress.accept("127.0.0.1", body(payload(alert(fingerprint="a1")))).status == 202
        journal.close()
