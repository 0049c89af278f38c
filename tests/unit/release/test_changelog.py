"""Release notes kept with antsibull-changelog (issue 12, item 7): CHANGELOG.md is generated from
changelogs/changelog.yaml, every module, filter, role and playbook is announced, and `make lint` refuses a bad
fragment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHANGELOG = REPO / ".venv" / "bin" / "antsibull-changelog"


def antsibull(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHANGELOG), *args], cwd=tree, capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture
def release_tree(tmp_path: Path) -> Path:
    """galaxy.yml, changelogs/ and CHANGELOG.md as committed, in a directory of their own."""
    shutil.copy(REPO / "galaxy.yml", tmp_path)
    shutil.copy(REPO / "CHANGELOG.md", tmp_path)
    shutil.copytree(REPO / "changelogs", tmp_path / "changelogs")
    return tmp_path


def test_changelog_md_is_what_antsibull_changelog_generates(release_tree: Path) -> None:
    committed = (release_tree / "CHANGELOG.md").read_text()
    run = antsibull(release_tree, "generate")
    assert run.returncode == 0, run.stderr
    assert (release_tree / "CHANGELOG.md").read_text() == committed, "CHANGELOG.md is stale: run `make changelog`"


def _announced() -> str:
    """Every name changelog.yaml announces as new, the text of its releases (playbooks in subdirectories, such as
    remediate.disk_pressure, cannot be objects: antsibull-changelog refuses a dotted name), and the fragments."""
    releases = yaml.safe_load((REPO / "changelogs" / "changelog.yaml").read_text())["releases"]
    names = []
    for release in releases.values():
        names += [entry["name"] for entry in release.get("modules", [])]
        for entries in (release.get("plugins") or {}).values():
            names += [entry["name"] for entry in entries]
        for entries in (release.get("objects") or {}).values():
            names += [entry["name"] for entry in entries]
        for entries in (release.get("changes") or {}).values():
            names += entries if isinstance(entries, list) else [entries]
    fragments = [path.read_text() for path in (REPO / "changelogs" / "fragments").glob("*.y*ml")]
    return "\n".join(names + fragments)


def _content() -> list[str]:
    modules = [path.stem for path in (REPO / "plugins" / "modules").glob("*.py")]
    filters = [yaml.safe_load(path.read_text())["DOCUMENTATION"]["name"]
               for path in (REPO / "plugins" / "filter").glob("*.yml")]
    roles = [path.name for path in (REPO / "roles").iterdir() if (path / "meta" / "argument_specs.yml").is_file()]
    playbooks = [".".join(path.relative_to(REPO / "playbooks").with_suffix("").parts)
                 for path in (REPO / "playbooks").rglob("*.yml") if "shared" not in path.parts]
    return sorted(modules + filters + roles + playbooks)


@pytest.mark.parametrize("name", _content())
def test_every_module_filter_role_and_playbook_is_announced(name: str) -> None:
    assert name in _announced(), f"{name} is in no release of changelogs/changelog.yaml and in no fragment"


@pytest.mark.parametrize(
    "fragment",
    [
        pytest.param("minor_change:\n  - a section antsibull-changelog does not know.\n", id="unknown section"),
        pytest.param("bugfixes: a string where a list belongs\n", id="not a list"),
        pytest.param("bugfixes:\n  - [unterminated\n", id="not YAML"),
    ],
)
def test_lint_refuses_a_bad_fragment(release_tree: Path, fragment: str) -> None:
    assert antsibull(release_tree, "lint").returncode == 0
    (release_tree / "changelogs" / "fragments" / "bad.yml").write_text(fragment)
    run = antsibull(release_tree, "lint")
    assert run.returncode != 0 and "bad.yml" in run.stdout + run.stderr
