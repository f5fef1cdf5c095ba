"""Every benchmark script starts as people run it: `python benchmarks/NAME.py`.

CI does not run the benchmarks (they take minutes and want a quiet machine), so this catches what
would otherwise only show when someone needs the figures: an import that breaks when the script's
own folder is first on sys.path, a renamed module, a bad option.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: What a comparison script exits with when it ran and found no gain (benchmarks/demo_convergence.py).
NOT_BETTER = 3
BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("[!_]*.py"))


def test_there_are_benchmark_scripts():
    assert {path.name for path in BENCHMARKS} >= {"drivers.py", "optimizer.py", "demo_convergence.py"}


@pytest.mark.parametrize("script", BENCHMARKS, ids=[path.name for path in BENCHMARKS])
def test_benchmark_script_starts(script):
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_demo_convergence_runs_a_miniature_comparison(tmp_path):
    # The demo benchmark loads the campaign's drivers by import path: the step that breaks when
    # benchmarks/drivers.py shadows the drivers package.
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "demo_convergence.py"
    plot = tmp_path / "convergence.png"
    result = subprocess.run(
        [sys.executable, str(script), "--seeds", "1", "--budget", "2", "--plot", str(plot)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode in (0, NOT_BETTER), result.stderr  # a miniature run's verdict may be either
    assert "random/bayes" in result.stdout and plot.stat().st_size > 0


def test_warm_start_runs_a_miniature_comparison():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "warm_start.py"
    result = subprocess.run(
        [sys.executable, str(script), "--seeds", "1", "--source-budget", "2", "--budget", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode in (0, NOT_BETTER), result.stderr  # a miniature run's verdict may be either
    assert "median experiments to the target: cold" in result.stdout


def test_published_labs_runs_a_miniature_comparison():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "published_labs.py"
    result = subprocess.run(
        [sys.executable, str(script), "--labs", "reactivity_search", "mobile_chemist", "--seeds", "1",
         "--budget", "3", "--no-plots", "--no-readme"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| reactivity", "| mobile"))]
    assert len(rows) == 4 and "reactive combinations found" in rows[0], result.stdout
