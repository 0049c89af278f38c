"""Hostile and broken input: refused with a reason, recorded, and nothing runs anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from receiver_e2e import (
    TOKEN,
    Receiver,
    probe_files,
    start_receiver,
    wait_for,
    webhook_alert,
    webhook_payload,
)


@pytest.fixture(scope="module")
def receiver(lab_host: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    rec = start_receiver(tmp_path_factory.mktemp("hostile"), lab_host, [
        {"name": "probe", "when": "labels.alertname == 'ReceiverProbe'", "playbook": "receiver_probe.yml"}])
    yield rec
    rec.stop()


def labelled(**labels: str) -> bytes:
    return webhook_payload(dict(webhook_alert("bad0"), labels={"alertname": "ReceiverProbe", **labels}))


CASES: list[tuple[str, bytes, dict[str, Any], int, str]] = [
    ("malformed JSON", b'{"version": "4", "alerts": [', {}, 400, "not valid JSON"),
    ("not an object", b'"alerts"', {}, 400, "must be a JSON object"),
    ("wrong version", json.dumps({"version": "3", "alerts": []}).encode(), {}, 400, "unsupported payload version"),
    ("no alerts list", json.dumps({"version": "4"}).encode(), {}, 400, "no 'alerts' list"),
    ("pending status", webhook_payload(webhook_alert("bad1", status="pending")), {}, 400, "status must be"),
    ("oversized body", b"[" + b" " * (300 * 1024) + b"]", {}, 413, "exceeds the limit"),
    ("wrong token", labelled(instance="web1"), {"token": "not-the-token-0123456789"}, 401, "bearer token"),
    ("no token", labelled(instance="web1"), {"token": None}, 401, "bearer token"),
    ("wrong path", labelled(instance="web1"), {"path": "/api/v2/alerts"}, 404, "POST alerts to /alerts"),
    ("missing labels", labelled(), {}, 202, "refused: target: the alert has no 'instance' label"),
    ("instance all", labelled(instance="all"), {}, 202, "refused: target: 'all' is an Ansible group pattern"),
    ("instance *", labelled(instance="*"), {}, 202, "refused: target: '*' is not a plain host name"),
    ("instance list", labelled(instance="web1,web2"), {}, 202, "refused: target: 'web1,web2' is not a plain host"),
    ("instance intersection", labelled(instance="web1:&db"), {}, 202,
     "refused: target: 'web1:&db': expected host:port"),
    ("instance localhost", labelled(instance="localhost:9100"), {}, 202,
     "refused: target: 'localhost' is not in the inventory"),
    ("instance ::1", labelled(instance="[::1]:9100"), {}, 202, "refused: target: '::1' is not in the inventory"),
    ("instance template", labelled(instance="{{ groups.all | join(',') }}"), {}, 202,
     "refused: target: \"{{ groups.all | join(',') }}\" is not a plain host name"),
    ("instance range", labelled(instance="web[1:2]"), {}, 202, "refused: target: 'web[1:2]'"),
    ("instance regex", labelled(instance="~web.*"), {}, 202, "refused: target: '~web.*' is not a plain host name"),
    ("unknown host", labelled(instance="db9.example.org:9100"), {}, 202,
     "refused: target: no inventory host matches 'db9.example.org'"),
    ("truncatedAlerts as a string", webhook_payload(webhook_alert("bad3")).replace(b'"truncatedAlerts": 0',
                                                                                 b'"truncatedAlerts": "many"'),
     {}, 400, "truncatedAlerts must be an integer"),
    ("lone surrogate", labelled(instance="web1").replace(b'"web1"', b'"web1\\udc80"'), {}, 400,
     "lone surrogate"),
    ("nested 50,000 deep", b"[" * 50000 + b"]" * 50000, {}, 400, "nested more than 32 levels"),
    ("instance with a leading space", labelled(instance=" web1"), {}, 202,
     "refused: target: ' web1' has leading or trailing whitespace"),
    ("instance with a newline", labelled(instance="web1\n"), {}, 202,
     "refused: target: 'web1\\n' has leading or trailing whitespace"),
    ("no rule", webhook_payload(dict(webhook_alert("bad2"), labels={"alertname": "Other", "instance": "web1"})),
     {}, 202, "no_rule: no rule matches this alert"),
]


@pytest.mark.parametrize(("case", "body", "how", "status", "why"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_with_a_reason(receiver: Receiver, case: str, body: bytes, how: dict[str, Any],
                                                status: int, why: str) -> None:
    got, reply = receiver.post(body, token=how.get("token", TOKEN), path=how.get("path", "/alerts"))
    assert got == status, reply
    if status != 202:
        assert why in reply["error"]
        assert receiver.journal("SELECT * FROM rejections ORDER BY id DESC LIMIT 1")[0]["http_status"] == status
        return
    decisions = wait_for(lambda: receiver.journal(
        "SELECT d.outcome, d.reason FROM decisions d JOIN alerts a ON a.id = d.alert_id WHERE a.delivery_id=?",
        (reply["delivery"],)), 10, "the decision")
    first = decisions[0]
    assert f"{first['outcome']}: {first['reason']}".startswith(why)


def test_nothing_ran_and_the_token_is_nowhere(receiver: Receiver, lab_host: str) -> None:
    assert receiver.runs() == []
    assert probe_files(lab_host) == []
    status, runs = receiver.get("/runs")
    assert (status, runs) == (200, {"runs": []})
    journal_bytes = b"".join(p.read_bytes() for p in (receiver.config.parent / "state").glob("journal.sqlite*"))
    assert TOKEN.encode() not in journal_bytes
    assert TOKEN not in receiver.log.read_text()
    refused = {r["http_status"]: r["n"] for r in receiver.journal(
        "SELECT http_status, COUNT(*) AS n FROM rejections GROUP BY http_status")}
    assert refused == {400: 8, 401: 2, 404: 1, 413: 1}
