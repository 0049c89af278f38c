"""One lab-host definition for every Molecule scenario (issue 12, item 9): the scenarios name their hosts, the
settings of a lab host live once in extensions/molecule/shared/vars/lab_host.yml, and Molecule finds the base
configuration that creates them from both places it is run from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
MOLECULE = REPO / "extensions" / "molecule"
SCENARIOS = sorted(path.parent for path in MOLECULE.glob("*/molecule.yml"))
# What a scenario may say about one of its hosts; everything else is the shared definition's.
PER_HOST = {"name", "groups", "env", "volumes"}


def _platforms(scenario: Path) -> list[dict]:
    return yaml.safe_load((scenario / "molecule.yml").read_text())["platforms"]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[path.name for path in SCENARIOS])
def test_a_scenario_names_its_hosts_and_nothing_else_about_them(scenario: Path) -> None:
    config = yaml.safe_load((scenario / "molecule.yml").read_text())
    assert "driver" not in config and "dependency" not in config, "these come from extensions/molecule/config.yml"
    for platform in _platforms(scenario):
        extra = sorted(set(platform) - PER_HOST)
        assert not extra, f"{platform['name']}: {extra} belong in lab_host.yml"


def test_host_names_are_unique_across_scenarios() -> None:
    names = [platform["name"] for scenario in SCENARIOS for platform in _platforms(scenario)]
    assert len(names) == len(set(names)), names


def test_the_base_configuration_creates_hosts_from_the_one_definition() -> None:
    base = yaml.safe_load((MOLECULE / "config.yml").read_text())
    assert base["driver"]["name"] == "docker"
    playbooks = base["provisioner"]["playbooks"]
    for step in ("create", "destroy"):
        assert (MOLECULE / "any_scenario" / playbooks[step]).resolve().is_file()
    create = (MOLECULE / "shared" / "create.yml").read_text()
    assert "vars/lab_host.yml" in create and "pmr_lab_host | combine(item)" in create
    host = yaml.safe_load((MOLECULE / "shared" / "vars" / "lab_host.yml").read_text())["pmr_lab_host"]
    assert host["image"] == "pmr-lab:latest" and host["command"] == "/sbin/init"


def test_molecule_finds_the_base_configuration_from_extensions_too() -> None:
    # Molecule looks for .config/molecule/config.yml at the repository root from any directory in it, and for
    # extensions/molecule/config.yml only from the collection root; `make molecule` runs from extensions/.
    link = REPO / ".config" / "molecule" / "config.yml"
    assert link.is_symlink() and link.resolve() == (MOLECULE / "config.yml").resolve()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[path.name for path in SCENARIOS])
def test_own_create_and_destroy_playbooks_import_the_shared_ones(scenario: Path) -> None:
    for step in ("create", "destroy"):
        own = scenario / f"{step}.yml"
        if own.is_file():
            plays = yaml.safe_load(own.read_text())
            assert {"ansible.builtin.import_playbook": f"../shared/{step}.yml"}.items() <= \
                next(play for play in plays if "ansible.builtin.import_playbook" in play).items()
