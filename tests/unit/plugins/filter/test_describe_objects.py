"""describe_objects: the one-line lists the task files print (they were Jinja loops), as a table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.postmortem.remediation.plugins.filter.describe_objects import describe_objects

UNBOUNDED = [{"name": "web", "state": "running", "driver": "json-file", "log_bytes": 1048576},
             {"name": "worker", "state": "exited", "driver": "local", "log_bytes": 512}]
CASES = [
    # (items, keyword arguments, the line)
    (UNBOUNDED, {"fields": ["state", "driver", "log_bytes"], "sizes": ["log_bytes"]},
     "web (running, json-file, 1.00 MB); worker (exited, local, 512.00 Bytes)"),
    ([{"name": "api", "why": "restart policy no"}, {"name": "db", "why": "live-restore off"}],
     {"fields": ["why"], "separator": ", "}, "api (restart policy no), db (live-restore off)"),
    ([{"name": "web:1", "size": 1024, "reason": "keep label"}], {"fields": ["size", "reason"], "empty": "none"},
     "web:1 (1024, keep label)"),
    ([], {"fields": ["size", "reason"], "empty": "none"}, "none"),
    (None, {"empty": "none"}, "none"),
    ([], {}, ""),
    ([{"name": "a"}, {"name": "b"}], {}, "a; b"),  # without fields, the names alone
]


@pytest.mark.parametrize(("items", "kwargs", "line"), CASES)
def test_describe_objects(items, kwargs, line):
    assert describe_objects(items, **kwargs) == line


@pytest.mark.parametrize(("items", "words"), [
    ([{"state": "running"}], "has no name"),
    (["web"], "has no name"),
    ([{"name": "web"}], "web has no 'state'"),
])
def test_an_object_without_what_is_asked_is_an_error_naming_it(items, words):
    with pytest.raises(AnsibleFilterError, match=words):
        describe_objects(items, ["state"])


def test_the_filter_renders_in_a_template_as_the_loop_did(tmp_path):
    """The folded message of docker_log_rotation/tasks/report.yml, rendered by Ansible, equals the old loop's."""
    repo = Path(__file__).resolve().parents[4]
    template = tmp_path / "t.j2"
    template.write_text(
        "{% for c in items %}{{ c.name }} ({{ c.state }}, {{ c.driver }}, {{ c.log_bytes | human_readable }})"
        "{{ '' if loop.last else '; ' }}{% endfor %}|"
        "{{ items | postmortem.remediation.describe_objects(['state', 'driver', 'log_bytes'],"
        " sizes=['log_bytes']) }}")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(repo / "build" / "collections"),
               ANSIBLE_HOME=str(repo / "build" / "ansible-home"), ANSIBLE_LOCALHOST_WARNING="false")
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-m",
                           "ansible.builtin.debug", "-a", f"msg={{{{ lookup('template', '{template}') }}}}",
                           "-e", json.dumps({"items": UNBOUNDED})],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    old, new = proc.stdout.split('"msg": "', 1)[1].split('"', 1)[0].split("|")
    assert old == new == "web (running, json-file, 1.00 MB); worker (exited, local, 512.00 Bytes)", proc.stdout


def folded_strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from folded_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from folded_strings(value)


def test_the_callers_keep_their_messages_on_one_line():
    """A more-indented line in a folded (>-) message keeps its line break: the loops' messages had none."""
    repo = Path(__file__).resolve().parents[4]
    callers = [path for pattern in ("roles/*/tasks/*.yml", "playbooks/**/*.yml") for path in repo.glob(pattern)
               if "describe_objects" in path.read_text()]
    assert len(callers) >= 3, callers
    for path in callers:
        for text in folded_strings(yaml.safe_load(path.read_text())):
            if "describe_objects" in text:
                line = text.split("describe_objects", 1)[1]
                assert "\n" not in line.split("}}", 1)[1].split("{{", 1)[0], (path, text)
