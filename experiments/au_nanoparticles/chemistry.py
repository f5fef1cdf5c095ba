"""Seed-mediated growth of gold nanoparticles in flow, and their plasmon band.

Following Tao et al., Adv. Funct. Mater. 31, 2106725 (2021): seeds, a gold precursor (HAuCl4) and a
reductant (ascorbic acid) meet in a microreactor; the seeds grow, and an excess of reductant over seeds
nucleates new, small particles instead. What is read is the extinction spectrum in a flow cell.

- Kinetics (ours, of the kind the paper describes): Au(III) is reduced at a rate k(T)·[AA]·[Au(III)]
  (1.5 AA per Au); of what is reduced, a fraction f = r²/(r² + (K·s)²) nucleates, with r the reductant
  and s the seed-gold concentration, and the rest grows the seeds. Gold is conserved.
- Optics: the plasmon peak of Haiss et al., Anal. Chem. 79, 4215 (2007), Eq. 11, d = ln((λ − λ0)/L1)/L2
  with λ0 = 512 nm, L1 = 6.53 nm, L2 = 0.0216 nm⁻¹, solved for λ: λ = 512 + 6.53·exp(0.0216·d) nm
  (521 nm at 12 nm, 531 nm at 50, 569 nm at 100). The paper gives it for particles above about 25 nm;
  below, it stays near 520 nm, as the peak of small spheres does. Extinction per gold atom about
  4000 L mol⁻¹ cm⁻¹ at the peak (the order of the molar extinction coefficients they tabulate, about
  1e8 M⁻¹ cm⁻¹ for 10 nm particles of 3·10⁴ atoms), growing with d³ by scattering; the band broadens for
  small particles (surface damping) and large ones (radiation damping); interband absorption of gold
  below 500 nm per atom.

Amounts are µmol (of Au atoms for the particle populations), volumes µL: concentrations in mol/L.
"""

from __future__ import annotations

import math

import numpy as np

from simulators.world import Conditions

SEED_DIAMETER_NM = 12.0
NUCLEUS_DIAMETER_NM = 5.0
AA_PER_AU = 1.5


class SeededGrowth:
    def __init__(self, k_per_m_s: float = 30.0, nucleation_k: float = 100.0, activation_kj_mol: float = 40.0,
                 path_length_cm: float = 1.0):  # fmt: skip
        self.k = k_per_m_s
        self.nucleation_k = nucleation_k
        self.activation = activation_kj_mol * 1000.0
        self.path_length_cm = path_length_cm

    # -- chemistry -----------------------------------------------------------------------------------
    def evolve(self, contents, seconds: float, conditions: Conditions) -> None:
        amounts = contents.amounts
        volume = contents.volume_ul
        if volume <= 0 or amounts.get("au3", 0.0) <= 0 or amounts.get("aa", 0.0) <= 0:
            return
        kelvin = conditions.temperature_c + 273.15
        k = self.k * math.exp(-self.activation / 8.314 * (1 / kelvin - 1 / 295.15))
        steps = max(1, math.ceil(seconds / 2.0))
        h = seconds / steps
        for _ in range(steps):
            au3, aa = amounts.get("au3", 0.0), amounts.get("aa", 0.0)
            if au3 <= 0 or aa <= 0:
                break
            r = aa / volume
            reduced = min(au3 * (1 - math.exp(-k * r * h)), aa / AA_PER_AU)
            seeds = amounts.get("seed_au", 0.0) / volume
            f = r**2 / (r**2 + (self.nucleation_k * seeds) ** 2) if r > 0 else 0.0
            amounts["au3"] = au3 - reduced
            amounts["aa"] = aa - AA_PER_AU * reduced
            amounts["grown_au"] = amounts.get("grown_au", 0.0) + (1 - f) * reduced
            amounts["nucleated_au"] = amounts.get("nucleated_au", 0.0) + f * reduced

    # -- optics --------------------------------------------------------------------------------------
    def populations(self, vessel) -> list[tuple[float, float]]:
        """(gold-atom concentration in mol/L, diameter in nm) of the seeded and the nucleated particles."""
        volume = vessel.volume_ul
        amounts = vessel.amounts
        seeds = amounts.get("seed_au", 0.0)
        found = []
        if seeds > 0:
            grown = seeds + amounts.get("grown_au", 0.0)
            found.append((grown / volume, SEED_DIAMETER_NM * (grown / seeds) ** (1 / 3)))
        nucleated = amounts.get("nucleated_au", 0.0)
        if nucleated > 0:
            found.append((nucleated / volume, NUCLEUS_DIAMETER_NM))
        return found

    def absorbance(self, vessel, wavelengths_nm: np.ndarray) -> np.ndarray:
        wl = np.asarray(wavelengths_nm, dtype=float)
        total = np.zeros_like(wl)
        if vessel is None or vessel.volume_ul <= 0:
            return total
        for concentration, diameter in self.populations(vessel):
            total += concentration * extinction_per_atom(diameter, wl)
        return self.path_length_cm * total


#: Haiss et al. 2007, Eq. 11: λ0 (nm), L1 (nm), L2 (1/nm).
HAISS_LAMBDA0_NM, HAISS_L1_NM, HAISS_L2_PER_NM = 512.0, 6.53, 0.0216


def plasmon_peak_nm(diameter_nm: float) -> float:
    """Haiss et al.'s Eq. 11 solved for the peak wavelength of spheres of this diameter."""
    return HAISS_LAMBDA0_NM + HAISS_L1_NM * math.exp(HAISS_L2_PER_NM * diameter_nm)


def extinction_per_atom(diameter_nm: float, wavelengths_nm: np.ndarray) -> np.ndarray:
    """L mol⁻¹ cm⁻¹ per mole of gold atoms in particles of this diameter."""
    peak = plasmon_peak_nm(diameter_nm)
    fwhm = 50.0 + 0.9 * max(0.0, diameter_nm - 25.0) + 150.0 / diameter_nm
    height = 4000.0 * (1.0 + (diameter_nm / 70.0) ** 3) * min(1.0, diameter_nm / 8.0)
    gamma = fwhm / 2.0
    plasmon = height * gamma**2 / ((wavelengths_nm - peak) ** 2 + gamma**2)
    interband = 2600.0 * np.exp(-np.clip(wavelengths_nm - 400.0, 0.0, None) / 55.0)
    return plasmon + interband
