"""A closed-loop campaign whose spectrometer is reached only through SiLA 2 gives the direct driver's results.

The colour-matching bench runs twice on a fresh simulated lab each time, with the same seed: once
with every instrument on its own driver, once with the spectrometer served by `sdl sila serve` (over
the simulator's OBP endpoint) and named in the campaign as ``driver: sila2``. The optimizer sees
what the spectrometer measured, so equal recipes and equal distances mean the SiLA path delivered
the same spectra, in the same order, to the same plan.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sdl.execution.bringup import SimulatedLab, fill, simulator_command
from sdl.store import Store

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "experiments" / "color_matching"
SDL = [sys.executable, "-c", "import sys; from sdl.cli import main; sys.exit(main())"]
EXPERIMENTS = 8  # six of the initial design, then two proposals from what was measured
SPEED = 200


def campaign(tmp_path: Path, endpoints: dict[str, str], spectrometer: dict[str, Any]) -> Path:
    spec = yaml.safe_load((BENCH / "campaign.yaml").read_text())
    spec["budget"].update(max_experiments=EXPERIMENTS, stop_when={})
    lab = spec["lab"]
    del lab["simulated"]  # the simulator runs outside the campaign, shared with sdl sila serve
    lab["instruments"]["spectrometer"] = dict(spectrometer)
    for instrument in lab["instruments"].values():
        instrument["address"] = fill(instrument["address"], endpoints)
    spec["procedure"]["extractor"] = "experiments.color_matching.analysis:extract"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(path: Path, data: Path) -> list[tuple[dict[str, float], float]]:
    done = subprocess.run(
        [*SDL, "run", str(path), "--data-dir", str(data), "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    with Store(data) as store:
        (only,) = store.campaigns()
        return [(e.recipe, e.measurements["distance"]) for e in store.experiments(only.id)]


def simulated_bench() -> SimulatedLab:
    lab = SimulatedLab(simulator_command(BENCH / "lab.yaml", SPEED))
    needed = {
        f"{i}.{e}"
        for i, e in (
            ("dye_pumps", "pump"),
            ("water_pump", "pump"),
            ("arm", "dashboard"),
            ("arm", "script"),
            ("arm", "gripper"),
            ("spectrometer", "obp"),
        )
    }
    lab.start(needed, timeout=60)
    return lab


@pytest.mark.slow
def test_a_campaign_through_sila_gives_the_direct_drivers_results(tmp_path: Path) -> None:
    direct_spec = yaml.safe_load((BENCH / "campaign.yaml").read_text())["lab"]["instruments"]["spectrometer"]
    bench = simulated_bench()
    try:
        direct = run(
            campaign(tmp_path / "direct", bench.endpoints, direct_spec), tmp_path / "direct" / "data"
        )
    finally:
        bench.stop()

    bench = simulated_bench()
    serving: subprocess.Popen[str] | None = None
    try:
        (tmp_path / "sila").mkdir()
        served_lab = tmp_path / "sila" / "spectrometer-lab.yaml"
        served_lab.write_text(
            yaml.safe_dump(
                {
                    "name": "bench",
                    "instruments": {
                        "spectrometer": {**direct_spec, "address": bench.endpoints["spectrometer.obp"]}
                    },
                    "workcells": {"bench": {"devices": {"spectrometer": "spectrometer"}}},
                }
            )
        )
        certs = tmp_path / "sila" / "certs"
        serving = subprocess.Popen(
            [*SDL, "sila", "serve", "--lab", str(served_lab), "--certs", str(certs), "--no-discovery"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert serving.stdout is not None
        name, address, _uuid, certificate = serving.stdout.readline().split()
        assert name == "spectrometer" and serving.stdout.readline().strip() == "ready"
        through_sila = {
            "driver": "sila2",
            "address": address,
            "options": {"ca": certificate, "trigger": "SpectrometerController.Acquire"},
        }
        sila = run(campaign(tmp_path / "sila", bench.endpoints, through_sila), tmp_path / "sila" / "data")
    finally:
        if serving is not None:
            serving.terminate()
            serving.communicate(timeout=60)
        bench.stop()

    assert len(direct) == EXPERIMENTS
    assert [recipe for recipe, _ in sila] == [recipe for recipe, _ in direct]
    assert [distance for _, distance in sila] == pytest.approx([distance for _, distance in direct], rel=1e-9)
