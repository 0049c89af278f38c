"""Role variables renamed in 1.0.0 (one name per concept, docs/names.md) are still read under their old names until
2.0.0, with a deprecation message. Real ansible-playbook on localhost runs each role's tasks/renamed.yml with the
role's own table of renames (vars/main.yml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ROLES = sorted(path.parent.parent.name for path in (REPO / "roles").glob("*/tasks/renamed.yml"))


def renames(role: str) -> dict[str, str]:
    return yaml.safe_load((REPO / "roles" / role / "vars" / "main.yml").read_text())[f"__{role}_renamed"]


def renamed_tasks(role: str) -> Path:
    return REPO / "roles" / role / "tasks" / "renamed.yml"


def include_renamed(role: str) -> dict:
    """The task of the role's tasks/main.yml that includes tasks/renamed.yml, with its condition, as written."""
    tasks = yaml.safe_load((REPO / "roles" / role / "tasks" / "main.yml").read_text())
    task = next(task for task in tasks if task.get("ansible.builtin.include_tasks", {}).get("file") == "renamed.yml")
    task = dict(task, name=f"Read those of {role}")
    task["ansible.builtin.include_tasks"] = dict(task["ansible.builtin.include_tasks"], file=str(renamed_tasks(role)))
    return task


def run_renamed(tmp_path: Path, old_values: dict[str, object]) -> tuple[int, str, dict]:
    """One play runs every role's tasks/renamed.yml as its tasks/main.yml includes it (two runs in all, to keep the
    suite quick)."""
    new_names = sorted(new for role in ROLES for new in renames(role).values())
    results = tmp_path / "new.json"
    playbook = [{
        "name": "Read the renamed variables", "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(REPO / "roles" / role / "vars" / "main.yml") for role in ROLES],
        "vars": old_values,
        "tasks": [
            *(include_renamed(role) for role in ROLES),
            {"name": "Write the new names' values", "ansible.builtin.copy": {
                "dest": str(results), "mode": "0600",
                "content": "{{ {" + ", ".join(f"'{name}': {name} | default('UNSET')" for name in new_names)
                           + "} | to_json }}"}},
        ],
    }]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(playbook))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_FORCE_COLOR="false")
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split()), json.loads(results.read_text())


def test_every_renamed_role_variable_is_a_current_argument_spec_option():
    assert ROLES, "no role has tasks/renamed.yml"
    for role in ROLES:
        options = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
        options = options["argument_specs"]["main"]["options"]
        assert "file: renamed.yml" in (REPO / "roles" / role / "tasks" / "main.yml").read_text(), role
        for old, new in renames(role).items():
            assert new in options and old not in options, (role, old, new)


def test_an_old_name_is_read_as_the_new_one_with_a_deprecation(tmp_path):
    old_values = {old: f"value-of-{old}" for role in ROLES for old in renames(role)}
    rc, output, new = run_renamed(tmp_path, old_values)
    assert rc == 0, output
    for role in ROLES:
        for old, name in renames(role).items():
            assert new[name] == f"value-of-{old}", (name, new)
            assert f"DEPRECATED: {old} is renamed {name} in postmortem.remediation 1.0.0" in output, output


def test_without_an_old_name_nothing_is_set_and_nothing_is_said(tmp_path):
    rc, output, new = run_renamed(tmp_path, {})
    assert rc == 0, output
    assert set(new.values()) == {"UNSET"}, new
    assert "DEPRECATED" not in output, output
    # one skipped include per role, not the two loops of tasks/renamed.yml
    assert "included:" not in output and "Read a variable set under its name before 1.0.0" not in output, output
