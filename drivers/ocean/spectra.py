"""Host-side spectroscopy: wavelength calibration, linearity, dark/reference and absorbance.

The spectrometer only sends raw counts and its calibration coefficients; everything here happens on
the host, as in Ocean's own software and in seabreeze.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def wavelengths(coefficients: Sequence[float], pixels: int) -> np.ndarray:
    """λ(p) = Σ cᵢ pⁱ in nm for pixels 0 … pixels−1 (the factory wavelength calibration)."""
    p = np.arange(pixels, dtype=np.float64)
    return np.polynomial.polynomial.polyval(p, np.asarray(coefficients, dtype=np.float64))


def correct_nonlinearity(counts: np.ndarray, coefficients: Sequence[float]) -> np.ndarray:
    """Linearise detector counts: c / P(c) with P(c) = Σ kᵢ cⁱ, as seabreeze applies the factory polynomial.

    Counts at or below zero pass through unchanged (P is not calibrated there).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if not len(coefficients):
        return counts.copy()
    factor = np.polynomial.polynomial.polyval(counts, np.asarray(coefficients, dtype=np.float64))
    safe = (counts > 0) & (factor > 0)
    return np.where(safe, counts / np.where(safe, factor, 1.0), counts)


def saturated_pixels(raw_counts: np.ndarray, max_count: int) -> np.ndarray:
    """Indices of pixels at the detector's full scale: their true intensity is unknown."""
    return np.flatnonzero(np.asarray(raw_counts) >= max_count)


def transmittance(
    sample: np.ndarray, dark: np.ndarray, reference: np.ndarray, *, min_reference_counts: float = 1.0
) -> np.ndarray:
    """T = (S − D)/(R − D); NaN where the reference had no light above the dark.

    Where the sample lets less than one count through (S − D < 1), T is floored at 1/(R − D): one
    count is the detection limit, so the absorbance there is a lower bound, finite and not noise-driven.
    """
    sample, dark, reference = (np.asarray(a, dtype=np.float64) for a in (sample, dark, reference))
    light = reference - dark
    usable = light >= min_reference_counts
    denominator = np.where(usable, light, np.nan)
    signal = np.maximum(sample - dark, 1.0)
    return signal / denominator


def absorbance(
    sample: np.ndarray, dark: np.ndarray, reference: np.ndarray, *, min_reference_counts: float = 1.0
) -> np.ndarray:
    """A = −log10((S − D)/(R − D)), with the guards of ``transmittance`` (NaN where unmeasurable)."""
    return -np.log10(transmittance(sample, dark, reference, min_reference_counts=min_reference_counts))
