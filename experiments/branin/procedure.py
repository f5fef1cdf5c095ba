"""Branin-Hoo: a cheap two-parameter test function with three global minima of 0.397887.

A computational campaign needs no lab: the procedure is a plain function of the recipe.
"""

from __future__ import annotations

import math
from typing import Any

GLOBAL_MINIMUM = 0.397887357729739


def branin(x1: float, x2: float) -> float:
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def measure(recipe: dict[str, Any], noise: float = 0.0, seed: int = 0) -> dict[str, float]:
    """The procedure: evaluate Branin at the recipe, optionally with reproducible Gaussian noise."""
    value = branin(float(recipe["x1"]), float(recipe["x2"]))
    if noise:
        import random

        value += random.Random(hash((seed, recipe["x1"], recipe["x2"]))).gauss(0.0, noise)
    return {"branin": value, "regret": value - GLOBAL_MINIMUM}
