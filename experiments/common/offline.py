"""What the spectrometer would read, without the bench: the simulated HDX's own counts model over a
world holding one sample. The benchmarks use it to run a campaign's chemistry thousands of times as a
plain function; the closed-loop runs read the same model through the drivers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from simulators.clock import VirtualClock
from simulators.ocean import OceanHDX
from simulators.world import Portion, World


@dataclass(frozen=True)
class Reading:
    wavelengths_nm: np.ndarray
    dark: np.ndarray
    reference: np.ndarray
    sample: np.ndarray
    #: The sample with the lamp off (what its excitation LED makes it emit, if its holder is lit).
    emission: np.ndarray

    @property
    def absorbance(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.log10((self.sample - self.dark) / (self.reference - self.dark))


def read(chemistry: Any, contents: Portion | None, *, seed: int = 0, integration_s: float = 0.1,
         lit: bool = False) -> Reading:  # fmt: skip
    """Dark, blank reference and sample counts of ``contents`` in the holder (host-side linearisation of
    the detector skipped: the simulated nonlinearity is within a per cent at these counts)."""
    world = World(VirtualClock(), chemistry, seed=seed)
    world.add_station("spectrometer").light = 1.0 if lit else 0.0
    spectrometer = OceanHDX(world, {"holder": "spectrometer"})
    spectrometer.lamp_enabled = False
    dark = spectrometer.counts(integration_s).astype(float)
    spectrometer.lamp_enabled = True
    reference = spectrometer.counts(integration_s).astype(float)
    if contents is not None:
        vessel = world.new_vessel(max(contents.volume_ul, 1.0))
        vessel.put(Portion(contents.volume_ul, dict(contents.amounts)))
        world.stations["spectrometer"].vessel = vessel
    sample = spectrometer.counts(integration_s).astype(float)
    spectrometer.lamp_enabled = False
    emission = spectrometer.counts(integration_s).astype(float)
    return Reading(spectrometer.wavelengths, dark, reference, sample, emission)
