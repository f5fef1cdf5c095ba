"""One Artificial-Chemist experiment: crystals, iodide and ligand through the reactor; read the flow cell.

Flush and blank as every flow lab here; then the perovskite, ZnI2 and oleylamine pumps run at the recipe's
flows with toluene making up the total (which sets the residence time), for 2.5 reactor volumes; the flow
cell is read with the lamp (absorbance), then with the lamp off, when only what the cell's 365 nm LED
excites reaches the detector (photoluminescence). The quantum yield is emitted over absorbed LED photons,
divided by the bench's collection efficiency.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Any

import bluesky.preprocessors as bpp
import numpy as np

from experiments.common import offline, spectra
from experiments.common.plans import flow_experiment
from simulators.world import Conditions, Portion

from .chemistry import COLLECTION, HC_EV_NM, HalideExchange

REAGENTS = ("perovskite", "iodide", "ligand")
STOCKS = {"perovskite": {"pb": 1.0e-3}, "iodide": {"zni": 6.0e-3}, "ligand": {"lig": 1.0e-2}}
REACTOR_UL = 200.0
EMISSION_NM = (470.0, 780.0)
#: Calibration of the flow cell's excitation LED (the simulated bench's: simulators/ocean.py).
EXCITATION_PEAK_COUNTS = 30000.0
#: An emission peak counts only this many standard deviations of the detector's noise above the dark.
NOISE_FLOOR_SIGMAS = 8.0
#: How far the emission peak lies above the point where the absorption edge reaches half its height
#: (that point sits below the gap, the emission 30 meV below it): the median over the composition range.
EMISSION_ABOVE_EDGE_EV = 0.02
#: The linewidth a sample that does not emit is given: wider than any emitting one.
DARK_FWHM_MEV = 500.0


def rates(recipe: Mapping[str, float]) -> dict[str, float]:
    flows = {name: float(recipe[f"{name}_ul_min"]) for name in REAGENTS}
    return {**flows, "toluene": max(float(recipe["total_ul_min"]) - sum(flows.values()), 0.0)}


def qd_flow(recipe: Mapping[str, float], devices: Mapping[str, Any], *,
            reactor_volume_ul: float = REACTOR_UL) -> Generator[Any, Any, Any]:  # fmt: skip
    metadata = {"plan_name": "qd_flow", "recipe": dict(recipe)}

    @bpp.run_decorator(md=metadata)
    def experiment() -> Generator[Any, Any, Any]:
        yield from flow_experiment(devices, rates(recipe), reactor_volume_ul=reactor_volume_ul,
                                   carrier="toluene", emission=True)  # fmt: skip

    return (yield from experiment())


def excitation_counts(wavelengths: np.ndarray) -> np.ndarray:
    """The flow cell's LED as calibrated (counts per pixel band in 100 ms, 365 nm)."""
    return EXCITATION_PEAK_COUNTS * np.exp(-0.5 * ((wavelengths - 365.0) / 8.0) ** 2)


def edge_ev(wavelengths: np.ndarray, absorbance: np.ndarray) -> float:
    """The emission energy a dark sample would have, from where its absorption edge reaches half its
    height: its composition still tells the optimizer how far it is from the target energy."""
    inside = spectra.window(wavelengths, *EMISSION_NM) & np.isfinite(absorbance)
    wl, a = wavelengths[inside], np.convolve(absorbance[inside], np.ones(9) / 9, mode="same")
    above = np.nonzero(a >= a.max() / 2)[0]
    if a.max() <= 0.05 or not len(above):
        return 0.0
    return float(HC_EV_NM / wl[above[-1]]) + EMISSION_ABOVE_EDGE_EV


def emission_figures(wavelengths: np.ndarray, dark: np.ndarray, lit_dark: np.ndarray,
                     absorbance: np.ndarray) -> dict[str, float]:  # fmt: skip
    """Peak energy (eV), linewidth (meV) and quantum yield from the lamp-off reading against the dark."""
    inside = spectra.window(wavelengths, *EMISSION_NM)
    emitted = np.where(inside, lit_dark - dark, 0.0)
    smooth = np.convolve(emitted, np.ones(9) / 9, mode="same")
    peak = int(np.argmax(smooth))
    # A dark crystal's "peak" is a noise spike, and its width a pixel's: that must not read as a narrow
    # line. The detector's noise, from the median absolute deviation of the window, sets the floor.
    spread = emitted[inside] - np.median(emitted[inside])
    noise = 1.4826 * float(np.median(np.abs(spread))) / 3.0  # of a 9-pixel mean
    if smooth[peak] <= max(NOISE_FLOOR_SIGMAS * noise, 0.0):
        return {"peak_ev": edge_ev(wavelengths, absorbance), "fwhm_mev": DARK_FWHM_MEV, "plqy": 0.0}
    half = smooth >= smooth[peak] / 2
    low, high = peak, peak
    while low > 0 and half[low - 1]:
        low -= 1
    while high < len(half) - 1 and half[high + 1]:
        high += 1
    # Where the sample lets through no more than the dark (an opaque band: the log is undefined), it
    # absorbs everything; counting those pixels as clear would inflate the yield.
    a = np.clip(np.nan_to_num(absorbance, nan=4.0, posinf=4.0, neginf=0.0), 0.0, 4.0)
    absorbed = float(np.sum(excitation_counts(wavelengths) * (1 - 10 ** (-a))))
    return {
        "peak_ev": float(HC_EV_NM / wavelengths[peak]),
        "fwhm_mev": float(1000 * (HC_EV_NM / wavelengths[low] - HC_EV_NM / wavelengths[high])),
        # Summed with the noise's negative pixels too: dropping them would count its positive half as light.
        "plqy": float(np.sum(emitted)) / (COLLECTION * absorbed) if absorbed > 0 else 0.0,
    }


def extract(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, float]:
    dark, lit = spectra.last(documents, "dark"), spectra.last(documents, "emission")
    sample = spectra.last(documents)
    return emission_figures(sample.wavelengths_nm, dark.counts, lit.counts, sample.absorbance)


def outflow(recipe: Mapping[str, float], reactor_volume_ul: float = REACTOR_UL) -> Portion:
    flows = rates(recipe)
    plug = Portion(sum(flows.values()), {})
    for name, flow in flows.items():
        for species, concentration in STOCKS.get(name, {}).items():
            plug.amounts[species] = concentration * flow
    HalideExchange().evolve(plug, reactor_volume_ul / float(recipe["total_ul_min"]) * 60.0, Conditions())
    return plug


def simulate(recipe: Mapping[str, float], seed: int = 0) -> dict[str, float]:
    """The campaign's measurement as a plain function (same chemistry, spectrometer model and analysis)."""
    reading = offline.read(HalideExchange(), outflow(recipe), seed=seed, lit=True)
    return emission_figures(reading.wavelengths_nm, reading.dark, reading.emission, reading.absorbance)
