"""Procedures the lab-service benchmark submits (imported by the service's workers)."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from _problems import make_problems

PROBLEMS = make_problems()


def instant(recipe: dict[str, Any]) -> dict[str, float]:
    """No lab time at all: what is measured is the service's own overhead."""
    return {"loss": sum((float(v) - 0.5) ** 2 for v in recipe.values())}


def duration_of(recipe: dict[str, Any], median: float, sigma: float) -> float:
    """A log-normal experiment duration, fixed by the recipe (the same recipe always takes as long)."""
    digest = hashlib.sha256(repr(sorted(recipe.items())).encode()).digest()
    u1, u2 = (int.from_bytes(digest[i : i + 8], "big") / 2**64 for i in (0, 8))
    normal = math.sqrt(-2 * math.log(max(u1, 1e-12))) * math.cos(2 * math.pi * u2)
    return median * math.exp(sigma * normal)


def timed(recipe: dict[str, Any], median: float = 0.3, sigma: float = 0.5) -> dict[str, float]:
    time.sleep(duration_of(recipe, median, sigma))
    return instant(recipe)


def problem(recipe: dict[str, Any], name: str, median: float = 0.3, sigma: float = 0.5) -> dict[str, float]:
    """A benchmark problem of the optimizer suite, taking log-normal lab time."""
    time.sleep(duration_of(recipe, median, sigma))
    return {"value": float(PROBLEMS[name].truth(recipe))}
