"""What `make demo` and `make demo-down` run (python -m demo run|down), and what the end-to-end test reuses."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from . import stack as st
from .incidents import EXPECTED_NEEDS_SIGNALS, Incident, LogFlood, all_incidents
from .loop import EXPECTED, Loop, Timeline, clock, say, table
from .settings import REPO, Settings


def down(settings: Settings) -> None:
    """Remove what a demo of this LAB_PREFIX started: its processes (by recorded pid), its lab hosts (with their
    volumes and loop filesystem), its state directory."""
    st.stop_stack(settings)
    st.lab_down(settings)
    st.remove_state(settings)


def prepare_hosts(settings: Settings, incidents: list[Incident]) -> str:
    """What the hosts had before (each incident's before_setup), then demo/playbooks/setup.yml: docker_signals on
    every host, docker_log_rotation on the services host. Returns why the signals are not available, if so."""
    if not (REPO / "roles" / "docker_signals").is_dir():
        return "the collection has no docker_signals role (no pmr_docker_* metrics)"
    for incident in incidents:
        incident.before_setup()
    services = sorted({i.host for i in incidents if isinstance(i, LogFlood)})
    say("[demo] docker_signals on the lab hosts" + (f", docker_log_rotation on {services[0]}" if services else "")
        + " (demo/playbooks/setup.yml)")
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(settings.inventory),
            str(REPO / "demo" / "playbooks" / "setup.yml"), "-e", f"demo_signals_interval={settings.signals_interval}"]
    if services:
        argv += ["-e", f"demo_services_host={services[0]}"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"demo/playbooks/setup.yml failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return ""


def alert_history(stack: st.Stack, start: float) -> list[str]:
    """Prometheus's own record: every ALERTS series that fired during the replay, each firing stretch from when to
    when, and whether it resolved."""
    end = time.time()
    step = 1.0
    lines = []
    active = {(a["labels"].get("alertname"), a["labels"].get("instance")) for a in stack.prometheus.alerts()}
    for series in stack.prometheus.query_range('ALERTS{alertstate="firing"}', start, end, step):
        labels = series["metric"]
        stamps = [float(t) for t, _ in series["values"]]
        stretches = [[stamps[0], stamps[0]]]
        for stamp in stamps[1:]:
            if stamp - stretches[-1][1] > 3 * step:
                stretches.append([stamp, stamp])
            stretches[-1][1] = stamp
        resolved = (labels.get("alertname"), labels.get("instance")) not in active
        lines.append(f"  {labels.get('alertname', '?'):<28} {labels.get('instance', '?'):<12} firing "
                     + ", ".join(f"{clock(a)}..{clock(b)}" for a, b in stretches)
                     + f"  {'then resolved' if resolved else 'STILL FIRING'}")
    return sorted(lines, key=lambda line: line.split(" firing ")[1])


def selected(settings: Settings) -> list[Incident]:
    """The incidents to replay: all five, or those named in DEMO_INCIDENTS."""
    return [i for i in all_incidents(settings.prefix) if not settings.incidents or i.key in settings.incidents]


def setup(settings: Settings, incidents: list[Incident]) -> tuple[st.Stack, str]:
    """Everything before the replay: a clean slate, packages, lab hosts, signals, the processes."""
    say(f"[demo] removing what a previous demo of prefix {settings.prefix} left (make demo-down)")
    down(settings)
    settings.state.mkdir(parents=True, exist_ok=True)
    st.ensure_packages()
    say(f"[demo] lab hosts {settings.prefix}-1..{st.HOSTS} (tests/lab/lab.sh)")
    hosts = st.lab_up(settings, st.HOSTS)
    no_signals = prepare_hosts(settings, incidents)
    stack = st.start_stack(settings, hosts)
    for rule in st.rules_without_playbook():
        say(f"[demo] docs/receiver.example.yml: rule {rule} left out: its playbook does not exist")
    say(f"[demo] Prometheus http://127.0.0.1:{stack.ports.prometheus}  Alertmanager "
        f"http://127.0.0.1:{stack.ports.alertmanager}  receiver http://127.0.0.1:{stack.ports.receiver}  "
        f"pager http://127.0.0.1:{stack.ports.sink}  (all for: {settings.alert_for})")
    return stack, no_signals


def replay(stack: st.Stack, incidents: list[Incident], no_signals: str, started: float) -> int:
    """The incidents one after another, the summary table, Prometheus's ALERTS, the receiver's runs."""
    loop = Loop(stack)
    timelines: list[Timeline] = []
    replay_start = time.time()
    for number, incident in enumerate(incidents, 1):
        say(f"\n== {number}/{len(incidents)} {incident.title} on {incident.host} "
            f"(expected: {EXPECTED[incident.expected]})")
        if no_signals and incident.key in EXPECTED_NEEDS_SIGNALS:
            tl = Timeline(incident, available=False, reason=no_signals, verdict="not available")
            say(f"  not available: {no_signals}")
        else:
            tl = loop.drive(incident)
        timelines.append(tl)

    say("\n== Summary (times from when each symptom began)\n" + table(timelines))
    say("\n== Prometheus ALERTS during the replay\n" + ("\n".join(alert_history(stack, replay_start)) or "  none"))
    runs = stack.receiver_cli("runs")
    say(f"\n== remediation-receiver runs --config {stack.receiver_config}\n{runs.stdout}{runs.stderr}")
    ok = bool(timelines) and all(tl.ok for tl in timelines)
    say(f"[demo] {sum(tl.ok for tl in timelines)} of {len(timelines)} incidents ended as expected "
        f"in {time.time() - started:.0f} s")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("command", choices=["run", "replay", "down"],
                        help="run: set up and replay (make demo); replay: again on a kept demo; down: remove it")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    started = time.time()
    if args.command == "down":
        down(settings)
        return 0
    if args.command == "replay":
        return replay(st.load_stack(settings), selected(settings), "", started)
    incidents = selected(settings)
    stack, no_signals = setup(settings, incidents)
    try:
        return replay(stack, incidents, no_signals, started)
    finally:
        if settings.keep:
            say(f"[demo] left running for you to look around; `make demo-down` removes it "
                f"(LAB_PREFIX={settings.prefix})")
        else:
            down(settings)
