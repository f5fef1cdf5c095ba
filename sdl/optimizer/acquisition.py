"""Acquisition functions (to maximise) with gradients, and the failure-aware feasibility weight.

All values are in standardised objective units; the objective is minimised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def acquisition(
    kind: str, mean: np.ndarray, var: np.ndarray, best: float, xi: float, kappa: float
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
    Gaussian weights ``w_i`` on the surrogate's length scales, ``base`` the overall success rate and ``a`` one
    pseudo-observation. Far from any data it returns the overall rate; next to failures it falls towards 0.
    """

    points: np.ndarray
    success: np.ndarray
    scale: np.ndarray
    base: float
    prior_weight: float = 1.0

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
