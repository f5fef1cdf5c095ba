"""When to leave a refined basin: the one restart of a smooth, noise-free campaign.

A Bayesian optimiser commits to the basin of its best early point and refines it. On a multimodal objective
whose best basin is narrow (Hartmann-6's global minimum), a third of the campaigns commit to a broader, worse
basin and spend the rest of the budget refining it. Once the best value stalls, and the model says the
objective is smooth and noise-free (so more refinement can only gain what the model already predicts), one
restart spends a few steps per parameter on a trust region around the best point far from the incumbent,
modelled by a GP on that region's points alone (the global GP, dominated by the refined basin, steers a
restart back into it). The restart ends early if it walks back into the incumbent's basin. Noisy or rugged
objectives keep refining: there the fitted noise is well above its floor and the gate stays shut.

Every decision is a pure function of the successful history in completion order, like the rest of the
optimiser. Measured in docs/optimizer.md ("the third round").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: the best value improved by less than this fraction of its span over WINDOW successes: a stall
WINDOW = 6
STALL = 0.02
#: fitted noise variance over signal variance below which the model counts as noise-free (the floor is 1e-6)
NOISE_FREE = 1e-5
#: the restart centre is the best point at least this far (× sqrt(columns)) from the incumbent
DISTANCE = 0.3
#: points within this distance (× sqrt(columns)) of the centre, and nearer it than the incumbent, are its
#: region
REGION = 0.25
#: side of the trust region's box around the region's best point, unit-cube units
SIDE = 0.4
#: a restart point this close (× sqrt(columns)) to the incumbent has walked back into its basin: stop
MERGE = 0.1
#: the restart lasts this many successes per parameter
STEPS_PER_COLUMN = 4


@dataclass(frozen=True)
class Restart:
    centre: np.ndarray  # encoded point the restart searches around
    incumbent: np.ndarray  # the best point when the restart began

    def region(self, X: np.ndarray) -> np.ndarray:
        """Indices of the points of X that belong to the restart's region."""
        scale = math.sqrt(X.shape[1])
        to_centre = np.linalg.norm(X - self.centre, axis=1)
        to_incumbent = np.linalg.norm(X - self.incumbent, axis=1)
        return np.flatnonzero((to_centre <= REGION * scale) & (to_centre <= to_incumbent))


def first_stall(y: np.ndarray, n_init: int) -> int | None:
    """The number of successes at which the best value first stalled (None: not yet)."""
    best = np.minimum.accumulate(y)
    worst = np.maximum.accumulate(y)
    t = np.arange(n_init + WINDOW, len(y) + 1)
    stalled = best[t - 1 - WINDOW] - best[t - 1] < STALL * (worst[t - 1] - best[t - 1])
    return int(t[np.argmax(stalled)]) if stalled.any() else None


def restart_in_force(
    X: np.ndarray, y: np.ndarray, n_init: int, noise_free: Callable[[int], bool] = lambda t: True
) -> Restart | None:
    """The restart the next proposal belongs to, given successes X (encoded) and y (lower is better).

    ``noise_free(t)`` says whether the model fitted on the first ``t`` successes is noise-free; only the first
    stall is considered, so a campaign restarts at most once."""
    t = first_stall(y, n_init)
    if t is None:
        return None
    scale = math.sqrt(X.shape[1])
    incumbent = int(np.argmin(y[:t]))
    far = np.flatnonzero(np.linalg.norm(X[:t] - X[incumbent], axis=1) >= DISTANCE * scale)
    if not len(far):
        return None
    centre = int(far[np.argmin(y[far])])
    end = t + STEPS_PER_COLUMN * X.shape[1]
    back = np.linalg.norm(X[t:end] - X[incumbent], axis=1) < MERGE * scale
    if back.any():
        end = t + int(np.argmax(back)) + 1
    # The gate last: it may cost two fits, and once the restart is over nothing depends on it.
    if len(y) >= end or not noise_free(t):
        return None
    return Restart(X[centre].copy(), X[incumbent].copy())
