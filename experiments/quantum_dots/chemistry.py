"""Halide exchange of CsPbBr3 nanocrystals in flow, as the Artificial Chemist ran it (Epps et al., Adv. Mater.
32, 2001626, 2020), and the crystals' absorption and photoluminescence.

The paper's bot made CsPbBr3 quantum dots in flow and tuned their emission by halide exchange with zinc
halides, reading absorption and photoluminescence in line; its three objectives were the emission peak at
a target energy, a narrow linewidth and a high quantum yield.

Our model (ours; the trends are the field's):
- Exchange: iodide from ZnI2 enters the crystals at a first-order rate towards the equilibrium iodide
  fraction x_eq = I/(I + Br) of the mixture (time constant ~25 s, so residence time matters).
- Band gap of CsPb(Br1−xIx)3 from 2.42 eV (x = 0) to 1.80 eV (x = 1) with slight bowing (the composition
  range of Protesescu et al., Nano Lett. 15, 3692 (2015), Fig. 2); emission 30 meV below the gap.
- Linewidth: 80 meV, plus alloy disorder (up to 60 meV at x = 0.5), plus the spread of an unfinished
  exchange (up to 150 meV).
- Quantum yield: 0.85 at best; mixed halides lose some; ligand (oleylamine) passivates up to a point and
  strips crystals beyond it; unreacted zinc halide quenches.
- Light: absorption above the gap (an edge and an exciton peak); emission = yield × absorbed excitation
  photons × a collection efficiency ``COLLECTION`` (what a real bench calibrates with a dye of known yield).
  The bench reads it as the paper's did, in line: absorbance with the lamp, photoluminescence with the lamp
  off and the flow cell's 365 nm LED on.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from simulators.world import Conditions

HC_EV_NM = 1239.84
COLLECTION = 0.05
EPSILON_PB = 8000.0  # L/(mol·cm) per mol Pb, above the edge


class HalideExchange:
    def __init__(self, exchange_per_s: float = 0.04, path_length_cm: float = 1.0):
        self.rate = exchange_per_s
        self.path_length_cm = path_length_cm

    # -- chemistry -------------------------------------------------------------------------------------
    def evolve(self, contents, seconds: float, conditions: Conditions) -> None:
        amounts = contents.amounts
        pb, free = amounts.get("pb", 0.0), amounts.get("zni", 0.0)
        if pb <= 0 or free <= 0:
            return
        inside = amounts.get("i_in", 0.0)
        x = inside / (3 * pb)
        x_eq = (free + inside) / (free + inside + 3 * pb)
        moved = (x_eq - x) * (1 - math.exp(-self.rate * seconds)) * 3 * pb
        amounts["i_in"] = inside + moved
        amounts["zni"] = free - moved

    def state(self, vessel) -> dict[str, float] | None:
        """Iodide fraction, exchange progress, gap, emission energy, linewidth (eV), quantum yield."""
        amounts = vessel.amounts
        pb = amounts.get("pb", 0.0)
        if pb <= 0 or vessel.volume_ul <= 0:
            return None
        inside, free, ligand = amounts.get("i_in", 0.0), amounts.get("zni", 0.0), amounts.get("lig", 0.0)
        x = inside / (3 * pb)
        x_eq = (free + inside) / (free + inside + 3 * pb)
        progress = 1.0 if x_eq <= 1e-9 else min(1.0, x / x_eq)
        gap = 2.42 - 0.57 * x - 0.05 * x * (1 - x)
        fwhm = 0.080 + 0.060 * 4 * x * (1 - x) + 0.150 * (1 - progress) * (x_eq > 1e-3)
        per_pb = ligand / pb
        passivation = per_pb / (per_pb + 1.0) * math.exp(-max(0.0, per_pb - 4.0) / 3.0)
        quench = 1.0 / (1.0 + 0.8 * free / (3 * pb))
        qy = 0.85 * passivation * (1 - 0.35 * 4 * x * (1 - x)) * quench
        return {"x": x, "progress": progress, "gap": gap, "emission": gap - 0.030, "fwhm": fwhm, "qy": qy}

    # -- light -------------------------------------------------------------------------------------------
    def absorbance(self, vessel, wavelengths_nm: np.ndarray) -> np.ndarray:
        wl = np.asarray(wavelengths_nm, dtype=float)
        if vessel is None:
            return np.zeros_like(wl)
        state = self.state(vessel)
        if state is None:
            return np.zeros_like(wl)
        energy = HC_EV_NM / wl
        sigma = state["fwhm"] / 2.355
        edge = 0.5 * (1 + erf((energy - state["gap"]) / (math.sqrt(2) * sigma)))
        exciton = 0.6 * np.exp(-0.5 * ((energy - state["gap"]) / sigma) ** 2)
        return self.path_length_cm * EPSILON_PB * vessel.concentration("pb") * (edge + exciton)

    def photoluminescence(self, vessel, wavelengths_nm: np.ndarray, excitation: np.ndarray) -> np.ndarray:
        wl = np.asarray(wavelengths_nm, dtype=float)
        state = self.state(vessel) if vessel is not None else None
        if state is None:
            return np.zeros_like(wl)
        absorbed = float(np.sum(excitation * (1 - 10 ** (-self.absorbance(vessel, wl)))))
        energy = HC_EV_NM / wl
        shape = np.exp(-0.5 * ((energy - state["emission"]) / (state["fwhm"] / 2.355)) ** 2)
        shape /= shape.sum()
        return COLLECTION * state["qy"] * absorbed * shape
