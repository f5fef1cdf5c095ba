"""From the run's documents to the numbers the optimizer sees: how far the spectrum is from the target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

TARGET_FILE = Path(__file__).with_name("target.csv")
# The lamp is weak below 400 nm and the dyes do not absorb above 700 nm: outside that window the
# ratio (S - D) / (R - D) is mostly noise and would only blur the distance.
WINDOW_NM = (400.0, 700.0)


@cache
def target() -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(TARGET_FILE, delimiter=",", comments="#", skiprows=2)
    return data[:, 0], data[:, 1]


def spectral_distance(wavelengths_nm: np.ndarray, absorbance: np.ndarray) -> float:
    """Root-mean-square absorbance difference from the target over the window."""
    target_wl, target_absorbance = target()
    wl = np.asarray(wavelengths_nm, dtype=float)
    measured = np.asarray(absorbance, dtype=float)
    inside = (wl >= WINDOW_NM[0]) & (wl <= WINDOW_NM[1]) & np.isfinite(measured)
    if inside.sum() < 10:
        raise ValueError(f"fewer than 10 usable pixels between {WINDOW_NM[0]} and {WINDOW_NM[1]} nm")
    expected = np.interp(wl[inside], target_wl, target_absorbance)
    return float(np.sqrt(np.mean((measured[inside] - expected) ** 2)))


def extract(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, float]:
    """The campaign's extractor: the last sample spectrum in the primary stream, against the target."""
    descriptors = {
        doc["uid"]: doc for name, doc in documents if name == "descriptor" and doc.get("name") == "primary"
    }
    events = [doc for name, doc in documents if name == "event" and doc.get("descriptor") in descriptors]
    for event in reversed(events):
        data = event["data"]
        key = next((k for k in data if k.endswith("_absorbance")), None)
        if key is None:
            continue
        device = key.removesuffix("_absorbance")
        configuration = descriptors[event["descriptor"]]["configuration"][device]["data"]
        wavelengths = np.asarray(configuration[f"{device}_wavelengths"], dtype=float)
        absorbance = np.asarray(data[key], dtype=float)
        window = (wavelengths >= WINDOW_NM[0]) & (wavelengths <= WINDOW_NM[1])
        return {
            "distance": spectral_distance(wavelengths, absorbance),
            "peak_absorbance": float(np.nanmax(absorbance[window])),
        }
    raise ValueError("no absorbance spectrum in the primary stream")
