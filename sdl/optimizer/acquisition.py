"""Acquisition functions (to maximise) with gradients, and the failure-aware feasibility weight.

All values are in standardised objective units; the objective is minimised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtr

#: what the acquisition search maximises: expected improvement, probability of improvement, lower confidence
#: bound (negated)
Acquisition = Literal["ei", "pi", "lcb"]

#: kernel widths (in GP length scales) the failure model chooses among by leave-one-out likelihood
FEASIBILITY_WIDTHS: tuple[float, ...] = (0.25, 0.5, 1.0)
#: pseudo-observations at the overall success rate that the failure model starts from; below 1, so that one
#: failure next to a candidate counts for more than the campaign-wide rate (see docs/optimizer.md)
FEASIBILITY_PRIOR_WEIGHT = 0.25

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def acquisition(
    kind: Acquisition, mean: np.ndarray, var: np.ndarray, best: float, xi: float, kappa: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value and its derivatives with respect to the mean and the variance."""
    sd = np.sqrt(var)
    if kind == "lcb":
        return -(mean - kappa * sd), -np.ones_like(mean), kappa / (2.0 * sd)
    z = (best - mean - xi) / sd
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * z * z)
    cdf = ndtr(z)
    if kind == "pi":
        return cdf, -pdf / sd, -pdf * z / (2.0 * var)
    if kind == "ei":
        return sd * (z * cdf + pdf), -cdf, pdf / (2.0 * sd)
    raise ValueError(f"unknown acquisition {kind!r}")


@dataclass
class Feasibility:
    """Kernel-smoothed probability that an experiment at a point succeeds.

    ``p(z) = (a * base + sum_i w_i s_i) / (a + sum_i w_i)`` with ``s_i`` 1 for a success and 0 for a failure,
    Gaussian weights ``w_i`` on the surrogate's length scales, ``base`` the overall success rate and ``a`` the
    prior weight in pseudo-observations. Far from any data it returns the overall rate; next to failures it
    falls towards 0.
    """

    points: np.ndarray
    success: np.ndarray
    scale: np.ndarray
    base: float
    prior_weight: float = 1.0

    @classmethod
    def fitted(
        cls,
        points: np.ndarray,
        success: np.ndarray,
        scale: np.ndarray,
        factors: tuple[float, ...] | None = None,
        prior_weight: float | None = None,
    ) -> Feasibility:
        """The estimate whose kernel width (``scale`` times one of ``factors``, default FEASIBILITY_WIDTHS)
        best predicts each experiment's outcome from the others (leave-one-out log likelihood); the prior
        weight defaults to FEASIBILITY_PRIOR_WEIGHT. Both are read when called (benchmarks/failures.py
        sets them)."""
        factors = FEASIBILITY_WIDTHS if factors is None else factors
        prior_weight = FEASIBILITY_PRIOR_WEIGHT if prior_weight is None else prior_weight
        base = (success.sum() + 1) / (len(success) + 2)
        best: tuple[float, Feasibility] | None = None
        for f in factors:
            cand = cls(points, success, scale * f, base, prior_weight)
            w = cand._weights(points)
            np.fill_diagonal(w, 0.0)
            p = (cand.prior_weight * base + w @ success) / (cand.prior_weight + w.sum(1))
            p = np.clip(p, 1e-6, 1 - 1e-6)
            loglik = float(np.sum(success * np.log(p) + (1 - success) * np.log(1 - p)))
            if best is None or loglik > best[0]:
                best = (loglik, cand)
        assert best is not None
        return best[1]

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        w = self._weights(Z)
        return (self.prior_weight * self.base + w @ self.success) / (self.prior_weight + w.sum(1))

    def _weights(self, Z: np.ndarray) -> np.ndarray:
        d = (Z[:, None, :] - self.points[None, :, :]) / self.scale
        return np.exp(-0.5 * (d * d).sum(-1))

    def with_grad(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        diff = (z[None, :] - self.points) / self.scale
        w = np.exp(-0.5 * (diff * diff).sum(1))
        dw = -w[:, None] * diff / self.scale
        num = self.prior_weight * self.base + w @ self.success
        den = self.prior_weight + w.sum()
        grad = (dw.T @ self.success * den - num * dw.sum(0)) / den**2
        return float(num / den), grad
