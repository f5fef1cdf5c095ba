"""Output warping: the GP may model the log of each value's distance below the worst value seen.

Many objectives are a flat floor with a few deep, narrow wells (Hartmann-6; a yield that is near zero over
most of a recipe space). On the raw values the floor is one level and a well is a spike the GP can only see
from inside it. On ``-log(worst - y + OFFSET * span)`` the floor's small slopes become visible and a well's
tails reach far, so the model points towards wells it has not yet sampled. Whether an objective is like
that is decided from the data: both models are fitted, and the warped one is used only where it predicts
held-out points better, in the objective's own units (leave-one-out density times the warp's Jacobian), and
fits them as noise-free (a rugged or noisy objective is not a floor with wells). Measured in
docs/optimizer.md ("output warping").

Pure functions of the values; the warp is monotone, so orderings (the incumbent, the stall test) are kept.
"""

from __future__ import annotations

import numpy as np

IDENTITY = "identity"
LOG_GAP = "log-gap"
#: the log's offset, as a fraction of the values' span: how far the log stretches the floor
OFFSET = 0.01


def _gap(y: np.ndarray) -> np.ndarray:
    span = float(y.max() - y.min())
    return y.max() - y + OFFSET * (span if span > 0 else 1.0)


def warp(y: np.ndarray, kind: str) -> np.ndarray:
    """The values the GP models (lower stays better)."""
    if kind == IDENTITY:
        return y
    if kind == LOG_GAP:
        return -np.log(_gap(y))
    raise ValueError(f"unknown warp {kind!r}")


def log_jacobian(y: np.ndarray, kind: str) -> np.ndarray:
    """log |d warp / dy| at each value: converts a density of warped values to one of the values."""
    if kind == IDENTITY:
        return np.zeros(len(y))
    if kind == LOG_GAP:
        return -np.log(_gap(y))
    raise ValueError(f"unknown warp {kind!r}")


def unwarp(w: float, y: np.ndarray, kind: str) -> float:
    """The value whose warp, given the values ``y`` the warp was made from, is ``w``."""
    if kind == IDENTITY:
        return w
    if kind == LOG_GAP:
        return float(y.max() + (_gap(y).min()) - np.exp(-w))
    raise ValueError(f"unknown warp {kind!r}")
