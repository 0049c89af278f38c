"""tests/docs/check_commands.py: every command the documentation shows runs as written (issue 11, "Must show").

The first test runs the full check on README.md, docs/*.md and roles/*/README.md (syntax-check of each playbook
command with its own -e, make -n, remediation-receiver SUB --help); the table shows the checker catches each kind of
mistake it exists for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CHECKER = REPO / "tests" / "docs" / "check_commands.py"


def run_checker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECKER), *args], capture_output=True, text=True, timeout=600,
                          check=False, cwd=REPO)


def test_every_documented_command_runs_as_written() -> None:
    run = run_checker()
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 problem(s)" in run.stderr


BAD = [
    # (markdown, fragment of the problem reported)
    ("```sh\nansible-playbook playbooks/sync_mirror.yml -e mirror_arch=amd64\n```\n", "no -i INVENTORY"),
    ("```sh\nansible-playbook -i inventory playbooks/no_such.yml\n```\n", "playbooks/no_such.yml does not exist"),
    ("`ansible-playbook -i inv postmortem.remediation.remediate.no_such`\n", "does not exist"),
    ("```sh\nansible-playbook -i inv playbooks/sync_mirror.yml -e '{\"a\": [1,'\n```\n", "--syntax-check failed"),
    ("```sh\nmake lab-up LAB_HOSTS=2 && make no-such-target\n```\n", "make target no-such-target does not exist"),
    ("```\nremediation-receiver runs --config c.yml --no-such-option\n```\n", "runs has no option --no-such-option"),
    ("```\nremediation-receiver frobnicate --config c.yml\n```\n", "has no subcommand frobnicate"),
    ("```sh\n(cd extensions && molecule test -s no_such_scenario)\n```\n", "scenario no_such_scenario does not exist"),
    ("```sh\n.venv/bin/pytest -q tests/unit/no_such_test.py\n```\n", "tests/unit/no_such_test.py does not exist"),
    ("`python3 /usr/local/lib/docker-prune/docker_prune.py --no-such`\n", "has no option --no-such"),
    ("```sh\nwget http://127.0.0.1:1/x\n```\n", "no check for 'wget'"),
]


def test_the_checker_reports_each_kind_of_mistake(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A guide\n\n" + "\n".join(markdown for markdown, _problem in BAD))
    run = run_checker(str(page))
    assert run.returncode == 1, run.stdout + run.stderr
    for _markdown, problem in BAD:
        assert problem in run.stdout, (problem, run.stdout)
    assert f" {len(BAD)} problem(s)" in run.stderr, run.stdout + run.stderr


def test_live_commands_and_output_blocks_are_not_checked(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```sh\ndocker exec -it pmr-lab-1 bash\nexport A=1\n```\n\n```\nTASK [x] ***\nok: [h]\n```\n"
                    "```sh\nmake lab-down LAB_PREFIX=pmr-me\n```\n")
    run = run_checker(str(page))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 command(s)" in run.stderr and "2 allow-listed" in run.stderr
