"""One reactivity-search experiment: mix two or three reagents of the library, let them react, read.

The NE-1000 pumps (one per reagent, 0.2 M stocks, and one of solvent; one RS-232 line) dispense 250 µL of
each chosen reagent and solvent to 1 mL into a vial the arm brought from the feeder; the arm carries it
into the spectrometer's holder, where it reacts for 30 minutes (waited in the lab's time) and is read; the
vial goes to waste. Reactivity: how far the spectrum is from the sum of its starting materials' spectra
(RMS absorbance, 225–450 nm); a combination counts as reactive above ``REACTIVE_ABOVE``.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np

from experiments.common import offline, spectra
from experiments.common.plans import blank, lab_sleep
from simulators.world import Conditions, Portion

from .chemistry import Reactivity, reference_absorbance

SLOTS = ("reagent_1", "reagent_2", "reagent_3")
NONE = "none"
STOCK_M = 0.2
REAGENT_UL = 250.0
TOTAL_UL = 1000.0
REACTION_S = 1800.0
WINDOW_NM = (225.0, 450.0)
#: RMS absorbance change above which a mixture counts as reactive (about 10 % conversion of a pair;
#: the detector's noise over the window is a few thousandths).
REACTIVE_ABOVE = 0.02


def combination(recipe: Mapping[str, Any]) -> tuple[str, ...]:
    """The distinct reagents a recipe names (slot order and repeats do not matter)."""
    return tuple(sorted({str(recipe[slot]) for slot in SLOTS if slot in recipe} - {NONE}))


def volumes(recipe: Mapping[str, Any]) -> dict[str, float]:
    chosen = combination(recipe)
    return {**dict.fromkeys(chosen, REAGENT_UL), "solvent": TOTAL_UL - REAGENT_UL * len(chosen)}


def concentrations(recipe: Mapping[str, Any]) -> dict[str, float]:
    return dict.fromkeys(combination(recipe), STOCK_M * REAGENT_UL / TOTAL_UL)


def mix_and_read(recipe: Mapping[str, Any], devices: Mapping[str, Any], *, time_scale: float = 1.0,
                 reaction_s: float = REACTION_S) -> Generator[Any, Any, Any]:  # fmt: skip
    pumps, arm, spectrometer = devices["pumps"], devices["arm"], devices["spectrometer"]
    metadata = {"plan_name": "mix_and_read", "recipe": dict(recipe), "combination": list(combination(recipe)),
                "reaction_s": reaction_s}  # fmt: skip

    @bpp.run_decorator(md=metadata)
    def experiment() -> Generator[Any, Any, Any]:
        yield from blank(spectrometer)
        yield from bps.mv(arm.transfer, ("feeder", "dispense"))
        moves: list[Any] = []
        for label, volume in volumes(recipe).items():
            moves += [getattr(pumps, label), volume]
        yield from bps.mv(*moves)
        yield from bps.mv(arm.transfer, ("dispense", "spectrometer"))
        yield from lab_sleep(reaction_s, time_scale)
        yield from bps.trigger_and_read([spectrometer, *moves[::2]])
        yield from bps.mv(arm.transfer, ("spectrometer", "waste"))

    return (yield from experiment())


def figures(wavelengths: np.ndarray, absorbance: np.ndarray, recipe: Mapping[str, Any]) -> dict[str, float]:
    expected = reference_absorbance(concentrations(recipe), wavelengths)
    inside = spectra.window(wavelengths, *WINDOW_NM) & np.isfinite(absorbance)
    change = float(np.sqrt(np.mean((absorbance[inside] - expected[inside]) ** 2)))
    return {"reactivity": change, "reactive": float(change > REACTIVE_ABOVE)}


def extract(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, float]:
    start = next(doc for name, doc in documents if name == "start")
    sample = spectra.last(documents)
    return figures(sample.wavelengths_nm, sample.absorbance, start["recipe"])


def simulate(recipe: Mapping[str, Any], seed: int = 0, *, reaction_s: float = REACTION_S) -> dict[str, float]:
    """The campaign's measurement as a plain function (same chemistry, spectrometer model and analysis)."""
    amounts = {name: c * TOTAL_UL for name, c in concentrations(recipe).items()}
    vial = Portion(TOTAL_UL, amounts)
    Reactivity().evolve(vial, reaction_s, Conditions())
    reading = offline.read(Reactivity(), vial, seed=seed)
    return figures(reading.wavelengths_nm, reading.absorbance, recipe)
