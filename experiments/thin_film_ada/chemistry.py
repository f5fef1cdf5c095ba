"""Doped spiro-OMeTAD films annealed on a hotplate, after Ada (MacLeod et al., Sci. Adv. 6, eaaz8867, 2020).

Ada made hole-transport films of spiro-OMeTAD with a cobalt(III) dopant, annealed them and measured their
optical absorbance and conductance; its objective was a "pseudo-mobility", conductance divided by a
spectroscopic measure of the hole density (so it rewards mobility, not just doping). The dopant ratio and
the annealing time were the variables.

Ours, measured with a spectrometer only: the dopant oxidises spiro-OMeTAD to spiro⁺ (second order, faster
when hot), whose band at 520 nm counts the holes; the holes' free-carrier absorption, read at 780 nm, is
∝ hole density / mobility (Drude), so the ratio of the two bands is ∝ mobility: our pseudo-mobility.

Annealing is two consecutive first-order steps, both thermally activated: the as-cast film orders
(time constant 4 min at 80 °C), and the ordered film goes on to crystallise into domains that carry holes
no better than the disordered film (40 min at 80 °C for a lightly doped film, faster the more dopant:
the dopant salt aggregates and seeds the crystallites). The ordered fraction, and with it the mobility,
therefore peaks at an annealing time inside the campaign's 1–40 min and falls after it — sooner for
heavily doped films. Spiro-OMeTAD films are known to crystallise under prolonged heating (which degrades
them as hole conductors); the time constants, and the rest of the numbers, are ours. Mobility also grows
with the first dopant (it fills traps) and suffers from more (disorder).
"""

from __future__ import annotations

import math

import numpy as np

from simulators.world import Conditions


def activated(rate_at_80c: float, activation_j_mol: float, temperature_c: float) -> float:
    return rate_at_80c * math.exp(-activation_j_mol / 8.314 * (1 / (temperature_c + 273.15) - 1 / 353.15))


class DopedSpiro:
    def __init__(self, path_length_cm: float = 0.05):
        self.path_length_cm = path_length_cm

    def ratio(self, amounts) -> float:
        total = amounts.get("spiro", 0.0) + amounts.get("spiro_ox", 0.0)
        return (amounts.get("co3", 0.0) + amounts.get("co2", 0.0)) / total if total > 0 else 0.0

    def evolve(self, contents, seconds: float, conditions: Conditions) -> None:
        amounts, volume = contents.amounts, contents.volume_ul
        total = amounts.get("spiro", 0.0) + amounts.get("spiro_ox", 0.0)
        if volume <= 0 or total <= 0:
            return
        temperature = conditions.temperature_c
        k_ox = activated(5.0, 60e3, temperature)
        ordering = activated(1 / 240.0, 70e3, temperature)
        ratio = self.ratio(amounts)
        crystallising = activated(1 / 2400.0, 90e3, temperature) * (0.5 + (ratio / 0.3) ** 2)
        steps = max(1, math.ceil(seconds / 10.0))
        h = seconds / steps
        for _ in range(steps):
            spiro, co3 = amounts.get("spiro", 0.0), amounts.get("co3", 0.0)
            if spiro > 0 and co3 > 0:
                oxidised = min(spiro, co3) * (1 - math.exp(-k_ox * max(spiro, co3) / volume * h))
                amounts["spiro"], amounts["co3"] = spiro - oxidised, co3 - oxidised
                amounts["spiro_ox"] = amounts.get("spiro_ox", 0.0) + oxidised
                amounts["co2"] = amounts.get("co2", 0.0) + oxidised
            # disordered -> ordered -> crystallised, each step exact over h for its own rate
            ordered, crystal = amounts.get("ordered", 0.0) / total, amounts.get("crystal", 0.0) / total
            disordered = max(1.0 - ordered - crystal, 0.0)
            formed = disordered * (1 - math.exp(-ordering * h))
            lost = (ordered + formed) * (1 - math.exp(-crystallising * h))
            amounts["ordered"] = (ordered + formed - lost) * total
            amounts["crystal"] = (crystal + lost) * total

    def mobility(self, amounts) -> float:
        total = amounts.get("spiro", 0.0) + amounts.get("spiro_ox", 0.0)
        order = amounts.get("ordered", 0.0) / total if total > 0 else 0.0
        ratio = self.ratio(amounts)
        return (0.1 + order) * ratio / (ratio + 0.08) * math.exp(-ratio / 0.35)

    def absorbance(self, vessel, wavelengths_nm: np.ndarray) -> np.ndarray:
        wl = np.asarray(wavelengths_nm, dtype=float)
        if vessel is None or vessel.volume_ul <= 0:
            return np.zeros_like(wl)
        holes = vessel.concentration("spiro_ox")
        neutral = 7.0e4 * vessel.concentration("spiro") * np.exp(-0.5 * ((wl - 385.0) / 25.0) ** 2)
        band = 3.0e4 * holes * np.exp(-0.5 * ((wl - 520.0) / 45.0) ** 2)
        drude = np.clip((wl - 600.0) / 180.0, 0, None) ** 2  # free carriers absorb more the redder
        free = 1.5e4 * holes / max(self.mobility(vessel.amounts), 1e-3) * drude
        return self.path_length_cm * (neutral + band + free)
