"""The remediation playbooks read their variables under the names of docs/names.md, and the names before 1.0.0 until
2.0.0. The playbooks' own variable definitions are rendered by real ansible-playbook for three hosts: one setting
nothing, one the new names, one the old names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
WATCHED = ["__log_growth_docker_host", "__log_growth_daemon_config", "__log_growth_service", "__log_growth_docker",
           "__docker_daemon_service", "__docker_daemon_json", "__docker_daemon_docker",
           "__storage_driver_docker_host", "__storage_driver_docker"]
HOSTVARS = {
    "none": {},
    "new": {"log_growth_docker_host": "unix:///run/new.sock", "log_growth_daemon_config": "/etc/new.json",
            "log_growth_service_name": "dockerd", "docker_daemon_service_name": "dockerd",
            "docker_daemon_daemon_config": "/etc/new.json", "docker_daemon_docker_host": "/run/new.sock",
            "storage_driver_docker_host": "/run/new.sock"},
    "old": {"log_growth_docker_socket": "/run/old.sock", "log_growth_daemon_json": "/etc/old.json",
            "log_growth_service": "olddocker", "docker_daemon_service": "olddocker",
            "docker_daemon_json": "/etc/old.json", "docker_daemon_docker_socket": "/run/old.sock",
            "storage_driver_docker_socket": "/run/old.sock"},
}


def playbook_vars() -> dict[str, str]:
    found = {}
    for name in ("log_growth", "docker_daemon", "storage_driver"):
        for play in yaml.safe_load((REPO / "playbooks" / "remediate" / f"{name}.yml").read_text()):
            found.update({key: value for key, value in play.get("vars", {}).items() if key in WATCHED})
    assert sorted(found) == sorted(WATCHED), sorted(found)
    return found


def test_new_names_old_names_and_none(tmp_path):
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {host: {**hostvars, "ansible_connection": "local",
                                                              "ansible_python_interpreter": sys.executable}
                                                       for host, hostvars in HOSTVARS.items()}}}))
    out = tmp_path / "out"
    out.mkdir()
    play = [{"name": "Render", "hosts": "all", "gather_facts": False, "vars": playbook_vars(), "tasks": [{
        "name": "Write them", "delegate_to": "localhost", "ansible.builtin.copy": {
            "dest": f"{out}/{{{{ inventory_hostname }}}}.json", "mode": "0600",
            "content": "{{ {" + ", ".join(f"'{key}': {key}" for key in WATCHED) + "} | to_json }}"}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_LOCALHOST_WARNING="false")
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = {host: json.loads((out / f"{host}.json").read_text()) for host in HOSTVARS}
    assert got["none"] == {
        "__log_growth_docker_host": "", "__log_growth_daemon_config": "/etc/docker/daemon.json",
        "__log_growth_service": "docker", "__log_growth_docker": ["docker", "--host", "unix:///var/run/docker.sock"],
        "__docker_daemon_service": "docker", "__docker_daemon_json": "/etc/docker/daemon.json",
        "__docker_daemon_docker": ["docker", "--host", "unix:///var/run/docker.sock"],
        "__storage_driver_docker_host": "", "__storage_driver_docker": ["docker", "--host", "unix:///var/run/docker.sock"],
    }
    assert got["new"] == {
        "__log_growth_docker_host": "unix:///run/new.sock", "__log_growth_daemon_config": "/etc/new.json",
        "__log_growth_service": "dockerd", "__log_growth_docker": ["docker", "--host", "unix:///run/new.sock"],
        "__docker_daemon_service": "dockerd", "__docker_daemon_json": "/etc/new.json",
        "__docker_daemon_docker": ["docker", "--host", "unix:///run/new.sock"],
        "__storage_driver_docker_host": "/run/new.sock",
        "__storage_driver_docker": ["docker", "--host", "unix:///run/new.sock"],
    }
    assert got["old"] == {
        "__log_growth_docker_host": "/run/old.sock", "__log_growth_daemon_config": "/etc/old.json",
        "__log_growth_service": "olddocker", "__log_growth_docker": ["docker", "--host", "unix:///run/old.sock"],
        "__docker_daemon_service": "olddocker", "__docker_daemon_json": "/etc/old.json",
        "__docker_daemon_docker": ["docker", "--host", "unix:///run/old.sock"],
        "__storage_driver_docker_host": "/run/old.sock",
        "__storage_driver_docker": ["docker", "--host", "unix:///run/old.sock"],
    }
