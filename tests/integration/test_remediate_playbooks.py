"""The remediation playbooks against the real failures on real lab hosts (systemd + dockerd in a container, reached
with docker exec only): a growing json-file log, a daemon.json that stops dockerd, a failing and disabled prune
timer, a job timer to contain. For each: check mode changes nothing, the run fixes it (checked here independently,
on the host), a second run changes nothing, and a run aimed at two hosts is refused before any host is touched.

Two lab hosts named LAB_PREFIX-playbooks-1 and -2 (lab_names.py), created and removed by this module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_names import lab_prefix

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PREFIX = lab_prefix("playbooks")
LOG_HOST, DAEMON_HOST = f"{PREFIX}-1", f"{PREFIX}-2"
PLAYBOOKS = ["disk_pressure", "log_growth", "docker_daemon", "storage_driver", "prune_timer", "mirror_sync",
             "backup_cleanup"]


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    lab = ["bash", str(REPO / "tests/lab/lab.sh")]
    subprocess.run([*lab, "down", PREFIX], check=True, cwd=REPO)  # a fresh start: hosts of an earlier run go
    subprocess.run([*lab, "up", "2", PREFIX], check=True, cwd=REPO)
    path = tmp_path_factory.mktemp("remediate") / "inventory.ini"
    path.write_text(
        f"[docker_hosts]\n{LOG_HOST}\n{DAEMON_HOST}\n\n[docker_hosts:vars]\n"
        "ansible_connection=community.docker.docker\nansible_python_interpreter=/usr/bin/python3\n"
    )
    yield path
    if not os.environ.get("REMEDIATE_KEEP_LAB"):
        subprocess.run([*lab, "down", PREFIX], check=False, cwd=REPO)


# The workloads run with --init: docker-init (PID 1) passes the SIGTERM of a dockerd stop on to them, and they end at
# once. Without it their PID 1 ignores SIGTERM, and every dockerd restart and clean stop here waited out the stop
# timeout (10 s, the storage-driver role's 30 s) for each of them.
def sh(host: str, script: str, check: bool = True) -> str:
    result = subprocess.run(["docker", "exec", host, "sh", "-c", script], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{host}: {script!r} failed: {result.stdout}{result.stderr}")
    return result.stdout.strip()


class Run:
    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.rc = result.returncode
        self.output = result.stdout + result.stderr
        self.text = " ".join(self.output.split())

    def changed(self, host: str) -> int:
        found = re.search(rf"^{re.escape(host)}\s*:.*changed=(\d+)", self.output, re.M)
        assert found, self.output[-3000:]
        return int(found.group(1))


def play(inventory: Path, name: str, *args: str) -> Run:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_FORCE_COLOR="false",
               ANSIBLE_PIPELINING="true", ANSIBLE_LOCALHOST_WARNING="false")
    playbook = REPO / "playbooks" / "remediate" / f"{name}.yml"
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), *args],
                            capture_output=True, text=True, env=env, timeout=600, check=False)
    return Run(result)


def ansible(inventory: Path, host: str, module: str, args: dict, extra_vars: dict | None = None) -> None:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_PIPELINING="true")
    more = ["-e", json.dumps(extra_vars)] if extra_vars else []
    result = subprocess.run([str(BIN / "ansible"), "-i", str(inventory), host, "-m", module, "-a", json.dumps(args),
                             *more], capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def log_size(host: str, container: str) -> int:
    return int(sh(host, f"stat -c %s $(docker inspect -f '{{{{.LogPath}}}}' {container})"))


def wait_for_burst(host: str, container: str, marker: str, minimum: int, timeout: float = 120) -> int:
    """The container's log size once its burst is over (`marker` exists in it) and its log holds more than
    `minimum` bytes: on a loaded machine the burst takes longer than any fixed wait (a fixed 3 s was used)."""
    deadline = time.monotonic() + timeout
    size = 0
    while time.monotonic() < deadline:
        # `test` is the shell's builtin: the workload image's busybox has no `test` applet. A failed exec raises here.
        done = sh(host, f"docker exec {container} sh -c 'if test -e {marker}; then echo done; else echo pending; fi'"
                  ).strip() == "done"
        size = log_size(host, container)
        if done and size > minimum:
            return size
        time.sleep(0.5)
    raise AssertionError(f"{container} on {host}: the burst did not end within {timeout:.0f} s (marker {marker}, "
                         f"log {size} bytes, expected more than {minimum})")


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_two_hosts_are_refused_before_any_host_is_touched(inventory: Path, name: str) -> None:
    run = play(inventory, name, "-e", "target_host=docker_hosts")
    assert run.rc != 0
    assert f"{name} runs on exactly one host; 'docker_hosts' resolves to 2 host(s)" in run.text, run.text[-2000:]
    assert f"ok: [{LOG_HOST}]" not in run.output and f"changed: [{LOG_HOST}]" not in run.output


def test_log_growth_cuts_a_real_growing_log_and_bounds_new_containers(inventory: Path) -> None:
    host = LOG_HOST
    # About 6.5 MB of json-file log at once (5 MB of 101-byte lines), then about 1.3 kB/s, with no log limit: dockerd's
    # default json-file. The burst happens once: the container keeps its file system when dockerd's restart restarts
    # it (a second burst would be a real re-flood, and the playbook would rightly fail).
    line = "L" * 100
    sh(host, "docker run -d --restart always --init --name flood pmr-workload:latest sh -c "
             f"'[ -e /burst-done ] || {{ yes {line} | head -c 5000000; touch /burst-done; }}; "
             f"while true; do yes {line} | head -c 1010; sleep 1; done' >/dev/null")
    before = wait_for_burst(host, "flood", "/burst-done", 5 * 1024**2)
    limits = ["-e", "log_growth_container=flood", "-e", "log_growth_max_size=5M", "-e", "log_growth_keep_tail=64K"]

    # Check mode without leave to restart dockerd: plans, fails for escalation, touches nothing.
    run = play(inventory, "log_growth", "-l", host, "--check", *limits)
    assert run.rc != 0
    assert f"LOG GROWTH WOULD NOT BE RESOLVED on {host}" in run.text
    assert "log_growth_restart_allowed is false" in run.text
    assert log_size(host, "flood") >= before
    assert sh(host, "test -e /etc/docker/daemon.json && echo present || echo absent") == "absent"

    run = play(inventory, "log_growth", "-l", host, "-e", "log_growth_restart_allowed=true", *limits)
    assert run.rc == 0, run.text[-3000:]
    assert "cut: log of flood" in run.text
    assert log_size(host, "flood") < 5 * 1024**2  # measured here, on the host
    daemon = json.loads(sh(host, "cat /etc/docker/daemon.json"))
    assert daemon["log-opts"]["max-size"] == "10m"
    probe = sh(host, "id=$(docker create pmr-workload:latest true); "
                     "docker inspect -f '{{json .HostConfig.LogConfig}}' $id; docker rm $id >/dev/null")
    assert json.loads(probe)["Config"]["max-size"] == "10m"  # what a new container gets from the restarted dockerd
    assert sh(host, "docker inspect -f '{{.State.Running}}' flood") == "true"
    assert "container(s) still write unbounded logs: flood" in run.text  # created before the limits: named

    again = play(inventory, "log_growth", "-l", host, "-e", "log_growth_restart_allowed=true", *limits)
    assert again.rc == 0 and again.changed(host) == 0, again.text[-3000:]
    sh(host, "docker rm -f flood >/dev/null")


def break_dockerd(host: str) -> None:
    assert sh(host, "systemctl restart docker 2>/dev/null; systemctl is-active docker", check=False) != "active"
    assert sh(host, "docker info >/dev/null 2>&1 && echo up || echo down") == "down"


def test_docker_daemon_moves_a_rejected_daemon_json_aside_when_dockerd_started_without_one(inventory: Path) -> None:
    """A fresh host runs dockerd with no daemon.json; a hand-written one stops it. What dockerd last started with was
    "no file": the playbook moves the rejected file aside (kept), and dockerd starts with its defaults again."""
    host = DAEMON_HOST
    assert sh(host, "test -e /etc/docker/daemon.json && echo yes || echo no") == "no"
    assert sh(host, "systemctl is-active docker") == "active"
    sh(host, "docker run -d --restart always --init --name nofile pmr-workload:latest sleep 100000 >/dev/null")
    time.sleep(1.1)  # the file must be newer than dockerd's last start (whole seconds in systemd's timestamp)
    sh(host, "echo '{\"storage-driver\": \"zfs\"}' > /etc/docker/daemon.json")
    break_dockerd(host)
    rejected = sh(host, "cat /etc/docker/daemon.json")

    # No record (no docker_signals drop-in here), no backup: the file is newer than dockerd's last successful start.
    run = play(inventory, "docker_daemon", "-l", host, "--check")
    assert run.rc == 0, run.text[-3000:]
    assert "would move /etc/docker/daemon.json aside to /etc/docker/daemon.json.rejected-" in run.text, run.text[-3000:]
    assert sh(host, "cat /etc/docker/daemon.json") == rejected
    assert sh(host, "ls /etc/docker/ | grep -c rejected || true") == "0"
    assert sh(host, "docker info >/dev/null 2>&1 && echo up || echo down") == "down"

    run = play(inventory, "docker_daemon", "-l", host)
    assert run.rc == 0, run.text[-3000:]
    assert "dockerd last started without a daemon.json (no record, no backup" in run.text
    assert sh(host, "test -e /etc/docker/daemon.json && echo yes || echo no") == "no"
    assert sh(host, "cat /etc/docker/daemon.json.rejected-*") == rejected  # kept, not removed
    assert sh(host, "docker info --format '{{.Driver}}'") == "overlay2"
    assert sh(host, "docker inspect -f '{{.State.Running}}' nofile") == "true"
    # The record now says "started without a file", in the docker_signals role's format.
    assert sh(host, "cat /var/lib/pmr-docker-signals/daemon.json.last-started.sha256") == "absent"
    assert sh(host, "test -e /var/lib/pmr-docker-signals/daemon.json.last-started && echo yes || echo no") == "no"

    again = play(inventory, "docker_daemon", "-l", host)
    assert again.rc == 0 and again.changed(host) == 0, again.text[-3000:]

    # Again, now with the record: restored from what it says, even though a backup of another file lies beside it.
    sh(host, "mkdir -p /tmp/aside && mv /etc/docker/daemon.json.rejected-* /tmp/aside/")
    sh(host, "echo '{\"log-level\": \"debug\"}' > /etc/docker/daemon.json.1.2~")
    sh(host, "echo '{\"storage-driver\": \"zfs\", \"debug\": true}' > /etc/docker/daemon.json")
    break_dockerd(host)
    run = play(inventory, "docker_daemon", "-l", host)
    assert run.rc == 0, run.text[-3000:]
    assert "move /etc/docker/daemon.json aside" in run.text and "no record" not in run.text, run.text[-3000:]
    assert sh(host, "test -e /etc/docker/daemon.json && echo yes || echo no") == "no"
    assert json.loads(sh(host, "cat /etc/docker/daemon.json.rejected-*")) == {"storage-driver": "zfs", "debug": True}
    assert sh(host, "docker inspect -f '{{.State.Running}}' nofile") == "true"
    # Leave the host as the next test expects it: no daemon.json and nothing beside it.
    sh(host, "docker rm -f nofile >/dev/null; rm -f /etc/docker/daemon.json.* "
             "/var/lib/pmr-docker-signals/daemon.json.*")


def test_docker_daemon_restores_the_daemon_json_dockerd_last_started_with(inventory: Path) -> None:
    host = DAEMON_HOST
    sh(host, "echo '{\"log-level\": \"info\"}' > /etc/docker/daemon.json && systemctl restart docker")
    sh(host, "docker run -d --restart always --init --name svc pmr-workload:latest sleep 100000 >/dev/null")
    good = sh(host, "cat /etc/docker/daemon.json")
    # The change an operator makes through the collection (which keeps a backup): a driver this host cannot run.
    ansible(inventory, host, "postmortem.remediation.docker_daemon_config", {"settings": {"storage-driver": "zfs"}})
    break_dockerd(host)
    rejected = sh(host, "cat /etc/docker/daemon.json")

    run = play(inventory, "docker_daemon", "-l", host, "--check")
    assert run.rc == 0, run.text[-3000:]
    assert "dockerd said: failed to start daemon: error initializing graphdriver" in run.text
    assert "would restore /etc/docker/daemon.json from /etc/docker/daemon.json." in run.text  # the newest backup
    assert sh(host, "cat /etc/docker/daemon.json") == rejected
    assert sh(host, "docker info >/dev/null 2>&1 && echo up || echo down") == "down"

    run = play(inventory, "docker_daemon", "-l", host)
    assert run.rc == 0, run.text[-3000:]
    assert sh(host, "docker info --format '{{.Driver}}'") == "overlay2"
    assert json.loads(sh(host, "cat /etc/docker/daemon.json")) == json.loads(good)
    assert json.loads(sh(host, "cat /etc/docker/daemon.json.rejected-*")) == json.loads(rejected)  # kept, not removed
    assert sh(host, "docker inspect -f '{{.State.Running}}' svc") == "true"
    assert json.loads(sh(host, "cat /var/lib/pmr-docker-signals/daemon.json.last-started")) == json.loads(good)

    again = play(inventory, "docker_daemon", "-l", host)
    assert again.rc == 0 and again.changed(host) == 0, again.text[-3000:]
    assert f"dockerd on {host}: answers" in again.text and "daemon.json is left as it is" in again.text

    # A hand edit that is not even JSON: restored from the record of the last start, which the first run wrote.
    sh(host, "printf '{\"log-level\": \"info\",' > /etc/docker/daemon.json")
    break_dockerd(host)
    run = play(inventory, "docker_daemon", "-l", host)
    assert run.rc == 0, run.text[-3000:]
    assert "from /var/lib/pmr-docker-signals/daemon.json.last-started" in run.text
    assert json.loads(sh(host, "cat /etc/docker/daemon.json")) == json.loads(good)
    assert sh(host, "docker inspect -f '{{.State.Running}}' svc") == "true"


def prune_metrics(host: str) -> dict[str, float]:
    text = sh(host, "cat /var/lib/prometheus/node-exporter/docker_prune.prom")
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(docker_prune_\w+) (\S+)$", text, re.M)}


def test_prune_timer_is_enabled_again_run_once_and_its_metrics_fresh(inventory: Path) -> None:
    host = LOG_HOST
    # No blackout window: the role's default (01:00-04:30) skips every run then and records a success, so the failure
    # below would not be recorded and the test would depend on the time of day (it failed in CI at 03:00).
    ansible(inventory, host, "ansible.builtin.include_role",
            {"name": "postmortem.remediation.docker_prune_timer"}, {"docker_prune_timer_blackout_windows": []})
    # A real failure: the run meets a stopped dockerd; then someone disables the timer.
    sh(host, "systemctl stop docker.socket docker; systemctl start docker-prune.service; systemctl start docker; "
             "systemctl disable --now docker-prune.timer", check=False)
    assert prune_metrics(host)["docker_prune_last_run_success"] == 0

    run = play(inventory, "prune_timer", "-l", host, "--check")
    assert run.rc == 0, run.text[-3000:]
    assert "needs fixing: timer inactive, timer disabled, last run exit-code, last run failed" in run.text
    assert sh(host, "systemctl is-enabled docker-prune.timer", check=False) == "disabled"
    assert prune_metrics(host)["docker_prune_last_run_success"] == 0

    started = float(sh(host, "date +%s"))
    run = play(inventory, "prune_timer", "-l", host)
    assert run.rc == 0, run.text[-3000:]
    assert sh(host, "systemctl is-enabled docker-prune.timer") == "enabled"
    assert sh(host, "systemctl is-active docker-prune.timer") == "active"
    metrics = prune_metrics(host)
    assert metrics["docker_prune_last_run_success"] == 1
    assert metrics["docker_prune_last_run_timestamp_seconds"] >= started

    again = play(inventory, "prune_timer", "-l", host)
    assert again.rc == 0 and again.changed(host) == 0, again.text[-3000:]
    assert "nothing to do" in again.text


@pytest.mark.parametrize(("name", "verdict"), [("mirror_sync", "MIRROR SYNC"), ("backup_cleanup", "BACKUP CLEANUP")])
def test_containment_stops_the_jobs_real_timer_and_escalates(inventory: Path, name: str, verdict: str) -> None:
    host, unit = LOG_HOST, f"pmr-{name.replace('_', '-')}"
    sh(host, f"printf '[Service]\\nType=oneshot\\nExecStart=/bin/true\\n' > /etc/systemd/system/{unit}.service; "
             f"printf '[Timer]\\nOnCalendar=hourly\\n[Install]\\nWantedBy=timers.target\\n' "
             f"> /etc/systemd/system/{unit}.timer; systemctl daemon-reload; systemctl enable --now {unit}.timer")

    run = play(inventory, name, "-l", host, "--check", "-e", f"{name}_unit={unit}.service")
    assert run.rc != 0
    assert f"{verdict} WOULD BE CONTAINED on {host}" in run.text and f"would stop and disable {unit}.timer" in run.text
    assert sh(host, f"systemctl is-active {unit}.timer") == "active"

    for attempt in (1, 2):  # fails on purpose every time; the second run changes nothing
        run = play(inventory, name, "-l", host, "-e", f"{name}_unit={unit}.service", "-e", f"{name}_reason=refused")
        assert run.rc != 0
        contained = f"{verdict} CONTAINED on {host}: the guard refused {unit}.service (refused)"
        assert contained in run.text, run.text[-2000:]
        assert f"{unit}.timer inactive/disabled" in run.text
        assert run.changed(host) == (1 if attempt == 1 else 0)
        assert sh(host, f"systemctl is-active {unit}.timer", check=False) == "inactive"
        assert sh(host, f"systemctl is-enabled {unit}.timer", check=False) == "disabled"

    run = play(inventory, name, "-l", host)  # no unit named (an alert without the label): nothing to stop, escalate
    assert run.rc != 0 and f"{verdict} NOT CONTAINED on {host}: no unit named" in run.text


def test_storage_driver_goes_back_to_the_driver_of_the_roles_backup(inventory: Path) -> None:
    host = DAEMON_HOST
    probe = {"docker_storage_driver_probe_image": "pmr-workload:latest",
             "docker_storage_driver_probe_prepare_command": ["/usr/local/sbin/pmr-workload-image"],
             "docker_storage_driver_soak_samples": 1, "docker_storage_driver_soak_interval": 1}
    sh(host, "docker inspect svc >/dev/null 2>&1 || "
             "docker run -d --restart always --init --name svc pmr-workload:latest sleep 100000 >/dev/null")
    # The switch the alert is about, made by the role itself (which writes the backup): overlay2 to vfs.
    switch = inventory.parent / "switch_to_vfs.yml"
    switch.write_text(json.dumps([{
        "name": "Switch to vfs", "hosts": host, "gather_facts": False,
        "roles": [{"role": "postmortem.remediation.docker_storage_driver", "vars": {
            "docker_storage_driver_name": "vfs", "docker_storage_driver_allow_risky": True,
            "docker_storage_driver_accept_hidden_data": True,
            # svc runs: the role refuses a restart that stops it unless told to stop it cleanly first.
            "docker_storage_driver_running_containers": "stop", **probe}}]}]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_PIPELINING="true")
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(switch)], capture_output=True,
                            text=True, env=env, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert sh(host, "docker info --format '{{.Driver}}'") == "vfs"
    args = ["-e", "storage_driver_probe_image=pmr-workload:latest", "-e", "storage_driver_soak_samples=1",
            "-e", "storage_driver_soak_interval=1"]

    run = play(inventory, "storage_driver", "-l", host, "--check", *args)
    assert run.rc == 0, run.text[-3000:]
    assert "went from overlay2 to vfs: would go back to overlay2" in run.text
    assert sh(host, "docker info --format '{{.Driver}}'") == "vfs"

    run = play(inventory, "storage_driver", "-l", host, *args)
    assert run.rc == 0, run.text[-3000:]
    assert sh(host, "docker info --format '{{.Driver}}'") == "overlay2"
    assert sh(host, "docker inspect -f '{{.State.Running}}' svc") == "true"  # its container is back with its driver

    again = play(inventory, "storage_driver", "-l", host, *args)
    assert again.rc == 0 and again.changed(host) == 0, again.text[-3000:]
    assert "went from overlay2 to vfs: nothing to do" in again.text
