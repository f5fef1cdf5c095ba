"""What a recipe costs, known before it runs, and how it weighs on the acquisition.

A lab's scarce stock is spent by the recipes it runs: a recipe that draws 400 µL of it costs twenty times one
that draws 20 µL. The cost is a known, deterministic function of the recipe (``CostSettings``: a fixed part
plus a weight per parameter), not something to learn. The acquisition is divided by it: expected improvement
per unit cost (Snoek et al. 2012), so where two recipes promise alike the cheaper one is run, and a dear
recipe is run when it promises proportionally more. Cooling the division away as a budget is spent (CArBO,
Lee et al. 2020), a fixed square root of the cost, and a floor on the plain acquisition were measured and not
kept (docs/optimizer-history.md, cost-aware acquisition).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sdl.optimizer.api import CostSettings
from sdl.space import IntegerParameter, SearchSpace


class RecipeCost:
    """``fixed + sum(w_p * value_p)`` at encoded points, and the acquisition's weight ``1 / cost``."""

    def __init__(self, space: SearchSpace, cost: CostSettings, columns: Mapping[str, int]) -> None:
        cost.check(space)
        self.fixed = cost.fixed
        by_name = {p.name: p for p in space.parameters}
        #: (encoded column, weight, parameter) per term
        self.terms = [(columns[name], w, by_name[name]) for name, w in cost.per_unit.items() if w != 0.0]

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        """The cost at encoded points ``Z`` (rows)."""
        c = np.full(len(Z), self.fixed)
        for col, w, p in self.terms:
            c += w * _value(p, Z[:, col])[0]
        return c

    def with_grad(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        """The cost at one encoded point and its gradient (zero on integer and categorical columns)."""
        c, grad = self.fixed, np.zeros_like(z)
        for col, w, p in self.terms:
            v, dv = _value(p, z[col : col + 1])
            c += w * float(v[0])
            grad[col] += w * float(dv[0])
        return c, grad

    def weight(self, Z: np.ndarray) -> np.ndarray:
        """What the acquisition at ``Z`` is multiplied by: one over the cost."""
        return 1.0 / self(Z)

    def weight_with_grad(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        c, dc = self.with_grad(z)
        return 1.0 / c, -dc / c**2


def _value(p: Any, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A parameter's value at encoded column values ``u`` and its derivative (as ``Encoder.decode``)."""
    u = np.clip(u, 0.0, 1.0)
    if isinstance(p, IntegerParameter):
        count = p.high - p.low + 1
        return p.low + np.clip(np.floor(u * count), 0, count - 1), np.zeros_like(u)
    if p.log:
        span = np.log(p.high) - np.log(p.low)
        v = np.exp(np.log(p.low) + u * span)
        return v, v * span
    return p.low + u * (p.high - p.low), np.full_like(u, p.high - p.low)
