"""Reading spectra back out of a run's documents, and turning counts into what the campaigns optimise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Spectrum:
    wavelengths_nm: np.ndarray
    absorbance: np.ndarray
    counts: np.ndarray
    data: Mapping[str, Any]


def spectra(documents: Sequence[tuple[str, Mapping[str, Any]]], stream: str = "primary") -> list[Spectrum]:
    """Every spectrum in ``stream``, in order (the spectrometer's wavelengths come from the descriptor)."""
    descriptors = {
        doc["uid"]: doc for name, doc in documents if name == "descriptor" and doc.get("name") == stream
    }
    found = []
    for name, doc in documents:
        if name != "event" or doc.get("descriptor") not in descriptors:
            continue
        data = doc["data"]
        key = next((k for k in data if k.endswith("_absorbance")), None)
        if key is None:
            continue
        device = key.removesuffix("_absorbance")
        configuration = descriptors[doc["descriptor"]]["configuration"][device]["data"]
        found.append(
            Spectrum(
                np.asarray(configuration[f"{device}_wavelengths"], dtype=float),
                np.asarray(data[key], dtype=float),
                np.asarray(data[f"{device}_counts"], dtype=float),
                data,
            )
        )
    return found


def last(documents: Sequence[tuple[str, Mapping[str, Any]]], stream: str = "primary") -> Spectrum:
    found = spectra(documents, stream)
    if not found:
        raise ValueError(f"no spectrum in the {stream!r} stream")
    return found[-1]


def window(wavelengths: np.ndarray, low: float, high: float) -> np.ndarray:
    return (wavelengths >= low) & (wavelengths <= high)


def band(spectrum: Spectrum, low: float, high: float) -> float:
    """Mean absorbance between ``low`` and ``high`` nm (finite pixels only)."""
    inside = window(spectrum.wavelengths_nm, low, high) & np.isfinite(spectrum.absorbance)
    return float(np.mean(spectrum.absorbance[inside]))


def rms_distance(wavelengths: np.ndarray, absorbance: np.ndarray, target_wl: np.ndarray,
                 target: np.ndarray, low: float, high: float) -> float:  # fmt: skip
    inside = window(wavelengths, low, high) & np.isfinite(absorbance)
    expected = np.interp(wavelengths[inside], target_wl, target)
    return float(np.sqrt(np.mean((absorbance[inside] - expected) ** 2)))
