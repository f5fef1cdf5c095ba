"""One mobile-robotic-chemist experiment: formulate, irradiate in the photoreactor holder, read the reporter.

Ten NE-1000 pumps (one line, addresses 0–9) dispense the additives, an eleventh the water with the methyl
viologen reporter (2.5 mL in all), into a vial the arm brought from the feeder; the arm carries it into the
spectrometer's holder, which is inside a lamp box (one sun); the 605 nm band is read at once and after 30
minutes of irradiation (waited in the lab's time); the vial goes to waste. Activity: the band's growth per
hour, on the scale where our best formulation gives 1.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp

from experiments.common import offline, spectra
from experiments.common.plans import blank, lab_sleep
from simulators.world import Conditions, Portion

from .chemistry import ADDITIVES, MAX_RATE_M_S, MV_EPSILON, Photocatalysis

TOTAL_UL = 2500.0
MV_STOCK_M = 2.0e-4
IRRADIATION_S = 1800.0
#: The band's growth per second (absorbance) of the best formulation: the activity scale.
FULL_SCALE = MV_EPSILON * MAX_RATE_M_S


def volumes(recipe: Mapping[str, float]) -> dict[str, float]:
    additives = {name: float(recipe[name]) for name in ADDITIVES}
    return {**additives, "water": TOTAL_UL - sum(additives.values())}


def photocatalysis(recipe: Mapping[str, float], devices: Mapping[str, Any], *, time_scale: float = 1.0,
                   irradiation_s: float = IRRADIATION_S) -> Generator[Any, Any, Any]:  # fmt: skip
    pumps, arm, spectrometer = devices["pumps"], devices["arm"], devices["spectrometer"]
    metadata = {"plan_name": "photocatalysis", "recipe": dict(recipe), "irradiation_s": irradiation_s}

    @bpp.run_decorator(md=metadata)
    def experiment() -> Generator[Any, Any, Any]:
        yield from blank(spectrometer)
        yield from bps.mv(arm.transfer, ("feeder", "dispense"))
        moves: list[Any] = []
        for label, volume in volumes(recipe).items():
            if volume > 0.5:
                moves += [getattr(pumps, label), volume]
        yield from bps.mv(*moves)
        yield from bps.mv(arm.transfer, ("dispense", "spectrometer"))
        yield from bps.trigger_and_read([spectrometer], name="start")
        yield from lab_sleep(irradiation_s, time_scale)
        yield from bps.trigger_and_read([spectrometer, *moves[::2]])
        yield from bps.mv(arm.transfer, ("spectrometer", "waste"))

    return (yield from experiment())


def activity_from(start: float, end: float, irradiation_s: float = IRRADIATION_S) -> float:
    return (end - start) / irradiation_s / FULL_SCALE


def extract(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, float]:
    run = next(doc for name, doc in documents if name == "start")
    start, end = spectra.last(documents, "start"), spectra.last(documents)
    growth = (spectra.band(start, 600.0, 610.0), spectra.band(end, 600.0, 610.0))
    return {"activity": activity_from(*growth, float(run.get("irradiation_s", IRRADIATION_S)))}


def simulate(recipe: Mapping[str, float], seed: int = 0, *, overrun_s: float = 0.0) -> dict[str, float]:
    """The campaign's measurement as a plain function (same chemistry, spectrometer model and objective);
    ``overrun_s`` more irradiation than the plan asks for (the activity is still read per the plan's time)."""
    chemistry = Photocatalysis()
    vial = Portion(TOTAL_UL, {**{k: v for k, v in volumes(recipe).items() if k != "water"},
                              "mv2": MV_STOCK_M * volumes(recipe)["water"]})  # fmt: skip
    before = offline.read(chemistry, vial, seed=seed)
    chemistry.evolve(vial, IRRADIATION_S + overrun_s, Conditions(light=1.0))
    after = offline.read(chemistry, vial, seed=seed + 1)
    wl = before.wavelengths_nm
    band = (wl >= 600) & (wl <= 610)
    start, end = float(before.absorbance[band].mean()), float(after.absorbance[band].mean())
    return {"activity": activity_from(start, end)}
