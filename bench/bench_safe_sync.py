"""safe_sync against plain rsync on a tree of 50,000 files: one run each, the same changes, wall times and ratios.

safe_sync runs an itemized dry run before the real run, so its cost should be close to plain rsync plus one dry run
(the time to walk and compare both trees once more). The module runs as a target would run it: a Python process
with the module's arguments, real rsync underneath.

    .venv/bin/python bench/bench_safe_sync.py [--files 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "plugins" / "modules" / "safe_sync.py"
FILES_PER_DIR = 100


def build_tree(root: Path, files: int) -> None:
    for index in range(files):
        directory = root / f"d{index // FILES_PER_DIR:04d}"
        if index % FILES_PER_DIR == 0:
            directory.mkdir(parents=True)
        (directory / f"f{index:06d}.dat").write_bytes(b"x" * (64 + index % 512))


def change_tree(src: Path, files: int) -> dict[str, int]:
    """The same changes for both runs: 1 % rewritten, 0.5 % added, 0.2 % removed (so deleted at the destination)."""
    changed = added = removed = 0
    for index in range(0, files, 100):
        path = src / f"d{index // FILES_PER_DIR:04d}" / f"f{index:06d}.dat"
        path.write_bytes(b"changed" * 20)
        changed += 1
    for index in range(0, files, 200):
        (src / f"d{index // FILES_PER_DIR:04d}" / f"new{index:06d}.dat").write_bytes(b"new")
        added += 1
    for index in range(7, files, 500):
        (src / f"d{index // FILES_PER_DIR:04d}" / f"f{index:06d}.dat").unlink()
        removed += 1
    return {"changed": changed, "added": added, "removed": removed}


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    return elapsed, proc


def warm(*trees: Path) -> None:
    for tree in trees:
        for _ in os.walk(tree):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000)
    args = parser.parse_args()
    rsync = shutil.which("rsync") or sys.exit("rsync is not installed")
    work = Path(tempfile.mkdtemp(prefix="bench-safe-sync-"))
    try:
        src = work / "build" / "debian" / "amd64"
        build_tree(src, args.files)
        plain_dest = work / "plain" / "debian" / "amd64"
        safe_dest = work / "safe" / "debian" / "amd64"
        dry_dest = work / "dry" / "debian" / "amd64"
        for dest in (plain_dest, safe_dest, dry_dest):
            dest.parent.mkdir(parents=True)
            subprocess.run([rsync, "-a", f"{src}/", f"{dest}/"], check=True)
        changes = change_tree(src, args.files)
        warm(src, plain_dest, safe_dest, dry_dest)

        plain_s, _ = timed([rsync, "--archive", "--delete", f"{src}/", f"{plain_dest}/"])
        dry_s, _ = timed([rsync, "--archive", "--delete", "--dry-run", "--itemize-changes", "--stats",
                          f"{src}/", f"{dry_dest}/"])
        module_args = work / "args.json"
        module_args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
            "src": str(src), "dest": str(safe_dest), "expect_suffix": "debian/amd64",
            "min_source_files": args.files // 2, "max_delete": args.files // 100, "max_delete_ratio": 0.05}}))
        env = dict(os.environ, PYTHONPATH=str(ROOT / "build" / "collections"))
        safe_s, proc = timed([sys.executable, str(MODULE), str(module_args)], env=env)
        result = json.loads(proc.stdout)
        if result.get("failed") or result.get("refused"):
            sys.exit(f"safe_sync did not run: {result.get('msg')}")
        start_only = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import ansible.module_utils.basic"], check=True, env=env)
        startup_s = time.perf_counter() - start_only

        same = subprocess.run(["diff", "-r", "-q", str(plain_dest), str(safe_dest)], capture_output=True, check=False)
        print(f"tree: {args.files} files; changes: {changes}")
        print(f"safe_sync plan: {result['plan']}")
        print(f"plain rsync --delete           {plain_s:8.3f} s")
        print(f"rsync dry run (itemized)       {dry_s:8.3f} s")
        print(f"python + ansible import        {startup_s:8.3f} s")
        print(f"safe_sync (dry run + real run) {safe_s:8.3f} s")
        print(f"ratio safe_sync / plain rsync                    {safe_s / plain_s:6.2f}")
        print(f"ratio safe_sync / (plain rsync + one dry run)    {safe_s / (plain_s + dry_s):6.2f}")
        print(f"destinations identical after both runs: {same.returncode == 0}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
