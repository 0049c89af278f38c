"""Every command in README.md, docs/*.md and roles/*/README.md must run as written.

Extracts the shell commands of the documentation (fenced blocks tagged sh/bash/shell/console, untagged blocks that
start with a known command, and inline code spans that start with one) and checks what can be checked without a
live system:

  static (make lint):  every file, playbook (path or FQCN), Molecule scenario, make target and option named exists;
                       every ansible-playbook command that names a playbook has -i (without it the playbooks
                       refuse with "resolves to 0 host(s)");
  full (make unit):    also `ansible-playbook --syntax-check` of each playbook command with its own -e/-l options,
                       `make -n TARGET` for each make command, and `remediation-receiver SUB --help` holding every
                       option the command uses.

Commands that need a live system (a lab host, a mirror, a running service) are allow-listed by their first word
in LIVE; a command whose first word is neither checked nor allow-listed is an error, so the list stays honest.

  python3 tests/docs/check_commands.py [--static] [FILE.md ...]
Exit status 0 when every command passes, 1 otherwise (each problem printed as FILE:LINE: command: problem).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
COLLECTION = "postmortem.remediation."
SHELL_LANGS = {"sh", "bash", "shell", "console"}
CHECKED = {"ansible-playbook", "make", "remediation-receiver", "pytest", "molecule", "bash", "python3", "cd"}
# First words of commands that need a live system or only set up the shell: reported, not run.
LIVE = {
    "export": "sets the shell's environment",
    "docker": "needs the lab host it names",
    "rsync": "the incident's own command, shown as the mistake",
    "systemctl": "needs a host running the service",
    "journalctl": "needs a host running the service",
    "curl": "needs a running receiver",
    "amtool": "needs a running Alertmanager",
    "promtool": "needs the rules and a Prometheus install",
    "cat": "reads a file of a running demo",
    "printf": "writes the reader's variables file",
    "python": "python -m demo replay needs the demo that make demo left running",
    "ansible-rulebook": "needs Java and a rulebook kept running (tests/integration/test_eda_rulebook.py runs it)",
}
KNOWN = CHECKED | set(LIVE) | {".venv/bin/pytest", ".venv/bin/molecule", "../.venv/bin/molecule",
                               "tests/lab/lab.sh", "tests/lab/loopfs.sh"}
# Placeholders the docs use for values the reader supplies: the checks treat them as values, never as names.
PLACEHOLDER = re.compile(r"^(\.\.\.|…|[A-Z][A-Z_]*[A-Z](\.json)?)$")


@dataclass
class Command:
    source: str  # FILE:LINE
    text: str  # the command as the docs show it, on one line
    argv: list[str]
    cwd: Path  # after a `cd` earlier in the same line


def documentation_files() -> list[Path]:
    names = ["README.md", *sorted(glob.glob("docs/*.md")), *sorted(glob.glob("roles/*/README.md"))]
    return [REPO / name for name in names if (REPO / name).is_file()]


def _first_word(line: str) -> str:
    line = line.strip().lstrip("($ ")
    return line.split()[0] if line.split() else ""


def _logical_lines(body: str, first_line: int) -> Iterator[tuple[int, str]]:
    """Lines of a shell block with backslash continuations and open quotes joined, comments and prompts kept."""
    pending, start = "", first_line
    for offset, line in enumerate(body.splitlines()):
        if not pending:
            start = first_line + offset
        pending = (pending + " " + line.strip()) if pending else line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on on the next line
            continue
        if pending.strip():
            yield start, pending.strip()
        pending = ""
    if pending.strip():
        yield start, pending.strip()


def extract(path: Path) -> Iterator[tuple[int, str]]:
    """(line, command line) for every shell command the file shows."""
    text = path.read_text()
    fenced = list(re.finditer(r"^```([\w-]*)[^\n]*\n(.*?)^```", text, re.M | re.S))
    for match in fenced:
        lang, body = match.group(1).lower(), match.group(2)
        first = next((line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
        if lang in SHELL_LANGS or (lang == "" and _first_word(first) in KNOWN):
            yield from _logical_lines(body, text.count("\n", 0, match.start()) + 2)
    outside = text
    for match in reversed(fenced):
        outside = outside[:match.start()] + "\n" * match.group(0).count("\n") + outside[match.end():]
    for match in re.finditer(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)", outside):
        span = " ".join(match.group(1).split())
        line_number = text.count("\n", 0, match.start()) + 1
        if span.startswith("remediation-receiver ") and " | " in span:
            # Prose lists the subcommands as alternatives: `remediation-receiver check | runs | show RUN_ID`.
            for alternative in span[len("remediation-receiver "):].split(" | "):
                yield line_number, "remediation-receiver " + alternative.strip()
        elif _first_word(span) in CHECKED - {"cd", "bash", "python3"} or span.startswith("python3 /"):
            yield line_number, span


def split_commands(source: str, line: str) -> Iterator[Command]:
    """One Command per simple command of the line (split on && ; || |), with `cd` applied to what follows."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    cwd, argv = REPO, []
    try:
        tokens = list(lexer)
    except ValueError as exc:
        yield Command(source, line, ["<unparsable>", str(exc)], cwd)
        return
    for token in [*tokens, ";"]:
        if token and set(token) <= set(";&|()"):
            if argv:
                yield Command(source, line, argv, cwd)
                if argv[0] == "cd" and len(argv) == 2:
                    cwd = (cwd / argv[1]).resolve()
            argv = []
        else:
            argv.append(token.strip("[]") if token not in ("[", "]") else "")
            if not argv[-1]:
                argv.pop()


# --- the checks -------------------------------------------------------------------------------------------------
def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z0-9][a-z0-9_-]*):(?!=)", text, re.M))


def playbook_path(name: str) -> Path | None:
    if name.startswith(COLLECTION):
        return REPO / "playbooks" / (name[len(COLLECTION):].replace(".", "/") + ".yml")
    if name.endswith((".yml", ".yaml")):
        return REPO / name
    return None


def ansible_env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
                ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_FORCE_COLOR="false",
                ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
                PATH=f"{BIN}:{os.environ.get('PATH', '')}")


def check_ansible_playbook(cmd: Command, full: bool) -> list[str]:
    args = cmd.argv[1:]
    playbooks = [a for a in args if playbook_path(a) is not None]
    if not playbooks:
        return []  # a fragment such as `ansible-playbook --check --diff`: nothing to run as written
    problems = []
    for name in playbooks:
        if not playbook_path(name).is_file():
            problems.append(f"playbook {name} does not exist ({playbook_path(name).relative_to(REPO)})")
    if "-i" not in args and not any(a.startswith(("-i", "--inventory")) for a in args):
        problems.append("no -i INVENTORY: without it the playbook sees no host and refuses")
    if problems or not full:
        return problems
    keep, skip_next = [], False
    for index, arg in enumerate(args):  # the command's own options, minus the inventory
        if skip_next:
            skip_next = False
            continue
        if arg in ("-i", "--inventory", "-l", "--limit"):  # the reader's inventory and its hosts
            skip_next = True
            continue
        if arg in playbooks:
            keep.append(str(playbook_path(arg)))
            continue
        keep.append(arg)
        if arg in ("-e", "--extra-vars", "-t", "--tags") and index + 1 < len(args):
            keep.append(args[index + 1])
            skip_next = True
    run = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", *keep],
                         capture_output=True, text=True, env=ansible_env(), timeout=120, check=False)
    if run.returncode != 0:
        problems.append("ansible-playbook --syntax-check failed: " + " ".join((run.stderr or run.stdout).split())[:400])
    return problems


def check_make(cmd: Command, full: bool) -> list[str]:
    targets = [a for a in cmd.argv[1:] if not a.startswith("-") and "=" not in a]
    known = makefile_targets()
    problems = [f"make target {t} does not exist" for t in targets if t not in known]
    if full and not problems:
        run = subprocess.run(["make", "-n", "-s", "-C", str(REPO), *cmd.argv[1:]], capture_output=True, text=True,
                             timeout=60, check=False)
        if run.returncode != 0:
            problems.append("make -n failed: " + " ".join(run.stderr.split())[:300])
    return problems


def receiver_help(sub: str) -> str | None:
    run = subprocess.run([str(BIN / "remediation-receiver"), sub, "--help"], capture_output=True, text=True,
                         timeout=60, check=False)
    return run.stdout if run.returncode == 0 else None


def check_receiver(cmd: Command, full: bool) -> list[str]:
    subs = [a for a in cmd.argv[1:] if not a.startswith("-")]
    if not subs or not full:
        return []
    help_text = receiver_help(subs[0])
    if help_text is None:
        return [f"remediation-receiver has no subcommand {subs[0]}"]
    options = {a.split("=", 1)[0] for a in cmd.argv[2:] if a.startswith("--")}
    return [f"remediation-receiver {subs[0]} has no option {o}" for o in sorted(options)
            if not re.search(rf"(^|[\s,]){re.escape(o)}\b", help_text)]


def check_files(cmd: Command, words: list[str]) -> list[str]:
    """Arguments that look like repository paths (tests/..., extensions/..., playbooks/...) must exist."""
    problems = []
    for word in words:
        if word.startswith("-") or "/" not in word or PLACEHOLDER.match(word) or "$" in word:
            continue
        path = (cmd.cwd / word) if not word.startswith("/") else Path(word)
        if not word.startswith("/") and not path.exists():
            problems.append(f"{word} does not exist")
    return problems


def check_molecule(cmd: Command) -> list[str]:
    args = cmd.argv[1:]
    if "-s" in args and args.index("-s") + 1 < len(args):
        scenario = args[args.index("-s") + 1]
        if not (cmd.cwd / "molecule" / scenario / "molecule.yml").is_file():
            return [f"Molecule scenario {scenario} does not exist under {cmd.cwd.relative_to(REPO)}/molecule"]
    return []


HOST_SCRIPTS = {"/usr/local/lib/docker-prune/docker_prune.py": "roles/docker_prune_timer/files/docker_prune.py",
                "/usr/local/lib/pmr-docker-signals/docker_signals.py": "roles/docker_signals/files/docker_signals.py"}


def check_python(cmd: Command, full: bool) -> list[str]:
    script = next((a for a in cmd.argv[1:] if not a.startswith("-")), None)
    if script is None:
        return []
    local = REPO / HOST_SCRIPTS.get(script, script)
    if not local.is_file():
        return [f"{script} is not a file of this repository (nor installed by one of its roles)"]
    if not full:
        return []
    # The prune script is installed beside the collection's module_utils it imports.
    env = dict(os.environ, PYTHONPATH=str(REPO / "plugins" / "module_utils"))
    run = subprocess.run([sys.executable, str(local), "--help"], capture_output=True, text=True, timeout=60,
                         check=False, cwd=local.parent, env=env)
    if run.returncode != 0:
        return [f"{script} --help failed: " + " ".join(run.stderr.split())[-300:]]
    options = {a.split("=", 1)[0] for a in cmd.argv[2:] if a.startswith("--")}
    return [f"{script} has no option {o}" for o in sorted(options) if o not in run.stdout]


def check(cmd: Command, full: bool) -> list[str]:
    word = os.path.basename(cmd.argv[0]) if cmd.argv[0].startswith((".venv", "../.venv")) else cmd.argv[0]
    if word == "<unparsable>":
        return [f"cannot parse the command: {cmd.argv[1]}"]
    if word == "ansible-playbook":
        return check_ansible_playbook(cmd, full)
    if word == "make":
        return check_make(cmd, full)
    if word == "remediation-receiver":
        return check_receiver(cmd, full)
    if word in ("pytest", "bash"):
        return check_files(cmd, cmd.argv[1:])
    if word in ("tests/lab/lab.sh", "tests/lab/loopfs.sh"):
        return check_files(cmd, cmd.argv[:1])
    if word == "molecule":
        return check_molecule(cmd)
    if word == "python3":
        return check_python(cmd, full)
    if word == "cd":
        return check_files(cmd, [a + "/" for a in cmd.argv[1:2]]) if len(cmd.argv) > 1 else []
    if word in LIVE:
        return []
    return [f"no check for '{word}': add one to tests/docs/check_commands.py or allow-list it in LIVE with a reason"]


def commands(files: list[Path]) -> Iterator[Command]:
    for path in files:
        for line_number, line in extract(path):
            name = path.relative_to(REPO) if path.is_relative_to(REPO) else path
            yield from split_commands(f"{name}:{line_number}", line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--static", action="store_true", help="only what needs no subprocess (make lint)")
    parser.add_argument("files", nargs="*", type=Path, help="Markdown files (default: README, docs, role READMEs)")
    options = parser.parse_args(argv)
    files = [f.resolve() for f in options.files] or documentation_files()
    found = list(commands(files))
    # The checks are independent subprocesses (ansible-playbook --syntax-check takes a few seconds): run 4 at once.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda cmd: check(cmd, full=not options.static), found))
    failures = live = 0
    for cmd, problems in zip(found, results, strict=True):
        live += cmd.argv[0] in LIVE
        for problem in problems:
            failures += 1
            print(f"{cmd.source}: {' '.join(cmd.argv)}: {problem}")
    checked = len(found)
    mode = "static" if options.static else "full"
    print(f"check_commands ({mode}): {checked} command(s) in {len(files)} file(s), {live} allow-listed as needing a "
          f"live system, {failures} problem(s)", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
