"""What the receiver's end-to-end tests start and stop themselves: a lab host, the receiver, Alertmanager.

Everything listens on 127.0.0.1; the lab host is reached only through the docker connection.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from lab_names import lab_prefix

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOKS = REPO / "tests" / "integration" / "playbooks"
LAB_PREFIX = os.environ.get("RECEIVER_LAB_PREFIX") or lab_prefix("receiver")
LAB_HOST = f"{LAB_PREFIX}-1"
TOKEN = "e2e-receiver-token-0123456789abcdef"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
FINAL = ("successful", "failed", "timeout", "canceled", "interrupted", "error", "expired")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# -- the lab host (the `lab_host` session fixture lives in conftest.py) ----------------------------------------
def lab(action: str) -> None:
    argv = ["bash", str(REPO / "tests/lab/lab.sh"), action]
    argv += ["1", LAB_PREFIX] if action == "up" else [LAB_PREFIX]
    subprocess.run(argv, check=action == "up", cwd=REPO)


def on_host(host: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "exec", host, *command], capture_output=True, text=True, check=False)


def probe_files(host: str) -> list[str]:
    out = on_host(host, "sh", "-c", "ls /tmp/receiver-probe-* 2>/dev/null || true").stdout
    return sorted(line.rsplit("receiver-probe-", 1)[1] for line in out.split())


def clear_probe_files(host: str) -> None:
    on_host(host, "sh", "-c", "rm -f /tmp/receiver-probe-*")


# -- the receiver --------------------------------------------------------------------------------------------
def write_receiver_config(workdir: Path, port: int, rules: list[dict[str, Any]], *, hosts: list[str],
                          notify_url: str | None = None, **extra: Any) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "token").write_text(TOKEN + "\n")
    lines = ["[lab]"] + [f"{h} ansible_connection=community.docker.docker ansible_python_interpreter=/usr/bin/python3"
                         for h in hosts]
    # Never reachable: any run against them would fail loudly, so the hostile tests can see nothing ran.
    lines += ["", "[web]", "web1 ansible_connection=community.docker.docker",
              "web2 ansible_connection=community.docker.docker"]
    (workdir / "inventory.ini").write_text("\n".join(lines) + "\n")
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "auth": {"token_file": "token"},
        "max_body_bytes": 256 * 1024,
        "journal": "state/journal.sqlite",
        "artifacts": {"dir": "state/runs", "keep_runs": 50},
        "inventory": "inventory.ini",
        "project_dir": str(extra.pop("project_dir", PLAYBOOKS)),
        "executor": {"workers": 2, "job_timeout": 120, "idle_timeout": 60, "shutdown_grace": 2,
                     "envvars": {"ANSIBLE_HOME": str(workdir / "ansible-home"),
                                 "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp")}},
        "guards": {"max_concurrent_runs": 2},
        "rules": rules,
    }
    if notify_url:
        config["notify"] = {"webhooks": [{"url": notify_url}], "retries": 3, "backoff": 0.2}
    config.update(extra)
    path = workdir / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_receiver(workdir: Path, lab_host: str, rules: list[dict[str, Any]], **config: Any) -> Receiver:
    """The usual start of a receiver test: the tools are there, no probe file is left on `lab_host`, and a
    receiver listens on a free port with `rules` for that one host (`config`: more of write_receiver_config's
    arguments). The caller stops it."""
    require_tools()
    clear_probe_files(lab_host)
    port = free_port()
    return Receiver(write_receiver_config(workdir, port, rules, hosts=[lab_host], **config), port).start()


class Receiver:
    """`remediation-receiver serve` as a real process (so a test can SIGKILL it)."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "receiver.log"

    def start(self) -> Receiver:
        env = dict(os.environ)
        env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / "build" / "collections"))
        handle = open(self.log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen([str(BIN / "remediation-receiver"), "serve", "--config", str(self.config)],
                                     stdout=handle, stderr=subprocess.STDOUT, env=env)
        wait_for(self.healthy, 30, f"the receiver on port {self.port} (log {self.log})")
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"receiver exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            status = self.get("/healthz")[0]
        except OSError:
            return False
        return status == 200

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def post(self, body: bytes, token: str | None = TOKEN, path: str = "/alerts",
             timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        return response.status, json.loads(text) if text.startswith("{") else {"text": text}

    def get(self, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        return response.status, json.loads(text) if text.startswith(("{", "[")) else text

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "remediation-receiver"), *args, "--config", str(self.config)],
                              capture_output=True, text=True, check=False)

    def journal(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        db = sqlite3.connect(f"file:{self.config.parent / 'state' / 'journal.sqlite'}?mode=ro", uri=True,
                             timeout=30)
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute(sql, params).fetchall()]
        finally:
            db.close()

    def runs(self) -> list[dict[str, Any]]:
        return self.journal("SELECT * FROM runs ORDER BY created_at")

    def finished_runs(self, count: int | None = None) -> list[dict[str, Any]] | None:
        """All runs, once every one of them has finished (and there are `count` of them, when given)."""
        runs = self.runs()
        if count is not None and len(runs) != count:
            return None
        return runs if runs and all(r["status"] in FINAL for r in runs) else None

    def last_run(self, rule: str, *, finished: bool = False) -> dict[str, Any] | None:
        rows = self.journal("SELECT * FROM runs WHERE rule=? ORDER BY created_at DESC LIMIT 1", (rule,))
        if not rows or (finished and rows[0]["status"] not in FINAL):
            return None
        return rows[0]


def webhook_payload(*alerts: dict[str, Any], receiver: str = "remediation") -> bytes:
    return json.dumps({"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
                       "receiver": receiver, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                       "externalURL": "http://127.0.0.1:9093", "alerts": list(alerts)}).encode()


def webhook_alert(fingerprint: str, status: str = "firing", starts_at: str = "2026-11-21T10:00:00Z",
                  **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": "ReceiverProbe", **labels},
            "annotations": {"summary": "probe"}, "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": fingerprint}


# -- the human at the end of the escalation webhook ----------------------------------------------------------
class Pager:
    """A webhook on 127.0.0.1 that records every JSON page the receiver sends (the `pager` fixture)."""

    def __init__(self) -> None:
        self.pages: list[dict[str, Any]] = []
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                pages.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/page"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def kinds(self) -> list[str]:
        return [page["kind"] for page in self.pages]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [page for page in self.pages if page["kind"] == kind]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- Alertmanager --------------------------------------------------------------------------------------------
def ensure_alertmanager() -> None:
    if os.path.exists(ALERTMANAGER):
        return
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "prometheus-alertmanager"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    # The Debian package starts its own service where systemd runs; ours is started by the test.
    assert os.path.exists(ALERTMANAGER), "prometheus-alertmanager did not install"


class Alertmanager:
    def __init__(self, workdir: Path, receiver_port: int, token_file: Path, *, group_wait: str = "1s",
                 group_interval: str = "10s", repeat_interval: str = "1h") -> None:
        ensure_alertmanager()
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "route": {"receiver": "remediation", "group_by": ["alertname", "instance"], "group_wait": group_wait,
                      "group_interval": group_interval, "repeat_interval": repeat_interval},
            "receivers": [{"name": "remediation", "webhook_configs": [{
                "url": f"http://127.0.0.1:{receiver_port}/alerts", "send_resolved": True, "max_alerts": 0,
                "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}},
            }]}],
        }
        (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "alertmanager.log"
        handle = open(self.log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen([ALERTMANAGER, f"--config.file={workdir / 'alertmanager.yml'}",
                                      f"--storage.path={workdir / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}",
                                      "--cluster.listen-address=", "--log.level=debug"],
                                     stdout=handle, stderr=subprocess.STDOUT)
        wait_for(self._ready, 30, "Alertmanager to answer")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"alertmanager exited: {self.log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/-/ready")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("POST", "/api/v2/alerts", body=json.dumps(alerts), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        assert response.status == 200, f"alertmanager refused the alerts: {response.status} {text}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def require_tools() -> None:
    """Fail (never skip) when the machine lacks what the e2e tests need and cannot install."""
    for tool in ("docker", "bash"):
        assert shutil.which(tool), f"{tool} is required for the receiver e2e tests"
    assert (BIN / "remediation-receiver").exists(), "run `make venv` first: remediation-receiver is not installed"
