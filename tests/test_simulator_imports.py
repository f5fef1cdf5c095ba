"""Simulators run without ophyd or bluesky: they import only the drivers' pure codecs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BLOCK_OPHYD = """
import importlib.abc, sys

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ophyd", "bluesky"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked for this test)", name=name)
        return None

sys.meta_path.insert(0, Missing())
"""


def run_without_ophyd(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_OPHYD + code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_every_simulator_imports_without_ophyd():
    code = """
import simulators.ne1000, simulators.cavro, simulators.ur, simulators.ocean
import simulators.lab, simulators.testing
from simulators.base import kinds, simulator_class
assert [simulator_class(kind).kind for kind in kinds()] == kinds()
assert "ophyd" not in sys.modules and "bluesky" not in sys.modules
print("ok")
"""
    done = run_without_ophyd(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_blocker_really_blocks():
    done = run_without_ophyd("import ophyd")
    assert done.returncode != 0 and "blocked for this test" in done.stderr


def test_python_m_simulators_checks_a_lab_file_without_ophyd():
    code = """
import runpy
sys.argv = ["simulators", "endpoints", "experiments/color_matching/lab.yaml"]
try:
    runpy.run_module("simulators", run_name="__main__")
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
"""
    done = run_without_ophyd(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["dye_pumps.pump", "water_pump.pump"]
