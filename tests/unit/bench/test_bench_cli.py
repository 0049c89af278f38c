"""The benchmarks' command lines and the generated bench/README.md (the benchmarks themselves run in `make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

import bench_safe_sync  # noqa: E402
import readme  # noqa: E402


@pytest.mark.parametrize("name", ["bench_safe_sync.py", "bench_reclaim.py", "readme.py"])
def test_help_parses(name: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / name), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


@pytest.mark.parametrize(("name", "args"), [("bench_safe_sync.py", ["--rounds", "0"]),
                                            ("bench_reclaim.py", ["--rounds", "0"])])
def test_a_meaningless_argument_is_refused_before_anything_starts(name: str, args: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "--rounds must be at least 1" in proc.stderr


def test_the_fleet_switch_phase_is_off_unless_asked_and_refuses_a_negative_count() -> None:
    helped = subprocess.run([sys.executable, str(BENCH / "bench_fleet.py"), "--help"], capture_output=True, text=True,
                            check=False)
    assert helped.returncode == 0 and "--switch-rounds" in helped.stdout and "(0: none)" in helped.stdout
    proc = subprocess.run([sys.executable, str(BENCH / "bench_fleet.py"), "--switch-rounds", "-1"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "--switch-rounds must be 0 (no switch) or more" in proc.stderr


def test_sides_are_interleaved_and_each_goes_first_as_often() -> None:
    order = list(bench_safe_sync.interleaved(4, ("A", "B")))
    assert order == ["A", "B", "B", "A", "A", "B", "B", "A"]


def test_readme_has_a_section_per_benchmark_and_a_placeholder_for_those_to_come(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readme, "RESULTS", tmp_path)
    (tmp_path / "bench_safe_sync.md").write_text(
        readme.RECORD_MARK + "\nLast run: `bench/bench_safe_sync.py`, 2026-01-01 00:00 UTC, exit status 1.\n\n| a |\n")
    text = readme.render()
    for path in BENCH.glob("bench_*.py"):
        assert f"## `{path.name}`" in text
    assert "| `bench_safe_sync.py` | `bench/bench_safe_sync.py`, 2026-01-01 00:00 UTC | 1 |" in text  # a missed target
    assert "| `bench_reclaim.py` | not recorded yet | |" in text
    assert "Last run: `bench/bench_safe_sync.py`" in text and readme.RECORD_MARK not in text
    assert "## `bench_reclaim.py`" in text and "Not recorded yet" in text
    for name in readme.EXPECTED:
        assert f"## `{name}`" in text
