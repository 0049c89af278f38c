"""meta/runtime.yml: the action groups make `module_defaults` set a shared option once, and the old module name
docker_host_facts still runs through its redirect with a deprecation warning (issue 12, items 1 and 5).
Real ansible-playbook on localhost; the engine is the small fake of tests/unit/conftest.py, so a module that ignored
the group's docker_host would read this machine's real engine instead and the data-root would not match."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
RUNTIME = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())


def play(tmp_path: Path, tasks: list[dict[str, Any]], module_defaults: dict[str, Any]) -> tuple[int, str, dict]:
    """Run tasks on localhost under module_defaults; return rc, the output and the registered results by name."""
    results = tmp_path / "results.json"
    results.unlink(missing_ok=True)
    content = "{{ {" + ", ".join(f"'{t['register']}': {t['register']}" for t in tasks) + "} | to_json }}"
    playbook = [{
        "name": "Shared options set once",
        "hosts": "localhost",
        "gather_facts": False,
        "module_defaults": module_defaults,
        "tasks": [*tasks, {
            "name": "Write what the tasks returned",
            "ansible.builtin.copy": {"dest": str(results), "mode": "0600", "content": content},
        }],
    }]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(playbook))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_FORCE_COLOR="false", ANSIBLE_DEPRECATION_WARNINGS="true")
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=180, check=False)
    registered = json.loads(results.read_text()) if results.exists() else {}
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split()), registered


def test_the_docker_group_sets_docker_host_and_timeout_once_for_every_engine_module(fake_engine, tmp_path):
    tasks = [
        {"name": "Read the host", "postmortem.remediation.docker_host_info": {}, "register": "host"},
        {"name": "Plan a reclaim", "postmortem.remediation.docker_reclaim": {"target_free": "1K"},
         "check_mode": True, "register": "reclaim"},
    ]
    defaults = {"group/postmortem.remediation.docker": {"docker_host": f"unix://{tmp_path / 'docker.sock'}",
                                                        "timeout": 7}}
    rc, output, registered = play(tmp_path, tasks, defaults)
    assert rc == 0, output
    # Both asked the fake engine (which knows no /version): not the real engine at /var/run/docker.sock.
    assert "the fake engine does not answer GET /version" in registered["host"]["docker"]["error"]
    assert registered["reclaim"]["data_root"] == str(tmp_path), registered["reclaim"]
    assert fake_engine.requests.count(("GET", "/info")) >= 2, fake_engine.requests


def test_the_deletion_guard_group_sets_on_refusal_once(tmp_path):
    items = tmp_path / "items"
    items.mkdir()
    (items / "a.bak").write_text("a")
    tasks = [{"name": "Clean up against an empty reference", "register": "cleanup",
              "postmortem.remediation.guarded_cleanup": {
                  "path": str(items), "reference_command": ["true"],
                  "quarantine_dir": str(tmp_path / "quarantine")}}]
    rc, output, registered = play(tmp_path, tasks, {"group/postmortem.remediation.deletion_guard": {
        "on_refusal": "report", "list_limit": 3}})
    assert rc == 0, output  # the group's on_refusal=report: the refusal is data, the play goes on
    assert registered["cleanup"]["refused"] is True
    assert "reference" in registered["cleanup"]["reason"], registered["cleanup"]["reason"]
    assert (items / "a.bak").exists()
    rc, output, registered = play(tmp_path, tasks, {})
    assert rc != 0 and "refused" in output, output  # without the group, the module's own default: fail
    assert registered == {}  # the play stopped at the refusal


def test_the_old_name_docker_host_facts_still_runs_and_warns(fake_engine, tmp_path):
    tasks = [{"name": "Read the host by the old name", "postmortem.remediation.docker_host_facts": {
        "docker_socket": str(tmp_path / "docker.sock")}, "register": "host"}]  # the old option name too
    rc, output, registered = play(tmp_path, tasks, {})
    assert rc == 0, output
    assert re.search(r"\[DEPRECATION WARNING\]: postmortem\.remediation\.docker_host_facts has been deprecated\. "
                     r"It returns no ansible_facts.*docker_host_info.*version 2\.0\.0", output), output
    assert "the fake engine does not answer GET /version" in registered["host"]["docker"]["error"]


def documented_fragments(module: Path) -> list[str]:
    source = module.read_text()
    doc = yaml.safe_load(re.search(r'DOCUMENTATION = r"""(.*?)"""', source, re.S).group(1))
    return doc.get("extends_documentation_fragment", [])


def test_the_action_groups_hold_exactly_the_modules_that_take_their_options():
    modules = sorted(path for path in (REPO / "plugins" / "modules").glob("*.py"))
    by_fragment = {
        group: sorted(m.stem for m in modules if f"postmortem.remediation.{fragment}" in documented_fragments(m))
        for group, fragment in (("docker", "docker_api"), ("deletion_guard", "deletion_guard"))
    }
    assert by_fragment["docker"], "no module documents the Docker API options"
    assert sorted(RUNTIME["action_groups"]["docker"]) == by_fragment["docker"]
    assert sorted(RUNTIME["action_groups"]["deletion_guard"]) == by_fragment["deletion_guard"]
    for module in modules:
        fragments = documented_fragments(module)
        assert fragments[0] == "postmortem.remediation.attributes", module.name  # one attributes style for all
        for group in RUNTIME["action_groups"]:
            member = module.stem in RUNTIME["action_groups"][group]
            assert (f"postmortem.remediation.attributes.actiongroup_{group}" in fragments) == member, module.name
