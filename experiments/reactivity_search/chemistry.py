"""Which combinations of reagents from a library react, after Granda et al., Nature 559, 377 (2018).

The paper's robot mixed pairs and triples of 18 reagents (969 combinations), read each mixture by NMR and
IR, and called it reactive when its spectra differed from those of its starting materials; a classifier
on the binary encoding of the inputs then predicted the reactivity of the combinations not yet run.
Reactivity there comes from pairs of functional groups that react together, and a few triples that only
react as three (a catalyst, a third component).

Our library is 18 common reagents, one per functional group the paper's kind of library covers; which
groups react, and how fast, is textbook organic chemistry (the rate constants are ours, chosen so that a
30-minute reaction at 50 mM separates fast, slow and no reaction). Amounts are mol/L × µL, like every
chemistry here. Each reagent and each product has one UV band (absorptivities are for the mixture as the
flow cell reads it, i.e. after the bench's dilution), so a reaction shows as its reagents' bands falling
and its product's band rising, which is what the classifier of the paper looked for in its spectra.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from simulators.world import Conditions

#: reagent -> (functional group, band centre nm, band width nm, absorptivity L/(mol·cm) as read)
REAGENTS: dict[str, tuple[str, float, float, float]] = {
    "benzylamine": ("primary amine", 256.0, 12.0, 4.0),
    "morpholine": ("secondary amine", 230.0, 10.0, 2.0),
    "phenylhydrazine": ("hydrazine", 280.0, 15.0, 6.0),
    "thiophenol": ("thiol", 236.0, 12.0, 6.0),
    "benzaldehyde": ("aldehyde", 248.0, 14.0, 10.0),
    "cyclohexanone": ("ketone", 285.0, 20.0, 1.0),
    "acetyl_chloride": ("acyl chloride", 235.0, 10.0, 2.0),
    "phenyl_isocyanate": ("isocyanate", 275.0, 14.0, 5.0),
    "benzyl_bromide": ("alkyl halide", 262.0, 12.0, 3.0),
    "methyl_acrylate": ("Michael acceptor", 240.0, 12.0, 4.0),
    "maleic_anhydride": ("anhydride", 252.0, 14.0, 5.0),
    "cyclopentadiene": ("diene", 240.0, 14.0, 6.0),
    "phenylacetylene": ("alkyne", 245.0, 12.0, 8.0),
    "benzyl_azide": ("azide", 287.0, 12.0, 1.5),
    "copper_iodide": ("copper(I)", 330.0, 30.0, 1.0),
    "tert_butyl_isocyanide": ("isocyanide", 232.0, 10.0, 1.0),
    "acetic_acid": ("acid", 210.0, 10.0, 1.0),
    "triethylamine": ("base", 215.0, 10.0, 1.0),
}
LIBRARY = tuple(REAGENTS)
GROUP = {name: spec[0] for name, spec in REAGENTS.items()}


@dataclass(frozen=True)
class Reaction:
    name: str
    #: groups consumed (one each), and groups that must be present but are not consumed
    reactants: tuple[str, ...]
    catalysts: tuple[str, ...]
    #: L/(mol·s), on the concentrations of the first two reactants
    rate: float
    band: tuple[float, float, float]  # product: centre nm, width nm, absorptivity


AMINES = ("primary amine", "secondary amine", "hydrazine")
N = AMINES[:2]  # the amines that alkylate and add to acceptors at these rates
REACTIONS: tuple[Reaction, ...] = (
    Reaction("imine", ("primary amine", "aldehyde"), (), 0.5, (318.0, 18.0, 14.0)),
    Reaction("aminal", ("secondary amine", "aldehyde"), (), 0.02, (300.0, 16.0, 8.0)),
    Reaction("hydrazone", ("hydrazine", "aldehyde"), (), 1.0, (355.0, 22.0, 20.0)),
    Reaction("ketone hydrazone", ("hydrazine", "ketone"), (), 0.2, (330.0, 20.0, 14.0)),
    Reaction("ketimine", ("primary amine", "ketone"), ("acid",), 0.05, (305.0, 16.0, 10.0)),
    *(Reaction(f"amide of {a}", (a, "acyl chloride"), (), 2.0, (268.0, 14.0, 10.0)) for a in AMINES),
    *(Reaction(f"urea of {a}", (a, "isocyanate"), (), 1.0, (282.0, 14.0, 12.0)) for a in AMINES),
    *(Reaction(f"amic acid of {a}", (a, "anhydride"), (), 1.0, (292.0, 16.0, 10.0)) for a in AMINES),
    *(Reaction(f"aza-Michael of {a}", (a, "Michael acceptor"), (), 0.02, (298.0, 14.0, 6.0)) for a in N),
    *(Reaction(f"alkylation of {a}", (a, "alkyl halide"), ("base",), 0.03, (272.0, 12.0, 8.0)) for a in N),
    Reaction("Menshutkin", ("base", "alkyl halide"), (), 0.02, (266.0, 12.0, 6.0)),
    Reaction("thia-Michael", ("thiol", "Michael acceptor"), ("base",), 0.5, (310.0, 14.0, 8.0)),
    Reaction("thioether", ("thiol", "alkyl halide"), ("base",), 0.2, (300.0, 14.0, 7.0)),
    Reaction("thioester", ("thiol", "acyl chloride"), (), 0.05, (295.0, 14.0, 9.0)),
    Reaction("copper thiolate", ("thiol", "copper(I)"), (), 0.5, (400.0, 40.0, 12.0)),
    Reaction("Diels-Alder", ("diene", "anhydride"), (), 0.3, (225.0, 10.0, 2.0)),
    Reaction("slow Diels-Alder", ("diene", "Michael acceptor"), (), 0.005, (225.0, 10.0, 2.0)),
    Reaction("CuAAC triazole", ("azide", "alkyne"), ("copper(I)",), 0.5, (262.0, 14.0, 12.0)),
    Reaction("copper acetylide", ("alkyne", "copper(I)"), ("base",), 0.3, (430.0, 40.0, 10.0)),
    Reaction("Passerini", ("isocyanide", "aldehyde", "acid"), (), 0.2, (340.0, 20.0, 10.0)),
)
#: Longest step the chemistry takes at once (s): small against the fastest half-life at 50 mM (10 s).
STEP_S = 2.0


def _present(groups: Iterable[str], reaction: Reaction) -> bool:
    have = set(groups)
    return all(g in have for g in (*reaction.reactants, *reaction.catalysts))


def reactions_of(combination: Iterable[str]) -> list[Reaction]:
    """What can happen in a mixture of these reagents (library names)."""
    groups = [GROUP[name] for name in combination]
    return [reaction for reaction in REACTIONS if _present(groups, reaction)]


def combinations(sizes: Iterable[int] = (2, 3)) -> list[tuple[str, ...]]:
    """Every combination of distinct library reagents of the given sizes (969 for pairs and triples)."""
    return [combo for size in sizes for combo in itertools.combinations(LIBRARY, size)]


class Reactivity:
    """Second-order reactions between the reagents' groups, in whatever holds them."""

    def __init__(self, path_length_cm: float = 1.0):
        self.path_length_cm = path_length_cm

    def evolve(self, contents, seconds: float, conditions: Conditions) -> None:
        amounts = contents.amounts
        volume = contents.volume_ul
        present = [name for name in LIBRARY if amounts.get(name, 0.0) > 0]
        possible = reactions_of(present)
        if not possible or volume <= 0 or seconds <= 0:
            return
        holders = {g: [n for n in present if GROUP[n] == g] for g in {GROUP[n] for n in present}}
        steps = max(1, math.ceil(seconds / STEP_S))
        dt = seconds / steps
        for _ in range(steps):
            for reaction in possible:
                consumed = [holders[g][0] for g in reaction.reactants]
                first, second = (amounts.get(name, 0.0) for name in consumed[:2])
                extent = reaction.rate * (first / volume) * (second / volume) * dt * volume
                extent = min(extent, *(amounts.get(name, 0.0) for name in consumed))
                if extent <= 0:
                    continue
                for name in consumed:
                    amounts[name] -= extent
                key = f"product:{reaction.name}"
                amounts[key] = amounts.get(key, 0.0) + extent

    def absorbance(self, vessel, wavelengths_nm: np.ndarray) -> np.ndarray:
        wl = np.asarray(wavelengths_nm, dtype=float)
        total = np.zeros_like(wl)
        if vessel is None or vessel.volume_ul <= 0:
            return total
        for name, (_, centre, width, epsilon) in REAGENTS.items():
            concentration = vessel.concentration(name)
            if concentration > 0:
                total += epsilon * concentration * np.exp(-0.5 * ((wl - centre) / width) ** 2)
        for reaction in REACTIONS:
            concentration = vessel.concentration(f"product:{reaction.name}")
            if concentration > 0:
                centre, width, epsilon = reaction.band
                total += epsilon * concentration * np.exp(-0.5 * ((wl - centre) / width) ** 2)
        return self.path_length_cm * total


def reference_absorbance(concentrations: Mapping[str, float], wavelengths_nm: np.ndarray) -> np.ndarray:
    """The unreacted mixture's spectrum: the sum of the starting materials' own (1 cm), as the paper
    compared each reaction's spectra with its reagents'."""
    wl = np.asarray(wavelengths_nm, dtype=float)
    total = np.zeros_like(wl)
    for name, concentration in concentrations.items():
        _, centre, width, epsilon = REAGENTS[name]
        total += epsilon * concentration * np.exp(-0.5 * ((wl - centre) / width) ** 2)
    return total
