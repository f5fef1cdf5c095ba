"""A dye-mixing session through the four drivers against `python -m simulators lab`, checked against physics.

Three dyes and water are dispensed into a vial, the arm carries it to the spectrometer, and the
absorbance read over OBP must match the Beer-Lambert prediction of the simulated world for the
volumes the pumps report having delivered — within the spectrometer's own noise, estimated from
the spectrum itself. A 10 % error in one dye must be detected by the same check.
"""

from __future__ import annotations

import importlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments.color_matching.make_target import mixture_absorbance
from experiments.color_matching.procedure import color_match
from sdl.plans import allow_leases

HERE = Path(__file__).resolve().parents[1] / "experiments" / "color_matching"
RECIPE = {"yellow": 220.0, "red": 150.0, "blue": 60.0}
TOTAL_UL = 1500.0
WINDOW_NM = (420.0, 680.0)


@pytest.fixture
def bench() -> Iterator[dict]:
    """The simulated lab in its own process, and ophyd devices built exactly as the campaign does."""
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators", "lab", str(HERE / "lab.yaml"), "--speed", "500"],
        stdout=subprocess.PIPE,
        text=True,
    )
    # Two pumps, the arm's six ports, the spectrometer.
    endpoints = dict(process.stdout.readline().split() for _ in range(9))
    instruments = yaml.safe_load((HERE / "campaign.yaml").read_text())["lab"]["instruments"]
    devices = {}
    try:
        for name, spec in instruments.items():
            module, _, factory = spec["driver"].partition(":")
            address = spec["address"]
            fill = lambda text: re.sub(r"\{([\w.]+)\}", lambda m: endpoints[m[1]], text)  # noqa: E731
            address = {k: fill(v) for k, v in address.items()} if isinstance(address, dict) else fill(address)
            devices[name] = getattr(importlib.import_module(module), factory)(
                name, address, **spec["options"]
            )
        yield devices
    finally:
        for device in devices.values():
            device.destroy()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        process.stdout.close()


def within_noise(measured: np.ndarray, predicted: np.ndarray) -> tuple[bool, str]:
    """Whether the residual is noise: no larger than the pixel-to-pixel scatter, and unbiased.

    The model is smooth, so the scatter of adjacent-pixel differences of the residual estimates
    the measurement noise; a wrong model leaves a smooth residual much larger than that.
    """
    residual = measured - predicted
    noise = np.std(np.diff(residual)) / np.sqrt(2)
    rms = np.sqrt(np.mean(residual**2))
    bias = abs(np.mean(residual))
    summary = f"rms {rms:.4f}, bias {bias:.4f}, noise {noise:.4f}, n {residual.size}"
    return rms < 1.5 * noise and bias < 5 * noise / np.sqrt(residual.size), summary


def test_spectrum_matches_the_world_model_within_noise(bench, engine):
    allow_leases(engine)  # the plan leases the arm and the spectrometer; here the bench is its alone
    documents: list[tuple[str, dict]] = []
    engine(
        color_match(RECIPE, bench, total_volume_ul=TOTAL_UL), lambda name, doc: documents.append((name, doc))
    )

    descriptor = next(doc for name, doc in documents if name == "descriptor" and doc["name"] == "primary")
    event = next(doc for name, doc in documents if name == "event")
    wavelengths = np.asarray(descriptor["configuration"]["spectrometer"]["data"]["spectrometer_wavelengths"])
    measured = np.asarray(event["data"]["spectrometer_absorbance"], dtype=float)
    delivered = {dye: event["data"][f"dye_pumps_{dye}_dispensed"] for dye in RECIPE}
    assert delivered == pytest.approx(RECIPE, abs=0.05)
    assert event["data"]["water_pump_volume"] == pytest.approx(TOTAL_UL - sum(RECIPE.values()), abs=0.5)

    window = (wavelengths >= WINDOW_NM[0]) & (wavelengths <= WINDOW_NM[1])
    ok, summary = within_noise(measured[window], mixture_absorbance(delivered, wavelengths, TOTAL_UL)[window])
    assert ok, summary
    assert 0.3 < np.max(measured[window]) < 2.5  # a real signal, not a blank

    # The same check catches a recipe that is 10 % off in one dye.
    wrong = {**delivered, "red": delivered["red"] * 1.1}
    wrong_ok, wrong_summary = within_noise(
        measured[window], mixture_absorbance(wrong, wavelengths, TOTAL_UL)[window]
    )
    assert not wrong_ok, wrong_summary
