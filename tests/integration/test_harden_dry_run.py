"""`ansible-playbook playbooks/harden_docker_hosts.yml --check --diff` on a fresh lab host plans and changes nothing
(issue 11, item 8: it used to stop with rc 2, "Could not find the requested service docker-prune.timer"); then the
real run installs everything, and an idempotent run costs one module call on the host (issue 13: it cost three), with
the timer bundles still installed when docker_log_rotation's call is turned off or left out by tags."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_names import lab_prefix

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
PREFIX = lab_prefix("docs-dry")
HOST = f"{PREFIX}-1"


@pytest.fixture(scope="module")
def fresh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A lab host that has never been hardened, with an inventory of its own; removed at the end."""
    inventory = tmp_path_factory.mktemp("dry") / "inventory.ini"
    lab = ["bash", str(REPO / "tests/lab/lab.sh")]
    env = dict(os.environ, LAB_INVENTORY=str(inventory))
    subprocess.run([*lab, "down", PREFIX], check=True, env=env)  # a host left by an interrupted run is not fresh
    subprocess.run([*lab, "up", "1", PREFIX], check=True, env=env)
    yield inventory
    subprocess.run([*lab, "down", PREFIX], check=False, env=env)


def on_host(*argv: str) -> str:
    return subprocess.run(["docker", "exec", HOST, *argv], capture_output=True, text=True, check=False).stdout


def harden(inventory: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_FORCE_COLOR="false",
               ANSIBLE_PIPELINING="true", PATH=f"{BIN}:{os.environ['PATH']}")
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/harden_docker_hosts.yml",
                           *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=600, check=False)


def recap(output: str) -> dict[str, int]:
    match = re.search(rf"^{re.escape(HOST)}\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                      output, re.MULTILINE)
    assert match, output[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups()), strict=True))


def test_check_diff_on_a_fresh_host_plans_and_touches_nothing(fresh_host: Path) -> None:
    # The command as docs/log_rotation.md and the README give it.
    run = harden(fresh_host, "--check", "--diff")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    # Every role of the playbook that installs a timer plans it (docker_signals had the same mistake).
    assert "would enable and start docker-prune.timer" in output, output
    assert "would enable and start pmr-docker-signals.timer" in output, output
    assert "+OnCalendar=" in output  # the diff of the timer unit that would be installed
    # Nothing was installed, enabled or written.
    listing = on_host("ls", "/etc/systemd/system", "/etc/docker")
    assert "docker-prune" not in listing and "pmr-docker-signals" not in listing, listing
    assert "daemon.json" not in listing, listing
    assert on_host("systemctl", "is-enabled", "docker-prune.timer").strip() in ("", "not-found"), listing
    # With docker_log_rotation's call left out by tags, the playbook's own install plans the timers as the roles do.
    tagged = harden(fresh_host, "--check", "--tags", "docker_prune_timer,docker_signals")
    assert tagged.returncode == 0, tagged.stdout[-4000:] + tagged.stderr
    assert "would enable and start docker-prune.timer" in tagged.stdout, tagged.stdout[-4000:]
    assert "would enable and start pmr-docker-signals.timer" in tagged.stdout, tagged.stdout[-4000:]
    assert "docker-prune" not in on_host("ls", "/etc/systemd/system")


def test_a_second_play_of_the_same_run_installs_only_what_it_hands_over(fresh_host: Path, tmp_path: Path) -> None:
    # The playbook imported twice in one run, the prune timer off in the second play: its bundle, handed over by the
    # first play, stays a fact for the whole run, and the second play planned (and would install) it again.
    twice = tmp_path / "twice.yml"
    twice.write_text(f"""---
- name: First play
  ansible.builtin.import_playbook: {REPO}/playbooks/harden_docker_hosts.yml
- name: Second play, without the prune timer
  ansible.builtin.import_playbook: {REPO}/playbooks/harden_docker_hosts.yml
  vars:
    docker_prune_timer_install_enabled: false
    docker_prune_timer_units_enabled: false
""")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_FORCE_COLOR="false",
               ANSIBLE_PIPELINING="true", PATH=f"{BIN}:{os.environ['PATH']}")
    run = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(fresh_host), str(twice), "--check"], cwd=REPO,
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert output.count("would enable and start pmr-docker-signals.timer") == 2, output[-6000:]
    assert output.count("would enable and start docker-prune.timer") == 1, output[-6000:]


def test_the_real_run_installs_everything_and_an_idempotent_run_is_one_module_call(fresh_host: Path) -> None:
    first = harden(fresh_host)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr
    for timer in ("docker-prune.timer", "pmr-docker-signals.timer"):
        assert on_host("systemctl", "is-active", timer).strip() == "active", timer
        assert on_host("systemctl", "is-enabled", timer).strip() == "enabled", timer
    assert "log-opts" in on_host("cat", "/etc/docker/daemon.json")
    # The signals' record drop-in was in place (and systemd reloaded) before the restart for the new log limits: the
    # restart itself recorded the daemon.json dockerd started with (ExecStartPost= of docker.service).
    started = on_host("journalctl", "--unit", "docker.service", "--no-pager", "--output", "cat")
    assert "as the configuration dockerd started with" in started, started[-3000:]
    # -vvv prints one EXEC line per docker exec: with pipelining, one per module call.
    again = harden(fresh_host, "-vvv")
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout[-4000:]
    calls = re.findall(rf"^<{re.escape(HOST)}> EXEC ", again.stdout, re.MULTILINE)
    assert len(calls) == 1, f"{len(calls)} module calls on the host, not 1"
    # The bundles handed over carry the text of every file: the results of the tasks that hand them over do not echo it.
    for script in ("docker_prune_timer/files/docker_prune.py", "docker_signals/files/docker_signals.py"):
        lines = (REPO / "roles" / script).read_text().splitlines()
        line = next(line for line in lines if len(line) > 60 and '"' not in line and "\\" not in line)
        assert line.strip() not in again.stdout, f"{script} echoed in the output: {line}"


@pytest.mark.parametrize("args", [("--tags", "docker_prune_timer,docker_signals"),
                                  ("-e", "docker_log_rotation_config_enabled=false"),
                                  ("-e", '{"docker_log_rotation_timer_bundles": []}')])
def test_bundles_handed_over_are_installed_when_docker_log_rotation_installs_none(
        fresh_host: Path, args: tuple[str, ...]) -> None:
    on_host("systemctl", "disable", "--now", "docker-prune.timer", "pmr-docker-signals.timer")
    on_host("rm", "-f", "/etc/docker-prune/config.json")
    run = harden(fresh_host, *args)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr
    assert recap(run.stdout)["changed"] >= 1
    for timer in ("docker-prune.timer", "pmr-docker-signals.timer"):
        assert on_host("systemctl", "is-active", timer).strip() == "active", (args, timer)
    assert "keep_label" in on_host("cat", "/etc/docker-prune/config.json"), args


def test_a_refused_restart_says_the_timer_bundles_of_its_call_were_installed(tmp_path: Path) -> None:
    """The first harden run on a host with a running container that a restart would stop: the restart for the new
    log limits is refused, daemon.json is not written, and the message says the same call installed the timer
    bundles (it used to say "Nothing was written")."""
    prefix = lab_prefix("docs-refuse")
    host = f"{prefix}-1"
    inventory = tmp_path / "inventory.ini"
    lab = ["bash", str(REPO / "tests/lab/lab.sh")]
    env = dict(os.environ, LAB_INVENTORY=str(inventory))
    subprocess.run([*lab, "down", prefix], check=True, env=env)
    subprocess.run([*lab, "up", "1", prefix], check=True, env=env)
    try:
        subprocess.run(["docker", "exec", host, "docker", "run", "-d", "--init", "--name", "no-policy",
                        "pmr-workload:latest", "sleep", "600"], check=True, capture_output=True)
        run = harden(inventory, "-e", "docker_restart_refuse_stopping_containers=true")
        output = run.stdout + run.stderr
        assert run.returncode != 0, output[-3000:]
        assert "Refused to restart docker" in output and "no-policy" in output, output[-3000:]
        assert ("/etc/docker/daemon.json was not written; the timer bundles docker_prune_timer, docker_signals were "
                "installed by the same call") in " ".join(output.split()), output[-3000:]
        listing = subprocess.run(["docker", "exec", host, "ls", "/etc/systemd/system", "/etc/docker"],
                                 capture_output=True, text=True, check=False).stdout
        assert "docker-prune.timer" in listing and "daemon.json" not in listing, listing
    finally:
        subprocess.run([*lab, "down", prefix], check=False, env=env)
