"""The SnAr flow reactor (Hone et al. 2017 kinetics, Summit's benchmark set-up) as a computational procedure:
space-time yield against E-factor, the classic two-objective flow-chemistry trade-off."""

from __future__ import annotations

from typing import Any

from experiments.snar_flow.kinetics import snar


def measure(recipe: dict[str, Any]) -> dict[str, float]:
    sty, e_factor = snar(
        float(recipe["tau"]), float(recipe["equiv"]), float(recipe["conc"]), float(recipe["temp"])
    )
    return {"sty": sty, "e_factor": e_factor}
