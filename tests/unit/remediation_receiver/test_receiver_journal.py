"""Journal: WAL mode, durable deliveries with group commit, one transaction per delivery, survives reopening."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from receiver_helpers import alert

from remediation_receiver.journal import Journal, JournalError


def test_journal_is_wal_and_private(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "j" / "journal.sqlite"))
    assert journal.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert (tmp_path / "j" / "journal.sqlite").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "j").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("threads", [1, 8, 64])
def test_concurrent_deliveries_all_stored_with_distinct_ids(tmp_path: Path, threads: int) -> None:
    journal = Journal(str(tmp_path / "journal.sqlite"))
    ids: list[int] = []
    lock = threading.Lock()

    def deliver(n: int) -> None:
        for i in range(5):
            delivery = journal.store_delivery(remote="127.0.0.1", payload={"receiver": "r"}, raw_sha256=f"{n}-{i}",
                                              alerts=[alert(fingerprint=f"{n:x}{i:x}"), alert(status="resolved")])
            with lock:
                ids.append(delivery)

    workers = [threading.Thread(target=deliver, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(ids) == list(range(1, threads * 5 + 1))
    journal.close()
    reopened = Journal(str(tmp_path / "journal.sqlite"))
    counts = reopened.counts()
    assert counts["deliveries"]["all"] == threads * 5
    assert counts["alerts"] == {"firing": threads * 5, "resolved": threads * 5}
    assert counts["undecided"]["all"] == threads * 10


def test_a_delivery_is_all_or_nothing(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "journal.sqlite"))
    broken = alert()
    del broken["startsAt"]
    with pytest.raises((JournalError, KeyError)):
        journal.store_delivery(remote="127.0.0.1", payload={}, raw_sha256="x", alerts=[alert(), broken])
    assert journal.counts()["deliveries"]["all"] == 0
    assert journal.counts()["alerts"] == {}


def test_a_read_only_journal_refuses_to_store(tmp_path: Path) -> None:
    Journal(str(tmp_path / "journal.sqlite")).close()
    readonly = Journal(str(tmp_path / "journal.sqlite"), readonly=True)
    with pytest.raises(JournalError):
        readonly.store_delivery(remote="127.0.0.1", payload={}, raw_sha256="x", alerts=[alert()])


def test_nested_writes_join_one_transaction(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "journal.sqlite"))
    with pytest.raises(RuntimeError), journal.transaction():
        journal.set_state("a", "1")
        journal.set_state("b", "2")
        raise RuntimeError("abort the batch")
    assert journal.get_state("a") is None and journal.get_state("b") is None
    with journal.transaction():
        journal.set_state("a", "1")
    other = sqlite3.connect(str(tmp_path / "journal.sqlite"))
    assert other.execute("SELECT value FROM state WHERE key='a'").fetchone() == ("1",)


def test_retention_forgets_old_finished_work_and_keeps_what_is_pending(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "journal.sqlite"))
    for fingerprint in ("old", "waiting"):
        journal.store_delivery(remote="127.0.0.1", payload={}, raw_sha256="x", alerts=[alert(fingerprint=fingerprint)])
    undecided_new = journal.store_delivery(remote="127.0.0.1", payload={}, raw_sha256="y", alerts=[alert()])
    old_alert, waiting_alert = journal.undecided_alerts()[:2]
    for record, status in ((old_alert, "successful"), (waiting_alert, "awaiting_approval")):
        journal.record_decisions(record.id, [{"outcome": "run", "reason": "r", "run_id": record.fingerprint}], [{
            "id": record.fingerprint, "rule": "probe", "playbook": "p.yml", "host": "web1",
            "fingerprint": record.fingerprint, "starts_at": "s", "dedup_key": record.fingerprint, "mode": "auto",
            "status": status, "extravars": {}}])
    journal.set_run_status("old", "successful", handled=1)
    journal.add_run_events("old", [{"event": "runner_on_ok", "data": {}}])
    journal.add_notification("run_failed", {}, dedup="x")
    journal.update_notification(1, status="sent")

    removed = journal.prune(before=2e10)  # everything is "old"
    assert removed["runs"] == 1 and removed["run_events"] == 1 and removed["notifications"] == 1
    assert [r.id for r in journal.list_runs()] == ["waiting"]
    remaining = {a["fingerprint"] for a in journal.query("SELECT fingerprint FROM alerts")}
    assert remaining == {"waiting", "f00d"}  # the waiting run's alert and the undecided one stay
    assert journal.query("SELECT id FROM deliveries WHERE id=?", (undecided_new,))
    assert journal.prune(before=0) == dict.fromkeys(removed, 0)
