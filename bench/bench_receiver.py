"""Receiver benchmarks, side by side with ansible-rulebook on the same machine, alert and playbook.

1. Time to acknowledge a webhook delivery (p50/p99) under load: 1, 8, 32 and 64 concurrent senders.
   The receiver answers 202 only after an fsync'ed SQLite commit; ansible-rulebook answers after an in-memory
   queue put. Same Alertmanager payloads for both; no rule matches them (no playbook runs).
2. Time from the alert POST to the playbook's first task (it writes `date +%s.%N` to a file), same alert, same
   playbook, same local-connection inventory host, 5 alerts each, one at a time.
3. A burst of 16 matching alerts, posted one after the other with a 5 s client timeout, while each one starts a
   3 s playbook: how long each acknowledgement takes once actions pile up (ansible-rulebook with its default
   sequential strategy; the receiver with its defaults).

Installs ansible-rulebook 1.3.2 into build/rulebook-venv with pip when missing (needs Java 17).
Prints figures and ratios; writes bench/out/receiver.json.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RULEBOOK_VENV = REPO / "build" / "rulebook-venv"
JAVA_HOME = os.environ.get("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")
TOKEN = "bench-receiver-token-0123456789"
PLAYBOOK = REPO / "bench" / "playbooks" / "receiver_first_task.yml"
LOAD = {1: 200, 8: 800, 32: 1600, 64: 1600}
FIRST_TASK_ROUNDS = 5
SLOW_PLAYBOOK = REPO / "bench" / "playbooks" / "receiver_slow.yml"
BURST = 16
BURST_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode}: {log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {timeout}s: {log.read_text()[-3000:]}")


def payload(alertname: str, index: int, **labels: str) -> bytes:
    alert = {"status": "firing", "labels": {"alertname": alertname, "instance": "bench-host:9100", **labels},
             "annotations": {"summary": "benchmark"}, "startsAt": f"2026-11-21T10:00:{index % 60:02d}.{index}Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://127.0.0.1:9090/graph",
             "fingerprint": f"{index:016x}"}
    return json.dumps({"version": "4", "groupKey": f"{{}}:{{alertname=\"{alertname}\"}}", "truncatedAlerts": 0,
                       "status": "firing", "receiver": "bench", "groupLabels": {"alertname": alertname},
                       "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
                       "alerts": [alert]}).encode()


def post(port: int, path: str, body: bytes, token: str | None, timeout: float = 30) -> tuple[int, float]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def ack_load(port: int, path: str, token: str | None, ok: int, offset: int) -> dict[int, dict[str, float]]:
    results: dict[int, dict[str, float]] = {}
    for concurrency, count in LOAD.items():
        bodies = [payload("BenchLoad", offset + concurrency * 100000 + i) for i in range(count)]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            answers = list(pool.map(lambda b: post(port, path, b, token), bodies))
        wall = time.perf_counter() - started
        bad = [s for s, _ in answers if s != ok]
        if bad:
            raise SystemExit(f"{len(bad)} deliveries answered {sorted(set(bad))} instead of {ok}")
        latencies = [t for _, t in answers]
        results[concurrency] = {"p50_ms": statistics.median(latencies) * 1000,
                                "p99_ms": percentile(latencies, 0.99) * 1000,
                                "max_ms": max(latencies) * 1000, "per_s": count / wall, "count": count}
    return results


def first_task(port: int, path: str, token: str | None, workdir: Path, tag: str) -> list[float]:
    times = []
    for i in range(FIRST_TASK_ROUNDS):
        marker = workdir / f"{tag}-marker-{i}"
        body = payload("BenchAlert", 900000 + i, marker=str(marker))
        sent = time.time()
        status, _ = post(port, path, body, token)
        if status >= 300:
            raise SystemExit(f"{tag}: the alert was answered {status}")
        deadline = time.time() + 60
        while not (marker.exists() and marker.read_text().strip()):
            if time.time() > deadline:
                raise SystemExit(f"{tag}: the playbook's first task did not run within 60s")
            time.sleep(0.005)
        times.append(float(marker.read_text().strip()) - sent)
        time.sleep(1.0)  # let the run finish before the next alert
    return times


def burst(port: int, path: str, token: str | None) -> dict[str, Any]:
    """Sequential POSTs of matching alerts; a timeout is what Alertmanager would see (and then re-send)."""
    latencies, timeouts = [], 0
    for i in range(BURST):
        try:
            latencies.append(post(port, path, payload("BenchSlow", 700000 + i), token, timeout=BURST_TIMEOUT)[1])
        except TimeoutError:
            timeouts += 1
            latencies.append(BURST_TIMEOUT)
    return {"max_ms": max(latencies) * 1000, "p50_ms": statistics.median(latencies) * 1000, "timeouts": timeouts}


def ensure_rulebook() -> Path:
    binary = RULEBOOK_VENV / "bin" / "ansible-rulebook"
    if not binary.exists():
        print("installing ansible-rulebook 1.3.2 into build/rulebook-venv (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(RULEBOOK_VENV)], check=True)
        subprocess.run([str(RULEBOOK_VENV / "bin" / "pip"), "install", "-q", "ansible-rulebook==1.3.2",
                        "ansible-core>=2.19,<2.20"], check=True)
    if not Path(JAVA_HOME, "bin", "java").exists():
        raise SystemExit(f"ansible-rulebook needs Java 17: {JAVA_HOME}/bin/java not found (set JAVA_HOME)")
    return binary


def start_receiver(workdir: Path, inventory: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    (workdir / "token").write_text(TOKEN)
    config = {
        "listen": {"host": "127.0.0.1", "port": port}, "auth": {"token_file": "token"},
        "journal": "receiver/journal.sqlite", "artifacts": {"dir": "receiver/runs", "keep_runs": 20},
        "inventory": str(inventory), "project_dir": str(PLAYBOOK.parent),
        "executor": {"workers": 2, "shutdown_grace": 0, "envvars": {"ANSIBLE_HOME": str(workdir / "ansible-home")}},
        "rules": [{"name": "bench", "when": "labels.alertname == 'BenchAlert'", "playbook": PLAYBOOK.name,
                   "vars": {"bench_marker": "labels.marker"}, "cooldown": 0, "max_runs_per_hour": 1000},
                  {"name": "slow", "when": "labels.alertname == 'BenchSlow'", "playbook": SLOW_PLAYBOOK.name,
                   "cooldown": 0, "max_runs_per_hour": 1000}],
    }
    (workdir / "receiver.yml").write_text(json.dumps(config))
    log = workdir / "receiver.log"
    proc = subprocess.Popen([str(BIN / "remediation-receiver"), "serve", "--config", str(workdir / "receiver.yml"),
                             "--log-level", "warning"], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_port(port, 30, proc, log)
    return proc, port, log


def start_rulebook(workdir: Path, inventory: Path,
                   strategy: str = "parallel") -> tuple[subprocess.Popen[bytes], int, Path]:
    binary = ensure_rulebook()
    port = free_port()
    rulebook = [{
        "name": "Bench", "hosts": "bench-host",
        "sources": [{"eda.builtin.webhook": {"host": "127.0.0.1", "port": port}}],
        "rules": [{"name": "Run the playbook",
                   "condition": 'event.payload.alerts[0].labels.alertname == "BenchAlert"',
                   "action": {"run_playbook": {"name": str(PLAYBOOK), "extra_vars": {
                       "bench_marker": "{{ event.payload.alerts[0].labels.marker }}"}}}},
                  {"name": "Run the slow playbook",
                   "condition": 'event.payload.alerts[0].labels.alertname == "BenchSlow"',
                   "action": {"run_playbook": {"name": str(SLOW_PLAYBOOK)}}}],
    }]
    (workdir / f"rulebook-{strategy}.yml").write_text(json.dumps(rulebook))
    env = dict(os.environ, JAVA_HOME=JAVA_HOME, PATH=f"{RULEBOOK_VENV / 'bin'}:{os.environ['PATH']}",
               ANSIBLE_HOME=str(workdir / "ansible-home-rb"))
    log = workdir / f"rulebook-{strategy}.log"
    proc = subprocess.Popen([str(binary), "--rulebook", str(workdir / f"rulebook-{strategy}.yml"), "-i", str(inventory),
                             "--execution-strategy", strategy], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env=env, cwd=workdir)
    wait_port(port, 90, proc, log)
    return proc, port, log


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    inventory = workdir / "inventory.ini"
    inventory.write_text(f"bench-host ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    try:
        proc, port, _ = start_receiver(workdir, inventory)
        try:
            out["receiver_ack"] = ack_load(port, "/alerts", TOKEN, 202, 0)
            out["receiver_first_task"] = first_task(port, "/alerts", TOKEN, workdir, "receiver")
            out["receiver_burst"] = burst(port, "/alerts", TOKEN)
        finally:
            stop(proc)
        if "--receiver-only" in sys.argv:
            for concurrency, r in out["receiver_ack"].items():
                print(f"receiver {concurrency:>3} senders: p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms "
                      f"{r['per_s']:.0f}/s")
            print(f"receiver first task median {statistics.median(out['receiver_first_task']) * 1000:.0f} ms")
            return 0
        proc, port, _ = start_rulebook(workdir, inventory)
        try:
            out["rulebook_ack"] = ack_load(port, "/alerts", None, 200, 0)
            out["rulebook_first_task"] = first_task(port, "/alerts", None, workdir, "rulebook")
        finally:
            stop(proc)
        proc, port, _ = start_rulebook(workdir, inventory, strategy="sequential")
        try:
            out["rulebook_burst"] = burst(port, "/alerts", None)
        finally:
            stop(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n== bench_receiver ({out['machine']['cpus']} CPUs, Python {out['machine']['python']}) ==")
    print("time to acknowledge a delivery (receiver: 202 after an fsync'ed commit; rulebook: 200 after a queue put)")
    print(f"{'senders':>8} {'n':>5} | {'receiver p50':>12} {'p99':>8} {'/s':>6} | {'rulebook p50':>12} {'p99':>8} "
          f"{'/s':>6} | {'p50 ratio':>9} {'p99 ratio':>9}")
    for concurrency in LOAD:
        r, b = out["receiver_ack"][concurrency], out["rulebook_ack"][concurrency]
        print(f"{concurrency:>8} {r['count']:>5} | {r['p50_ms']:>10.1f}ms {r['p99_ms']:>6.1f}ms {r['per_s']:>6.0f} | "
              f"{b['p50_ms']:>10.1f}ms {b['p99_ms']:>6.1f}ms {b['per_s']:>6.0f} | "
              f"{r['p50_ms'] / b['p50_ms']:>9.2f} {r['p99_ms'] / b['p99_ms']:>9.2f}")
    rm, bm = statistics.median(out["receiver_first_task"]), statistics.median(out["rulebook_first_task"])
    print("alert POST -> the playbook's first task ran (median of "
          f"{FIRST_TASK_ROUNDS}; local connection, same playbook)")
    print(f"  receiver  {rm * 1000:7.0f} ms  (min {min(out['receiver_first_task']) * 1000:.0f}, "
          f"max {max(out['receiver_first_task']) * 1000:.0f})")
    print(f"  rulebook  {bm * 1000:7.0f} ms  (min {min(out['rulebook_first_task']) * 1000:.0f}, "
          f"max {max(out['rulebook_first_task']) * 1000:.0f})")
    print(f"  ratio receiver/rulebook: {rm / bm:.2f}")
    rb, bb = out["receiver_burst"], out["rulebook_burst"]
    print(f"burst of {BURST} matching alerts, each starting a 3 s playbook, posted one after the other "
          f"({BURST_TIMEOUT:.0f} s client timeout)")
    print(f"  receiver  ack p50 {rb['p50_ms']:7.1f} ms  max {rb['max_ms']:7.1f} ms  timeouts {rb['timeouts']}")
    print(f"  rulebook  ack p50 {bb['p50_ms']:7.1f} ms  max {bb['max_ms']:7.1f} ms  timeouts {bb['timeouts']} "
          "(sequential, the default)")
    print(f"  max ack ratio receiver/rulebook: {rb['max_ms'] / bb['max_ms']:.3f}")
    out_dir = REPO / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "receiver.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
