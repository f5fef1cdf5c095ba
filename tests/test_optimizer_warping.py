"""Output warping (sdl/optimizer/warping.py): which objectives the GP models on a log scale, and that doing so
keeps every proposal a pure function of the history."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_problems import problems
from scipy.stats import qmc

from sdl.optimizer import Observation, OptimizerSettings, bayesian, make_optimizer
from sdl.optimizer.bayesian import BayesianOptimizer
from sdl.optimizer.encoding import Encoder
from sdl.optimizer.warping import IDENTITY, LOG_GAP, log_jacobian, unwarp, warp
from sdl.space import SearchSpace

HARTMANN6 = problems.make_problems()["hartmann6"]
NAMES = [p.name for p in HARTMANN6.space.parameters]


def hartmann(x: np.ndarray) -> float:
    return HARTMANN6.truth(dict(zip(NAMES, map(float, x), strict=True)))


def bowl(x: np.ndarray) -> float:
    return float(np.sum((x - 0.3) ** 2))


def cube(d: int) -> SearchSpace:
    return SearchSpace.model_validate(
        {"parameters": [{"type": "real", "name": f"x{i}", "low": 0.0, "high": 1.0} for i in range(d)]}
    )


def design(d: int, n: int = 32) -> np.ndarray:
    return qmc.Sobol(d, scramble=True, seed=1).random(n)


def chosen_warp(space: SearchSpace, X: np.ndarray, y: np.ndarray) -> str:
    return BayesianOptimizer(Encoder(space), OptimizerSettings(seed=0)).fit_for(X, y)[1]


def test_the_log_gap_warp_keeps_the_order_inverts_and_its_jacobian_is_its_derivative() -> None:
    y = np.array([-3.2, -1.0, 0.0, -0.2, -2.5])
    w = warp(y, LOG_GAP)
    assert np.array_equal(np.argsort(w), np.argsort(y))  # lower stays better: the incumbent is the same point
    assert np.allclose([unwarp(v, y, LOG_GAP) for v in w], y)
    h = 1e-7  # the Jacobian with the warp's offset held (as the density conversion uses it)
    span_offset = float(y.max() - y.min()) * 0.01
    numeric = (-np.log(y.max() - (y + h) + span_offset) + np.log(y.max() - y + span_offset)) / h
    assert np.allclose(log_jacobian(y, LOG_GAP), np.log(numeric), atol=1e-5)
    assert np.array_equal(warp(y, IDENTITY), y) and not log_jacobian(y, IDENTITY).any()
    with pytest.raises(ValueError, match="unknown warp"):
        warp(y, "cube-root")


def test_a_floor_with_deep_wells_is_modelled_warped_and_a_bowl_is_not() -> None:
    X = design(6)
    assert chosen_warp(HARTMANN6.space, X, np.array([hartmann(x) for x in X])) == LOG_GAP
    assert chosen_warp(cube(6), X, np.array([bowl(x) for x in X])) == IDENTITY
    # in four parameters or fewer the fit chooses among length-scale priors instead, on the raw values
    X4 = design(4)
    wells = np.array([hartmann(np.r_[x, 0.3, 0.65]) for x in X4])
    assert chosen_warp(cube(4), X4, wells) == IDENTITY


def test_a_warped_fit_is_used_only_when_it_is_noise_free(monkeypatch: pytest.MonkeyPatch) -> None:
    X = design(6)
    y = np.array([hartmann(x) for x in X])
    monkeypatch.setattr(bayesian, "NOISE_FREE", 0.0)  # every fit now counts as noisy
    assert chosen_warp(HARTMANN6.space, X, y) == IDENTITY


def test_a_warped_campaign_is_a_pure_function_of_its_history() -> None:
    settings = OptimizerSettings(seed=5)
    long_lived = make_optimizer(HARTMANN6.space, settings)
    history: list[Observation] = []
    for _ in range(HARTMANN6.n_init + 4):
        (p,) = long_lived.propose(history, [], 1)
        (q,) = make_optimizer(HARTMANN6.space, settings).propose(history, [], 1)
        assert p.recipe == q.recipe
        history.append(Observation(p.recipe, HARTMANN6.truth(p.recipe)))
    X = Encoder(HARTMANN6.space).encode([o.recipe for o in history])
    y = np.array([o.value for o in history], dtype=float)
    assert chosen_warp(HARTMANN6.space, X, y) == LOG_GAP  # the model steps above ran warped
