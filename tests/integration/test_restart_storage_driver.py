"""The storage-driver role's restart path on a real lab host (systemd + dockerd 20.10) with live-restore on.

Issue 11 item 3: a switch with live-restore on left the running containers orphaned (their shims and workloads kept
running while `docker ps -a` was empty) and the role reported the host switched. Item 7: a restart stops running
containers and nothing said so. The host is LAB_PREFIX-restart-sd-1 (lab_names.py), created and removed here
(ansible-playbook through the docker connection, no network).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_names import lab_prefix

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
PREFIX = lab_prefix("restart-sd")
HOST = f"{PREFIX}-1"
# The workloads end on the SIGTERM of `docker stop` (docker-init as PID 1 passes it on to sleep): as PID 1, sleep would
# ignore it and the role's clean stop would wait its whole docker_storage_driver_stop_timeout (30 s) per container.
STOPS_ON_SIGTERM = ("--init", "--stop-timeout", "2")

PLAYBOOK = """
- name: Switch the storage driver and keep what the role said
  hosts: all
  gather_facts: false
  tasks:
    - name: Run the role
      block:
        - name: Switch
          ansible.builtin.include_role:
            name: postmortem.remediation.docker_storage_driver
      rescue:
        - name: Keep the failure
          ansible.builtin.set_fact:
            failure: "{{ ansible_failed_result.msg }}"
      always:
        - name: Write the result on the controller
          ansible.builtin.copy:
            content: "{{ {'result': docker_storage_driver_result | default({}), 'failure': failure | default('')}
                         | to_json }}"
            dest: "{{ out }}"
            mode: "0644"
          delegate_to: localhost
          check_mode: false
"""


def on_host(*command: str) -> str:
    proc = subprocess.run(["docker", "exec", HOST, *command], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    subprocess.run(["bash", str(ROOT / "tests/lab/lab.sh"), "up", "1", PREFIX], check=True, cwd=ROOT,
                   capture_output=True)
    # live-restore on, two running containers: one without a restart policy, one with always.
    on_host("sh", "-c", "echo '{\"live-restore\": true}' > /etc/docker/daemon.json && systemctl restart docker")
    for name, policy in (("no-policy", "no"), ("with-policy", "always")):
        on_host("docker", "run", "-d", "--name", name, "--restart", policy, *STOPS_ON_SIGTERM,
                "pmr-workload:latest", "sleep", "3600")
    yield HOST
    if not os.environ.get("RESTART_KEEP_LAB"):
        subprocess.run(["bash", str(ROOT / "tests/lab/lab.sh"), "down", PREFIX], check=False, cwd=ROOT,
                       capture_output=True)


def run_role(tmp_path: Path, extra: dict, check: bool = False) -> dict:
    (tmp_path / "inventory.ini").write_text(
        f"{HOST} ansible_connection=community.docker.docker ansible_python_interpreter=/usr/bin/python3\n")
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    out = tmp_path / "result.json"
    variables = dict(
        docker_storage_driver_name="vfs",
        docker_storage_driver_allow_risky=True,
        docker_storage_driver_accept_hidden_data=True,
        docker_storage_driver_probe_image="pmr-workload:latest",
        docker_storage_driver_probe_prepare_command=["/usr/local/sbin/pmr-workload-image"],
        docker_storage_driver_soak_samples=1,
        docker_storage_driver_soak_interval=1,
        out=str(out),
    )
    variables.update(extra)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"),
               ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_FORCE_COLOR="false", PATH=f"{BIN}:{os.environ['PATH']}")
    argv = [str(BIN / "ansible-playbook"), "-i", str(tmp_path / "inventory.ini"), str(tmp_path / "play.yml"),
            "-e", json.dumps(variables)] + (["--check"] if check else [])
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    data["stdout"] = proc.stdout
    return data


def shims_of(container_ids: list[str]) -> list[str]:
    processes = on_host("ps", "-eo", "args")
    return [cid for cid in container_ids if any("containerd-shim" in line and cid in line
                                                 for line in processes.splitlines())]


def container_ids() -> list[str]:
    return on_host("docker", "ps", "-q", "--no-trunc").split()


def test_a_switch_is_refused_while_containers_run_and_check_mode_names_them(host, tmp_path):
    before_file = on_host("sha1sum", "/etc/docker/daemon.json")
    running = container_ids()
    assert len(running) == 2

    planned = run_role(tmp_path, {}, check=True)
    assert "no-policy (its storage driver goes away: with live-restore it would keep running outside Docker's " \
           "control)" in planned["stdout"]
    assert "with-policy" in planned["stdout"]

    refused = run_role(tmp_path, {})
    assert refused["result"]["outcome"] == "refused", refused["result"]
    assert "nothing was written" in refused["failure"]
    assert "no-policy, with-policy" in refused["failure"]
    assert "docker_storage_driver_running_containers: stop" in refused["failure"]
    assert on_host("sha1sum", "/etc/docker/daemon.json") == before_file
    assert on_host("docker", "info", "--format", "{{.Driver}}") == "overlay2"
    assert sorted(container_ids()) == sorted(running)


def test_a_switch_told_to_stop_them_leaves_no_orphan_and_says_which_stopped(host, tmp_path):
    running = container_ids()
    assert len(running) == 2

    switched = run_role(tmp_path, {"docker_storage_driver_running_containers": "stop"})
    assert switched["result"]["outcome"] == "changed", switched["failure"] or switched["result"]
    assert on_host("docker", "info", "--format", "{{.Driver}}") == "vfs"
    # Nothing of the old containers runs outside Docker's control: no shim, and docker under vfs runs nothing.
    assert shims_of(running) == []
    assert container_ids() == []
    assert sorted(switched["result"]["running_containers"]) == ["no-policy", "with-policy"]
    assert "stopped no-policy, with-policy first" in switched["result"]["message"]


def test_a_rollback_says_which_containers_run_again(host, tmp_path):
    # The host runs vfs now. zfs cannot start on this ext4 volume: the switch is rolled back to vfs.
    for name, policy in (("no-policy-vfs", "no"), ("with-policy-vfs", "always")):
        on_host("docker", "run", "-d", "--name", name, "--restart", policy, *STOPS_ON_SIGTERM,
                "pmr-workload:latest", "sleep", "3600")
    failed = run_role(tmp_path, {"docker_storage_driver_name": "zfs", "docker_storage_driver_preflight_enabled": False,
                                 "docker_storage_driver_running_containers": "stop",
                                 "docker_storage_driver_start_timeout": 15})
    assert failed["result"]["outcome"] == "rolled_back", failed["failure"] or failed["result"]
    assert on_host("docker", "info", "--format", "{{.Driver}}") == "vfs"
    # docker stop before the switch; the rollback restart starts `always` again, the other stays stopped.
    assert "Containers that ran before the switch: 1 running again (with-policy-vfs), 1 stopped (no-policy-vfs)." \
        in failed["failure"]
    assert on_host("docker", "ps", "--format", "{{.Names}}") == "with-policy-vfs"
