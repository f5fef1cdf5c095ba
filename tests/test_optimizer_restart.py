"""The one restart of a stalled, smooth campaign (sdl/optimizer/restart.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sdl.optimizer import Observation, OptimizerSettings, make_optimizer
from sdl.optimizer import restart as restarts
from sdl.space import SearchSpace

SPACE = SearchSpace.model_validate(
    {"parameters": [{"type": "real", "name": n, "low": 0.0, "high": 1.0} for n in ("a", "b")]}
)
N_INIT = 6
INCUMBENT = np.array([0.8, 0.8])
ELSEWHERE = np.array([0.38, 0.4])
NARROW = np.array([0.3, 0.3])


def bowl(x: np.ndarray) -> float:
    """Smooth and noise-free: a broad basin at INCUMBENT, a narrow deeper one at NARROW."""
    return float(-np.exp(-4 * np.sum((x - INCUMBENT) ** 2)) - 1.3 * np.exp(-80 * np.sum((x - NARROW) ** 2)))


def stalled_history(noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A design with one point near the narrow basin, a climb into the broad one, then WINDOW successes around
    its best point that improve nothing: the campaign stalls with its last success."""
    rng = np.random.default_rng(3)
    design = np.array([[0.5, 0.1], [0.1, 0.9], [0.9, 0.2], [0.3, 0.6], ELSEWHERE, [0.6, 0.4]])
    climb = np.linspace([0.55, 0.55], INCUMBENT, 4)
    angles = rng.uniform(0, 2 * np.pi, restarts.WINDOW)
    around = INCUMBENT + 0.03 * np.c_[np.cos(angles), np.sin(angles)]
    X = np.vstack([design, climb, around])
    y = np.array([bowl(x) for x in X]) + noise * rng.standard_normal(len(X))
    return X, y


def observations(X: np.ndarray, y: np.ndarray) -> list[Observation]:
    return [Observation({"a": float(a), "b": float(b)}, float(v)) for (a, b), v in zip(X, y, strict=True)]


def test_a_stall_is_found_where_the_best_value_stops_moving() -> None:
    y = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -1.001, -1.002, -1.003, -1.004, -1.005, -1.006])
    # the first window that lies wholly on the plateau (which starts at index 6) ends at index 6 + WINDOW
    assert restarts.first_stall(y, n_init=4) == 6 + restarts.WINDOW + 1
    assert restarts.first_stall(np.linspace(5.0, -5.0, 30), n_init=4) is None


def test_the_restart_starts_at_the_best_far_point_and_lasts_four_steps_per_parameter() -> None:
    X, y = stalled_history()
    t = restarts.first_stall(y, N_INIT)
    assert t == len(y)
    assert restarts.restart_in_force(X, y, N_INIT, noise_free=lambda t: False) is None
    r = restarts.restart_in_force(X, y, N_INIT)
    assert r is not None
    assert np.allclose(r.centre, ELSEWHERE)  # the best point at least 0.3·√d from the incumbent
    assert np.linalg.norm(r.incumbent - INCUMBENT) < 0.05
    # Far-away successes keep it going until 4 × 2 of them have come back since the stall ...
    left = t + 4 * 2 - len(y)
    far = ELSEWHERE + 0.05 + np.arange(left)[:, None] * 1e-3
    more = np.zeros(left)
    assert restarts.restart_in_force(np.vstack([X, far[:-1]]), np.r_[y, more[:-1]], N_INIT) is not None
    assert restarts.restart_in_force(np.vstack([X, far]), np.r_[y, more], N_INIT) is None
    # ... and one that lands back beside the incumbent ends it at once.
    back = np.vstack([X, r.incumbent + 0.01])
    assert restarts.restart_in_force(back, np.r_[y, y.min()], N_INIT) is None


def test_a_stalled_smooth_campaign_searches_the_other_basin_and_a_noisy_one_keeps_refining(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sdl.optimizer.bayesian as bayesian

    settings = OptimizerSettings(seed=0, initial_design=N_INIT)
    X, y = stalled_history()
    # In two parameters a restart only costs refinement: none by default.
    assert bayesian._Step(make_optimizer(SPACE, settings), observations(X, y), [], []).restart is None
    monkeypatch.setattr(bayesian, "LOW_DIM_PARAMS", 1)
    opt = make_optimizer(SPACE, settings)
    assert bayesian._Step(opt, observations(X, y), [], []).restart is not None
    (p,) = opt.propose(observations(X, y), [], 1)
    x = np.array([p.recipe["a"], p.recipe["b"]])
    assert np.max(np.abs(x - ELSEWHERE)) <= restarts.SIDE / 2 + 1e-9, x
    # The same decision from a fresh optimizer: a pure function of the history.
    (again,) = make_optimizer(SPACE, settings).propose(observations(X, y), [], 1)
    assert again.recipe == p.recipe
    with monkeypatch.context() as patched:
        patched.setattr(bayesian, "restart_in_force", lambda *args, **kwargs: None)
        (plain,) = make_optimizer(SPACE, settings).propose(observations(X, y), [], 1)
    assert plain.recipe != p.recipe

    # With noise in the values the fit sits far above its noise floor: no restart, the refinement goes on.
    Xn, yn = stalled_history(noise=0.05)
    assert restarts.restart_in_force(Xn, yn, N_INIT) is not None  # the values alone would call for one
    step = bayesian._Step(make_optimizer(SPACE, settings), observations(Xn, yn), [], [])
    assert step.hyper.noise / step.hyper.signal > restarts.NOISE_FREE
    assert step.restart is None
