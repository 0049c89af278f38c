"""README.md is a map of the collection, and the documentation holds together (issue 12, item 8).

- README starts with the two commands and lists, with a link each, every module, filter, role, playbook, the rules
  file, the EDA rulebook and the receiver;
- every incident guide in docs/ follows the one template;
- every relative link of README.md, docs/*.md and the role READMEs reaches a file (and a heading, when it names one);
- nothing points outside the repository (`../shared`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
README = (REPO / "README.md").read_text()
GUIDES = ["log_rotation", "storage_driver", "disk_pressure", "mirror_sync", "backup_cleanup"]
TEMPLATE = ["Incident", "Symptom and alert", "Prevention", "Remediation", "What the guard refuses", "How it is tested"]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "roles").glob("*/README.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _outside_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _content() -> list[str]:
    """Every path the README must link to, relative to the repository root."""
    paths = [str(path.relative_to(REPO)) for path in sorted((REPO / "plugins" / "modules").glob("*.py"))]
    paths += [str(path.relative_to(REPO)) for path in sorted((REPO / "plugins" / "filter").glob("*.yml"))]
    paths += [f"roles/{path.name}/README.md" for path in sorted((REPO / "roles").iterdir()) if path.is_dir()]
    paths += [str(path.relative_to(REPO)) for path in sorted((REPO / "playbooks").rglob("*.yml"))]
    paths += ["extensions/prometheus/rules/postmortem_remediation.rules.yml",
              "extensions/eda/rulebooks/postmortem_remediation.yml", "remediation_receiver/"]
    return paths


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"^```sh\n(.*?)^```", README, re.M | re.S)
    assert first_block and README.index(first_block.group(0)) < README.index("\n## ")
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]


@pytest.mark.parametrize("path", _content())
def test_readme_lists_and_links_every_piece_of_content(path: str) -> None:
    targets = LINK.findall(README)
    assert path in targets, f"README.md has no link to {path} in its included-content tables"


@pytest.mark.parametrize("section", ["## Requirements and tested versions", "## Included content", "## The incidents",
                                     "## Where to change what"])
def test_readme_has_the_map_sections(section: str) -> None:
    assert f"\n{section}\n" in README


@pytest.mark.parametrize("guide", GUIDES)
def test_every_incident_guide_follows_the_template(guide: str) -> None:
    text = _outside_fences((REPO / "docs" / f"{guide}.md").read_text())
    assert text.startswith("# ")
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings == TEMPLATE


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return heading.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(heading) for heading in re.findall(r"^#{1,6} (.+)$", _outside_fences(path.read_text()), re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(REPO)) for doc in DOCS])
def test_every_relative_link_reaches_a_file_and_heading(doc: Path) -> None:
    broken = []
    for target in LINK.findall(_outside_fences(doc.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue
        path, anchor = target.partition("#")[::2]
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor}")
    assert broken == []


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(REPO)) for doc in DOCS])
def test_nothing_points_outside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    assert "../shared" not in text and "shared/ARCHITECTURE" not in text
    for target in LINK.findall(text):
        if not re.match(r"^[a-z]+:", target):
            assert (doc.parent / target.partition("#")[0]).resolve().is_relative_to(REPO), target
