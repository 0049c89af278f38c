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
    .venv/bin/python bench/bench_safe_sync.py --collections-path DIR     (another checkout: a before/after)
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
        self.dest = {"safe_sync": work / "safe" / SUFFIX, "rsync": work / "plain" / SUFFIX}
        self.collections = Path(args.collections_path or ROOT / "build" / "collections")
        self.env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(self.collections),
                        ANSIBLE_HOME=str(ROOT / "build" / "ansible-home"), ANSIBLE_FORCE_COLOR="false",
                        ANSIBLE_LOAD_CALLBACK_PLUGINS="true", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
                        ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
        self.samples: dict[str, list[float]] = {"safe_sync": [], "rsync": [], "noop": []}
        self.task_samples: dict[str, list[float]] = {"safe_sync": [], "rsync": [], "noop": []}
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
                str(PLAYBOOKS / f"sync_{side}.yml")]

    def run(self, side: str) -> None:
        self.reset(side)
        started = time.perf_counter()
        proc = subprocess.run(self.playbook(side), capture_output=True, text=True, env=self.env, check=False)
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
        if side == "safe_sync":
            self.check_safe_sync(result)
        left = differences(self.rsync, self.src, self.dest[side])
        if left:
            self.problems.append(f"{side}: the destination differs from the source after the sync: {left[:5]}")

    def check_safe_sync(self, result: dict[str, Any]) -> None:
        if result.get("failed") or result.get("refused"):
            self.problems.append(f"safe_sync did not sync: {result.get('msg')}")
            return
        self.plan = result["plan"]
        deleted = sorted(result["deleted_files"])
        if result["deleted"] != len(self.changes["removed"]) or (
                not result["lists_truncated"] and deleted != sorted(self.changes["removed"])):
            self.problems.append(f"safe_sync deleted {result['deleted']} files, {deleted[:5]}..., not exactly the "
                                 f"{len(self.changes['removed'])} removed from the source")

    # -- where safe_sync's time goes ------------------------------------------------------------------------------
    def profile(self) -> dict[str, float]:
        """The module in-process on the same changes, each rsync pass and the parsing timed on their own."""
        sys.path.insert(0, str(self.collections))
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

        self.reset("safe_sync")
        args = {"src": str(self.src), "dest": str(self.dest["safe_sync"]), "expect_suffix": SUFFIX,
                "min_source_files": self.args.files // 2, "max_delete": self.args.files // 100}
        basic.AnsibleModule.run_command = timed_run_command
        _rsync.RsyncPlan.parse = classmethod(timed_parse)
        started = time.perf_counter()
        try:
            with patch_module_args(args), contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                safe_sync.main()
        finally:
            basic.AnsibleModule.run_command = real_run_command
            _rsync.RsyncPlan.parse = classmethod(real_parse)
        spent["module in total (in-process, no start-up)"] = time.perf_counter() - started
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


def interleaved(rounds: int, sides: tuple[str, str]) -> Iterator[str]:
    """A B, B A, A B, ...: each side goes first as often as the other."""
    for index in range(rounds):
        yield from (sides if index % 2 == 0 else sides[::-1])


def report(bench: Bench, load_start: str, load_end: str, profile: dict[str, float]) -> tuple[list[str], bool]:
    safe, plain, noop = (bench.samples[k] for k in ("safe_sync", "rsync", "noop"))
    ratio = statistics.median(safe) / statistics.median(plain) if safe and plain else float("inf")
    pair_ratios = [a / b for a, b in zip(safe, plain, strict=False)]
    ok = ratio <= TARGET_RATIO and not bench.problems
    changes = dict(bench.changes, removed=len(bench.changes["removed"]))
    lines = [
        f"tree: {bench.args.files} files in {bench.args.files // FILES_PER_DIR} directories; changes: {changes}; "
        f"{bench.args.rounds} rounds, sides interleaved (A B, B A, ...); load average at start {load_start}, "
        f"at end {load_end}",
        f"safe_sync plan: {bench.plan}",
        "",
        "| through ansible-playbook (localhost, connection local) | wall time, median (min-max) | task time, median |",
        "|---|---|---|",
        f"| A: `safe_sync` task | {spread(safe)} | {statistics.median(bench.task_samples['safe_sync']):.3f} s |",
        f"| B: `rsync --archive --delete` as a `command:` task | {spread(plain)} | "
        f"{statistics.median(bench.task_samples['rsync']):.3f} s |",
        f"| a `command: /bin/true` task (Ansible's own cost) | {spread(noop)} | "
        f"{statistics.median(bench.task_samples['noop']):.3f} s |",
        "",
        f"ratio A / B (medians of wall time): {ratio:.2f} (target at most {TARGET_RATIO}); per round: "
        + ", ".join(f"{r:.2f}" for r in pair_ratios),
        f"ratio A / B of the task times alone: "
        f"{statistics.median(bench.task_samples['safe_sync']) / statistics.median(bench.task_samples['rsync']):.2f}",
        "",
        "where safe_sync's time goes (the module in-process, same changes, one run):",
        "",
        "| step | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {seconds:.3f} |" for name, seconds in profile.items()]
    lines += ["", "trees identical to the source after every run, exact deletions: "
              + ("yes" if not bench.problems else "NO"), *[f"PROBLEM: {p}" for p in bench.problems],
              f"verdict: {'target met' if ok else 'TARGET MISSED' if not bench.problems else 'FAILED'}"]
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000, help="files in the tree (default 50000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of A B (default 5)")
    parser.add_argument("--quick", action="store_true", help="5000 files, 2 rounds: a smoke run")
    parser.add_argument("--markdown", type=Path, help="also write the figures to this file")
    parser.add_argument("--collections-path", help="the collection to measure (default: this tree's build/)")
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
        order = list(interleaved(args.rounds, ("safe_sync", "rsync")))
        for index, side in enumerate(order):
            bench.run(side)
            if index % 2 == 1:
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
