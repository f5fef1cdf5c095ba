"""Proposal latency and peak memory against history size, 6-D (Hartmann-6 data)."""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

import numpy as np
from skopt import Optimizer
from skopt.utils import cook_estimator

from sdl.optimizer import Observation, OptimizerSettings, make_optimizer
from sdl.optimizer.problems import hartmann6, make_problems

NAMES = [f"x{i}" for i in range(1, 7)]


@dataclass
class Latency:
    method: str
    n: int
    batch: int
    p50: float
    p95: float
    peak_mb: float
    reps: int


def _history(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng([seed, 5]).random((n, 6))
    return X, np.array([hartmann6(x) for x in X])


def _obs(X: np.ndarray, y: np.ndarray) -> list[Observation]:
    return [
        Observation(dict(zip(NAMES, map(float, x), strict=True)), float(v)) for x, v in zip(X, y, strict=True)
    ]


def _peak_mb(fn: Any) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def sdl_latency(n: int, batch: int, reps: int) -> Latency:
    """A long-lived optimizer: one warm-up call at n, then ``reps`` timed calls as results keep arriving."""
    space = make_problems()["hartmann6"].space
    X, y = _history(n + reps + 1)
    obs = _obs(X, y)
    opt = make_optimizer(space, OptimizerSettings(seed=0))
    opt.propose(obs[:n], [], batch)
    times = []
    for k in range(1, reps + 1):
        t0 = time.perf_counter()
        opt.propose(obs[: n + k], [], batch)
        times.append(time.perf_counter() - t0)
    peak = _peak_mb(lambda: opt.propose(obs[: n + reps], [], batch))
    return Latency("sdl", n, batch, float(np.median(times)), float(np.percentile(times, 95)), peak, reps)


def sdl_cold_latency(n: int) -> float:
    """A fresh process rebuilding from the store (includes the hyperparameter fit of its checkpoint)."""
    space = make_problems()["hartmann6"].space
    obs = _obs(*_history(n))
    t0 = time.perf_counter()
    make_optimizer(space, OptimizerSettings(seed=0)).propose(obs, [], 1)
    return time.perf_counter() - t0


def _stock_optimizer() -> Optimizer:
    from skopt.space import Real, Space

    dims = [Real(0.0, 1.0) for _ in range(6)]
    rng = np.random.RandomState(0)
    # gp_minimize's defaults, spelled out for the ask/tell interface
    return Optimizer(
        dims,
        base_estimator=cook_estimator("GP", space=Space(dims), random_state=rng.randint(0, 2**31 - 1)),
        n_initial_points=10,
        acq_func="gp_hedge",
        acq_optimizer="lbfgs",
        acq_optimizer_kwargs={"n_points": 10000, "n_restarts_optimizer": 5, "n_jobs": 1},
        acq_func_kwargs={"xi": 0.01, "kappa": 1.96},
        random_state=rng,
    )


def stock_latency(n: int, batch: int, reps: int) -> Latency:
    """Stock skopt: ``tell()`` of one more result (refit + acquisition), or a constant-liar batch ask."""
    X, y = _history(n + reps)
    times, peak = [], 0.0
    for k in range(reps):
        opt = _stock_optimizer()
        opt.tell([list(x) for x in X[: n - 1 + k]], list(y[: n - 1 + k]), fit=False)
        x_last, y_last = list(X[n - 1 + k]), float(y[n - 1 + k])
        t0 = time.perf_counter()
        if batch == 1:
            opt.tell(x_last, y_last)
        else:
            opt.tell(x_last, y_last)
            t0 = time.perf_counter()
            opt.ask(n_points=batch, strategy="cl_min")
        times.append(time.perf_counter() - t0)
    return Latency("skopt", n, batch, float(np.median(times)), float(np.percentile(times, 95)), peak, reps)
