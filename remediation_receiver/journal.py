"""The journal: every delivery, alert, decision, run, run event and notification, in SQLite (WAL).

One transaction per delivery: the HTTP handler acknowledges only after `store_delivery` has committed.
Every other stage reads its work from here and writes its result back, so a restart loses nothing.

What waits for the disk (fsync of the WAL) and what does not:
- durable commits (synchronous=FULL): a delivery (before its 202; concurrent deliveries share one commit), a chunk
  of decisions with the runs they queue and the claim ('starting') of the runs that start now (before
  ansible-runner is called), a run's final status (with its last events), every state the CLI or the guards act on.
- committed, not flushed (synchronous=NORMAL): run events and the 'running' status. They are in the WAL when the
  call returns, so a killed receiver keeps them; only a power loss before the next durable commit or checkpoint
  can take them, and the next durable commit makes them durable too (the WAL is written in order).
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# Version 1 is the schema of the first release (its version is in `meta`); later versions are MIGRATIONS, recorded
# in `schema_version` as they are applied, by the receiver, at start.
SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    remote TEXT NOT NULL,
    receiver TEXT,
    group_key TEXT,
    status TEXT,
    truncated_alerts INTEGER NOT NULL DEFAULT 0,
    alert_count INTEGER NOT NULL,
    body_sha256 TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    ends_at TEXT,
    alertname TEXT,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    generator_url TEXT,
    received_at REAL NOT NULL,
    decided_at REAL,
    closed_at REAL
);
CREATE INDEX IF NOT EXISTS alerts_undecided ON alerts(decided_at, id);
CREATE INDEX IF NOT EXISTS alerts_fingerprint ON alerts(fingerprint, status);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER NOT NULL REFERENCES alerts(id),
    created_at REAL NOT NULL,
    rule TEXT,
    host TEXT,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    run_id TEXT
);
CREATE INDEX IF NOT EXISTS decisions_alert ON decisions(alert_id);
CREATE INDEX IF NOT EXISTS decisions_rule_time ON decisions(rule, created_at);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    alert_id INTEGER REFERENCES alerts(id),
    rule TEXT NOT NULL,
    playbook TEXT NOT NULL,
    host TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    parent_run TEXT,
    mode TEXT NOT NULL,
    check_mode INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    extravars TEXT NOT NULL,
    approve_by REAL,
    approved_at REAL,
    started_at REAL,
    finished_at REAL,
    rc INTEGER,
    stats TEXT,
    held TEXT,
    handled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_dedup ON runs(dedup_key);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS runs_host_rule ON runs(host, rule, created_at);
CREATE INDEX IF NOT EXISTS runs_unhandled ON runs(handled, status);
CREATE TABLE IF NOT EXISTS run_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id),
    created_at REAL NOT NULL,
    counter INTEGER,
    event TEXT NOT NULL,
    task TEXT,
    host TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS run_events_run ON run_events(run_id, id);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    kind TEXT NOT NULL,
    dedup TEXT UNIQUE,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS notifications_pending ON notifications(status, next_at);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    remote TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    size INTEGER
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
"""

# Run states. A run leaves ACTIVE only through a final state; nothing is ever deleted from the journal.
WAITING = ("awaiting_approval", "queued")
ACTIVE = ("starting", "running")
FINAL = ("successful", "failed", "timeout", "canceled", "interrupted", "expired", "error")
REJECTIONS_KEPT = 1000
# A notification being sent belongs to its sender this long (a receiver that dies while sending leaves it to another).
NOTIFY_CLAIM = 120.0
# WAL checkpoints: after this many commits (a few pages each: a WAL of some MiB), or this long after a commit.
CHECKPOINT_COMMITS = 500
CHECKPOINT_AGE = 300.0


class JournalError(Exception):
    """The journal could not be read or written."""


def storable_text(text: str) -> str:
    """`text` with lone surrogates escaped: SQLite stores UTF-8 only, and a reason may quote hostile input."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class AlertRecord:
    id: int
    delivery_id: int
    fingerprint: str
    status: str
    starts_at: str
    ends_at: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    generator_url: str | None
    received_at: float

    def as_data(self) -> dict[str, Any]:
        """The alert as the rules see it: the Alertmanager field names."""
        return {
            "status": self.status,
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }


@dataclass
class RunRecord:
    id: str
    created_at: float
    alert_id: int | None
    rule: str
    playbook: str
    host: str
    fingerprint: str
    starts_at: str
    dedup_key: str
    attempt: int
    parent_run: str | None
    mode: str
    check_mode: bool
    status: str
    reason: str
    extravars: dict[str, Any]
    approve_by: float | None
    approved_at: float | None
    started_at: float | None
    finished_at: float | None
    rc: int | None
    stats: dict[str, Any] | None
    held: str | None
    handled: bool
    events: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "events"}
        return data


def _run_from_row(row: Any) -> RunRecord:
    return RunRecord(
        id=row["id"],
        created_at=row["created_at"],
        alert_id=row["alert_id"],
        rule=row["rule"],
        playbook=row["playbook"],
        host=row["host"],
        fingerprint=row["fingerprint"],
        starts_at=row["starts_at"],
        dedup_key=row["dedup_key"],
        attempt=row["attempt"],
        parent_run=row["parent_run"],
        mode=row["mode"],
        check_mode=bool(row["check_mode"]),
        status=row["status"],
        reason=row["reason"],
        extravars=json.loads(row["extravars"]),
        approve_by=row["approve_by"],
        approved_at=row["approved_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        rc=row["rc"],
        stats=json.loads(row["stats"]) if row["stats"] else None,
        held=row["held"],
        handled=bool(row["handled"]),
    )


def _alert_from_row(row: Any) -> AlertRecord:
    return AlertRecord(
        id=row["id"],
        delivery_id=row["delivery_id"],
        fingerprint=row["fingerprint"],
        status=row["status"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        labels=json.loads(row["labels"]),
        annotations=json.loads(row["annotations"]),
        generator_url=row["generator_url"],
        received_at=row["received_at"],
    )


class _Pending:
    """One delivery waiting for the group commit."""

    def __init__(self, remote: str, payload: dict[str, Any], raw_sha256: str, alerts: list[dict[str, Any]]) -> None:
        self.remote = remote
        self.payload = payload
        self.raw_sha256 = raw_sha256
        self.alerts = alerts
        self.done = False
        self.delivery_id = 0
        self.error: BaseException | None = None



def migrations(dialect: str, current: int) -> list[tuple[int, list[str]]]:
    """The (version, statements) that bring a journal at schema version `current` to SCHEMA_VERSION."""
    if current > SCHEMA_VERSION:
        raise JournalError(f"the journal has schema version {current}, newer than this receiver knows "
                           f"({SCHEMA_VERSION}): upgrade the receiver")
    base = SCHEMA if dialect == "sqlite" else postgresql_schema(SCHEMA)
    steps: dict[int, list[str]] = {
        1: [s.strip() for s in base.split(";") if s.strip()],
        # 2: a run belongs to one receiver through a lease it renews (several receivers on one journal).
        2: ["ALTER TABLE runs ADD COLUMN owner TEXT", "ALTER TABLE runs ADD COLUMN lease_until "
            + ("REAL" if dialect == "sqlite" else "DOUBLE PRECISION"),
            "CREATE INDEX IF NOT EXISTS runs_lease ON runs(status, lease_until)"],
    }
    if dialect == "postgresql":
        # One run per attempt of a firing, whatever receiver decided it (canceled and expired runs are no attempt).
        steps[2].append("CREATE UNIQUE INDEX IF NOT EXISTS runs_one_per_attempt ON runs(dedup_key, attempt)"
                        " WHERE status NOT IN ('canceled', 'expired')")
    return [(v, steps[v]) for v in range(current + 1, SCHEMA_VERSION + 1)]


def postgresql_schema(schema: str) -> str:
    """The SQLite schema in PostgreSQL's types: identity keys, BIGINT, DOUBLE PRECISION."""
    schema = schema.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
    schema = re.sub(r"\bINTEGER\b", "BIGINT", schema)
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", schema)


def is_postgresql(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


class Journal(abc.ABC):
    """The journal interface: what the receiver (ingress, dispatcher, executor, notifier, CLI) reads and writes.

    `Journal(target)` opens the implementation the target names: a `postgresql://` URL opens PostgresJournal
    (several receivers may share it), anything else is the path of an SQLiteJournal (one receiver). The SQL below is
    written once for both (`?` placeholders; the PostgreSQL connection translates them)."""

    target: str
    readonly: bool
    # Whether several receivers may share this journal (leases, takeover, claims with row locks).
    shared = False
    # The driver's errors: a delivery that hits one is answered 503.
    errors: tuple[type[BaseException], ...] = ()
    commits: dict[str, int]
    checkpoints: int

    def __new__(cls, target: str, *args: Any, **kwargs: Any) -> Journal:
        if cls is Journal:
            if is_postgresql(target):
                from .journal_pg import PostgresJournal
                cls = PostgresJournal
            else:
                cls = SQLiteJournal
        return super().__new__(cls)

    def describe(self) -> str:
        """The journal as logs and messages name it (never a password)."""
        return self.target

    def error_text(self, exc: BaseException) -> str:
        """What an operator reads when the journal failed with `exc`: the journal named, the cause, no password."""
        text = str(exc).strip()
        if isinstance(exc, JournalError) and text.startswith(f"journal {self.describe()}"):
            return text
        cause = text if isinstance(exc, JournalError) else f"{type(exc).__name__}: {text}"
        return f"journal {self.describe()}: {cause}"

    # -- connections and transactions (per backend) ------------------------------------------------------------
    @abc.abstractmethod
    def _read(self) -> Any:
        """This thread's connection, for reads."""

    @abc.abstractmethod
    def _write(self, durable: bool = True) -> contextlib.AbstractContextManager[Any]:
        """A write transaction (a savepoint inside the caller's transaction)."""

    @abc.abstractmethod
    def _delivery_write(self) -> contextlib.AbstractContextManager[Any]:
        """The group commit's transaction."""

    @abc.abstractmethod
    def transaction(self, *, durable: bool = True) -> contextlib.AbstractContextManager[Any]:
        """Several writes from this thread in one transaction; on a shared journal, also the dispatchers' lock."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close this thread's connection."""

    @abc.abstractmethod
    def checkpoint(self) -> None:
        """Housekeeping the dispatcher runs outside the path of alerts."""

    @abc.abstractmethod
    def checkpoint_due(self) -> bool:
        """Whether checkpoint() should run now."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The schema version the journal is at."""

    def warm(self) -> None:
        """Pay once, at start, what the first write of this thread (and of the group commit) would otherwise pay in
        the first alert's path. Nothing to do by default."""
        return None

    def _init_group_commit(self) -> None:
        self._gc_cond = threading.Condition()
        self._gc_queue: list[_Pending] = []
        self._gc_leader = False

    # -- several receivers (a single-receiver journal keeps the defaults: no lease expires, nothing to take over) -
    def claim_run(self, run_id: str, owner: str, lease: float) -> bool:
        """Move a queued run to 'starting' for `owner` (a lease of `lease` seconds); False when it is no longer
        queued."""
        return self.set_run_status(run_id, "starting", expect=("queued",), started_at=time.time(), held=None,
                                   owner=owner)

    def claimable_runs(self) -> list[RunRecord]:
        """Queued runs this dispatcher may claim (inside its transaction)."""
        return self.runs_in(("queued",))

    def lock_undecided(self, alert_ids: list[int]) -> set[int]:
        """Of `alert_ids`, those still undecided, locked for this transaction."""
        return set(alert_ids)

    def renew_leases(self, owner: str, lease: float, run_ids: list[str]) -> int:
        """Extend the leases of `owner`'s active runs among `run_ids` (those running in this process: a run that
        ended here without its end recorded keeps no lease, and another receiver takes it over); return how many."""
        return 0

    def runs_taken_from(self, owner: str, run_ids: list[str]) -> list[str]:
        """Of `run_ids` (running here), those another receiver has taken over (or that are no longer `owner`'s)."""
        return []

    def take_over_expired(self, owner: str, reason: str, keep: list[str] | None = None) -> list[RunRecord]:
        """Active runs whose lease expired (their receiver died or lost the journal), except `keep` (this receiver's
        own, running here): marked interrupted for `owner`, which handles them."""
        return []

    def orphaned_runs(self, owner: str) -> list[RunRecord]:
        """Active runs found at start that no live receiver holds: on a single-receiver journal, every one."""
        return self.runs_in(ACTIVE)


    # -- ingress -----------------------------------------------------------------------------------------------
    def store_delivery(self, *, remote: str, payload: dict[str, Any], raw_sha256: str,
                       alerts: list[dict[str, Any]]) -> int:
        """Store one delivery and its alerts durably; return the delivery id.

        Group commit: concurrent deliveries share one transaction (one fsync), each in its own savepoint, and
        every caller returns only after the commit that holds its delivery.
        """
        item = _Pending(remote, payload, raw_sha256, alerts)
        with self._gc_cond:
            self._gc_queue.append(item)
            while not item.done and self._gc_leader:
                self._gc_cond.wait()
            if not item.done:
                self._gc_leader = True
                batch, self._gc_queue = self._gc_queue, []
            else:
                batch = []
        if batch:
            try:
                self._store_batch(batch)
            finally:
                with self._gc_cond:
                    for pending in batch:
                        pending.done = True
                    self._gc_leader = False
                    self._gc_cond.notify_all()
        # Acknowledged on evidence only: a delivery id from the commit that holds it. A batch whose leader stopped
        # half-way (an error no branch expected) leaves items with neither an id nor an error: never a 202.
        if item.error is not None:
            raise JournalError(f"could not store the delivery: {item.error}")
        if not item.delivery_id:
            raise JournalError("could not store the delivery: the commit that was to hold it did not finish")
        return item.delivery_id

    def _store_batch(self, batch: list[_Pending]) -> None:
        try:
            with self._delivery_write() as db:
                for item in batch:
                    db.execute("SAVEPOINT delivery")
                    try:
                        item.delivery_id = self._insert_delivery(db, item)
                    except Exception as exc:  # this delivery only: the others in the batch still commit
                        db.execute("ROLLBACK TO delivery")
                        item.error = exc
                    db.execute("RELEASE delivery")
        except self.errors as exc:
            for item in batch:
                item.error = item.error or exc
        except BaseException as exc:
            for item in batch:
                item.error = item.error or exc
            raise

    def _insert_delivery(self, db: Any, item: _Pending) -> int:
        now = time.time()
        remote, payload, raw_sha256, alerts = item.remote, item.payload, item.raw_sha256, item.alerts
        cur = db.execute(
            "INSERT INTO deliveries(received_at, remote, receiver, group_key, status, truncated_alerts,"
            " alert_count, body_sha256, payload) VALUES (?,?,?,?,?,?,?,?,?) RETURNING id",
            (now, remote, payload.get("receiver"), payload.get("groupKey"), payload.get("status"),
             int(payload.get("truncatedAlerts") or 0), len(alerts), raw_sha256,
             json.dumps(payload, sort_keys=True)),
        )
        delivery_id = int(cur.fetchone()[0])
        db.executemany(
            "INSERT INTO alerts(delivery_id, fingerprint, status, starts_at, ends_at, alertname, labels,"
            " annotations, generator_url, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(delivery_id, a["fingerprint"], a["status"], a["startsAt"], a.get("endsAt"),
              a["labels"].get("alertname"), json.dumps(a["labels"], sort_keys=True),
              json.dumps(a.get("annotations") or {}, sort_keys=True), a.get("generatorURL"), now)
             for a in alerts],
        )
        return delivery_id

    def record_rejection(self, *, remote: str, http_status: int, reason: str, size: int | None) -> None:
        """Keep the last REJECTIONS_KEPT refused requests (never their body or headers)."""
        with self._write() as db:
            db.execute("INSERT INTO rejections(created_at, remote, http_status, reason, size) VALUES (?,?,?,?,?)",
                       (time.time(), remote, http_status, storable_text(reason)[:500], size))
            db.execute("DELETE FROM rejections WHERE id <= (SELECT MAX(id) FROM rejections) - ?", (REJECTIONS_KEPT,))

    # -- deciding ----------------------------------------------------------------------------------------------
    def undecided_alerts(self, limit: int = 200) -> list[AlertRecord]:
        rows = self._read().execute(
            "SELECT * FROM alerts WHERE decided_at IS NULL ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [_alert_from_row(r) for r in rows]

    def get_alert(self, alert_id: int) -> AlertRecord | None:
        row = self._read().execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return _alert_from_row(row) if row else None

    def record_decisions(self, alert_id: int, decisions: list[dict[str, Any]], runs: list[dict[str, Any]],
                         cancel_runs: list[tuple[str, str]] | None = None, close: str | None = None) -> None:
        """Write an alert's decisions and the runs they create, and mark the alert decided: one transaction.
        `close` is a fingerprint whose firing records a resolved alert closes."""
        now = time.time()
        with self._write() as db:
            if close is not None:
                db.execute("UPDATE alerts SET closed_at=? WHERE fingerprint=? AND closed_at IS NULL AND id<=?",
                           (now, close, alert_id))
            for run in runs:
                db.execute(
                    "INSERT INTO runs(id, created_at, alert_id, rule, playbook, host, fingerprint, starts_at,"
                    " dedup_key, attempt, parent_run, mode, check_mode, status, reason, extravars, approve_by)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (run["id"], now, alert_id, run["rule"], run["playbook"], run["host"], run["fingerprint"],
                     run["starts_at"], run["dedup_key"], run.get("attempt", 1), run.get("parent_run"), run["mode"],
                     int(run.get("check_mode", False)), run["status"], run.get("reason", ""),
                     json.dumps(run["extravars"], sort_keys=True), run.get("approve_by")),
                )
            for d in decisions:
                db.execute(
                    "INSERT INTO decisions(alert_id, created_at, rule, host, outcome, reason, run_id)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (alert_id, now, d.get("rule"), d.get("host"), d["outcome"], d["reason"], d.get("run_id")),
                )
            for run_id, reason in cancel_runs or []:
                db.execute(
                    "UPDATE runs SET status='canceled', reason=?, finished_at=?, handled=1"
                    " WHERE id=? AND status IN ('awaiting_approval','queued')", (reason, now, run_id))
            db.execute("UPDATE alerts SET decided_at=? WHERE id=?", (now, alert_id))

    def decisions_for_alert(self, alert_id: int) -> list[dict[str, Any]]:
        rows = self._read().execute("SELECT * FROM decisions WHERE alert_id=? ORDER BY id", (alert_id,)).fetchall()
        return [dict(r) for r in rows]

    # -- guard state (read-only queries) ------------------------------------------------------------------------
    def runs_for_dedup_key(self, dedup_key: str) -> list[RunRecord]:
        rows = self._read().execute("SELECT * FROM runs WHERE dedup_key=? ORDER BY created_at", (dedup_key,))
        return [_run_from_row(r) for r in rows.fetchall()]

    def last_run_for(self, host: str, rule: str) -> RunRecord | None:
        row = self._read().execute(
            "SELECT * FROM runs WHERE host=? AND rule=? AND status NOT IN ('canceled','expired','awaiting_approval')"
            " ORDER BY created_at DESC LIMIT 1", (host, rule)).fetchone()
        return _run_from_row(row) if row else None

    def count_runs_since(self, rule: str, since: float) -> int:
        row = self._read().execute(
            "SELECT COUNT(*) FROM runs WHERE rule=? AND created_at>=? AND mode != 'observe'"
            " AND status NOT IN ('canceled','expired','awaiting_approval')", (rule, since)).fetchone()
        return int(row[0])

    def hosts_alerting(self, rule: str, since: float) -> set[str]:
        """Hosts with a firing, not yet resolved alert that matched `rule` since `since` (any outcome)."""
        rows = self._read().execute(
            "SELECT DISTINCT d.host FROM decisions d JOIN alerts a ON a.id=d.alert_id"
            " WHERE d.rule=? AND d.created_at>=? AND d.host IS NOT NULL AND a.status='firing'"
            " AND a.closed_at IS NULL", (rule, since))
        return {r[0] for r in rows.fetchall()}

    def was_resolved(self, fingerprint: str, starts_at: str) -> bool:
        """Whether a resolved alert for this firing (fingerprint, startsAt) has been received."""
        row = self._read().execute(
            "SELECT 1 FROM alerts WHERE fingerprint=? AND starts_at=? AND status='resolved' LIMIT 1",
            (fingerprint, starts_at)).fetchone()
        return row is not None

    def firing_runs_for_fingerprint(self, fingerprint: str) -> list[RunRecord]:
        rows = self._read().execute(
            "SELECT * FROM runs WHERE fingerprint=? AND status IN ('awaiting_approval','queued')", (fingerprint,))
        return [_run_from_row(r) for r in rows.fetchall()]

    # -- runs --------------------------------------------------------------------------------------------------
    def get_run(self, run_id: str, *, with_events: bool = False) -> RunRecord | None:
        db = self._read()
        row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            return None
        run = _run_from_row(row)
        if with_events:
            run.events = [
                {"counter": e["counter"], "event": e["event"], "task": e["task"], "host": e["host"],
                 "created_at": e["created_at"], "data": json.loads(e["data"])}
                for e in db.execute("SELECT * FROM run_events WHERE run_id=? ORDER BY id", (run_id,)).fetchall()
            ]
        return run

    def list_runs(self, *, limit: int = 50, status: str | None = None) -> list[RunRecord]:
        if status:
            rows = self._read().execute(
                "SELECT * FROM runs WHERE status=? ORDER BY created_at DESC LIMIT ?", (status, limit))
        else:
            rows = self._read().execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [_run_from_row(r) for r in rows.fetchall()]

    def runs_in(self, statuses: tuple[str, ...]) -> list[RunRecord]:
        marks = ",".join("?" * len(statuses))
        rows = self._read().execute(
            f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY created_at", statuses).fetchall()
        return [_run_from_row(r) for r in rows]

    def unhandled(self, statuses: tuple[str, ...]) -> list[RunRecord]:
        marks = ",".join("?" * len(statuses))
        rows = self._read().execute(
            f"SELECT * FROM runs WHERE handled=0 AND status IN ({marks}) ORDER BY created_at", statuses).fetchall()
        return [_run_from_row(r) for r in rows]

    def set_run_status(self, run_id: str, status: str, *, reason: str | None = None,
                       expect: tuple[str, ...] | None = None, durable: bool = True, **fields: Any) -> bool:
        """Move a run to `status` (only from one of `expect`, when given); return whether it moved.

        `durable=False` for a change nothing acts on (starting -> running): committed without waiting for the
        disk."""
        sets = ["status=?"]
        values: list[Any] = [status]
        if reason is not None:
            sets.append("reason=?")
            values.append(reason)
        for key, value in fields.items():
            sets.append(f"{key}=?")
            values.append(json.dumps(value, sort_keys=True) if key == "stats" and value is not None else value)
        sql = f"UPDATE runs SET {', '.join(sets)} WHERE id=?"
        values.append(run_id)
        if expect:
            sql += f" AND status IN ({','.join('?' * len(expect))})"
            values.extend(expect)
        with self._write(durable) as db:
            return db.execute(sql, values).rowcount == 1

    def set_run_held(self, run_id: str, held: str | None) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET held=? WHERE id=?", (held, run_id))

    def mark_handled(self, run_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET handled=1 WHERE id=?", (run_id,))

    def add_run(self, run: dict[str, Any]) -> None:
        """A run created outside an alert decision (a re-run after an interruption or a retry)."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO runs(id, created_at, alert_id, rule, playbook, host, fingerprint, starts_at, dedup_key,"
                " attempt, parent_run, mode, check_mode, status, reason, extravars) VALUES"
                " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run["id"], now, run.get("alert_id"), run["rule"], run["playbook"], run["host"], run["fingerprint"],
                 run["starts_at"], run["dedup_key"], run["attempt"], run.get("parent_run"), run["mode"],
                 int(run.get("check_mode", False)), run["status"], run.get("reason", ""),
                 json.dumps(run["extravars"], sort_keys=True)),
            )

    def add_run_events(self, run_id: str, events: list[dict[str, Any]]) -> None:
        """Events are a record, not a state anything acts on: committed without waiting for the disk (a killed
        receiver keeps them; the next durable commit makes them durable). Inside a transaction they join it."""
        if not events:
            return
        now = time.time()
        with self._write(durable=False) as db:
            db.executemany(
                "INSERT INTO run_events(run_id, created_at, counter, event, task, host, data) VALUES (?,?,?,?,?,?,?)",
                [(run_id, now, e.get("counter"), e.get("event", "unknown"), e.get("task"), e.get("host"),
                  json.dumps(e.get("data", {}), sort_keys=True, default=str)) for e in events],
            )

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        run = self.get_run(run_id, with_events=True)
        return run.events if run else []

    # -- notifications -----------------------------------------------------------------------------------------
    def add_notification(self, kind: str, payload: dict[str, Any], *, dedup: str | None = None) -> bool:
        """Queue a notification; `dedup` makes it once-only. Return whether it was queued."""
        now = time.time()
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO notifications(created_at, kind, dedup, payload, status, next_at)"
                " VALUES (?,?,?,?,'pending',?) ON CONFLICT DO NOTHING",
                (now, kind, dedup, json.dumps(payload, sort_keys=True), now))
            return cur.rowcount == 1

    def due_notifications(self, now: float, limit: int = 20) -> list[dict[str, Any]]:
        """Claim the notifications due now (not sent again for NOTIFY_CLAIM seconds, unless their outcome is
        recorded): a journal that cannot record the claim (a full disk) sends nothing, rather than the same notice on
        every pass with its 'sent' never written."""
        ids = [r[0] for r in self._read().execute(
            "SELECT id FROM notifications WHERE status='pending' AND next_at<=? ORDER BY id LIMIT ?",
            (now, limit)).fetchall()]
        if not ids:
            return []
        with self._write(durable=False) as db:
            rows = db.execute(
                f"UPDATE notifications SET next_at=? WHERE id IN ({','.join('?' * len(ids))}) AND status='pending'"
                " AND next_at<=? RETURNING *", (now + NOTIFY_CLAIM, *ids, now)).fetchall()
        return sorted((dict(r) for r in rows), key=lambda r: r["id"])

    def update_notification(self, notification_id: int, **fields: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        with self._write() as db:
            db.execute(f"UPDATE notifications SET {sets} WHERE id=?", (*fields.values(), notification_id))

    def notifications(self, kind: str | None = None) -> list[dict[str, Any]]:
        if kind:
            rows = self._read().execute("SELECT * FROM notifications WHERE kind=? ORDER BY id", (kind,))
        else:
            rows = self._read().execute("SELECT * FROM notifications ORDER BY id")
        return [dict(r) for r in rows.fetchall()]

    # -- state (pause flag, breaker) ---------------------------------------------------------------------------
    def get_state(self, key: str, default: str | None = None) -> str | None:
        row = self._read().execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def states(self, prefix: str) -> dict[str, str]:
        """Every state entry whose key starts with `prefix`."""
        rows = self._read().execute("SELECT key, value FROM state WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
        return {r[0]: r[1] for r in rows.fetchall()}

    def set_state(self, key: str, value: str | None) -> None:
        with self._write() as db:
            if value is None:
                db.execute("DELETE FROM state WHERE key=?", (key,))
            else:
                db.execute("INSERT INTO state(key, value, updated_at) VALUES (?,?,?) ON CONFLICT(key) DO UPDATE"
                           " SET value=excluded.value, updated_at=excluded.updated_at", (key, value, time.time()))

    # -- reporting ---------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, dict[str, int]]:
        db = self._read()
        out: dict[str, dict[str, int]] = {}
        out["deliveries"] = {"all": int(db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])}
        out["alerts"] = {r[0]: r[1] for r in db.execute("SELECT status, COUNT(*) FROM alerts GROUP BY status")}
        out["undecided"] = {"all": int(db.execute(
            "SELECT COUNT(*) FROM alerts WHERE decided_at IS NULL").fetchone()[0])}
        out["decisions"] = {r[0]: r[1] for r in db.execute("SELECT outcome, COUNT(*) FROM decisions GROUP BY outcome")}
        out["runs"] = {r[0]: r[1] for r in db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status")}
        out["notifications"] = {r[0]: r[1] for r in db.execute(
            "SELECT status, COUNT(*) FROM notifications GROUP BY status")}
        out["rejections"] = {str(r[0]): r[1] for r in db.execute(
            "SELECT http_status, COUNT(*) FROM rejections GROUP BY http_status")}
        return out

    def prune(self, before: float) -> dict[str, int]:
        """Forget what finished before `before`: finished runs and their events, decided alerts nothing refers to,
        their decisions and deliveries, sent or failed notifications, refusals. Never a waiting or active run.

        Never what the guards still read: the runs of a firing (fingerprint, startsAt) that Alertmanager delivered
        again since `before` (dedup and max_attempts count them, however old they are), and that firing's
        still_firing notice (its once-only key)."""
        final = ",".join(f"'{s}'" for s in FINAL)
        # A firing still being delivered: Alertmanager re-sends it every repeat_interval while it fires.
        live_run = ("SELECT 1 FROM alerts a WHERE a.status = 'firing' AND a.received_at >= ?"
                    " AND a.fingerprint = runs.fingerprint AND a.starts_at = runs.starts_at")
        old_runs = (f"SELECT id FROM runs WHERE created_at < ? AND status IN ({final}) AND handled = 1"
                    f" AND NOT EXISTS ({live_run})")
        notice_key = "'still_firing|' || a.fingerprint || '|' || a.starts_at || '|'"
        live_notice = ("SELECT 1 FROM alerts a WHERE a.status = 'firing' AND a.received_at >= ?"
                       " AND notifications.kind = 'still_firing'"
                       f" AND substr(notifications.dedup, 1, length({notice_key})) = {notice_key}")
        removed: dict[str, int] = {}
        with self._write() as db:
            removed["run_events"] = db.execute(f"DELETE FROM run_events WHERE run_id IN ({old_runs})",
                                               (before, before)).rowcount
            removed["runs"] = db.execute(f"DELETE FROM runs WHERE id IN ({old_runs})", (before, before)).rowcount
            removed["decisions"] = db.execute(
                "DELETE FROM decisions WHERE created_at < ? AND alert_id NOT IN"
                " (SELECT alert_id FROM runs WHERE alert_id IS NOT NULL)", (before,)).rowcount
            removed["alerts"] = db.execute(
                "DELETE FROM alerts WHERE received_at < ? AND decided_at IS NOT NULL"
                " AND id NOT IN (SELECT alert_id FROM runs WHERE alert_id IS NOT NULL)"
                " AND id NOT IN (SELECT alert_id FROM decisions)", (before,)).rowcount
            removed["deliveries"] = db.execute(
                "DELETE FROM deliveries WHERE received_at < ? AND id NOT IN (SELECT delivery_id FROM alerts)",
                (before,)).rowcount
            removed["notifications"] = db.execute(
                "DELETE FROM notifications WHERE created_at < ? AND status != 'pending'"
                f" AND NOT EXISTS ({live_notice})", (before, before)).rowcount
            removed["rejections"] = db.execute("DELETE FROM rejections WHERE created_at < ?", (before,)).rowcount
        return removed

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Read-only ad-hoc query (tests and the CLI)."""
        return [dict(r) for r in self._read().execute(sql, params).fetchall()]


class SQLiteJournal(Journal):
    """SQLite journal shared by threads (one connection per thread) and by the CLI (another process)."""

    errors = (sqlite3.Error,)

    def __init__(self, path: str, *, readonly: bool = False, password: str | None = None) -> None:
        self.path = path
        self.target = path
        self.readonly = readonly
        self._local = threading.local()
        # One writer at a time inside this process; SQLite's busy timeout covers other processes (the CLI).
        self._write_lock = threading.Lock()
        self._init_group_commit()
        self._delivery_db: sqlite3.Connection | None = None
        # Commits since start, by whether they waited for the disk ("full") or not ("normal"), and checkpoints.
        self.commits = {"full": 0, "normal": 0}
        self.checkpoints = 0
        self._last_checkpoint: tuple[int, ...] = ()
        self._commits_at_checkpoint = 0
        self._checkpointed_at = time.monotonic()
        if not readonly:
            try:
                directory = os.path.dirname(os.path.abspath(path))
                os.makedirs(directory, mode=0o700, exist_ok=True)
                db = self._connect()
                with self._write_lock:
                    self._migrate(db)
                os.chmod(path, 0o600)
            except (sqlite3.Error, OSError) as exc:  # a file that is no journal, a read-only file or directory
                self.close()
                raise JournalError(f"journal {path}: cannot open it for writing: {type(exc).__name__}: {exc}") \
                    from None
            self.commits["full"] = 0  # commits since start count the receiver's work, not its schema check

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Create the schema, or bring an older journal up to SCHEMA_VERSION, in one transaction."""
        with self._begun(db, True):
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                       " applied_at REAL NOT NULL)")
            current = int(db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
            if current == 0 and db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
                                           ).fetchone() is not None:
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                current = int(row[0]) if row else 0
            for version, statements in migrations("sqlite", current):
                for statement in statements:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version(version, applied_at) VALUES (?,?)", (version, time.time()))
            db.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE"
                       " SET value=excluded.value", (str(SCHEMA_VERSION),))

    # -- connections -------------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._open()
            self._local.db = db
        return db

    def _open(self, *, shared: bool = False) -> sqlite3.Connection:
        if self.readonly:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, isolation_level=None)
        else:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=not shared)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before the 202 goes out.
            db.execute("PRAGMA synchronous=FULL")
            # Checkpoints run from the dispatcher (checkpoint()), never inside an acknowledgement.
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=30000")
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _delivery_write(self) -> Iterator[sqlite3.Connection]:
        """The group commit's own connection, used by whichever HTTP thread leads the batch (one at a time, under
        the write lock): a connection per HTTP thread would cost its open, and SQLite syncs the directory on the
        first sync of every connection's WAL descriptor (one more fsync per new TCP connection)."""
        if self.readonly:
            raise JournalError("journal opened read-only")
        if getattr(self._local, "in_tx", False):  # a caller's own transaction (tests): join it
            with self._write() as db:
                yield db
            return
        with self._write_lock:
            if self._delivery_db is None:
                self._delivery_db = self._open(shared=True)
            with self._begun(self._delivery_db, True):
                yield self._delivery_db

    def warm(self) -> None:
        """SQLite syncs the directory on the first sync of each connection's WAL descriptor, and the WAL's header
        when a commit starts a new WAL: a durable commit now (the time of this start, in `meta`; a commit that
        changes nothing writes nothing) on this thread's connection (the dispatcher calls it from its thread) and on
        the group commit's takes those fsyncs out of the first alert's path (it had 4 or 5 from its POST to its
        first task instead of 2)."""
        if self.readonly:
            return
        touch = ("INSERT INTO meta(key, value) VALUES ('last_start', ?) ON CONFLICT(key) DO UPDATE"
                 " SET value=excluded.value")
        with self._write() as db:
            db.execute(touch, (repr(time.time()),))
        with self._delivery_write() as db:
            db.execute(touch, (repr(time.time()),))

    def checkpoint(self) -> None:
        """Copy the WAL back into the database without blocking writers (the WAL would grow forever otherwise)."""
        if not self.readonly:
            row = tuple(self._connect().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
            self._commits_at_checkpoint = sum(self.commits.values())
            self._checkpointed_at = time.monotonic()
            # (busy, frames in the WAL, frames copied): the same answer twice means nothing new was copied.
            if row[2] > 0 and row != self._last_checkpoint:
                self.checkpoints += 1
            self._last_checkpoint = row

    def checkpoint_due(self) -> bool:
        """A checkpoint costs two fsyncs and makes the next commit restart the WAL (a third): take one after
        CHECKPOINT_COMMITS commits, or CHECKPOINT_AGE seconds after the first commit since the last one, not on
        a clock (a checkpoint every few seconds would land in the path of most alerts)."""
        since = sum(self.commits.values()) - self._commits_at_checkpoint
        return since >= CHECKPOINT_COMMITS or (since > 0 and
                                               time.monotonic() - self._checkpointed_at >= CHECKPOINT_AGE)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @contextmanager
    def _begun(self, db: sqlite3.Connection, durable: bool) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception). A transaction that need not wait for the disk runs
        with synchronous=NORMAL: its commit does not fsync the WAL (SQLite allows the switch outside a transaction
        only)."""
        if not durable:
            db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            self.commits["full" if durable else "normal"] += 1
        finally:
            if not durable:
                db.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """Several writes from this thread in one transaction (one fsync); writes inside join it and take its
        durability."""
        db = self._connect()
        if getattr(self._local, "in_tx", False):
            yield db
            return
        if self.readonly:
            raise JournalError("journal opened read-only")
        with self._write_lock, self._begun(db, durable):
            self._local.in_tx = True
            try:
                yield db
            finally:
                self._local.in_tx = False

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise JournalError("journal opened read-only")
        db = self._connect()
        if getattr(self._local, "in_tx", False):
            db.execute("SAVEPOINT nested")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK TO nested")
                db.execute("RELEASE nested")
                raise
            db.execute("RELEASE nested")
            return
        with self._write_lock, self._begun(db, durable):
            yield db

    def _read(self) -> sqlite3.Connection:
        return self._connect()

    def schema_version(self) -> int:
        """0 for an empty file; a journal of the first release has its version in `meta` only."""
        db = self._read()
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
        if "schema_version" in tables:
            return int(db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            return int(row[0]) if row else 0
        return 0

