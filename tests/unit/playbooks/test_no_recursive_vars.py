"""A variable defined from itself is a template loop that Ansible reports only when a task reads it.

The rename to one name per concept left
``__log_growth_daemon_config: "{{ ... | default(__log_growth_daemon_config) }}"`` in ``remediate/log_growth.yml``:
every run on an alert failed with "Recursive loop detected in template" at the step that bounds new logs, and only
the demo saw it. This check reads every variable defined in a play, role or scenario and refuses a definition whose
template names the variable itself outside a string literal.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
SOURCES = sorted(
    path for folder in ("playbooks", "roles", "demo", "extensions")
    for path in (ROOT / folder).rglob("*.yml")
    if "/files/" not in str(path)
)


def variables(node: object, path: Path):
    """Every (name, template) defined as a variable: under a ``vars:`` key anywhere (play, block, task), or at the top
    of a role's defaults/ or vars/ file. ``set_fact`` is not a definition: it may update a fact from its old value."""
    top_level = path.parent.name in ("defaults", "vars") and path.parent.parent.parent.name == "roles"
    if top_level and isinstance(node, dict):
        yield from ((key, value) for key, value in node.items() if isinstance(value, str) and "{{" in value)
    yield from _vars_blocks(node)


def _vars_blocks(node: object):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "vars" and isinstance(value, dict):
                yield from ((name, text) for name, text in value.items() if isinstance(text, str) and "{{" in text)
            yield from _vars_blocks(value)
    elif isinstance(node, list):
        for item in node:
            yield from _vars_blocks(item)


def self_references(name: str, template: str) -> bool:
    """Whether the template names the variable outside its string literals."""
    code = re.sub(r"'[^']*'|\"[^\"]*\"", "''", template)
    return re.search(r"(?<![\w.])" + re.escape(name) + r"(?![\w])", code) is not None


def test_the_check_finds_a_loop_and_passes_a_plain_default() -> None:
    assert self_references("__a", "{{ a | default(__a) }}")
    assert not self_references("__a", "{{ a | default(b | default('/etc/docker/daemon.json')) }}")
    assert not self_references("__d", "{{ hostvars['localhost']['__d'] }}")
    assert not self_references("level", "{{ out | regex_findall('level for ([0-9.]+)') | first }}")
    play = [{"hosts": "all", "vars": {"__c": "{{ c | default(__c) }}"},
             "tasks": [{"ansible.builtin.set_fact": {"r": "{{ r | combine({}) }}"}}]}]
    assert [name for name, text in variables(play, Path("play.yml")) if self_references(name, text)] == ["__c"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_variable_is_defined_from_itself(path: Path) -> None:
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError:
        pytest.skip("not plain YAML (a template)")
    loops = [f"{name}: {template.strip()}" for document in documents
             for name, template in variables(document, path) if self_references(name, template)]
    assert not loops, f"{path.relative_to(ROOT)} defines variables from themselves: {loops}"
