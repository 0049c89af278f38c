"""Journal benchmark: the PostgreSQL journal against the SQLite journal in the same run (issue 14).

1. Acknowledgement latency at fixed offered rates (200 and 500 deliveries/s) over kept-alive connections (4, as
   bench_receiver.py sends; with two receivers, 2 to each), latency counted from the moment the schedule said to
   send: SQLite with one receiver, PostgreSQL with one and with two receivers on one database. Interleaved
   (the order rotates each round), several rounds; medians over the rounds.
2. Alert to the playbook's first task: the same three set-ups (with two receivers the alert goes to both, as with
   one webhook per receiver; the first task of the one run counts).
3. Failover: two receivers on PostgreSQL under 200 deliveries/s, one with a playbook running; that receiver is
   SIGKILLed. Acknowledged deliveries lost, runs executed twice at once, time from the kill to the takeover.

PostgreSQL 15 (Debian's binaries, `make postgresql`) runs as the `postgres` user in a temporary directory on a unix
socket, with fsync on, like the SQLite journal's synchronous=FULL. Targets (exit status 1 when one is missed):
PostgreSQL's ack p99 within 2x SQLite's at the same rate (one and two receivers); failover: 0 acknowledged deliveries
lost, 0 runs executed twice, takeover within lease + 5 s. Writes bench/out/journal.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import bench_receiver as br  # noqa: E402
import pgserver  # noqa: E402
import psycopg  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

RATES = (200, 500)
CONNECTIONS = 4
LEASE = 5.0
P99_RATIO_TARGET = 2.0
TAKEOVER_MARGIN = 5.0
SETUPS = ("sqlite", "postgresql", "postgresql x2")


class JournalBench(br.Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.pg = pgserver.PgServer(fsync=True, prefix="pmr-pg-bench-")

    def journal_receiver(self, name: str, journal: str, lease: float = LEASE, rule: dict[str, Any] | None = None
                         ) -> br.Proc:
        port = br.free_port()
        home = self.workdir / name
        home.mkdir()
        rules = [{"name": "bench", "when": "labels.alertname == 'BenchAlert'", "playbook": br.PLAYBOOK.name,
                  "vars": {"bench_marker": "labels.marker"}, "cooldown": 0, "max_runs_per_hour": 10000}]
        if rule:
            rules.append(rule)
        config = {
            "listen": {"host": "127.0.0.1", "port": port}, "auth": {"token_file": str(self.workdir / "token")},
            "journal": journal, "journal_lease": lease, "receiver_id": name,
            "artifacts": {"dir": str(home / "runs"), "keep_runs": 50},
            "inventory": str(self.inventory), "project_dir": str(br.PLAYBOOK.parent),
            "executor": {"workers": 2, "shutdown_grace": 0,
                         "envvars": {"ANSIBLE_HOME": str(self.workdir / "ansible-home")}},
            "rules": rules,
        }
        (home / "receiver.yml").write_text(json.dumps(config))
        argv = [str(br.BIN / "remediation-receiver"), "serve", "--config", str(home / "receiver.yml"),
                "--log-level", "warning"]
        return br.Proc(name, argv, dict(self.env), home / "receiver.log", port, home, 30)

    def offered_to(self, servers: list[br.Proc], rate: int, seconds: float,
                   acked: list[str] | None = None, stop: threading.Event | None = None) -> dict[str, Any]:
        """`rate` deliveries/s over CONNECTIONS kept-alive connections spread over `servers`."""
        count = int(rate * seconds)
        base = self.unique() * 1_000_000
        latencies: list[float] = [0.0] * count
        problems: list[str] = []
        start = time.perf_counter() + 0.2

        def sender(first: int) -> None:
            server = servers[first % len(servers)]
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            for i in range(first, count, CONNECTIONS):
                if stop is not None and stop.is_set():
                    break
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                try:
                    conn.request("POST", "/alerts", body=br.payload("BenchLoad", base + i),
                                 headers=br.headers(br.TOKEN))
                    response = conn.getresponse()
                    response.read()
                except (http.client.HTTPException, OSError) as exc:
                    if acked is None:
                        problems.append(f"{type(exc).__name__}: {exc}")
                    break  # the failover phase: this receiver was killed
                if response.status != 202:
                    problems.append(f"answered {response.status}")
                elif acked is not None:
                    acked.append(f"{base + i:016x}")
                latencies[i] = (time.perf_counter() - due) * 1000
            conn.close()

        br.run_senders(sender, CONNECTIONS, f"{[s.name for s in servers]} at {rate}/s", problems)
        measured = [v for v in latencies if v > 0] or [0.0]
        return {"p50_ms": statistics.median(measured), "p99_ms": br.percentile(measured, 0.99),
                "max_ms": max(measured), "count": count}

    def settle(self, servers: list[br.Proc]) -> None:
        for server in servers:
            br.wait_for(f"{server.name} to decide every alert",
                        lambda s=server: br.get_json(s.port, "/healthz")["undecided_alerts"] == 0, 300, 0.2)
        for server in servers:
            server.wait_idle()

    def first_task(self, servers: list[br.Proc]) -> float:
        marker = self.marker("journal")
        before = len(br.get_json(servers[0].port, "/runs"))
        body = br.payload("BenchAlert", 900000 + self.unique(), marker=str(marker))
        sent = time.time()
        threads = [threading.Thread(target=br.post, args=(s.port, body, br.TOKEN)) for s in servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stamp = br.stamp_of(marker, "the first task")
        br.wait_runs_handled(servers[0].port, before, "the run to end")
        return stamp - sent

    def failover(self) -> dict[str, Any]:
        url = self.pg.create_database("pmr_bench_failover")
        slow = {"name": "slow", "when": "labels.alertname == 'BenchSlow'", "playbook": "receiver_sleep.yml",
                "on_interrupted": "rerun"}
        a = self.journal_receiver("fail-a", url, rule=slow)
        b = self.journal_receiver("fail-b", url, rule=slow)
        try:
            if br.post(a.port, br.payload("BenchSlow", 800000 + self.unique()), br.TOKEN) != 202:
                raise SystemExit("the slow alert was refused")

            def running() -> dict[str, Any] | None:
                with psycopg.connect(url, autocommit=True, row_factory=dict_row) as db:
                    return db.execute("SELECT * FROM runs WHERE rule='slow' AND status='running'").fetchone()
            slow_run = br.wait_for("the slow run on fail-a", running, 60, 0.1)
            acked: list[str] = []
            stop = threading.Event()
            load = threading.Thread(target=self.offered_to, args=([a, b], 200, 12.0, acked, stop))
            load.start()
            time.sleep(3)
            a.proc.kill()
            killed = time.time()
            a.proc.wait(timeout=10)

            def taken() -> dict[str, Any] | None:
                with psycopg.connect(url, autocommit=True, row_factory=dict_row) as db:
                    return db.execute("SELECT * FROM runs WHERE id=%s AND status='interrupted'",
                                      (slow_run["id"],)).fetchone()
            old = br.wait_for("the takeover", taken, LEASE + 30, 0.05)
            load.join()
            self.settle([b])
            with psycopg.connect(url, autocommit=True, row_factory=dict_row) as db:
                stored = {r["fingerprint"] for r in db.execute("SELECT fingerprint FROM alerts")}
                twice = db.execute("SELECT COUNT(*) AS n FROM runs a JOIN runs b ON a.dedup_key=b.dedup_key AND"
                                   " a.id<b.id WHERE a.started_at IS NOT NULL AND b.started_at IS NOT NULL AND"
                                   " b.started_at < COALESCE(a.finished_at, 1e18) AND"
                                   " a.started_at < COALESCE(b.finished_at, 1e18)").fetchone()["n"]
                per_attempt = db.execute("SELECT COUNT(*) AS n FROM (SELECT dedup_key, attempt FROM runs WHERE"
                                         " status NOT IN ('canceled','expired') GROUP BY dedup_key, attempt"
                                         " HAVING COUNT(*) > 1) x").fetchone()["n"]
            lost = [f for f in acked if f not in stored]
            return {"acked": len(acked), "lost": len(lost), "runs_twice_at_once": int(twice) + int(per_attempt),
                    "takeover_s": old["finished_at"] - killed, "lease_s": LEASE}
        finally:
            for proc in (a, b):
                proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--first-task-rounds", type=int, default=3)
    args = parser.parse_args()
    args.receiver_src = None
    if not pgserver.available():
        print("PostgreSQL 15 is not installed: run `make postgresql`", file=sys.stderr)
        return 2
    bench = JournalBench(args)
    setups: dict[str, list[br.Proc]] = {}
    try:
        print(f"loadavg {br.loadavg()}", flush=True)
        setups["sqlite"] = [bench.journal_receiver("sqlite", str(bench.workdir / "journal.sqlite"))]
        url = bench.pg.create_database("pmr_bench_one")
        setups["postgresql"] = [bench.journal_receiver("pg-one", url)]
        url2 = bench.pg.create_database("pmr_bench_two")
        setups["postgresql x2"] = [bench.journal_receiver("pg-a", url2), bench.journal_receiver("pg-b", url2)]
        acks: dict[str, dict[int, list[dict[str, Any]]]] = {s: {r: [] for r in RATES} for s in SETUPS}
        for servers in setups.values():  # warm-up, not measured
            bench.settle(servers)
            bench.offered_to(servers, RATES[0], 1.0)
        print("1. acknowledgement latency (kept-alive connections, fixed offered rate)", flush=True)
        for round_no in range(args.rounds):
            order = list(SETUPS) if round_no % 2 == 0 else list(reversed(SETUPS))
            for rate in RATES:
                for name in order:
                    bench.settle(setups[name])
                    result = bench.offered_to(setups[name], rate, args.seconds)
                    acks[name][rate].append(result)
                    print(f"  round {round_no + 1} {rate}/s {name:14}: p50 {result['p50_ms']:6.2f} ms  "
                          f"p99 {result['p99_ms']:6.2f} ms  max {result['max_ms']:7.2f} ms", flush=True)
        print("2. alert to first task", flush=True)
        first: dict[str, list[float]] = {s: [] for s in SETUPS}
        for round_no in range(args.first_task_rounds):
            for name in SETUPS[round_no % 3:] + SETUPS[:round_no % 3]:
                bench.settle(setups[name])
                first[name].append(bench.first_task(setups[name]))
        for name, values in first.items():
            print(f"  {name:14}: median {statistics.median(values) * 1000:7.1f} ms  "
                  f"({', '.join(f'{v * 1000:.0f}' for v in values)} ms)", flush=True)
        for servers in setups.values():
            for proc in servers:
                proc.stop()
        print("3. failover: two receivers on PostgreSQL, one SIGKILLed mid-run under 200 deliveries/s", flush=True)
        fail = bench.failover()
        print(f"  acknowledged {fail['acked']}, lost {fail['lost']}, runs executed twice at once "
              f"{fail['runs_twice_at_once']}, takeover {fail['takeover_s']:.1f} s after the kill "
              f"(lease {LEASE:.0f} s)", flush=True)
    finally:
        for servers in setups.values():
            for proc in servers:
                proc.stop()
        leftovers = br.marked_processes(bench.bench_id)
        bench.pg.destroy()
        shutil.rmtree(bench.workdir, ignore_errors=True)

    print("\nsummary (medians over the rounds)")
    misses: list[str] = []
    p99 = {name: {rate: statistics.median(r["p99_ms"] for r in acks[name][rate]) for rate in RATES}
           for name in SETUPS}
    for rate in RATES:
        for name in SETUPS:
            p50 = statistics.median(r["p50_ms"] for r in acks[name][rate])
            ratio = p99[name][rate] / p99["sqlite"][rate] if p99["sqlite"][rate] else float("inf")
            print(f"  ack {rate}/s {name:14}: p50 {p50:6.2f} ms  p99 {p99[name][rate]:6.2f} ms  "
                  f"({ratio:.2f}x SQLite's p99)")
            if name != "sqlite" and ratio > P99_RATIO_TARGET:
                misses.append(f"{name} ack p99 at {rate}/s is {ratio:.2f}x SQLite's (target <= {P99_RATIO_TARGET}x)")
    base = statistics.median(first["sqlite"])
    for name in SETUPS:
        median = statistics.median(first[name])
        print(f"  alert to first task {name:14}: {median * 1000:7.1f} ms ({median / base:.2f}x SQLite)")
    print(f"  failover: lost {fail['lost']} of {fail['acked']} acknowledged, twice {fail['runs_twice_at_once']}, "
          f"takeover {fail['takeover_s']:.1f} s (target <= lease {LEASE:.0f} + {TAKEOVER_MARGIN:.0f} s)")
    if fail["lost"]:
        misses.append(f"failover: {fail['lost']} acknowledged deliveries lost")
    if fail["runs_twice_at_once"]:
        misses.append(f"failover: {fail['runs_twice_at_once']} runs executed twice")
    if fail["takeover_s"] > LEASE + TAKEOVER_MARGIN:
        misses.append(f"failover: takeover after {fail['takeover_s']:.1f} s")
    if leftovers:
        misses.append(f"processes left running: {leftovers}")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "journal.json").write_text(json.dumps({"ack": acks, "first_task": first, "failover": fail,
                                                  "misses": misses}, indent=2, default=str))
    print(f"loadavg {br.loadavg()}")
    for miss in misses:
        print(f"TARGET MISSED: {miss}")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
