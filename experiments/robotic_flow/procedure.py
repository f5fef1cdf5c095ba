"""One robotic flow experiment: install the module, heat it, flow A and B through it, read the yield.

The arm takes the recipe's module from its rack and installs it in the reactor bay, on the hotplate;
the plate brings it to temperature; the carrier flushes it and the spectrometer takes a blank of the
flow cell; the A, B and carrier pumps run for 2.5 module volumes at the flows that give the recipe's
residence time and equivalents of B; the flow cell is read; the module goes back to its rack.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp

from experiments.common import offline, spectra
from experiments.common.plans import flow_experiment
from simulators.world import Conditions, Portion

from .chemistry import ConsecutiveReaction

#: The modules on the rack: volume (µL), and what they hold (as in lab.yaml).
MODULES = {
    "coil_small": {"volume_ul": 250.0, "catalyst": None, "light": 0.0},
    "coil_large": {"volume_ul": 1000.0, "catalyst": None, "light": 0.0},
    "packed_bed": {"volume_ul": 250.0, "catalyst": "base", "light": 0.0},
    "photoreactor": {"volume_ul": 250.0, "catalyst": None, "light": 1.0},
}
A_STOCK_M, B_STOCK_M = 0.5, 1.0
A_IN_REACTOR_M = 0.1
EPSILON_P = 20.0  # L/(mol·cm) at 430 nm, 1 cm cell


def flows(recipe: Mapping[str, Any]) -> dict[str, float]:
    volume = MODULES[str(recipe["module"])]["volume_ul"]
    total = volume / float(recipe["residence_min"])
    a = total * A_IN_REACTOR_M / A_STOCK_M
    b = total * A_IN_REACTOR_M * float(recipe["equiv_b"]) / B_STOCK_M
    return {"a": a, "b": b, "carrier": total - a - b}


def robotic_flow(recipe: Mapping[str, Any], devices: Mapping[str, Any]) -> Generator[Any, Any, Any]:
    module = str(recipe["module"])
    arm = devices["arm"]
    metadata = {"plan_name": "robotic_flow", "recipe": dict(recipe)}

    @bpp.run_decorator(md=metadata)
    def experiment() -> Generator[Any, Any, Any]:
        yield from bps.mv(arm.transfer, (f"rack_{module}", "bay"))
        volume = MODULES[module]["volume_ul"]
        temperature = float(recipe["temperature_c"])
        yield from flow_experiment(devices, flows(recipe), reactor_volume_ul=volume, carrier="carrier",
                                   temperature_c=temperature)  # fmt: skip
        yield from bps.mv(arm.transfer, ("bay", f"rack_{module}"))

    return (yield from experiment())


def yield_from(spectrum: spectra.Spectrum) -> float:
    return spectra.band(spectrum, 425.0, 435.0) / (EPSILON_P * A_IN_REACTOR_M)


def extract(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, float]:
    sample = spectra.last(documents)
    return {"yield": yield_from(sample), "side_product": spectra.band(sample, 525.0, 535.0)}


def simulate(recipe: Mapping[str, Any], seed: int = 0) -> dict[str, float]:
    """The campaign's measurement as a plain function (same chemistry, spectrometer model and objective)."""
    module = MODULES[str(recipe["module"])]
    rates = flows(recipe)
    total = sum(rates.values())
    plug = Portion(total, {"a": A_STOCK_M * rates["a"], "b": B_STOCK_M * rates["b"]})
    conditions = Conditions(float(recipe["temperature_c"]), module["light"], 0.0, module["catalyst"])
    ConsecutiveReaction().evolve(plug, float(recipe["residence_min"]) * 60.0, conditions)
    reading = offline.read(ConsecutiveReaction(), plug, seed=seed)
    wl = reading.wavelengths_nm
    product = float(reading.absorbance[(wl >= 425) & (wl <= 435)].mean())
    return {"yield": product / (EPSILON_P * A_IN_REACTOR_M)}
