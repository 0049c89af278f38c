"""The artifact of `ansible-galaxy collection build` holds the collection and no development artifact (issue 12,
item 7): galaxy.yml's build_ignore keeps out the virtual environment, egg-info, caches, lab inventories, build and
test outputs, benchmarks and CI plumbing, wherever they appear in the tree."""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
GALAXY = REPO / ".venv" / "bin" / "ansible-galaxy"

# A member of the tarball matching one of these is a development artifact.
FORBIDDEN = [
    (re.compile(r"(^|/)[^/]*\.egg-info(/|$)"), "egg-info"),
    (re.compile(r"(^|/)(__pycache__|\.pytest_cache|\.ruff_cache|\.mypy_cache|\.cache)(/|$)"), "cache"),
    (re.compile(r"\.py[co]$"), "compiled Python"),
    (re.compile(r"^changelogs/\.plugin-cache\.yaml$"), "antsibull-changelog cache"),
    (re.compile(r"^(lab|build|bench|\.venv|\.ci|\.config|\.git)(/|$)"), "development directory"),
    (re.compile(r"^tests/(output|lab/cache)(/|$)"), "test output"),
    (re.compile(r"\.tar\.gz$"), "earlier artifact"),
]
# What a user installs: it must be there.
REQUIRED = ["MANIFEST.json", "FILES.json", "README.md", "CHANGELOG.md", "meta/runtime.yml",
            "changelogs/changelog.yaml", "extensions/prometheus/rules/postmortem_remediation.rules.yml",
            "extensions/eda/rulebooks/postmortem_remediation.yml", "pyproject.toml",
            "remediation_receiver/cli.py"]
# Artifacts planted in a copy of the tree, one of each kind the Makefile, pip, pytest, ruff, mypy, Molecule and
# antsibull-changelog leave behind.
DECOYS = [
    ".venv/bin/python", "remediation_receiver.egg-info/PKG-INFO",
    "plugins/modules/__pycache__/safe_sync.cpython-311.pyc",
    "tests/unit/__pycache__/x.pyc", ".pytest_cache/v/cache/lastfailed", "tests/unit/.pytest_cache/README.md",
    ".ruff_cache/CACHEDIR.TAG", ".mypy_cache/3.11/x.json", "plugins/.mypy_cache/x.json", ".cache/x",
    "build/collections/x", "build/demo/pmr-demo/ports.yml", "lab/inventory.ini", "bench/out/results.json",
    "tests/output/junit/x.xml", "tests/lab/cache/rootfs.tar", ".ci/run", "changelogs/.plugin-cache.yaml",
    "postmortem-remediation-0.0.9.tar.gz",
]


def build(tree: Path, output: Path) -> list[str]:
    run = subprocess.run([str(GALAXY), "collection", "build", "--force", "--output-path", str(output), str(tree)],
                         capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    (artifact,) = output.glob("postmortem-remediation-*.tar.gz")
    with tarfile.open(artifact) as tar:
        return tar.getnames()


def development_artifacts(names: list[str]) -> list[str]:
    return [f"{name} ({why})" for name in names for pattern, why in FORBIDDEN if pattern.search(name)]


def test_the_artifact_of_this_tree_holds_no_development_artifact(tmp_path: Path) -> None:
    names = build(REPO, tmp_path)
    assert development_artifacts(names) == []
    missing = [name for name in REQUIRED if name not in names]
    assert missing == []
    modules = {path.name for path in (REPO / "plugins" / "modules").glob("*.py")}
    assert modules <= {Path(name).name for name in names if name.startswith("plugins/modules/")}


@pytest.fixture
def tree_with_every_artifact(tmp_path: Path) -> Path:
    """A copy of the committed tree with one artifact of each kind planted in it."""
    tree = tmp_path / "tree"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (raw.decode() for raw in files)):
        source = REPO / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name, follow_symlinks=False)
    for name in DECOYS:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("a development artifact\n")
    return tree


def test_every_kind_of_development_artifact_stays_out(tree_with_every_artifact: Path, tmp_path: Path) -> None:
    names = build(tree_with_every_artifact, tmp_path / "out")
    assert development_artifacts(names) == []
    planted = set(DECOYS)
    assert not planted & set(names)
    # The patterns do match every decoy (the check above can fail).
    assert all(development_artifacts([name]) for name in DECOYS)
