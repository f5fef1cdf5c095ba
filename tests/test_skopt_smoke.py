"""scikit-optimize 0.10 is barely maintained: exercise the parts we rely on so an upgrade of it or of
scikit-learn/numpy that breaks them (or makes them warn: warnings are errors here) fails loudly."""

from __future__ import annotations

import numpy as np
from skopt import Optimizer, dummy_minimize, gp_minimize
from skopt.space import Categorical, Integer, Real


def quadratic(x: list) -> float:
    return float((x[0] - 0.3) ** 2 + (x[1] - 2) ** 2)


def test_gp_minimize_with_its_defaults_runs_and_improves() -> None:
    res = gp_minimize(
        quadratic, [Real(-1.0, 1.0), Integer(0, 4)], n_calls=12, n_initial_points=6, random_state=0
    )
    assert len(res.func_vals) == 12
    assert res.fun <= min(res.func_vals[:6])
    assert isinstance(res.x[1], int | np.integer)


def test_dummy_minimize_runs() -> None:
    res = dummy_minimize(quadratic, [Real(-1.0, 1.0), Integer(0, 4)], n_calls=8, random_state=0)
    assert len(res.x_iters) == 8 and res.fun == min(res.func_vals)


def test_ask_tell_with_categorical_dimensions() -> None:
    dims = [Real(0.0, 1.0, name="x"), Categorical(["water", "ethanol", "dmso"], name="solvent")]
    opt = Optimizer(dims, base_estimator="GP", n_initial_points=4, random_state=1, acq_optimizer="sampling")
    penalty = {"water": 1.0, "ethanol": 0.0, "dmso": 0.5}
    for _ in range(8):
        x = opt.ask()
        assert x[1] in penalty
        opt.tell(x, (x[0] - 0.5) ** 2 + penalty[x[1]])
    batch = opt.ask(n_points=3, strategy="cl_min")
    assert len(batch) == 3 and all(b[1] in penalty for b in batch)
    assert min(opt.yi) < 1.0
