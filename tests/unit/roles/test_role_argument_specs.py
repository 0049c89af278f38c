"""Every role's defaults/main.yml and meta/argument_specs.yml say the same thing: same names, same defaults, types."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES_DIR = Path(__file__).resolve().parents[3] / "roles"
ROLES = sorted(path.parent.parent for path in ROLES_DIR.glob("*/meta/argument_specs.yml"))
# One switch for every role that restarts dockerd, under one name (docs/log_rotation.md, docs/storage_driver.md).
SHARED = {"docker_restart_refuse_stopping_containers": {"docker_log_rotation", "docker_storage_driver"}}

TYPE_CHECKS = {
    "bool": lambda value: isinstance(value, bool),
    "int": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "float": lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    "str": lambda value: isinstance(value, str),
    "path": lambda value: isinstance(value, str),
    "dict": lambda value: isinstance(value, dict),
    "list": lambda value: isinstance(value, list),
    "raw": lambda value: True,
}


def _load(role: Path) -> tuple[dict, dict]:
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    return defaults, options


@pytest.mark.parametrize("role", ROLES, ids=[role.name for role in ROLES])
def test_defaults_and_argument_specs_mirror_each_other(role):
    defaults, options = _load(role)
    assert sorted(defaults) == sorted(options), "names differ between defaults/main.yml and meta/argument_specs.yml"
    for name, spec in options.items():
        assert name.startswith(role.name + "_") or role.name in SHARED.get(name, ()), f"{name} lacks the role prefix"
        assert spec.get("description"), f"{name} has no description"
        kind = spec.get("type", "str")
        assert TYPE_CHECKS[kind](defaults[name]), f"{name}: default {defaults[name]!r} is not a {kind}"
        if spec.get("required"):
            continue  # a required input's placeholder in defaults/main.yml is never used
        assert spec.get("default") == defaults[name], f"{name}: {spec.get('default')!r} != {defaults[name]!r}"
        if "choices" in spec:
            assert defaults[name] in spec["choices"], f"{name}: default {defaults[name]!r} not among the choices"


@pytest.mark.parametrize("name", sorted(SHARED))
def test_a_shared_switch_means_the_same_in_every_role(name):
    specs = []
    for role in ROLES:
        if role.name in SHARED[name]:
            defaults, options = _load(role)
            specs.append((defaults[name], options[name]["type"], options[name]["default"]))
    assert len(specs) == len(SHARED[name]) and len(set(specs)) == 1, specs
