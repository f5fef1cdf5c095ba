"""A two-step flow reaction for the robotic flow platform (Coley et al., Science 365, eaax1566, 2019).

Coley et al.'s robot assembled each route's flow path from modules — reactor coils, packed beds, a
separator — on a process stand, and ran the recipes their planning software proposed (the conditions
were refined by chemists, not by an optimizer in the loop). We keep what matters for a closed loop on
that hardware: the arm installs one of several reactor modules, pumps set the flows (and so the
residence time), a hotplate under the module sets the temperature, and the yield is read in line.

The chemistry is ours, a textbook consecutive scheme: A + B → P (second order, Ea 55 kJ/mol), P → S
(first order, Ea 95 kJ/mol: it wins at high temperature and long residence). A packed bed of solid base
speeds the first step six-fold; a photoreactor's light does nothing for this thermal reaction (a module
that does not help is part of the choice). P absorbs at 430 nm, S at 530 nm.
"""

from __future__ import annotations

import math

import numpy as np

from simulators.world import Conditions

R = 8.314


def arrhenius(k_ref: float, activation_j_mol: float, temperature_c: float, reference_c: float = 80.0):
    inverse = 1 / (temperature_c + 273.15) - 1 / (reference_c + 273.15)
    return k_ref * math.exp(-activation_j_mol / R * inverse)


class ConsecutiveReaction:
    def __init__(self, k1_m_s: float = 0.06, k2_s: float = 4.0e-4, base_speedup: float = 6.0):
        self.k1, self.k2, self.base_speedup = k1_m_s, k2_s, base_speedup

    def evolve(self, contents, seconds: float, conditions: Conditions) -> None:
        amounts, volume = contents.amounts, contents.volume_ul
        if volume <= 0 or (amounts.get("a", 0.0) <= 0 and amounts.get("p", 0.0) <= 0):
            return
        k1 = arrhenius(self.k1, 55e3, conditions.temperature_c)
        if conditions.catalyst == "base":
            k1 *= self.base_speedup
        k2 = arrhenius(self.k2, 95e3, conditions.temperature_c)
        steps = max(1, math.ceil(seconds / 5.0))
        h = seconds / steps
        for _ in range(steps):
            a, b, p = (amounts.get(s, 0.0) / volume for s in ("a", "b", "p"))
            formed = min(a, b) * (1 - math.exp(-k1 * max(b, 1e-12) * h)) if a > 0 and b > 0 else 0.0
            lost = (p + formed) * (1 - math.exp(-k2 * h))
            amounts["a"] = (a - formed) * volume
            amounts["b"] = (b - formed) * volume
            amounts["p"] = (p + formed - lost) * volume
            amounts["s"] = amounts.get("s", 0.0) + lost * volume

    def absorbance(self, vessel, wavelengths_nm: np.ndarray) -> np.ndarray:
        wl = np.asarray(wavelengths_nm, dtype=float)
        if vessel is None or vessel.volume_ul <= 0:
            return np.zeros_like(wl)
        product = 20.0 * vessel.concentration("p") * np.exp(-0.5 * ((wl - 430.0) / 30.0) ** 2)
        side = 15.0 * vessel.concentration("s") * np.exp(-0.5 * ((wl - 530.0) / 35.0) ** 2)
        return product + side
