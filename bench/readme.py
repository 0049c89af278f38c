"""Run benchmarks and keep what they print; write bench/README.md from it, never by hand.

    .venv/bin/python bench/readme.py --run bench_safe_sync.py [-- --rounds 5]   run one, record it, rebuild README
    .venv/bin/python bench/readme.py                                             rebuild README from the records

A run is recorded in bench/results/<benchmark>.md: the command, when it ran (UTC), `uptime` before and after, its
exit status, and everything it printed (a benchmark with a `--markdown FILE` option writes its figures there; the
others' standard output is kept as text). The README lists every bench/bench_*.py with its own description (its
docstring) and its last record; a benchmark that has none yet gets a placeholder section.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
README = BENCH / "README.md"
# Benchmarks that other changes are adding: their sections exist before their files do.
EXPECTED = ["bench_fleet.py", "bench_journal.py"]
RECORD_MARK = "<!-- recorded by bench/readme.py -->"

INTRO = """# Benchmarks

Speed and cost targets are checked here, by programs that print figures and ratios, not by timed tests (a timed
test on a shared 2-core machine would fail for the wrong reasons). Each benchmark interleaves its sides over several
rounds, prints medians with min and max and the machine's load, and exits 1 when the product misses its target,
removes what it should keep or leaves trees different. `make bench` runs every `bench/bench_*.py`; each also runs on
its own with `.venv/bin/python bench/bench_NAME.py` (as root: they start lab hosts, loop devices or servers, and
remove only what they created).

This file is generated: `.venv/bin/python bench/readme.py --run bench_NAME.py [-- ARGS]` runs a benchmark, records
what it printed in `bench/results/bench_NAME.md` and rebuilds this file; `.venv/bin/python bench/readme.py` rebuilds
it from the records. The figures below are those records, taken while other work shared the machine: read them
against the load printed with them.
"""


def description(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or "(no description)"
    return doc.strip()


def supports_markdown(path: Path) -> bool:
    return "--markdown" in path.read_text()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def run(name: str, extra: list[str], note_text: str = "") -> int:
    """Run one benchmark with the interpreter running this script; record its output; return its exit status."""
    path = BENCH / name
    if not path.is_file():
        sys.exit(f"no benchmark {path}")
    argv = [sys.executable, str(path), *extra]
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    before = uptime()
    with tempfile.TemporaryDirectory(prefix="pmr-bench-readme-") as tmp:
        figures = Path(tmp) / "figures.md"
        if supports_markdown(path):
            argv += ["--markdown", str(figures)]
        proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
        sys.stdout.write(proc.stdout)
        body = figures.read_text() if figures.exists() else "```text\n" + proc.stdout.rstrip() + "\n```\n"
    shown = " ".join(["bench/" + name, *extra])
    RESULTS.mkdir(exist_ok=True)
    note = f"Note: {note_text}\n" if note_text else ""
    (RESULTS / name.replace(".py", ".md")).write_text(
        f"{RECORD_MARK}\nLast run: `{shown}`, {started}, exit status {proc.returncode}.\n"
        f"Load before: `{before}`; after: `{uptime()}`.\n{note}\n{body.rstrip()}\n")
    return proc.returncode


def section(name: str) -> str:
    path = BENCH / name
    record = RESULTS / name.replace(".py", ".md")
    head = f"## `{name}`\n\n"
    if not path.exists():
        return head + "Placeholder: this benchmark is being added by another change; its description and figures " \
                      "appear here once it is recorded with `bench/readme.py --run`.\n"
    text = head + description(path) + "\n\n### Last recorded run\n\n"
    if record.exists():
        return text + hard_breaks(record.read_text().replace(RECORD_MARK + "\n", ""))
    return text + f"Not recorded yet: `.venv/bin/python bench/readme.py --run {name}`.\n"


def hard_breaks(markdown: str) -> str:
    """Each printed line stays a line (markdown would join consecutive lines of text into one paragraph)."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        fenced = fenced != line.startswith("```")
        plain = line and not fenced and not line.startswith(("|", "```"))
        lines.append(line + "  " if plain else line)
    return "\n".join(lines) + "\n"


def render() -> str:
    names = sorted({p.name for p in BENCH.glob("bench_*.py")} | set(EXPECTED))
    return INTRO + "\n" + "\n".join(section(name) for name in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", metavar="BENCHMARK", help="run bench/BENCHMARK and record it first")
    parser.add_argument("--note", default="", help="a line recorded with the run (what else shared the machine)")
    parser.add_argument("args", nargs="*", help="arguments for the benchmark (after --)")
    args = parser.parse_args(argv)
    status = run(args.run, args.args, args.note) if args.run else 0
    README.write_text(render())
    print(f"wrote {README.relative_to(BENCH.parent)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
