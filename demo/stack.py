"""What the demo starts on the control machine, all on 127.0.0.1: the lab hosts (through tests/lab/lab.sh),
Prometheus and Alertmanager (Debian's packages, as plain processes), the remediation receiver (its own CLI) and
the pager sink. Configurations are written from the shipped files, never by hand: the rules from
extensions/prometheus/rules (with shorter `for:`), the routing from docs/alertmanager.example.yml, the receiver's
rules from docs/receiver.example.yml."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import procs
from .api import Prometheus, ready
from .rules import alert_names, write_demo_rules
from .settings import REPO, VENV, Ports, Settings

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
DEBIAN_PACKAGES = {PROMETHEUS: "prometheus", ALERTMANAGER: "prometheus-alertmanager"}
TOKEN = "demo-receiver-token-" + "0123456789abcdef"
NODE_EXPORTER_PORT = 9100
# Host 1 is the CI server (its data root on a small filesystem of its own), host 2 runs services, host 3 runs the
# scheduled jobs (mirror upload, backup cleanup).
HOSTS = 3
# Hosts 2 and 3: room for the log flood (a sparse image: only what is written takes space).
OTHER_DATA_ROOT_SIZE = "4G"


def log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S', time.gmtime())}] {message}", flush=True)


def ensure_packages() -> None:
    """Debian's prometheus and prometheus-alertmanager (installing them does not start them without systemd)."""
    missing = [pkg for path, pkg in DEBIAN_PACKAGES.items() if not os.path.exists(path)]
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, stdout=subprocess.DEVNULL)


def lab_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "LAB_PREFIX": settings.prefix, "LAB_INVENTORY": str(settings.inventory),
            "LAB_PUBLISH": str(NODE_EXPORTER_PORT),
            # The scheduled jobs on the lab hosts run this checkout's modules with its Ansible (read-only).
            "LAB_MOUNTS": " ".join(f"{path}:{path}:ro" for path in sorted({REPO, VENV}))}


def lab_up(settings: Settings, count: int) -> list[str]:
    """The lab hosts (tests/lab/lab.sh), each with its data root on an ext4 filesystem of its own: host 1's small
    (the CI server's disk fills), the others' larger. Never on the machine's own disk, whose fill level and trend
    are nobody's business here (DockerDataRootFillingUp would read them)."""
    script = str(REPO / "tests/lab/lab.sh")
    env = lab_env(settings)
    subprocess.run(["bash", script, "up", "1", settings.prefix], check=True, cwd=REPO,
                   env={**env, "LAB_DATA_ROOT_SIZE": settings.data_root_size})
    if count > 1:
        subprocess.run(["bash", script, "up", str(count), settings.prefix], check=True, cwd=REPO,
                       env={**env, "LAB_DATA_ROOT_SIZE": OTHER_DATA_ROOT_SIZE})
    return [settings.host(i) for i in range(1, count + 1)]


def lab_down(settings: Settings) -> None:
    subprocess.run(["bash", str(REPO / "tests/lab/lab.sh"), "down", settings.prefix], check=False, cwd=REPO,
                   env=lab_env(settings))


def published_port(host: str, port: int = NODE_EXPORTER_PORT) -> int:
    out = subprocess.run(["docker", "port", host, f"{port}/tcp"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        address, _, number = line.strip().rpartition(":")
        if address == "127.0.0.1":
            return int(number)
    raise RuntimeError(f"{host}: port {port} is not published on 127.0.0.1 ({out.strip()!r})")


# -- configuration files --------------------------------------------------------------------------------------
def prometheus_config(settings: Settings, ports: Ports, exporters: dict[str, int], rules_file: Path) -> dict[str, Any]:
    """Scrape each lab host's node_exporter through its published port, with `instance` set to the inventory host
    name (a target label in static_configs: what docs/alerts.md describes), and the receiver's own metrics."""
    return {
        # A scrape that times out marks every series of the host stale, which resets each pending alert's `for:`:
        # the timeout is the whole interval, and node_exporter is asked only for what the rules read.
        "global": {"scrape_interval": settings.scrape_interval, "scrape_timeout": settings.scrape_interval,
                   "evaluation_interval": settings.evaluation_interval},
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports.alertmanager}"]}]}]},
        "scrape_configs": [
            {"job_name": "node", "params": {"collect[]": ["filesystem", "textfile"]}, "static_configs": [
                {"targets": [f"127.0.0.1:{port}"], "labels": {"instance": host}} for host, port in exporters.items()]},
            {"job_name": "remediation-receiver",
             "static_configs": [{"targets": [f"127.0.0.1:{ports.receiver}"]}]},
        ],
    }


def _short_timers(route: dict[str, Any]) -> dict[str, Any]:
    route = dict(route)
    for key, value in (("group_wait", "1s"), ("group_interval", "2s"), ("repeat_interval", "1h")):
        if key in route or key == "group_wait":
            route[key] = value
    if "routes" in route:
        route["routes"] = [_short_timers(child) for child in route["routes"]]
    return route


def alertmanager_config(ports: Ports, token_file: Path) -> dict[str, Any]:
    """docs/alertmanager.example.yml with its URLs pointed at the demo (receiver, pager sink) and short timers."""
    data = yaml.safe_load((REPO / "docs/alertmanager.example.yml").read_text())
    data["route"] = _short_timers(data["route"])
    receivers = []
    for receiver in data["receivers"]:
        receiver = dict(receiver)
        hooks = []
        for hook in receiver.get("webhook_configs", []):
            hook = dict(hook)
            if receiver["name"] == "remediation":
                hook["url"] = f"http://127.0.0.1:{ports.receiver}/alerts"
                hook["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}
            else:
                hook["url"] = f"http://127.0.0.1:{ports.sink}/oncall"
                hook["send_resolved"] = True
            hooks.append(hook)
        receiver["webhook_configs"] = hooks
        receivers.append(receiver)
    data["receivers"] = receivers
    return data


def receiver_config(settings: Settings, ports: Ports) -> dict[str, Any]:
    """docs/receiver.example.yml's rules, with the demo's paths, ports and pager."""
    example = yaml.safe_load((REPO / "docs/receiver.example.yml").read_text())
    workdir = settings.state / "receiver"
    return {
        "listen": {"host": "127.0.0.1", "port": ports.receiver},
        "auth": {"token_file": "token"},
        "max_body_bytes": example.get("max_body_bytes", 1048576),
        "journal": "state/journal.sqlite",
        "artifacts": {"dir": "state/runs", "keep_runs": 200},
        "inventory": str(settings.inventory),
        "project_dir": str(REPO / "playbooks"),
        "target": example.get("target", {"label": "instance"}),
        "executor": {**example.get("executor", {}), "job_timeout": 600, "idle_timeout": 300, "shutdown_grace": 5,
                     "envvars": {"ANSIBLE_HOME": str(workdir / "ansible-home"),
                                 "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-home" / "tmp"),
                                 "ANSIBLE_COLLECTIONS_PATH": str(REPO / "build" / "collections"),
                                 "ANSIBLE_FORCE_COLOR": "false"}},
        "guards": example.get("guards", {"max_concurrent_runs": 2}),
        "notify": {"webhooks": [{"url": f"http://127.0.0.1:{ports.sink}/escalations"}], "retries": 3, "backoff": 1},
        "redact": example.get("redact", []),
        "rules": [rule for rule in example["rules"] if (REPO / "playbooks" / rule["playbook"]).is_file()],
    }


def rules_without_playbook() -> list[str]:
    """Rules of docs/receiver.example.yml whose playbook does not exist (left out of the demo's receiver)."""
    example = yaml.safe_load((REPO / "docs/receiver.example.yml").read_text())
    return [f"{rule['name']} ({rule['playbook']})" for rule in example["rules"]
            if not (REPO / "playbooks" / rule["playbook"]).is_file()]


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=120))
    return path


@dataclass
class Stack:
    settings: Settings
    ports: Ports
    hosts: list[str]
    alerts: list[str]

    @property
    def prometheus(self) -> Prometheus:
        return Prometheus(self.ports.prometheus)

    @property
    def receiver_config(self) -> Path:
        return self.settings.state / "receiver" / "config.yml"

    @property
    def pages_file(self) -> Path:
        return self.settings.state / "pages.jsonl"

    def receiver_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(Path(sys.executable).parent / "remediation-receiver"), *args,
                               "--config", str(self.receiver_config)], capture_output=True, text=True, check=False)


def start_stack(settings: Settings, hosts: list[str]) -> Stack:
    """Write every configuration, check it with the tools' own checkers, start the processes, wait until ready."""
    state = settings.state
    ports = Ports.pick(settings.port_base)
    bin_dir = Path(sys.executable).parent

    workdir = state / "receiver"
    workdir.mkdir(parents=True, exist_ok=True)
    token = workdir / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    write_yaml(workdir / "config.yml", receiver_config(settings, ports))
    # Configuration, token, inventory, rules and playbook files; the playbooks' syntax is make test's business.
    check = subprocess.run([str(bin_dir / "remediation-receiver"), "check", "--no-syntax-check",
                            "--config", str(workdir / "config.yml")], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"remediation-receiver check failed:\n{check.stdout}{check.stderr}")

    rules_file = state / "prometheus" / "rules.yml"
    rules_file.parent.mkdir(parents=True, exist_ok=True)
    alerts = write_demo_rules(REPO, rules_file, settings.alert_for)
    exporters = {host: published_port(host) for host in hosts}
    prom_file = write_yaml(state / "prometheus" / "prometheus.yml",
                           prometheus_config(settings, ports, exporters, rules_file))
    am_file = write_yaml(state / "alertmanager" / "alertmanager.yml", alertmanager_config(ports, token))
    for argv in (["promtool", "check", "config", str(prom_file)],
                 ["amtool", "check-config", str(am_file)]):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}")

    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / "build" / "collections")}
    procs.start(state, "sink", [sys.executable, "-m", "demo.sink", str(ports.sink), str(state / "pages.jsonl")],
                cwd=REPO)
    procs.start(state, "receiver", [str(bin_dir / "remediation-receiver"), "serve", "--config",
                                    str(workdir / "config.yml")], env=env, cwd=workdir)
    procs.start(state, "alertmanager", [ALERTMANAGER, f"--config.file={am_file}",
                                        f"--storage.path={state / 'alertmanager' / 'data'}",
                                        f"--web.listen-address=127.0.0.1:{ports.alertmanager}",
                                        "--cluster.listen-address="])
    procs.start(state, "prometheus", [PROMETHEUS, f"--config.file={prom_file}",
                                      f"--storage.tsdb.path={state / 'prometheus' / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{ports.prometheus}",
                                      "--web.enable-lifecycle"])
    for name, url in (("the pager sink", f"http://127.0.0.1:{ports.sink}/"),
                      ("the receiver", f"http://127.0.0.1:{ports.receiver}/healthz"),
                      ("Alertmanager", f"http://127.0.0.1:{ports.alertmanager}/-/ready"),
                      ("Prometheus", f"http://127.0.0.1:{ports.prometheus}/-/ready")):
        procs.wait_for(lambda url=url: ready(url), 60, name)
    stack = Stack(settings, ports, hosts, alerts)
    procs.wait_for(lambda: len(stack.prometheus.targets_up()) == len(hosts)
                   and all(stack.prometheus.targets_up().values()), 60, "Prometheus to scrape every node_exporter")
    (state / "ports.yml").write_text(yaml.safe_dump(ports.__dict__))
    return stack


def load_stack(settings: Settings) -> Stack:
    """The stack a kept demo left running (`python -m demo replay` replays the incidents on it again)."""
    ports_file = settings.state / "ports.yml"
    if not ports_file.exists() or not all(p.alive() for p in procs.recorded(settings.state)):
        raise RuntimeError(f"no running demo of prefix {settings.prefix}: run `make demo` first")
    ports = Ports(**yaml.safe_load(ports_file.read_text()))
    rules = yaml.safe_load((settings.state / "prometheus" / "rules.yml").read_text())
    hosts = [settings.host(i) for i in range(1, HOSTS + 1)]
    return Stack(settings, ports, hosts, alert_names(rules))


def stop_stack(settings: Settings) -> None:
    """Stop the processes this demo recorded (and only those)."""
    for started in procs.recorded(settings.state):
        if procs.stop(settings.state, started):
            log(f"stopped {started.name} (pid {started.pid})")


def remove_state(settings: Settings) -> None:
    if settings.state.exists():
        shutil.rmtree(settings.state)
