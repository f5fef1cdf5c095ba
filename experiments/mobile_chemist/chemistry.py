"""Photocatalytic activity of a ten-component formulation, after the mobile robotic chemist (Burger et al.,
Nature 583, 237, 2020).

The robot searched a ten-variable formulation space around the conjugated-polymer photocatalyst P10 for
hydrogen evolution from water, in batches, and found mixtures six times as active as its starting ones by
selecting beneficial components (the hole scavenger L-cysteine, a higher pH) and deselecting harmful ones
(the dyes, a surfactant); it measured hydrogen by gas chromatography after irradiation.

Our model is a product of saturating and penalising factors with those signs (ours, not the paper's
numbers). Its landscape is far more peaked than the paper's: a random formulation reaches about a
hundredth of its best, P10 with L-cysteine alone about a third.

We have no gas chromatograph: the formulation also holds methyl viologen, which the photogenerated
electrons reduce to its blue radical cation (605 nm), a standard colorimetric reporter of photocatalytic
activity, so the spectrometer reads activity as that band's growth under irradiation. Amounts are µL of
each additive's stock.
"""

from __future__ import annotations

import math

import numpy as np

from simulators.world import Conditions

ADDITIVES = ("p10", "cysteine", "naoh", "nacl", "silicate", "sds", "pvp", "acid_red", "methylene_blue",
             "rhodamine_b")  # fmt: skip
#: Dye bands (centre nm, width nm, absorbance per µL of stock in the vial, 1 cm).
DYE_BANDS = {"acid_red": (517.0, 30.0, 0.004), "methylene_blue": (664.0, 35.0, 0.006),
             "rhodamine_b": (554.0, 25.0, 0.005)}  # fmt: skip
MV_EPSILON = 13700.0  # L/(mol·cm) of the methyl viologen radical cation at 605 nm
MAX_RATE_M_S = 4.0e-8  # of reduced viologen, at one sun, for the best formulation here


def activity(amounts) -> float:
    """Relative activity (0–1) of a formulation (µL of each stock)."""
    get = lambda name: max(amounts.get(name, 0.0), 0.0)  # noqa: E731
    p10, cys, naoh, nacl = get("p10"), get("cysteine"), get("naoh"), get("nacl")
    silicate, sds, pvp = get("silicate"), get("sds"), get("pvp")
    dyes = get("acid_red") + get("methylene_blue") + get("rhodamine_b")
    value = p10 / (p10 + 80.0)
    value *= cys / (cys + 60.0)
    value *= 1.0 + 1.2 * naoh / (naoh + 100.0) - 0.6 * (naoh / 250.0) ** 3
    value *= 1.0 + 0.3 * nacl / 250.0
    value *= 1.0 + 0.25 * silicate / (silicate + 50.0)
    value *= math.exp(-sds / 120.0)
    value *= 1.0 + 0.3 * pvp / (pvp + 40.0) - 0.2 * pvp / 250.0
    value *= math.exp(-dyes / 150.0)
    return value / BEST


BEST = 1.0
BEST = activity({"p10": 250, "cysteine": 250, "naoh": 174, "nacl": 250, "silicate": 250, "pvp": 110})


class Photocatalysis:
    def __init__(self, path_length_cm: float = 1.0):
        self.path_length_cm = path_length_cm

    def evolve(self, contents, seconds: float, conditions: Conditions) -> None:
        if conditions.light <= 0 or contents.volume_ul <= 0:
            return
        amounts = contents.amounts
        mv2 = amounts.get("mv2", 0.0)
        if mv2 <= 0:
            return
        reduced = min(mv2, activity(amounts) * MAX_RATE_M_S * conditions.light * seconds * contents.volume_ul)
        amounts["mv2"] = mv2 - reduced
        amounts["mv_radical"] = amounts.get("mv_radical", 0.0) + reduced

    def absorbance(self, vessel, wavelengths_nm: np.ndarray) -> np.ndarray:
        wl = np.asarray(wavelengths_nm, dtype=float)
        total = np.zeros_like(wl)
        if vessel is None or vessel.volume_ul <= 0:
            return total
        scale = 2500.0 / vessel.volume_ul
        for dye, (centre, width, per_ul) in DYE_BANDS.items():
            shape = np.exp(-0.5 * ((wl - centre) / width) ** 2)
            total += per_ul * vessel.amounts.get(dye, 0.0) * scale * shape
        radical = MV_EPSILON * vessel.concentration("mv_radical")
        bands = np.exp(-0.5 * ((wl - 605.0) / 40.0) ** 2) + 0.6 * np.exp(-0.5 * ((wl - 395.0) / 20.0) ** 2)
        total += radical * bands
        return self.path_length_cm * total
