"""Regenerate ``target.csv``: the absorbance spectrum the colour-matching campaign tries to reproduce.

In a real lab the target is a measured reference sample; here it is the simulated bench's own
chemistry model (``lab.yaml``) applied to a recipe the optimizer is not told, so the campaign
has a known optimum to converge to. Run: ``python -m experiments.color_matching.make_target``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulators.lab import read_lab_file
from simulators.world import World

HERE = Path(__file__).parent
HIDDEN_RECIPE_UL = {"yellow": 140.0, "red": 310.0, "blue": 95.0}
TOTAL_VOLUME_UL = 1500.0


def mixture_absorbance(
    dyes_ul: dict[str, float], wavelengths_nm: np.ndarray, total_volume_ul: float = TOTAL_VOLUME_UL
) -> np.ndarray:
    """What the bench's chemistry model predicts for these dye volumes, made up with water."""
    world = World.from_config(read_lab_file(HERE / "lab.yaml")["world"])
    vial = world.new_vessel(total_volume_ul)
    for dye, volume in dyes_ul.items():
        world.transfer(world.stocks[dye], vial, volume)
    world.transfer(world.stocks["water"], vial, total_volume_ul - sum(dyes_ul.values()))
    return world.chemistry.absorbance(vial, wavelengths_nm)


def target_spectrum(wavelengths_nm: np.ndarray) -> np.ndarray:
    return mixture_absorbance(HIDDEN_RECIPE_UL, wavelengths_nm)


def main() -> None:
    wavelengths = np.arange(380.0, 751.0, 1.0)
    absorbance = target_spectrum(wavelengths)
    rows = "\n".join(f"{w:.1f},{a:.5f}" for w, a in zip(wavelengths, absorbance, strict=True))
    recipe = ", ".join(f"{dye} {volume:g} µL" for dye, volume in HIDDEN_RECIPE_UL.items())
    (HERE / "target.csv").write_text(
        f"# target absorbance: {recipe}, water to {TOTAL_VOLUME_UL:g} µL (make_target.py)\n"
        f"wavelength_nm,absorbance\n{rows}\n"
    )


if __name__ == "__main__":
    main()
