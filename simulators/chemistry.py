"""Chemistry models: what a vessel's contents look like to a spectrometer.

A model is anything with ``absorbance(vessel, wavelengths_nm) -> ndarray`` (decadic absorbance
over the optical path). A lab file picks one by name (``beer-lambert``) or by import path
(``package.module:Class``), so a campaign can plug in its own chemistry.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from simulators.world import Vessel


class ChemistryModel(Protocol):
    """What the spectrometer asks of a chemistry. A model may also offer:

    - ``evolve(contents, seconds, conditions)``: react ``contents`` (anything with ``volume_ul`` and a
      mutable ``amounts`` dict: a vessel, a plug in a flow reactor) for ``seconds`` under
      ``simulators.world.Conditions`` (temperature, light, stirring, a module's catalyst). Amounts are
      extensive, so mixing two contents adds them; a model keeps any state (particle moments, a film's
      light dose) as such "species".
    - ``photoluminescence(vessel, wavelengths_nm, excitation_counts)``: counts the sample emits per pixel
      when the lamp and the holder's excitation LED deliver ``excitation_counts`` per pixel band (the
      spectrometer adds them to what passes).
    """

    def absorbance(self, vessel: Vessel | None, wavelengths_nm: np.ndarray) -> np.ndarray: ...


# Three food-dye-like species, each a sum of Gaussian bands (centre nm, width nm, ε in L/(mol·cm)).
DEFAULT_SPECIES: dict[str, list[tuple[float, float, float]]] = {
    "yellow": [(427.0, 38.0, 27000.0)],
    "red": [(504.0, 42.0, 25000.0), (350.0, 30.0, 6000.0)],
    "blue": [(630.0, 45.0, 130000.0), (410.0, 35.0, 9000.0)],
}


class BeerLambert:
    """A = l · Σ εᵢ(λ) cᵢ: ideal mixing of dyes with Gaussian absorption bands, no interactions."""

    def __init__(
        self,
        species: Mapping[str, list[tuple[float, float, float]]] | None = None,
        path_length_cm: float = 1.0,
        baseline: float = 0.0,
    ):
        self.species = {
            name: [tuple(map(float, band)) for band in bands]
            for name, bands in (species or DEFAULT_SPECIES).items()
        }
        self.path_length_cm = path_length_cm
        self.baseline = baseline

    def molar_absorptivity(self, species: str, wavelengths_nm: np.ndarray) -> np.ndarray:
        wl = np.asarray(wavelengths_nm, dtype=float)
        epsilon = np.zeros_like(wl)
        for centre, width, peak in self.species.get(species, []):
            epsilon += peak * np.exp(-0.5 * ((wl - centre) / width) ** 2)
        return epsilon

    def absorbance(self, vessel: Vessel | None, wavelengths_nm: np.ndarray) -> np.ndarray:
        wl = np.asarray(wavelengths_nm, dtype=float)
        absorbance = np.full_like(wl, self.baseline)
        if vessel is None or vessel.volume_ul <= 0:
            return absorbance
        for species in self.species:
            concentration = vessel.concentration(species)
            if concentration > 0:
                absorbance += self.path_length_cm * concentration * self.molar_absorptivity(species, wl)
        return absorbance


def load_chemistry(config: Mapping[str, Any] | None) -> ChemistryModel:
    """The model a lab file asks for: ``{model: beer-lambert, ...}`` or ``{model: "pkg.mod:Class", ...}``."""
    options = dict(config or {})
    name = options.pop("model", "beer-lambert")
    if name == "beer-lambert":
        return BeerLambert(**options)
    module_name, _, attribute = str(name).partition(":")
    if not attribute:
        raise ValueError(
            f"chemistry model {name!r} is neither 'beer-lambert' nor an import path 'package.module:Class'"
        )
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory(**options)
