"""Proposal latency against history size, 6-D (Hartmann-6 data): wall and CPU time, warm and cold.

* **warm**: a long-lived optimizer that has proposed before (ours reuses hyperparameters between its refit
  checkpoints; Optuna warm-starts its fit from the previous one; skopt refits on every ``tell`` whatever);
* **warm-refit**: ours, long-lived, at a proposal where its schedule refits (the like of Optuna's warm);
* **cold**: a fresh optimizer built from the stored history, so the hyperparameter fit is included;
* **fit**: our hyperparameter fit alone, on the points of the checkpoint a cold start fits.

CPU time is the process's (``time.process_time``) with one BLAS thread (the benchmark process sets it; our
optimizer's ``blas_threads`` setting is 1 by default, and Optuna's torch gets one intra-op thread), so it does
not depend on what else the shared machine is doing; wall time does.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from _problems import hartmann6, make_problems
from skopt import Optimizer
from skopt.utils import cook_estimator

from sdl.optimizer import Observation, OptimizerSettings, make_optimizer
from sdl.optimizer.bayesian import REFIT_EVERY_UNTIL, REFIT_GROWTH

NAMES = [f"x{i}" for i in range(1, 7)]


@dataclass
class Latency:
    method: str
    n: int
    batch: int
    mode: str  # warm | cold | fit | refit
    wall: list[float]
    cpu: list[float]
    pending: int = 0
    peak_mb: float | None = None
    min_gap: float | None = None  # smallest unit-cube distance between points of one batch

    @property
    def reps(self) -> int:
        return len(self.wall)


def _history(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng([seed, 5]).random((n, 6))
    return X, np.array([hartmann6(x) for x in X])


def _obs(X: np.ndarray, y: np.ndarray) -> list[Observation]:
    return [
        Observation(dict(zip(NAMES, map(float, x), strict=True)), float(v)) for x, v in zip(X, y, strict=True)
    ]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def _peak_mb(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _min_gap(recipes: list[dict[str, float]]) -> float | None:
    if len(recipes) < 2:
        return None
    Z = np.array([[r[n] for n in NAMES] for r in recipes])
    d = np.linalg.norm(Z[:, None, :] - Z[None, :, :], axis=-1)
    return float(d[np.triu_indices(len(Z), 1)].min())


def sdl_latency(n: int, batch: int, reps: int, pending: int = 0) -> Latency:
    """A long-lived optimizer: one warm-up call at n, then ``reps`` timed calls as results keep arriving.

    With ``pending``, that many experiments are still running at every call (the lab service's pattern:
    one proposal per free workcell while the others run)."""
    space = make_problems()["hartmann6"].space
    X, y = _history(n + reps + pending + 1)
    obs = _obs(X, y)
    opt = make_optimizer(space, OptimizerSettings(seed=0))
    running = [o.recipe for o in obs[n + reps + 1 : n + reps + 1 + pending]]
    opt.propose(obs[:n], running, batch)
    wall, cpu, gaps = [], [], []
    for k in range(1, reps + 1):
        props, w, c = _timed(lambda k=k: opt.propose(obs[: n + k], running, batch))
        wall.append(w)
        cpu.append(c)
        gap = _min_gap([p.recipe for p in props])
        if gap is not None:
            gaps.append(gap)
    peak = _peak_mb(lambda: opt.propose(obs[: n + reps], running, batch))
    return Latency("sdl", n, batch, "warm", wall, cpu, pending, peak, min(gaps) if gaps else None)


def refit_checkpoint(n: int) -> int:
    """The history size nearest ``n`` at which our long-lived optimizer refits its hyperparameters."""
    checkpoints, c = [], REFIT_EVERY_UNTIL
    while c <= 2 * n:
        checkpoints.append(c)
        c = math.ceil(c * REFIT_GROWTH)
    return n if n <= REFIT_EVERY_UNTIL else min(checkpoints, key=lambda c: abs(c - n))


def refit_cycle(n: int) -> int:
    """How many proposals share one hyperparameter fit around ``n`` observations (1: every one refits)."""
    c = refit_checkpoint(n)
    return 1 if c < REFIT_EVERY_UNTIL else math.ceil(c * REFIT_GROWTH) - c


def sdl_refit_latency(n: int, reps: int) -> Latency:
    """A long-lived optimizer at a proposal that refits: warmed up one result before the refit checkpoint
    nearest ``n``, then timed at the checkpoint (the like of Optuna's warm proposal, which refits always)."""
    space = make_problems()["hartmann6"].space
    c = refit_checkpoint(n)
    obs = _obs(*_history(c))
    wall, cpu = [], []
    for k in range(reps):
        opt = make_optimizer(space, OptimizerSettings(seed=k))
        opt.propose(obs[: c - 1], [], 1)
        _, w, t = _timed(lambda opt=opt: opt.propose(obs[:c], [], 1))
        wall.append(w)
        cpu.append(t)
    return Latency("sdl", c, 1, "warm-refit", wall, cpu)


def sdl_cold_latency(n: int, reps: int, batch: int = 1) -> Latency:
    """A fresh optimizer per call, rebuilding from the store (includes the hyperparameter fit)."""
    space = make_problems()["hartmann6"].space
    obs = _obs(*_history(n + reps))
    wall, cpu = [], []
    for k in range(reps):
        _, w, c = _timed(
            lambda k=k: make_optimizer(space, OptimizerSettings(seed=k)).propose(obs[: n + k], [], batch)
        )
        wall.append(w)
        cpu.append(c)
    return Latency("sdl", n, batch, "cold", wall, cpu)


def sdl_fit_cost(n: int, reps: int) -> Latency:
    """Our hyperparameter fit alone: what a cold start (or a refit checkpoint) adds to a proposal."""
    from sdl.optimizer.bayesian import BayesianOptimizer
    from sdl.optimizer.encoding import Encoder

    space = make_problems()["hartmann6"].space
    X, y = _history(n + reps)
    wall, cpu = [], []
    for k in range(reps):
        opt = BayesianOptimizer(Encoder(space), OptimizerSettings(seed=k))
        _, w, c = _timed(lambda k=k, opt=opt: opt.fit_for(X[: n + k], y[: n + k]))
        wall.append(w)
        cpu.append(c)
    return Latency("sdl", n, 1, "fit", wall, cpu)


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
    """Stock skopt: ``tell()`` of one more result (it refits and searches the acquisition on every tell),
    or, for a batch, that tell plus a constant-liar ``ask(n_points=batch)`` (refits once per lie)."""
    X, y = _history(n + reps)
    wall, cpu = [], []
    for k in range(reps):
        opt = _stock_optimizer()
        opt.tell([list(x) for x in X[: n - 1 + k]], list(y[: n - 1 + k]), fit=False)
        x_last, y_last = list(X[n - 1 + k]), float(y[n - 1 + k])

        def step(opt: Optimizer = opt, x_last: list[float] = x_last, y_last: float = y_last) -> None:
            opt.tell(x_last, y_last)
            if batch > 1:
                opt.ask(n_points=batch, strategy="cl_min")

        _, w, c = _timed(step)
        wall.append(w)
        cpu.append(c)
    return Latency("skopt", n, batch, "refit", wall, cpu)


def optuna_latency(n: int, reps: int) -> list[Latency]:
    """Optuna's GP sampler asked for one trial after ``n`` completed ones: cold (a fresh sampler) and warm
    (the same sampler again after one more result, its fit warm-started from the previous one)."""
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = make_problems()["hartmann6"]
    X, y = _history(n + 2 * reps + 1)
    dist = {name: optuna.distributions.FloatDistribution(0.0, 1.0) for name in NAMES}

    def trial(i: int) -> Any:
        return optuna.trial.create_trial(
            params=dict(zip(NAMES, map(float, X[i]), strict=True)), distributions=dist, value=float(y[i])
        )

    from _runners import suggest

    cold, warm = Latency("optuna", n, 1, "cold", [], []), Latency("optuna", n, 1, "warm", [], [])
    for k in range(reps):
        study = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=k), direction="minimize")
        study.add_trials([trial(i) for i in range(n + k)])
        for lat in (cold, warm):
            t, w, c = _timed(lambda study=study: (tr := study.ask(), suggest(tr, problem))[0])
            study.tell(t, float(hartmann6(np.array([t.params[p] for p in NAMES]))))
            lat.wall.append(w)
            lat.cpu.append(c)
    return [cold, warm]
