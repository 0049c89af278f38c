"""The journal in PostgreSQL (psycopg 3): several receivers share it, active-active.

The SQL is the SQLite journal's (journal.Journal); this module supplies the connections and what only a shared journal
needs:
- dispatchers serialise their decisions and claims with one transaction-level advisory lock (DISPATCH_LOCK), so
  dedup, cooldown, budgets, the per-host lock, the global cap and the fleet breaker see every receiver's runs;
  queued runs and undecided alerts are read `FOR UPDATE SKIP LOCKED`; a unique index allows one run per attempt of a
  firing whatever receiver decided it;
- a run belongs to the receiver that claimed it through a lease (`owner`, `lease_until`, on the database's clock) that
  receiver renews; a run whose lease expired is taken over by another receiver as interrupted;
- pending notifications are claimed before they are sent (one receiver sends each).

Durability: a delivery, a decision chunk with its claims, a final status commit with synchronous_commit on (the WAL
is flushed before the 202 or before ansible-runner starts); run events, 'running' and lease renewals with
synchronous_commit off, as the SQLite journal does with synchronous=NORMAL.
"""

from __future__ import annotations

import contextlib
import json
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import pq

from .journal import (
    ACTIVE,
    NOTIFY_CLAIM,
    SCHEMA_VERSION,
    Journal,
    JournalError,
    RunRecord,
    _Pending,
    _run_from_row,
    migrations,
)
from .redact import redact_url

# pg_advisory_xact_lock keys: the dispatchers' decisions and claims; schema migrations at start.
DISPATCH_LOCK = 0x706D7264  # "pmrd"
MIGRATE_LOCK = 0x706D726D  # "pmrm"
# The database's clock, in seconds since the epoch: leases never compare two machines' clocks.
NOW = "extract(epoch from clock_timestamp())::double precision"
CONNECT_TIMEOUT = 5

# An alert's decisions and its mark as decided in one statement (the common case: no run queued or canceled).
DECIDE = (
    "WITH d AS (INSERT INTO decisions(alert_id, created_at, rule, host, outcome, reason, run_id)"
    " SELECT ?, ?, u.rule, u.host, u.outcome, u.reason, u.run_id FROM unnest(?::text[], ?::text[], ?::text[],"
    " ?::text[], ?::text[]) WITH ORDINALITY AS u(rule, host, outcome, reason, run_id, n) ORDER BY u.n)"
    " UPDATE alerts SET decided_at=? WHERE id=?")

# A delivery and its alerts in one statement (what Journal._insert_delivery does in two and more).
INSERT_DELIVERY = (
    "WITH d AS (INSERT INTO deliveries(received_at, remote, receiver, group_key, status, truncated_alerts,"
    " alert_count, body_sha256, payload) VALUES (?,?,?,?,?,?,?,?,?) RETURNING id),"
    " a AS (INSERT INTO alerts(delivery_id, fingerprint, status, starts_at, ends_at, alertname, labels, annotations,"
    " generator_url, received_at) SELECT d.id, u.fingerprint, u.status, u.starts_at, u.ends_at, u.alertname, u.labels,"
    " u.annotations, u.generator_url, ? FROM d, unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[],"
    " ?::text[], ?::text[], ?::text[]) AS u(fingerprint, status, starts_at, ends_at, alertname, labels, annotations,"
    " generator_url)) SELECT id FROM d")


class Row(dict[str, Any]):
    """A row readable by column name and by position, like sqlite3.Row (the shared SQL uses both)."""

    __slots__ = ("_values",)
    _values: tuple[Any, ...]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return self._values[key]
        return super().__getitem__(key)


def _row_factory(cursor: Any) -> Any:
    names = [column.name for column in cursor.description or ()]

    def make(values: Any) -> Row:
        row = Row(zip(names, values, strict=True))
        row._values = tuple(values)
        return row

    return make


_translated: dict[str, str] = {}


def _sql(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s` (a literal % doubled)."""
    out = _translated.get(sql)
    if out is None:
        out = _translated[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out


def _param(value: Any) -> Any:
    """PostgreSQL text holds neither NUL nor a lone surrogate: escape them (a reason may quote hostile input)."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\\x00")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


class _Conn:
    """A psycopg connection (autocommit; transactions are explicit) that takes the shared SQL as written."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    @property
    def usable(self) -> bool:
        """Open, and not ended by the server while idle: a backend that PostgreSQL ended (pg_terminate_backend, a
        restart) sent its last message, or closed the socket, while nothing was asked of it; psycopg learns it only
        when a statement fails on it. An idle connection has nothing to read: anything readable means it has ended."""
        if self.conn.closed or self.conn.broken:
            return False
        try:
            pgconn = self.conn.pgconn
            if pgconn.transaction_status != pq.TransactionStatus.IDLE:
                return True
            poller = select.poll()  # not select(): a receiver may hold more than FD_SETSIZE descriptors
            poller.register(pgconn.socket, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError, psycopg.Error):
            return False

    def execute(self, sql: str, params: Any = None) -> Any:
        if params is None or len(params) == 0:
            return self.conn.execute(sql)
        return self.conn.execute(_sql(sql), [_param(p) for p in params])

    def executemany(self, sql: str, rows: Any) -> Any:
        cur = self.conn.cursor()
        cur.executemany(_sql(sql), [[_param(p) for p in row] for row in rows])
        return cur

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class PostgresJournal(Journal):
    """The journal in one PostgreSQL database, shared by every receiver configured with its URL."""

    shared = True
    errors = (psycopg.Error,)

    def __init__(self, url: str, *, readonly: bool = False, password: str | None = None) -> None:
        self.url = url
        self.target = url
        self.readonly = readonly
        self._password = password or None
        self._local = threading.local()
        self._init_group_commit()
        self._delivery_lock = threading.Lock()
        self._delivery_db: _Conn | None = None
        self._pool_lock = threading.Lock()
        self._owned: dict[int, tuple[threading.Thread, _Conn]] = {}
        self._idle: list[_Conn] = []
        self.commits = {"full": 0, "normal": 0}
        self.checkpoints = 0
        if not readonly:
            try:
                self._migrate()
            except psycopg.Error as exc:  # no right to create the schema, no schema to create it in
                self.close()
                raise JournalError(f"journal {self.describe()}: cannot create or migrate the schema: "
                                   f"{type(exc).__name__}: {self._redact(str(exc)).strip()}") from None
            self.commits["full"] = 0

    def describe(self) -> str:
        return redact_url(self.url)

    def error_text(self, exc: BaseException) -> str:
        return self._redact(super().error_text(exc))

    def _redact(self, text: str) -> str:
        text = text.replace(self.url, self.describe())
        return text.replace(self._password, "***") if self._password else text

    # -- connections -------------------------------------------------------------------------------------------
    def _open(self) -> _Conn:
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT,
                                  "application_name": "remediation-receiver", "row_factory": _row_factory}
        if self._password:
            kwargs["password"] = self._password
        if self.readonly:
            # Added to the URL's own options (a search_path, say), never in place of them.
            own = psycopg.conninfo.conninfo_to_dict(self.url).get("options") or ""
            kwargs["options"] = f"{own} -c default_transaction_read_only=on".strip()
        try:
            return _Conn(psycopg.connect(self.url, **kwargs))
        except psycopg.Error as exc:
            raise JournalError(f"journal {self.describe()}: cannot connect: "
                               f"{self._redact(str(exc)).strip()}") from None

    def _connect(self) -> _Conn:
        db: _Conn | None = getattr(self._local, "db", None)
        if db is None or not db.usable:
            if db is not None and getattr(self._local, "in_tx", False):
                raise JournalError(f"journal {self.describe()}: the connection was lost inside a transaction")
            if db is not None:
                db.close()
            db = self._local.db = self._reuse() or self._open()
            with self._pool_lock:
                self._owned[threading.get_ident()] = (threading.current_thread(), db)
        return db

    def _reuse(self) -> _Conn | None:
        """The connection of a thread that has ended (an HTTP connection's thread): one connection per live thread,
        not one per TCP connection the receiver ever served."""
        with self._pool_lock:
            for ident, (thread, db) in list(self._owned.items()):
                if not thread.is_alive():
                    del self._owned[ident]
                    if db.usable:
                        self._idle.append(db)
                    else:
                        db.close()
            while self._idle:
                db = self._idle.pop()
                if db.usable:
                    return db
                db.close()
        return None

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
        with self._pool_lock:
            self._owned.pop(threading.get_ident(), None)
            for idle in self._idle:
                idle.close()
            self._idle.clear()
        with self._delivery_lock:
            if self._delivery_db is not None:
                self._delivery_db.close()
                self._delivery_db = None

    def _read(self) -> _Conn:
        return self._connect()

    def schema_version(self) -> int:
        """0 before the first receiver created the schema."""
        db = self._read()
        if db.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
            return 0
        return int(db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])

    def _migrate(self) -> None:
        """Create or migrate the schema; receivers starting together take turns (an advisory lock)."""
        db = self._connect()
        with self._begun(db, True):
            db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATE_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                       " applied_at DOUBLE PRECISION NOT NULL)")
            current = int(db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
            for version, statements in migrations("postgresql", current):
                for statement in statements:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version(version, applied_at) VALUES (?,?)", (version, time.time()))
            db.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE"
                       " SET value=excluded.value", (str(SCHEMA_VERSION),))

    # -- transactions ------------------------------------------------------------------------------------------
    @contextmanager
    def _begun(self, db: _Conn, durable: bool, *, lock: bool = False) -> Iterator[None]:
        """BEGIN ... COMMIT (ROLLBACK on an exception). Not durable: the commit does not wait for the WAL flush.
        `lock`: the dispatchers' advisory lock, held until the commit."""
        db.execute("BEGIN")
        try:
            if not durable:
                db.execute("SET LOCAL synchronous_commit TO OFF")
            if lock:
                db.execute("SELECT pg_advisory_xact_lock(?)", (DISPATCH_LOCK,))
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.commits["full" if durable else "normal"] += 1

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[_Conn]:
        """Several writes from this thread in one transaction, holding the dispatchers' lock: what a dispatcher
        decides and claims, no other receiver's dispatcher decides or claims at the same time."""
        if getattr(self._local, "in_tx", False):
            yield self._local.db
            return
        if self.readonly:
            raise JournalError("journal opened read-only")
        db = self._connect()
        with self._begun(db, durable, lock=True):
            self._local.in_tx = True
            try:
                yield db
            finally:
                self._local.in_tx = False

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[_Conn]:
        if self.readonly:
            raise JournalError("journal opened read-only")
        if getattr(self._local, "in_tx", False):
            db: _Conn = self._local.db
            db.execute("SAVEPOINT nested")
            try:
                yield db
            except BaseException:
                with contextlib.suppress(Exception):
                    db.execute("ROLLBACK TO nested")
                    db.execute("RELEASE nested")
                raise
            db.execute("RELEASE nested")
            return
        db = self._connect()
        with self._begun(db, durable):
            yield db

    @contextmanager
    def _delivery_write(self) -> Iterator[_Conn]:
        """The group commit's own connection, used by whichever HTTP thread leads the batch."""
        if self.readonly:
            raise JournalError("journal opened read-only")
        if getattr(self._local, "in_tx", False):
            with self._write() as db:
                yield db
            return
        with self._delivery_lock:
            db = self._delivery_conn()
            with self._begun(db, True):
                yield db

    def _delivery_conn(self) -> _Conn:
        """The group commit's connection, opened again when the last one broke; called with _delivery_lock held."""
        if self._delivery_db is None or not self._delivery_db.usable:
            if self._delivery_db is not None:
                self._delivery_db.close()
            self._delivery_db = None
            self._delivery_db = self._open()
        return self._delivery_db

    # -- ingress: one statement per delivery, the batch pipelined ------------------------------------------------
    def _store_batch(self, batch: list[_Pending]) -> None:
        """The group commit in PostgreSQL: every delivery of the batch is one statement (the delivery and its
        alerts), sent in one pipeline, so a batch costs one round trip and one commit rather than a few round trips
        per delivery. When the batch fails, each delivery is tried again in its own transaction: one bad delivery
        never costs the others their 202. Never when the connection broke under the batch: its COMMIT may have been
        carried out with the answer lost, and a retry would store the batch twice; every delivery is refused then
        (Alertmanager sends it again)."""
        # What this batch may meet from the database: the driver's errors, and JournalError when the connection
        # that broke cannot be opened again (PostgreSQL stopping). Each item ends with an id or with an error.
        expected = (*self.errors, JournalError)
        try:
            ids = self._pipelined_batch(batch)
            for item, delivery_id in zip(batch, ids, strict=True):
                item.delivery_id = delivery_id
            return
        except expected as exc:
            if len(batch) == 1 or isinstance(exc, JournalError):
                for item in batch:
                    item.error = item.error or exc
                return
        except BaseException as exc:
            for item in batch:
                item.error = item.error or exc
            raise
        for item in batch:
            try:
                with self._delivery_write() as db:
                    item.delivery_id = int(db.execute(INSERT_DELIVERY, self._delivery_params(item)).fetchone()[0])
            except expected as exc:
                item.error = exc
            except BaseException as exc:
                for pending in batch:
                    if not pending.delivery_id:
                        pending.error = pending.error or exc
                raise

    def _pipelined_batch(self, batch: list[_Pending]) -> list[int]:
        """BEGIN, the batch's statements and COMMIT in one pipeline: one round trip, one WAL flush."""
        if self.readonly:
            raise JournalError("journal opened read-only")
        if getattr(self._local, "in_tx", False):  # a caller's own transaction (tests): join it
            with self._write() as db:
                return [int(db.execute(INSERT_DELIVERY, self._delivery_params(item)).fetchone()[0])
                        for item in batch]
        with self._delivery_lock:
            db = self._delivery_conn()
            try:
                with db.conn.pipeline():
                    db.execute("BEGIN")
                    cursors = [db.execute(INSERT_DELIVERY, self._delivery_params(item)) for item in batch]
                    db.execute("COMMIT")
            except self.errors as exc:
                if not db.usable:
                    # The answer to the COMMIT is lost with the connection: the batch may be stored. Unknown is not
                    # failed: nothing may store it again (a JournalError refuses every delivery of the batch).
                    raise JournalError(f"journal {self.describe()}: the connection broke before the commit's answer "
                                       f"arrived (the deliveries may be stored: refused, not retried): "
                                       f"{self._redact(str(exc)).strip()}") from None
                with contextlib.suppress(Exception):
                    db.execute("ROLLBACK")
                raise
            except BaseException:
                with contextlib.suppress(Exception):
                    db.execute("ROLLBACK")
                raise
            self.commits["full"] += 1
            return [int(cur.fetchone()[0]) for cur in cursors]

    @staticmethod
    def _delivery_params(item: _Pending) -> list[Any]:
        now = time.time()
        payload, alerts = item.payload, item.alerts
        columns: list[list[Any]] = [[], [], [], [], [], [], [], []]
        for a in alerts:
            row = (a["fingerprint"], a["status"], a["startsAt"], a.get("endsAt"), a["labels"].get("alertname"),
                   json.dumps(a["labels"], sort_keys=True), json.dumps(a.get("annotations") or {}, sort_keys=True),
                   a.get("generatorURL"))
            for column, value in zip(columns, row, strict=True):
                column.append(_param(value))
        return [now, item.remote, payload.get("receiver"), payload.get("groupKey"), payload.get("status"),
                int(payload.get("truncatedAlerts") or 0), len(alerts), item.raw_sha256,
                json.dumps(payload, sort_keys=True), now, *columns]

    # -- deciding: an alert that queues nothing costs one round trip -----------------------------------------------
    def record_decisions(self, alert_id: int, decisions: list[dict[str, Any]], runs: list[dict[str, Any]],
                         cancel_runs: list[tuple[str, str]] | None = None, close: str | None = None) -> None:
        """Inside the dispatcher's transaction, decisions that queue, cancel and close nothing (most alerts in a
        storm) go in one statement within a savepoint, pipelined: one round trip instead of four. Anything else is
        the shared implementation."""
        if runs or cancel_runs or close is not None or not getattr(self._local, "in_tx", False):
            super().record_decisions(alert_id, decisions, runs, cancel_runs, close)
            return
        now = time.time()
        columns: list[list[Any]] = [[], [], [], [], []]
        for d in decisions:
            for column, value in zip(columns, (d.get("rule"), d.get("host"), d["outcome"], d["reason"],
                                               d.get("run_id")), strict=True):
                column.append(_param(value))
        db: _Conn = self._local.db
        try:
            with db.conn.pipeline():
                db.execute("SAVEPOINT nested")
                db.execute(DECIDE, [alert_id, now, *columns, now, alert_id])
                db.execute("RELEASE nested")
        except BaseException:
            with contextlib.suppress(Exception):
                db.execute("ROLLBACK TO nested")
                db.execute("RELEASE nested")
            raise

    def checkpoint(self) -> None:
        """PostgreSQL checkpoints by itself."""

    def checkpoint_due(self) -> bool:
        return False

    # -- several receivers -------------------------------------------------------------------------------------
    def claim_run(self, run_id: str, owner: str, lease: float) -> bool:
        with self._write() as db:
            return db.execute(
                f"UPDATE runs SET status='starting', started_at=?, held=NULL, owner=?, lease_until={NOW} + ?"
                " WHERE id=? AND status='queued'", (time.time(), owner, float(lease), run_id)).rowcount == 1

    def claimable_runs(self) -> list[RunRecord]:
        rows = self._read().execute(
            "SELECT * FROM runs WHERE status='queued' ORDER BY created_at FOR UPDATE SKIP LOCKED").fetchall()
        return [_run_from_row(r) for r in rows]

    def lock_undecided(self, alert_ids: list[int]) -> set[int]:
        if not alert_ids:
            return set()
        rows = self._read().execute(
            "SELECT id FROM alerts WHERE id = ANY(?) AND decided_at IS NULL FOR UPDATE SKIP LOCKED",
            (list(alert_ids),)).fetchall()
        return {int(r[0]) for r in rows}

    def renew_leases(self, owner: str, lease: float, run_ids: list[str]) -> int:
        if not run_ids:
            return 0
        active = ",".join(f"'{s}'" for s in ACTIVE)
        with self._write(durable=False) as db:
            return int(db.execute(f"UPDATE runs SET lease_until={NOW} + ? WHERE owner=? AND id = ANY(?)"
                                  f" AND status IN ({active})", (float(lease), owner, list(run_ids))).rowcount)

    def runs_taken_from(self, owner: str, run_ids: list[str]) -> list[str]:
        if not run_ids:
            return []
        active = ",".join(f"'{s}'" for s in ACTIVE)
        rows = self._read().execute(
            f"SELECT id FROM runs WHERE id = ANY(?) AND (status = 'interrupted' OR (status IN ({active})"
            " AND owner IS DISTINCT FROM ?))", (list(run_ids), owner)).fetchall()
        return [r[0] for r in rows]

    def take_over_expired(self, owner: str, reason: str, keep: list[str] | None = None) -> list[RunRecord]:
        active = ",".join(f"'{s}'" for s in ACTIVE)
        with self._write() as db:
            rows = db.execute(
                f"UPDATE runs SET status='interrupted', reason=?, finished_at=?, owner=? WHERE id IN"
                f" (SELECT id FROM runs WHERE status IN ({active}) AND (lease_until IS NULL OR lease_until < {NOW})"
                f" AND NOT (id = ANY(?)) FOR UPDATE SKIP LOCKED) RETURNING *",
                (reason, time.time(), owner, list(keep or []))).fetchall()
        return sorted((_run_from_row(r) for r in rows), key=lambda r: r.created_at)

    def orphaned_runs(self, owner: str) -> list[RunRecord]:
        active = ",".join(f"'{s}'" for s in ACTIVE)
        rows = self._read().execute(
            f"SELECT * FROM runs WHERE status IN ({active}) AND (owner IS NULL OR owner=? OR lease_until IS NULL"
            f" OR lease_until < {NOW}) ORDER BY created_at", (owner,)).fetchall()
        return [_run_from_row(r) for r in rows]

    def due_notifications(self, now: float, limit: int = 20) -> list[dict[str, Any]]:
        """Claim the notifications due now: another receiver sees them again only if this one has not recorded
        their outcome within NOTIFY_CLAIM seconds."""
        with self._write() as db:
            rows = db.execute(
                "UPDATE notifications SET next_at=? WHERE id IN (SELECT id FROM notifications WHERE"
                " status='pending' AND next_at<=? ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING *",
                (now + NOTIFY_CLAIM, now, limit)).fetchall()
        return sorted((dict(r) for r in rows), key=lambda r: r["id"])
