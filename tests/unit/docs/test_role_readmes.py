"""tests/docs/role_readmes.py: the role READMEs' variable tables are generated from meta/argument_specs.yml, and
`make lint` (--check) fails when one is stale (issue 12, item 6)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
GENERATOR = REPO / "tests" / "docs" / "role_readmes.py"
ROLES = sorted(path.parent.parent.name for path in (REPO / "roles").glob("*/meta/argument_specs.yml"))


_SPEC = importlib.util.spec_from_file_location("role_readmes", GENERATOR)
assert _SPEC and _SPEC.loader
role_readmes = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(role_readmes)


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run(*args: str) -> Result:
    """The generator's main() as `python3 tests/docs/role_readmes.py ARGS` runs it, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = role_readmes.main(list(args))
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def roles_copy(tmp_path: Path) -> Path:
    """A copy of the collection's roles (README and meta only), current as committed."""
    for role in ROLES:
        for name in ("README.md", "meta/argument_specs.yml"):
            target = tmp_path / role / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / "roles" / role / name, target)
    return tmp_path


def test_the_committed_readmes_are_current() -> None:
    result = run("--check")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("role", ROLES)
def test_every_variable_of_every_entry_point_has_a_row(role: str) -> None:
    readme = (REPO / "roles" / role / "README.md").read_text()
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    for entry_point, spec in specs.items():
        for name in spec.get("options") or {}:
            assert f"| `{name}` |" in readme, f"{role} ({entry_point}): no row for {name}"


def _rename_first_option(roles_dir: Path, role: str) -> tuple[str, str]:
    path = roles_dir / role / "meta" / "argument_specs.yml"
    specs = yaml.safe_load(path.read_text())
    options = specs["argument_specs"]["main"]["options"]
    old = next(iter(options))
    new = old + "_renamed"
    specs["argument_specs"]["main"]["options"] = {(new if key == old else key): value for key, value in options.items()}
    path.write_text(yaml.safe_dump(specs, sort_keys=False))
    return old, new


@pytest.mark.parametrize(
    "make_stale",
    [
        pytest.param(lambda d: _rename_first_option(d, "docker_signals"), id="variable renamed in argument_specs"),
        pytest.param(lambda d: (d / "docker_signals/README.md").write_text(
            (d / "docker_signals/README.md").read_text().replace("| bool | `true` |", "| bool | `false` |", 1)),
            id="default edited by hand in the README"),
        pytest.param(lambda d: (d / "docker_signals/README.md").write_text(
            "# docker_signals\n\nNo table at all.\n"), id="README without the block"),
    ],
)
def test_check_fails_on_a_stale_table_and_the_generator_fixes_it(roles_copy: Path, make_stale) -> None:
    assert run("--check", "--roles-dir", str(roles_copy)).returncode == 0
    make_stale(roles_copy)
    stale = run("--check", "--roles-dir", str(roles_copy))
    assert stale.returncode == 1
    assert "docker_signals/README.md" in stale.stderr and "make docs" in stale.stderr
    assert "docker_log_rotation" not in stale.stderr  # only the stale README is named

    written = run("--roles-dir", str(roles_copy))
    assert written.returncode == 0, written.stderr
    assert run("--check", "--roles-dir", str(roles_copy)).returncode == 0


def test_a_rename_replaces_the_row_and_keeps_the_prose(roles_copy: Path) -> None:
    readme = roles_copy / "docker_signals" / "README.md"
    prose = readme.read_text().split("<!-- BEGIN")[0]
    old, new = _rename_first_option(roles_copy, "docker_signals")
    assert run("--roles-dir", str(roles_copy)).returncode == 0
    text = readme.read_text()
    assert f"| `{new}` |" in text and f"| `{old}` |" not in text
    assert text.startswith(prose) and text.count("<!-- BEGIN role variables") == 1
