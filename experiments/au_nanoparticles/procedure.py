"""The gold-nanoparticle flow experiment: plan, extractor, target, and the chemistry as a plain function.

The plan flushes the microreactor with water and takes a blank of the flow cell, then runs the seed,
gold and ascorbic-acid pumps at the recipe's flow rates with water making up the total, for 2.5
reactor volumes, and reads the flow cell. The objective is the RMS distance between the measured
extinction spectrum and the target's (420–780 nm).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from functools import cache
from typing import Any

import bluesky.preprocessors as bpp
import numpy as np

from experiments.common import offline, spectra
from experiments.common.plans import flow_experiment
from simulators.world import Portion

from .chemistry import SeededGrowth

REAGENTS = ("seeds", "gold", "ascorbic")
#: Stock concentrations (mol/L), as in lab.yaml.
STOCKS = {"seeds": {"seed_au": 1.0e-4}, "gold": {"au3": 5.0e-4}, "ascorbic": {"aa": 2.5e-3}}
TOTAL_UL_MIN = 200.0
REACTOR_UL = 400.0
WINDOW_NM = (420.0, 780.0)
#: The recipe the target spectrum was made with; the optimizer is not told.
HIDDEN_RECIPE = {"seeds": 22.0, "gold": 64.0, "ascorbic": 41.0}


def rates(recipe: Mapping[str, float], total_ul_min: float = TOTAL_UL_MIN) -> dict[str, float]:
    flows = {name: float(recipe[name]) for name in REAGENTS}
    water = total_ul_min - sum(flows.values())
    if water < -1e-6:
        raise ValueError(f"reagent flows add up to {sum(flows.values()):.1f} µL/min, over {total_ul_min}")
    return {**flows, "water": max(water, 0.0)}


def au_flow(recipe: Mapping[str, float], devices: Mapping[str, Any], *, total_ul_min: float = TOTAL_UL_MIN,
            reactor_volume_ul: float = REACTOR_UL) -> Generator[Any, Any, Any]:  # fmt: skip
    metadata = {"plan_name": "au_flow", "recipe": dict(recipe), "total_ul_min": total_ul_min}

    @bpp.run_decorator(md=metadata)
    def experiment() -> Generator[Any, Any, Any]:
        yield from flow_experiment(devices, rates(recipe, total_ul_min), reactor_volume_ul=reactor_volume_ul,
                                   carrier="water")  # fmt: skip

    return (yield from experiment())


@cache
def target() -> tuple[np.ndarray, np.ndarray]:
    """The target extinction spectrum: the bench's chemistry for the hidden recipe, without noise."""
    wavelengths = np.arange(400.0, 801.0, 1.0)
    return wavelengths, SeededGrowth().absorbance(outflow(HIDDEN_RECIPE), wavelengths)


def distance(wavelengths: np.ndarray, absorbance: np.ndarray) -> float:
    target_wl, target_absorbance = target()
    return spectra.rms_distance(wavelengths, absorbance, target_wl, target_absorbance, *WINDOW_NM)


def figures(wavelengths: np.ndarray, absorbance: np.ndarray) -> dict[str, float]:
    """Distance to the target, and where and how high the plasmon band peaks (420-780 nm)."""
    inside = spectra.window(wavelengths, *WINDOW_NM)
    smooth = np.convolve(np.nan_to_num(absorbance[inside]), np.ones(9) / 9, mode="same")
    peak = int(np.argmax(smooth))
    return {
        "distance": distance(wavelengths, absorbance),
        "peak_nm": float(wavelengths[inside][peak]),
        "peak_extinction": float(smooth[peak]),
    }


def extract(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, float]:
    sample = spectra.last(documents)
    return figures(sample.wavelengths_nm, sample.absorbance)


def outflow(recipe: Mapping[str, float], total_ul_min: float = TOTAL_UL_MIN,
            reactor_volume_ul: float = REACTOR_UL) -> Portion:  # fmt: skip
    """What leaves the reactor at steady state: the mixed feed after one residence time."""
    flows = rates(recipe, total_ul_min)
    volume = sum(flows.values())
    amounts: dict[str, float] = {}
    for name, flow in flows.items():
        for species, concentration in STOCKS.get(name, {}).items():
            amounts[species] = amounts.get(species, 0.0) + concentration * flow
    plug = Portion(volume, amounts)
    from simulators.world import Conditions

    SeededGrowth().evolve(plug, reactor_volume_ul / total_ul_min * 60.0, Conditions())
    return plug


def simulate(recipe: Mapping[str, float], seed: int = 0) -> dict[str, float]:
    """The campaign's measurement as a plain function (for benchmarks): same chemistry, same spectrometer
    model and noise, same objective, no drivers."""
    reading = offline.read(SeededGrowth(), outflow(recipe), seed=seed)
    return figures(reading.wavelengths_nm, reading.absorbance)
