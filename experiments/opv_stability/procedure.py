"""A light-soaking experiment: mix a blend, read its absorbance, leave it under one sun, read it again.

The four NE-1000 pumps dispense the components' stock solutions into a fresh vial (400 µL in all,
fractions from the recipe); the arm carries it into the spectrometer's holder, which sits in a lamp box
at one sun; the absorbance is read at once and again after the soak; the vial goes to waste. The
objective is the fraction of the 400–780 nm absorbance lost.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np

from experiments.common import offline, spectra
from experiments.common.plans import MIN_RATE_UL_MIN, blank, lab_sleep
from simulators.world import Conditions, Portion

from .chemistry import COMPONENTS, REFERENCE_SOAK_S, Photobleaching

TOTAL_UL = 400.0
STOCK_G_L = 0.25
WINDOW_NM = (400.0, 780.0)


def volumes(recipe: Mapping[str, float], total_ul: float = TOTAL_UL) -> dict[str, float]:
    fractions = {c: max(float(recipe[c]), 0.0) for c in COMPONENTS}
    scale = sum(fractions.values())
    return {c: total_ul * f / scale for c, f in fractions.items()}


def light_soak(
    recipe: Mapping[str, float],
    devices: Mapping[str, Any],
    *,
    time_scale: float = 1.0,
    soak_s: float = REFERENCE_SOAK_S,
    total_ul: float = TOTAL_UL,
) -> Generator[Any, Any, Any]:
    pumps, arm, spectrometer = devices["pumps"], devices["arm"], devices["spectrometer"]
    metadata = {"plan_name": "light_soak", "recipe": dict(recipe), "soak_s": soak_s}

    @bpp.run_decorator(md=metadata)
    def experiment() -> Generator[Any, Any, Any]:
        yield from blank(spectrometer)
        yield from bps.mv(arm.transfer, ("feeder", "dispense"))
        moves: list[Any] = []
        for component, volume in volumes(recipe, total_ul).items():
            if volume > MIN_RATE_UL_MIN:
                moves += [getattr(pumps, component), volume]
        yield from bps.mv(*moves)
        yield from bps.mv(arm.transfer, ("dispense", "spectrometer"))
        yield from bps.trigger_and_read([spectrometer], name="fresh")
        yield from lab_sleep(soak_s, time_scale)
        yield from bps.trigger_and_read([spectrometer, *moves[::2]])
        yield from bps.mv(arm.transfer, ("spectrometer", "waste"))

    return (yield from experiment())


def lost_fraction(wavelengths: np.ndarray, fresh: np.ndarray, aged: np.ndarray) -> float:
    inside = spectra.window(wavelengths, *WINDOW_NM) & np.isfinite(fresh) & np.isfinite(aged)
    return float(1.0 - np.sum(aged[inside]) / np.sum(fresh[inside]))


def extract(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, float]:
    fresh, aged = spectra.last(documents, "fresh"), spectra.last(documents)
    return {
        "degradation": lost_fraction(fresh.wavelengths_nm, fresh.absorbance, aged.absorbance),
        "absorbance_fresh": spectra.band(fresh, *WINDOW_NM),
    }


def simulate(
    recipe: Mapping[str, float], seed: int = 0, *, soak_s: float = REFERENCE_SOAK_S
) -> dict[str, float]:
    """The campaign's measurement as a plain function (same chemistry, spectrometer model and objective)."""
    chemistry = Photobleaching()
    film = Portion(TOTAL_UL, {c: STOCK_G_L * v for c, v in volumes(recipe).items()})
    fresh = offline.read(chemistry, film, seed=seed)
    chemistry.evolve(film, soak_s, Conditions(light=1.0))
    aged = offline.read(chemistry, film, seed=seed + 1)
    return {"degradation": lost_fraction(fresh.wavelengths_nm, fresh.absorbance, aged.absorbance)}
