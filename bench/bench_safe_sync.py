"""safe_sync against plain rsync, both as a task of `ansible-playbook`, the way users run them.

Side A is a playbook whose one task is `postmortem.remediation.safe_sync`; side B is the same playbook shape whose one
task runs `rsync --archive --delete` with `ansible.builtin.command`. Both run through `ansible-playbook` on the same
host over the same connection (localhost, connection local), on a tree of 50,000 files in 500 directories with the
same changes each time (1 % rewritten, 0.5 % added, 0.2 % removed). Before every run the destination is put back to
the published state and both trees are read once (warm caches), outside the measurement. The sides are interleaved,
A B then B A, for several rounds; the wall time of each `ansible-playbook` process is measured, and the bench prints
medians with min and max, the ratio A / B (target: at most 1.5), and where safe_sync's time goes (the module's own
rsync passes and parsing, timed in-process on the same changes).

After every run the destination is compared with the source by rsync itself (`--dry-run --itemize-changes --delete`
must print nothing: same files, content, permissions and times) and safe_sync's `deleted_files` must be exactly the
files removed from the source. Exit status 1 when the ratio misses the target, a tree differs, or safe_sync deleted
anything else, refused or failed.

    .venv/bin/python bench/bench_safe_sync.py [--files 50000] [--rounds 5] [--quick] [--markdown FILE]
    .venv/bin/python bench/bench_safe_sync.py --compare-with DIR   (also the safe_sync of another collection tree)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOKS = ROOT / "bench" / "playbooks"
FILES_PER_DIR = 100
TARGET_RATIO = 1.5
SUFFIX = "debian/amd64"


def build_tree(root: Path, files: int) -> None:
    for index in range(files):
        directory = root / f"d{index // FILES_PER_DIR:04d}"
        if index % FILES_PER_DIR == 0:
            directory.mkdir(parents=True)
        (directory / f"f{index:06d}.dat").write_bytes(b"x" * (64 + index % 512))


def change_tree(src: Path, files: int) -> dict[str, Any]:
    """1 % rewritten, 0.5 % added, 0.2 % removed (so deleted at the destination); returns what was removed."""
    changed = added = 0
    removed: list[str] = []
    for index in range(0, files, 100):
        (src / f"d{index // FILES_PER_DIR:04d}" / f"f{index:06d}.dat").write_bytes(b"changed" * 20)
        changed += 1
    for index in range(0, files, 200):
        (src / f"d{index // FILES_PER_DIR:04d}" / f"new{index:06d}.dat").write_bytes(b"new")
        added += 1
    for index in range(7, files, 500):
        name = f"d{index // FILES_PER_DIR:04d}/f{index:06d}.dat"
        (src / name).unlink()
        removed.append(name)
    return {"changed": changed, "added": added, "removed": removed}


def warm(*trees: Path) -> None:
    for tree in trees:
        for _ in os.walk(tree):
            pass


def differences(rsync: str, src: Path, dest: Path) -> list[str]:
    """What rsync still finds different between the trees: [] when the destination is the source's copy."""
    out = subprocess.run([rsync, "--archive", "--delete", "--dry-run", "--itemize-changes", f"{src}/", f"{dest}/"],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.rsync = shutil.which("rsync") or sys.exit("rsync is not installed")
        self.published = work / "published" / SUFFIX  # the destination's state before every run
        self.src = work / "build" / SUFFIX
        self.collections = {"safe_sync": Path(args.collections_path or ROOT / "build" / "collections")}
        if args.compare_with:
            self.collections["before"] = Path(args.compare_with)
        self.sides = ("safe_sync", *(["before"] if args.compare_with else []), "rsync")
        self.dest = {side: work / side / SUFFIX for side in self.sides}
        self.samples: dict[str, list[float]] = {side: [] for side in (*self.sides, "noop")}
        self.task_samples: dict[str, list[float]] = {side: [] for side in (*self.sides, "noop")}
        self.problems: list[str] = []
        self.changes: dict[str, Any] = {}
        self.plan: dict[str, Any] = {}

    # -- set-up (never measured) ----------------------------------------------------------------------------------
    def setup(self) -> None:
        build_tree(self.src, self.args.files)
        self.published.parent.mkdir(parents=True)
        subprocess.run([self.rsync, "-a", f"{self.src}/", f"{self.published}/"], check=True)
        self.changes = change_tree(self.src, self.args.files)
        for dest in self.dest.values():
            dest.parent.mkdir(parents=True)

    def reset(self, side: str) -> None:
        """The destination back to the published state, and both trees read once (warm caches, like the other side)."""
        if side in self.dest:
            subprocess.run([self.rsync, "-a", "--delete", f"{self.published}/", f"{self.dest[side]}/"], check=True)
            if not differences(self.rsync, self.src, self.dest[side]):
                sys.exit(f"set-up failed: {self.dest[side]} already matches the source")
            warm(self.src, self.dest[side])

    # -- one measured run -----------------------------------------------------------------------------------------
    def playbook(self, side: str) -> list[str]:
        ansible_playbook = Path(sys.executable).parent / "ansible-playbook"
        extra = {"bench_src": str(self.src), "bench_dest": str(self.dest.get(side, self.src)),
                 "bench_suffix": SUFFIX, "bench_min_source_files": self.args.files // 2,
                 "bench_max_delete": self.args.files // 100}
        return [str(ansible_playbook), "-i", "localhost,", "-c", "local", "-e",
                "ansible_python_interpreter=" + sys.executable, "-e", json.dumps(extra),
                str(PLAYBOOKS / f"sync_{'safe_sync' if side == 'before' else side}.yml")]

    def env(self, side: str) -> dict[str, str]:
        collections = self.collections.get(side, self.collections["safe_sync"])
        return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections),
                    ANSIBLE_HOME=str(ROOT / "build" / "ansible-home"), ANSIBLE_FORCE_COLOR="false",
                    ANSIBLE_LOAD_CALLBACK_PLUGINS="true", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
                    ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")

    def run(self, side: str) -> None:
        self.reset(side)
        started = time.perf_counter()
        proc = subprocess.run(self.playbook(side), capture_output=True, text=True, env=self.env(side), check=False)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            self.problems.append(f"{side}: ansible-playbook failed ({proc.returncode}): {proc.stdout[-1500:]}"
                                 f"{proc.stderr[-1500:]}")
            return
        task = json.loads(proc.stdout)["plays"][0]["tasks"][0]
        result = task["hosts"]["localhost"]
        duration = task["task"]["duration"]
        self.samples[side].append(wall)
        self.task_samples[side].append(task_seconds(duration))
        if side == "noop":
            return
        if side in self.collections:
            self.check_safe_sync(side, result)
        left = differences(self.rsync, self.src, self.dest[side])
        if left:
            self.problems.append(f"{side}: the destination differs from the source after the sync: {left[:5]}")

    def check_safe_sync(self, side: str, result: dict[str, Any]) -> None:
        if result.get("failed") or result.get("refused"):
            self.problems.append(f"{side}: safe_sync did not sync: {result.get('msg')}")
            return
        self.plan = result["plan"]
        deleted = sorted(result["deleted_files"])
        if result["deleted"] != len(self.changes["removed"]) or (
                not result["lists_truncated"] and deleted != sorted(self.changes["removed"])):
            self.problems.append(f"{side}: safe_sync deleted {result['deleted']} files, {deleted[:5]}..., not "
                                 f"exactly the {len(self.changes['removed'])} removed from the source")

    # -- where safe_sync's time goes ------------------------------------------------------------------------------
    def profile(self, rounds: int = 3) -> dict[str, dict[str, float]]:
        """Each collection's module in a process of its own on the same changes, its rsync passes and its parsing
        timed apart; interleaved rounds, the median of each step."""
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in self.collections}
        for side in interleaved(rounds, tuple(self.collections)):
            self.reset(side)
            proc = subprocess.run([sys.executable, __file__, "--profile-run", str(self.collections[side]),
                                   str(self.src), str(self.dest[side]), str(self.args.files)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                self.problems.append(f"{side}: profile run failed: {proc.stderr[-1500:]}")
                return {}
            runs[side].append(json.loads(proc.stdout))
        return {side: {step: statistics.median(run.get(step, 0.0) for run in found) for step in found[0]}
                for side, found in runs.items()}


def profile_run(collections: str, src: str, dest: str, files: int) -> dict[str, float]:
    """One module run in this process, with each rsync pass and the parsing timed (the bench's --profile-run)."""
    sys.path.insert(0, collections)
    from ansible.module_utils import basic
    from ansible.module_utils.testing import patch_module_args
    from ansible_collections.postmortem.remediation.plugins.module_utils import _rsync
    from ansible_collections.postmortem.remediation.plugins.modules import safe_sync

    spent: dict[str, float] = {}

    def add(name: str, seconds: float) -> None:
        spent[name] = spent.get(name, 0.0) + seconds

    real_run_command, real_parse = basic.AnsibleModule.run_command, _rsync.RsyncPlan.parse.__func__

    def timed_run_command(module: basic.AnsibleModule, argv: list[str], **kwargs: Any) -> tuple[int, str, str]:
        started = time.perf_counter()
        answer = real_run_command(module, argv, **kwargs)
        if "--dry-run" in argv:
            what = "rsync dry run (walks both trees)"
        elif "--delete-missing-args" in argv:
            what = "rsync passes: planned deletions (listed paths)"
        elif not any(arg.startswith("--files-from=") for arg in argv):
            what = "rsync pass: transfer (walks both trees)"
        elif not any(name.startswith("rsync passes: planned deletions") for name in spent):
            what = "rsync pass: transfer (listed paths)"
        else:
            what = "rsync pass: directory times (listed paths)"
        add(what, time.perf_counter() - started)
        return answer

    def timed_parse(cls: type, stdout: str) -> Any:
        started = time.perf_counter()
        plan = real_parse(cls, stdout)
        add("parsing rsync's itemized output", time.perf_counter() - started)
        return plan

    args = {"src": src, "dest": dest, "expect_suffix": SUFFIX, "min_source_files": files // 2,
            "max_delete": files // 100}
    basic.AnsibleModule.run_command = timed_run_command
    _rsync.RsyncPlan.parse = classmethod(timed_parse)
    answer = io.StringIO()
    started = time.perf_counter()
    with patch_module_args(args), contextlib.redirect_stdout(answer), contextlib.suppress(SystemExit):
        safe_sync.main()
    spent["module in total (no interpreter start-up)"] = time.perf_counter() - started
    result = json.loads(answer.getvalue())
    if result.get("failed") or result.get("refused"):
        sys.exit(f"safe_sync did not sync: {result.get('msg')}")
    return spent


def task_seconds(duration: dict[str, str]) -> float:
    from datetime import datetime
    start, end = (datetime.fromisoformat(duration[k].replace("Z", "+00:00")) for k in ("start", "end"))
    return (end - start).total_seconds()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.3f} s ({min(values):.3f}-{max(values):.3f})"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="pmr-sync-bench-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def interleaved(rounds: int, sides: tuple[str, ...]) -> Iterator[str]:
    """A B, B A, A B, ... (with three sides A B C, B C A, C A B): each side goes first as often as the others."""
    for index in range(rounds):
        shift = index % len(sides)
        yield from sides[shift:] + sides[:shift]


LABELS = {
    "safe_sync": "A: `safe_sync` task",
    "before": "A': `safe_sync` task of the collection given by --compare-with",
    "rsync": "B: `rsync --archive --delete` as a `command:` task",
    "noop": "a `command: /bin/true` task (Ansible's own cost)",
}


def median_ratio(top: list[float], bottom: list[float]) -> float:
    return statistics.median(top) / statistics.median(bottom) if top and bottom else float("inf")


def report(bench: Bench, load_start: str, load_end: str,
           profile: dict[str, dict[str, float]]) -> tuple[list[str], bool]:
    samples, tasks = bench.samples, bench.task_samples
    ratio = median_ratio(samples["safe_sync"], samples["rsync"])
    ok = ratio <= TARGET_RATIO and not bench.problems
    changes = dict(bench.changes, removed=len(bench.changes["removed"]))
    order = " ".join("ABC"[:len(bench.sides)])
    lines = [
        f"Tree: {bench.args.files} files in {bench.args.files // FILES_PER_DIR} directories; changes: {changes}; "
        f"{bench.args.rounds} rounds, sides interleaved ({order}, then rotated each round). Load average at start "
        f"{load_start}, at end {load_end}.",
        "",
        f"safe_sync's plan: {bench.plan}",
        "",
        "| through ansible-playbook (localhost, connection local) | wall time, median (min-max) | task time, median |",
        "|---|---|---|",
    ]
    for side in (*bench.sides, "noop"):
        if samples[side]:
            lines.append(f"| {LABELS[side]} | {spread(samples[side])} | {statistics.median(tasks[side]):.3f} s |")
    per_round = [a / b for a, b in zip(samples["safe_sync"], samples["rsync"], strict=False)]
    lines += [
        "",
        f"Ratio A / B (medians of wall time): **{ratio:.2f}** (target at most {TARGET_RATIO}); per round: "
        + ", ".join(f"{r:.2f}" for r in per_round) + f". Task times alone: "
        f"{median_ratio(tasks['safe_sync'], tasks['rsync']):.2f}.",
    ]
    if samples.get("before"):
        lines.append(f"Ratio A' / B: {median_ratio(samples['before'], samples['rsync']):.2f} (task times "
                     f"{median_ratio(tasks['before'], tasks['rsync']):.2f}); A / A': "
                     f"{median_ratio(samples['safe_sync'], samples['before']):.2f}.")
    if profile:
        sides = list(profile)
        steps = list(dict.fromkeys(step for side in sides for step in profile[side]))
        steps.sort(key=lambda step: step.startswith("module in total"))
        lines += ["", "Where safe_sync's time goes: the module in a process of its own on the same changes, "
                  "median of 3 interleaved runs, seconds:", "",
                  "| step | " + " | ".join(LABELS[side].split(":")[0] for side in sides) + " |",
                  "|---|" + "---|" * len(sides)]
        for step in steps:
            cells = [f"{profile[side][step]:.3f}" if step in profile[side] else "-" for side in sides]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", "Trees identical to the source after every run (rsync finds nothing to do), exact deletions: "
              + ("yes" if not bench.problems else "NO"), *[f"PROBLEM: {p}" for p in bench.problems], "",
              f"Verdict: {'target met' if ok else 'TARGET MISSED' if not bench.problems else 'FAILED'}."]
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--profile-run"]:  # internal: one timed module run (see Bench.profile)
        collections, src, dest, files = sys.argv[2:6]
        print(json.dumps(profile_run(collections, src, dest, int(files))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000, help="files in the tree (default 50000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of A B (default 5)")
    parser.add_argument("--quick", action="store_true", help="5000 files, 2 rounds: a smoke run")
    parser.add_argument("--markdown", type=Path, help="also write the figures to this file")
    parser.add_argument("--collections-path", help="the collection to measure (default: this tree's build/)")
    parser.add_argument("--compare-with", metavar="COLLECTIONS_PATH",
                        help="also measure the safe_sync of another collection tree (a before/after, same run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.rounds = 5_000, 2
    if args.rounds < 1 or args.files < FILES_PER_DIR:
        parser.error("--rounds must be at least 1 and --files at least 100")
    with workdir() as work:
        bench = Bench(args, work)
        bench.setup()
        load_start = loadavg()
        bench.run("noop")  # unmeasured warm-up: Ansible's first start compiles and caches
        bench.samples["noop"].clear()
        bench.task_samples["noop"].clear()
        for index, side in enumerate(interleaved(args.rounds, bench.sides)):
            bench.run(side)
            if index % len(bench.sides) == len(bench.sides) - 1:
                bench.run("noop")
            if bench.problems:
                break
        load_end = loadavg()
        profile = bench.profile() if not bench.problems else {}
        if bench.problems and not bench.samples["safe_sync"]:
            print("\n".join(bench.problems))
            return 1
        lines, ok = report(bench, load_start, load_end, profile)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
