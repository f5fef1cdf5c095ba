"""Test problems of the optimizer benchmarks: classic synthetic functions and the SnAr flow reactor.

Used by ``benchmarks/optimizer.py`` and its siblings (which put this folder on ``sys.path``) and by the
optimizer's tests (which load this file by its path). Every problem is *minimised* and knows its optimum, so
regret is exact. The SnAr kinetics belong to the experiment that runs them
(experiments/snar_flow/kinetics.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from experiments.snar_flow.kinetics import snar
from sdl.optimizer import ObjectiveSpec
from sdl.space import SearchSpace

# -- synthetic functions (on their natural domains) ---------------------------------------------------------


def branin(x1: float, x2: float) -> float:
    """Branin–Hoo on [-5, 10] x [0, 15]; minimum 0.397887 at three points."""
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


_H6_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
HARTMANN6_MIN = -3.32237
HARTMANN6_ARGMIN = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)


def hartmann6(x: np.ndarray) -> float:
    """Hartmann-6 on [0, 1]^6; minimum -3.32237."""
    x = np.asarray(x, dtype=float)
    return float(-np.sum(_H6_ALPHA * np.exp(-np.sum(_H6_A * (x[None, :] - _H6_P) ** 2, axis=1))))


def ackley(x: np.ndarray) -> float:
    """Ackley (a=20, b=0.2, c=2π); minimum 0 at the origin."""
    x = np.asarray(x, dtype=float)
    d = len(x)
    return float(
        -20 * math.exp(-0.2 * math.sqrt(np.sum(x * x) / d))
        - math.exp(np.sum(np.cos(2 * math.pi * x)) / d)
        + 20
        + math.e
    )


def snar_objective(tau_min: float, equiv: float, conc_m: float, temp_c: float) -> float:
    """One number to minimise: log10(E-factor) - log10(STY), i.e. waste per product per productivity."""
    sty, e_factor = snar(tau_min, equiv, conc_m, temp_c)
    return math.log10(e_factor) - math.log10(sty)


# -- problems as the benchmark uses them ----------------------------------------------------------------


@dataclass
class Problem:
    name: str
    space: SearchSpace
    truth: Callable[[dict[str, Any]], float]
    optimum: float
    budget: int
    threshold: float  # regret below which a run counts as a success
    noise_sd: float = 0.0
    feasible: Callable[[dict[str, Any]], bool] | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_init(self) -> int:
        return min(20, max(5, 2 * len(self.space.parameters) + 2))

    def observe(self, recipe: dict[str, Any], rng: np.random.Generator) -> float | None:
        """What the lab would report: a noisy value, or None when the hidden constraint makes it fail."""
        if self.feasible is not None and not self.feasible(recipe):
            return None
        return self.truth(recipe) + (self.noise_sd * float(rng.standard_normal()) if self.noise_sd else 0.0)


def _reals(names: list[str], low: float, high: float) -> SearchSpace:
    return SearchSpace.model_validate(
        {"parameters": [{"type": "real", "name": n, "low": low, "high": high} for n in names]}
    )


_X6 = [f"x{i}" for i in range(1, 7)]
_MIXED_SHIFT = np.random.default_rng(20240501).uniform(0.15, 0.85, size=(8, 3))
_MIXED_OFFSET = np.array([0.55, 0.3, 0.8, 0.0, 0.45, 0.15, 0.7, 0.25])
_MIXED_LEVELS = [f"c{i}" for i in range(8)]


def _mixed(r: dict[str, Any]) -> float:
    c = _MIXED_LEVELS.index(r["cat"])
    x = np.array([r["u1"], r["u2"], r["u3"]])
    return float(_MIXED_OFFSET[c] + 4.0 * np.sum((x - _MIXED_SHIFT[c]) ** 2))


#: best value of snar_objective on its box, by multi-start search (tests/test_optimizer_problems.py)
SNAR_OPTIMUM = -3.120312


def make_problems() -> dict[str, Problem]:
    return {
        "branin": Problem(
            "branin",
            SearchSpace.model_validate(
                {
                    "parameters": [
                        {"type": "real", "name": "x1", "low": -5.0, "high": 10.0},
                        {"type": "real", "name": "x2", "low": 0.0, "high": 15.0},
                    ]
                }
            ),
            lambda r: branin(r["x1"], r["x2"]),
            0.397887,
            30,
            0.05,
        ),
        "hartmann6": Problem(
            "hartmann6",
            _reals(_X6, 0.0, 1.0),
            lambda r: hartmann6(np.array([r[n] for n in _X6])),
            HARTMANN6_MIN,
            60,
            0.05,
        ),
        "ackley6": Problem(
            "ackley6",
            _reals(_X6, -5.0, 10.0),
            lambda r: ackley(np.array([r[n] for n in _X6])),
            0.0,
            60,
            2.0,
        ),
        "hartmann6_noisy": Problem(
            "hartmann6_noisy",
            _reals(_X6, 0.0, 1.0),
            lambda r: hartmann6(np.array([r[n] for n in _X6])),
            HARTMANN6_MIN,
            60,
            0.25,
            noise_sd=0.25,
            feasible=lambda r: sum(r[n] for n in _X6) <= 3.5,
            notes="noise SD 0.25; experiments with x1+...+x6 > 3.5 fail (about 26 % of the cube)",
        ),
        "mixed": Problem(
            "mixed",
            SearchSpace.model_validate(
                {
                    "parameters": [
                        *({"type": "real", "name": n, "low": 0.0, "high": 1.0} for n in ("u1", "u2", "u3")),
                        {"type": "categorical", "name": "cat", "choices": _MIXED_LEVELS},
                    ]
                }
            ),
            _mixed,
            0.0,
            40,
            0.05,
            notes="3 reals + an 8-level categorical; each level has its own optimum and offset",
        ),
        "snar": Problem(
            "snar",
            SearchSpace.model_validate(
                {
                    "parameters": [
                        {"type": "real", "name": "tau", "low": 0.5, "high": 2.0, "units": "min"},
                        {"type": "real", "name": "equiv", "low": 1.0, "high": 5.0},
                        {"type": "real", "name": "conc", "low": 0.1, "high": 0.5, "units": "M"},
                        {"type": "real", "name": "temp", "low": 30.0, "high": 120.0, "units": "degC"},
                    ]
                }
            ),
            lambda r: snar_objective(r["tau"], r["equiv"], r["conc"], r["temp"]),
            SNAR_OPTIMUM,
            40,
            0.02,
            notes="minimise log10(E-factor) - log10(STY) of the Hone et al. kinetic model",
        ),
    }


# -- several objectives --------------------------------------------------------------------------------------


@dataclass
class MultiProblem:
    """A problem with several measurements; ``objectives`` says which to maximise or minimise."""

    name: str
    space: SearchSpace
    measure: Callable[[dict[str, Any]], dict[str, float]]
    objectives: tuple[ObjectiveSpec, ...]  # each with its `reference` set for the hypervolume
    budget: int
    #: the weighted sum a single-objective campaign would minimise instead (loss weights per objective)
    weighted_sum: tuple[float, ...]
    notes: str = ""


def make_multi_problems() -> dict[str, MultiProblem]:
    space = make_problems()["snar"].space
    return {
        "snar2": MultiProblem(
            "snar2",
            space,
            lambda r: dict(
                zip(("sty", "e_factor"), snar(r["tau"], r["equiv"], r["conc"], r["temp"]), strict=True)
            ),
            (
                ObjectiveSpec("sty", "maximize", reference=5000.0),
                ObjectiveSpec("e_factor", "minimize", reference=12.0),
            ),
            40,
            # Summit's SnAr example: minimise -sty/1e4 + e_factor/100
            (1e-4, 1e-2),
            notes="space-time yield (max) vs E-factor (min); the true front runs from (7400, 8.58) to "
            "(11900, 9.7), so the reference (5000, 12) sits a little beyond its nadir",
        ),
    }
