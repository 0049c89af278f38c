"""log_growth.yml with log_growth_recreate on a real lab host (systemd + dockerd in a container, reached with docker
exec only): a container created before any log limit floods its json-file log; the playbook cuts it, re-creates it
bounded (same name, labels, env, restart policy, volume) and checks that on the engine; a container started with --rm
is refused with its reason and left running; check mode changes nothing; a second run changes nothing; without the
flag nothing is re-created.

One lab host named LAB_PREFIX-recreate-1 (lab_names.py), created and removed by this module.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_names import lab_prefix
from test_remediate_playbooks import REPO, log_size, play, sh, wait_for_burst

PREFIX = lab_prefix("recreate")
HOST = f"{PREFIX}-1"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    lab = ["bash", str(REPO / "tests/lab/lab.sh")]
    env = dict(os.environ, LAB_INVENTORY=str(tmp_path_factory.mktemp("lab") / "lab.ini"))
    subprocess.run([*lab, "down", PREFIX], check=True, cwd=REPO, env=env)
    subprocess.run([*lab, "up", "1", PREFIX], check=True, cwd=REPO, env=env)
    path = tmp_path_factory.mktemp("recreate") / "inventory.ini"
    path.write_text(
        f"[docker_hosts]\n{HOST}\n\n[docker_hosts:vars]\n"
        "ansible_connection=community.docker.docker\nansible_python_interpreter=/usr/bin/python3\n"
    )
    yield path
    if not os.environ.get("REMEDIATE_KEEP_LAB"):
        subprocess.run([*lab, "down", PREFIX], check=False, cwd=REPO, env=env)


def inspect(name: str) -> dict:
    return json.loads(sh(HOST, f"docker inspect {name}"))[0]


def test_log_growth_recreates_unbounded_containers_only_when_asked(inventory: Path) -> None:
    line = "L" * 100
    # 5 MB at once (once: the mark is in its volume, so the copy does not burst again), then about 1 kB/s; the
    # host's dockerd has no log limits, as before the docker_log_rotation role.
    sh(HOST, "docker run -d --restart unless-stopped --name flood --label team=payments -e GREETING=hello "
             "-v flooddata:/data pmr-workload:latest sh -c "
             f"'[ -e /data/burst-done ] || {{ yes {line} | head -c 5000000; echo > /data/burst-done; }}; "
             f"trap \"exit 0\" TERM; while true; do yes {line} | head -c 1010; sleep 1; done' >/dev/null")
    sh(HOST, "docker run -d --rm --name ephemeral pmr-workload:latest sh -c "
             "'trap \"exit 0\" TERM; while true; do echo x; sleep 1; done' >/dev/null")
    wait_for_burst(HOST, "flood", "/data/burst-done", 4 * 1024**2)
    flood, ephemeral = inspect("flood"), inspect("ephemeral")
    args = ["-l", HOST, "-e", "log_growth_max_size=4M", "-e", "log_growth_keep_tail=64K",
            "-e", "log_growth_rotation=false", "-e", "log_growth_rotation_max_size=1m",
            "-e", "log_growth_rotation_max_file=2"]

    # Default: nothing re-created, the unbounded ones named.
    run = play(inventory, "log_growth", *args)
    assert run.rc == 0, run.text[-3000:]
    assert "container(s) still write unbounded logs: " in run.text and "log_growth_recreate=true" in run.text
    assert inspect("flood")["Id"] == flood["Id"]

    recreate = [*args, "-e", "log_growth_recreate=true"]
    run = play(inventory, "log_growth", "--check", *recreate)
    assert run.rc == 0, run.text[-3000:]
    assert "would re-create (restart) flood with the limits" in run.text
    assert "REFUSED to re-create ephemeral" in run.text and "AutoRemove" in run.text
    assert inspect("flood")["Id"] == flood["Id"]
    assert inspect("flood")["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {}}

    run = play(inventory, "log_growth", *recreate)
    assert run.rc == 0, run.text[-3000:]
    assert "re-created (restarted) flood with the limits" in run.text
    assert "1 container(s) still write unbounded logs: ephemeral (refused above)" in run.text
    new = inspect("flood")  # checked here, on the host
    assert new["Id"] != flood["Id"] and new["State"]["Running"] is True
    assert new["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
    assert new["Config"]["Labels"] == flood["Config"]["Labels"] and "GREETING=hello" in new["Config"]["Env"]
    assert new["HostConfig"]["RestartPolicy"] == {"Name": "unless-stopped", "MaximumRetryCount": 0}
    assert [(m["Name"], m["Destination"]) for m in new["Mounts"]] == [("flooddata", "/data")]
    assert log_size(HOST, "flood") < 1024**2
    still = inspect("ephemeral")
    assert still["Id"] == ephemeral["Id"] and still["State"]["Running"] is True

    again = play(inventory, "log_growth", *recreate)
    assert again.rc == 0 and again.changed(HOST) == 0, again.text[-3000:]
    assert inspect("flood")["Id"] == new["Id"]
    sh(HOST, "docker rm -f flood ephemeral >/dev/null; docker volume rm flooddata >/dev/null")
