"""Test problems for the optimizer: classic synthetic functions and a flow-chemistry kinetic model.

Pure numpy/scipy, importable by the benchmark (``benchmarks/optimizer.py``) and by campaign examples. Every
problem is *minimised* and knows its optimum, so regret is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


# -- the SnAr flow reactor ----------------------------------------------------------------------------------

#: Second-order rate constants at 90 °C (1e-2 M^-1 s^-1) and activation energies (kJ/mol) for
#: DFNB + pyrrolidine -> ortho (a), -> para (b); ortho + pyrrolidine -> bis (c);
#: para + pyrrolidine -> bis (d).
SNAR_K90 = (57.9, 2.70, 0.865, 1.63)
SNAR_EA = (33.3, 35.3, 38.9, 44.8)
_MW = (159.09, 71.12, 210.21, 210.21, 261.33)  # DFNB, pyrrolidine, ortho, para, bis (g/mol)
_REACTOR_ML = 3.0
_RHO_ETHANOL = 0.789  # g/mL


def snar(tau_min: float, equiv: float, conc_m: float, temp_c: float) -> tuple[float, float]:
    """Space-time yield (kg m^-3 h^-1) and E-factor of the SnAr of 2,4-difluoronitrobenzene with pyrrolidine
    in ethanol, in an isothermal plug-flow reactor of 3 mL.

    Kinetics from C. A. Hone, N. Holmes, G. R. Akien, R. A. Bourne, F. L. Muller, "Rapid multistep kinetic
    model generation from transient flow data", React. Chem. Eng. 2017, 2, 103–108
    (doi:10.1039/C6RE00109B): four second-order steps with k(90 °C) = 57.9, 2.70, 0.865, 1.63
    × 1e-2 M^-1 s^-1 and Ea = 33.3, 35.3, 38.9, 44.8 kJ/mol, in Arrhenius form about 90 °C.
    The reactor, molecular weights, STY and E-factor follow
    the "SnAr benchmark" of K. C. Felton, J. G. Rittig, A. A. Lapkin, "Summit: benchmarking machine learning
    methods for reaction optimisation", Chemistry–Methods 2021, 1, 116–122. Unlike that implementation, the
    para product forms with its own constant k_b and temperatures are converted with 273.15 K.
    """
    r_gas = 8.314e-3
    t_k, t_ref = temp_c + 273.15, 90.0 + 273.15
    # 1e-2 M^-1 s^-1 -> M^-1 min^-1
    ka, kb, kc, kd = (
        0.6 * k * math.exp(-ea / r_gas * (1 / t_k - 1 / t_ref))
        for k, ea in zip(SNAR_K90, SNAR_EA, strict=True)
    )

    def rates(_t: float, c: np.ndarray) -> np.ndarray:
        a, p, o, q, _ = np.maximum(c, 0.0)
        r1, r2, r3, r4 = ka * a * p, kb * a * p, kc * o * p, kd * q * p
        return np.array([-(r1 + r2), -(r1 + r2 + r3 + r4), r1 - r3, r2 - r4, r3 + r4])

    c0 = np.array([conc_m, equiv * conc_m, 0.0, 0.0, 0.0])
    from scipy.integrate import solve_ivp  # half a second to import; only this problem needs it

    sol = solve_ivp(rates, (0.0, tau_min), c0, method="LSODA", rtol=1e-8, atol=1e-10)
    c = np.maximum(sol.y[:, -1], 0.0)
    q_tot = _REACTOR_ML / tau_min  # mL/min
    sty = max(60.0 * _MW[2] * c[2] * q_tot / _REACTOR_ML, 1e-6)  # g/L/min * 60 -> kg m^-3 h^-1
    waste = q_tot * _RHO_ETHANOL + 1e-3 * q_tot * sum(_MW[i] * c[i] for i in (0, 1, 3, 4))
    product = 1e-3 * q_tot * _MW[2] * c[2]
    e_factor = min(waste / product, 1e3) if product > 1e-12 else 1e3
    return sty, e_factor


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
    objectives: tuple[Any, ...]  # ObjectiveSpec, with each `reference` set for the hypervolume
    budget: int
    #: the weighted sum a single-objective campaign would minimise instead (loss weights per objective)
    weighted_sum: tuple[float, ...]
    notes: str = ""


def make_multi_problems() -> dict[str, MultiProblem]:
    from sdl.optimizer.objectives import ObjectiveSpec

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
