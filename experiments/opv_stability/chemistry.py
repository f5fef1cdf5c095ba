"""Photobleaching of four-component OPV blends (Langner et al., Adv. Mater. 32, 1907801, 2020).

The paper's self-driving lab mixed PTB7-Th, P3HT, PC71BM-type fullerene (PCBM) and the non-fullerene
acceptor o-IDTBR, cast films, aged them under light and tracked their absorbance; its objective was the
photodegradation (lower is more stable). The authors published the degradation they measured over the
whole composition simplex for the PTB7-Th blend (repository aspuru-guzik-group/quaterny_opvs,
``photobleaching_mixture01_grid.csv``, 1,041 rows; the data behind their degradation maps).

Our model of it: a cubic mixture polynomial (Scheffé special cubic plus the binary cubic terms, 20
coefficients) least-squares fitted to that grid (ridge 1e-3). R² 0.60 in sample and 0.57 in five-fold
cross-validation, RMS residual 0.07 on a −0.03–0.74 scale, where replicates differ by 0.03: the grid has
sharp features a polynomial smooths, and the model's minimum (0.016) lies below any blend measured. It is
a smooth stand-in with the data's broad trends, not a map of the real optimum; ``fit.py`` recomputes these
figures from the grid. Under one sun every absorber in the blend bleaches at a common first-order rate
chosen so that ``REFERENCE_SOAK_S`` of light costs the fitted fraction of absorbance:
D(x) = 1 − exp(−k(x)·t). Each component absorbs with its own bands.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from simulators.world import Conditions

COMPONENTS = ("ptb7th", "p3ht", "pcbm", "oidtbr")
#: Least-squares coefficients: x1..x4, xixj (6 pairs), xixj(xi−xj) (6 pairs), xixjxk (4 triples), in
#: itertools.combinations order over COMPONENTS.
COEFFICIENTS = np.array([
    0.05647, 0.47876, -0.20545, -0.08631,
    -0.39443, 0.6064, 0.5125, 0.62809, 0.00082, 2.55558,
    1.92203, -0.27745, 0.52811, -0.56164, 0.13234, 0.57721,
    -4.6325, 0.58729, 0.31674, -4.30196,
])  # fmt: skip
#: The light soak the degradation figure refers to in our campaign (20 min at one sun).
REFERENCE_SOAK_S = 1200.0
#: Absorption bands (centre nm, width nm, ε per g/L·cm), shapes of the thin-film spectra.
BANDS = {
    "ptb7th": [(700.0, 45.0, 2.0), (630.0, 40.0, 1.4)],
    "p3ht": [(555.0, 45.0, 1.8), (605.0, 25.0, 1.0)],
    "pcbm": [(480.0, 60.0, 0.35), (380.0, 40.0, 1.5)],
    "oidtbr": [(690.0, 35.0, 2.2), (560.0, 50.0, 0.5)],
}


def degradation(fractions: np.ndarray) -> float:
    """The fitted photodegradation of a blend (fractions summing to 1), clipped to 0–0.95."""
    x = np.asarray(fractions, dtype=float)
    terms = list(x)
    pairs = list(itertools.combinations(range(4), 2))
    terms += [x[i] * x[j] for i, j in pairs]
    terms += [x[i] * x[j] * (x[i] - x[j]) for i, j in pairs]
    terms += [x[i] * x[j] * x[k] for i, j, k in itertools.combinations(range(4), 3)]
    return float(np.clip(np.dot(COEFFICIENTS, terms), 0.0, 0.95))


class Photobleaching:
    def __init__(self, path_length_cm: float = 1.0):
        self.path_length_cm = path_length_cm

    def fractions(self, contents) -> np.ndarray:
        amounts = np.array(
            [contents.amounts.get(c, 0.0) + contents.amounts.get(f"{c}_bleached", 0.0) for c in COMPONENTS]
        )
        total = amounts.sum()
        return amounts / total if total > 0 else amounts

    def evolve(self, contents, seconds: float, conditions: Conditions) -> None:
        if conditions.light <= 0:
            return
        fractions = self.fractions(contents)
        if fractions.sum() <= 0:
            return
        rate = -math.log(1.0 - degradation(fractions)) / REFERENCE_SOAK_S
        kept = math.exp(-rate * conditions.light * seconds)
        for component in COMPONENTS:
            amount = contents.amounts.get(component, 0.0)
            if amount > 0:
                contents.amounts[component] = amount * kept
                bleached = f"{component}_bleached"
                contents.amounts[bleached] = contents.amounts.get(bleached, 0.0) + amount * (1 - kept)

    def absorbance(self, vessel, wavelengths_nm: np.ndarray) -> np.ndarray:
        wl = np.asarray(wavelengths_nm, dtype=float)
        total = np.zeros_like(wl)
        if vessel is None or vessel.volume_ul <= 0:
            return total
        for component, bands in BANDS.items():
            concentration = vessel.concentration(component)  # g/L of intact absorber
            for centre, width, epsilon in bands:
                total += concentration * epsilon * np.exp(-0.5 * ((wl - centre) / width) ** 2)
        return self.path_length_cm * total
