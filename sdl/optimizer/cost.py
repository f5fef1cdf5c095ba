"""What a recipe costs, known before it runs, and how much that weighs on the acquisition.

A lab's scarce stock is spent by the recipes it runs: a recipe that draws 400 µL of it costs twenty times one
that draws 20 µL. The cost is a known, deterministic function of the recipe (``CostSettings``: a fixed part
plus a weight per parameter), not something to learn. The acquisition is divided by ``cost ** alpha``:

* ``alpha = 1`` is expected improvement per unit cost (Snoek et al. 2012). Alone it over-favours cheap
  regions once the cheap part of the space is explored: late in a campaign it keeps buying small expected
  improvements cheaply instead of the large one where the optimum costs more;
* so ``alpha`` cools (Lee et al. 2020, CArBO's cost-cooled EI): ``alpha = (budget - spent) / (budget -
  spent on the initial design)``, from 1 when the model takes over to 0 once the budget is spent, after which
  the search is the plain acquisition.

``spent`` counts every recipe the optimizer is given, finished, failed or running, and the earlier points of
a batch, so the weight is a function of (settings, observations, pending) like every other choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdl.optimizer.api import CostSettings
from sdl.space import IntegerParameter, SearchSpace

#: DEVELOPMENT ONLY, to be removed once measured: "cool" (CArBO), "one" (EI per unit cost), or a fixed alpha
SCHEDULE: str | float = "cool"


class RecipeCost:
    """``fixed + sum(w_p * value_p)`` of recipes, and of encoded points with its gradient on real columns."""

    def __init__(self, space: SearchSpace, cost: CostSettings, columns: Mapping[str, int]) -> None:
        cost.check(space)
        self.settings = cost
        by_name = {p.name: p for p in space.parameters}
        #: (encoded column, weight, parameter) per term
        self.terms = [(columns[name], w, by_name[name]) for name, w in cost.per_unit.items() if w != 0.0]

    def of_recipes(self, recipes: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.array(
            [self.settings.fixed + sum(w * float(r[p.name]) for _, w, p in self.terms) for r in recipes]
        )

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        """The cost at encoded points ``Z`` (rows)."""
        c = np.full(len(Z), self.settings.fixed)
        for col, w, p in self.terms:
            c += w * _value(p, Z[:, col])[0]
        return c

    def with_grad(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        """The cost at one encoded point and its gradient (zero on integer and categorical columns)."""
        c, grad = self.settings.fixed, np.zeros_like(z)
        for col, w, p in self.terms:
            v, dv = _value(p, z[col : col + 1])
            c += w * float(v[0])
            grad[col] += w * float(dv[0])
        return c, grad

    def weight(self, costs: Sequence[float], n_init: int) -> CostWeight | None:
        """The weight on the acquisition after recipes costing ``costs`` (in the order they were issued,
        as far as the optimizer knows: observations, then pending, then earlier batch points); None once the
        budget is spent, when the plain acquisition is used."""
        alpha = cooled_exponent(self.settings.budget, float(np.sum(costs)), float(np.sum(costs[:n_init])))
        floor = 0.0
        if isinstance(SCHEDULE, str) and SCHEDULE.startswith("bound"):
            floor = float(SCHEDULE.removeprefix("boundcool").removeprefix("bound"))
            if not SCHEDULE.startswith("boundcool"):
                alpha = 1.0
        elif SCHEDULE == "one":
            alpha = 1.0
        elif isinstance(SCHEDULE, float):
            alpha = SCHEDULE
        return CostWeight(self, alpha, floor) if alpha > 0.0 else None


def cooled_exponent(budget: float, spent: float, spent_initially: float) -> float:
    """CArBO's exponent: 1 when the model takes over, falling linearly to 0 as ``budget`` is spent."""
    room = budget - spent_initially
    if room <= 0.0:
        return 0.0
    return float(np.clip((budget - spent) / room, 0.0, 1.0))


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


@dataclass(frozen=True)
class CostWeight:
    """The factor ``cost ** -alpha`` an acquisition is multiplied by."""

    cost: RecipeCost
    alpha: float
    floor: float = 0.0

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        return self.cost(Z) ** -self.alpha

    def with_grad(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        c, dc = self.cost.with_grad(z)
        w = c**-self.alpha
        return w, -self.alpha * w / c * dc
