"""The benchmark problems (benchmarks/_problems.py): known optima, and a physically sensible SnAr model
(experiments/snar_flow/kinetics.py)."""

from __future__ import annotations

import math

import numpy as np
from benchmark_problems import problems

from experiments.snar_flow.kinetics import snar


def test_synthetic_functions_reach_their_published_minima() -> None:
    assert math.isclose(problems.branin(math.pi, 2.275), 0.397887, abs_tol=1e-5)
    assert math.isclose(
        problems.hartmann6(np.array(problems.HARTMANN6_ARGMIN)), problems.HARTMANN6_MIN, abs_tol=1e-4
    )
    assert math.isclose(problems.ackley(np.zeros(6)), 0.0, abs_tol=1e-12)


def test_snar_optimum_is_the_best_value_on_the_box() -> None:
    # Found by multi-start L-BFGS: short residence time and high concentration at ~85 °C, ~1.4 equivalents.
    assert math.isclose(
        problems.snar_objective(0.5, 1.39652, 0.5, 84.653), problems.SNAR_OPTIMUM, abs_tol=1e-5
    )
    rng = np.random.default_rng(0)
    lo, hi = np.array([0.5, 1.0, 0.1, 30.0]), np.array([2.0, 5.0, 0.5, 120.0])
    for u in rng.random((40, 4)):
        assert problems.snar_objective(*(lo + u * (hi - lo))) >= problems.SNAR_OPTIMUM - 1e-9


def test_snar_kinetics_behave_like_the_chemistry() -> None:
    cold_sty, _ = snar(1.0, 2.0, 0.3, 30.0)
    hot_sty, _ = snar(1.0, 2.0, 0.3, 100.0)
    assert hot_sty > cold_sty  # Arrhenius: hotter is faster
    sty, e_factor = snar(2.0, 5.0, 0.5, 120.0)
    assert sty > 0 and 0 < e_factor < 1e3


def test_every_problem_space_accepts_its_own_design_and_reports_failures() -> None:
    rng = np.random.default_rng(1)
    for prob in problems.make_problems().values():
        recipe = {
            p.name: (p.choices[0] if p.type == "categorical" else float(p.low + 0.5 * (p.high - p.low)))
            for p in prob.space.parameters
        }
        prob.space.validate_recipe(recipe)
        assert math.isfinite(prob.truth(recipe)) and prob.truth(recipe) >= prob.optimum - 1e-6
    noisy = problems.make_problems()["hartmann6_noisy"]
    assert noisy.observe({f"x{i}": 0.9 for i in range(1, 7)}, rng) is None  # sum 5.4 > 3.5: fails
