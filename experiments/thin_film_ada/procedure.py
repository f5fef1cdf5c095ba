"""One Ada experiment: mix spiro-OMeTAD and dopant, anneal on the hotplate, read the film's bands.

The three NE-1000 pumps dispense spiro-OMeTAD, the cobalt(III) dopant and solvent into a fresh vial
(400 µL; dopant ratio from the recipe); the arm sets it on the IKA hotplate, held at 80 °C, for the
recipe's annealing time (waited in the lab's time), then carries it to the spectrometer and to waste.
The objective is our pseudo-mobility: the hole band (515–525 nm) over the free-carrier absorption
(770–790 nm).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp

from experiments.common import offline, spectra
from experiments.common.plans import blank, lab_sleep
from simulators.world import Conditions, Portion

from .chemistry import DopedSpiro

TOTAL_UL = 400.0
SPIRO_UL = 200.0
SPIRO_STOCK_M, DOPANT_STOCK_M = 1.0e-3, 1.0e-3
ANNEAL_C = 80.0


def volumes(recipe: Mapping[str, float]) -> dict[str, float]:
    dopant = SPIRO_UL * SPIRO_STOCK_M * float(recipe["dopant_ratio"]) / DOPANT_STOCK_M
    return {"spiro": SPIRO_UL, "dopant": dopant, "solvent": TOTAL_UL - SPIRO_UL - dopant}


def anneal_and_read(recipe: Mapping[str, float], devices: Mapping[str, Any], *,
                    time_scale: float = 1.0) -> Generator[Any, Any, Any]:  # fmt: skip
    pumps, arm, plate, spectrometer = (devices[n] for n in ("pumps", "arm", "hotplate", "spectrometer"))
    metadata = {"plan_name": "anneal_and_read", "recipe": dict(recipe), "anneal_c": ANNEAL_C}

    @bpp.run_decorator(md=metadata)
    def experiment() -> Generator[Any, Any, Any]:
        yield from blank(spectrometer)
        yield from bps.mv(plate.temperature, ANNEAL_C)
        yield from bps.mv(arm.transfer, ("feeder", "dispense"))
        moves: list[Any] = []
        for label, volume in volumes(recipe).items():
            if volume > 0.5:
                moves += [getattr(pumps, label), volume]
        yield from bps.mv(*moves)
        yield from bps.mv(arm.transfer, ("dispense", "hotplate"))
        yield from lab_sleep(float(recipe["anneal_min"]) * 60.0, time_scale)
        yield from bps.mv(arm.transfer, ("hotplate", "spectrometer"))
        yield from bps.trigger_and_read([spectrometer, plate, *moves[::2]])
        yield from bps.mv(arm.transfer, ("spectrometer", "waste"))

    return (yield from experiment())


def pseudo_mobility(spectrum_bands: tuple[float, float]) -> float:
    holes, free = spectrum_bands
    return holes / free if free > 0.01 and holes > 0.02 else 0.0


def extract(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, float]:
    sample = spectra.last(documents)
    bands = (spectra.band(sample, 515.0, 525.0), spectra.band(sample, 770.0, 790.0))
    return {"pseudo_mobility": pseudo_mobility(bands), "hole_band": bands[0]}


def simulate(recipe: Mapping[str, float], seed: int = 0) -> dict[str, float]:
    """The campaign's measurement as a plain function (same chemistry, spectrometer model and objective)."""
    flows = volumes(recipe)
    amounts = {"spiro": SPIRO_STOCK_M * flows["spiro"], "co3": DOPANT_STOCK_M * flows["dopant"]}
    film = Portion(TOTAL_UL, amounts)
    DopedSpiro().evolve(film, float(recipe["anneal_min"]) * 60.0, Conditions(temperature_c=ANNEAL_C))
    reading = offline.read(DopedSpiro(), film, seed=seed)
    wl, a = reading.wavelengths_nm, reading.absorbance
    bands = (float(a[(wl >= 515) & (wl <= 525)].mean()), float(a[(wl >= 770) & (wl <= 790)].mean()))
    return {"pseudo_mobility": pseudo_mobility(bands)}
