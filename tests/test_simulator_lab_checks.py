"""`python -m simulators endpoints FILE` and the lab file's fault seed."""

from __future__ import annotations

import subprocess
import sys

from simulators.clock import VirtualClock
from simulators.lab import build_lab


def endpoints(path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulators", "endpoints", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_endpoints_lists_each_instrument_endpoint_without_serving():
    done = endpoints("experiments/color_matching/lab.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "dye_pumps.pump", "water_pump.pump", "arm.dashboard", "arm.script", "arm.gripper", "arm.primary",
        "arm.realtime", "arm.rtde", "spectrometer.obp", "bench.hands",
    ]  # fmt: skip


def test_endpoints_refuses_a_bad_lab_file_with_where_and_why(tmp_path):
    bad = tmp_path / "lab.yaml"
    bad.write_text("instruments:\n  pumps: {kind: ne1000, pumps: [{address: 0}]}\n")
    done = endpoints(bad)
    assert done.returncode == 2 and done.stdout == ""
    assert f"{bad}: instruments.pumps: pumps[0]: missing diameter_mm" in done.stderr
    bad.write_text("instruments:\n  x: {kind: ne1001}\n")
    done = endpoints(bad)
    assert (
        done.returncode == 2
        and "instruments.x.kind: unknown instrument kind 'ne1001'; allowed:" in done.stderr
    )
    assert endpoints(tmp_path / "missing.yaml").returncode == 2


LAB = {
    "instruments": {
        "first": {"kind": "cavro", "faults": "garble%0.5"},
        "second": {"kind": "cavro", "faults": "garble%0.5"},
    }
}


def fault_pattern(config, **options) -> dict[str, list[bool]]:
    lab = build_lab(config, VirtualClock(), **options)
    return {name: [sim.faults.fires("garble") for _ in range(40)] for name, sim in lab.simulators.items()}


def test_the_fault_seed_comes_from_the_lab_file_or_the_caller_not_the_instrument_position():
    default = fault_pattern(LAB)
    assert default == fault_pattern(LAB)  # deterministic
    assert default["first"] != default["second"]  # each instrument its own sequence
    seeded = fault_pattern({**LAB, "faults_seed": 7})
    assert seeded != default  # a resume with another seed sees other faults
    assert fault_pattern(LAB, faults_seed=7) == seeded  # --faults-seed is the same knob
    assert fault_pattern({**LAB, "faults_seed": 3}, faults_seed=7) == seeded  # and the caller wins
    swapped = {**LAB, "faults_seed": 7, "instruments": dict(reversed(list(LAB["instruments"].items())))}
    assert fault_pattern(swapped) == seeded  # reordering the file changes nothing
