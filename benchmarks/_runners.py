"""One optimisation run per (method, problem, seed); every method starts from the same initial design."""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from _problems import Problem
from skopt import gp_minimize

from sdl.optimizer import Observation, OptimizerSettings, make_optimizer
from sdl.optimizer.baselines import DesignStream
from sdl.optimizer.encoding import Encoder
from sdl.optimizer.skopt_backend import skopt_dimensions

WORKERS = 4
DURATION_SIGMA = 0.5  # lognormal experiment durations, median 1 time unit


@dataclass
class Run:
    method: str
    problem: str
    seed: int
    truths: list[float | None] = field(default_factory=list)  # true value per evaluation, None = failed
    finish: list[float] = field(default_factory=list)  # simulated lab time at which each result arrived
    seconds: float = 0.0  # optimizer compute time

    def regret_curve(self, optimum: float, length: int) -> np.ndarray:
        best, out = np.inf, []
        for v in self.truths[:length]:
            if v is not None:
                best = min(best, v)
            out.append(best - optimum)
        out += [out[-1]] * (length - len(out))
        return np.array(out)


def initial_design(problem: Problem, seed: int) -> list[dict[str, Any]]:
    settings = OptimizerSettings(seed=seed, initial_design=problem.n_init)
    stream = DesignStream(Encoder(problem.space), settings, problem.n_init)
    taken: set[tuple[Any, ...]] = set()
    out = []
    for i in range(problem.n_init):
        recipe, _ = stream.take(i, taken)
        taken.add(tuple(recipe.values()))
        out.append(recipe)
    return out


def durations(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng([seed, 77]).lognormal(0.0, DURATION_SIGMA, size=count)


def _noise_rng(seed: int, index: int) -> np.random.Generator:
    # The i-th evaluation of every method sees the same noise draw.
    return np.random.default_rng([seed, 99, index])


def run_sdl(problem: Problem, seed: int, kind: str) -> Run:
    settings = OptimizerSettings(kind=kind, seed=seed, initial_design=problem.n_init)
    opt = make_optimizer(problem.space, settings)
    run = Run("random" if kind == "random" else "sdl", problem.name, seed)
    history: list[Observation] = []
    dur = durations(seed, problem.budget)
    for i in range(problem.budget):
        t0 = time.perf_counter()
        (p,) = opt.propose(history, [], 1)
        run.seconds += time.perf_counter() - t0
        value = problem.observe(p.recipe, _noise_rng(seed, i))
        history.append(Observation(p.recipe, value, None if value is not None else "infeasible"))
        run.truths.append(problem.truth(p.recipe) if value is not None else None)
        run.finish.append(float(dur[: i + 1].sum()))
    return run


def run_sdl_async(problem: Problem, seed: int, evaluations: int) -> Run:
    """Four workers; a new proposal is made, pending-aware, whenever an experiment finishes."""
    opt = make_optimizer(problem.space, OptimizerSettings(seed=seed, initial_design=problem.n_init))
    run = Run("sdl-async4", problem.name, seed)
    dur = durations(seed, evaluations + WORKERS)
    history: list[Observation] = []
    running: list[tuple[float, int, dict[str, Any]]] = []
    issued = 0

    def issue(now: float, n: int) -> None:
        nonlocal issued
        t0 = time.perf_counter()
        props = opt.propose(history, [r for _, _, r in running], n)
        run.seconds += time.perf_counter() - t0
        for p in props:
            heapq.heappush(running, (now + float(dur[issued]), issued, p.recipe))
            issued += 1

    issue(0.0, WORKERS)
    while len(history) < evaluations:
        now, index, recipe = heapq.heappop(running)
        value = problem.observe(recipe, _noise_rng(seed, index))
        history.append(Observation(recipe, value, None if value is not None else "infeasible"))
        run.truths.append(problem.truth(recipe) if value is not None else None)
        run.finish.append(now)
        if issued < evaluations:
            issue(now, 1)
    return run


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def run_skopt(problem: Problem, seed: int) -> Run:
    """Stock ``gp_minimize`` with its defaults, seeded with the shared initial design.

    skopt cannot be told a failure, so a failed experiment is told the worst value seen so far (the usual
    workaround), which is exactly what our optimizer refuses to do.
    """
    run = Run("skopt", problem.name, seed)
    names = problem.space.names
    seen: list[float] = []
    dur = durations(seed, problem.budget)

    def tell_value(recipe: dict[str, Any], index: int) -> float:
        value = problem.observe(recipe, _noise_rng(seed, index))
        run.truths.append(problem.truth(recipe) if value is not None else None)
        run.finish.append(float(dur[: index + 1].sum()))
        if value is None:
            return max(seen) if seen else 0.0
        seen.append(value)
        return value

    design = initial_design(problem, seed)
    y0 = [tell_value(r, i) for i, r in enumerate(design)]

    def func(x: list[Any]) -> float:
        recipe = dict(zip(names, (_plain(v) for v in x), strict=True))
        return tell_value(recipe, len(run.truths))

    t0 = time.perf_counter()
    gp_minimize(
        func,
        skopt_dimensions(problem.space),
        n_calls=problem.budget - len(design),
        x0=[[r[n] for n in names] for r in design],
        y0=y0,
        n_initial_points=0,
        random_state=seed,
    )
    run.seconds = time.perf_counter() - t0
    return run


def suggest(trial: Any, problem: Problem) -> dict[str, Any]:
    """The recipe an Optuna trial suggests, parameter by parameter."""
    recipe: dict[str, Any] = {}
    for p in problem.space.parameters:
        if p.type == "real":
            recipe[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        elif p.type == "integer":
            recipe[p.name] = trial.suggest_int(p.name, p.low, p.high)
        else:
            recipe[p.name] = trial.suggest_categorical(p.name, list(p.choices))
    return recipe


def run_optuna(problem: Problem, seed: int) -> Run:
    """Optuna's GP sampler with its defaults (its own 10 random start-up trials, seeded by ``seed``).

    A failed experiment is told as a failed trial, which the sampler leaves out, as ours does.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = Run("optuna", problem.name, seed)
    dur = durations(seed, problem.budget)
    study = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=seed), direction="minimize")
    for i in range(problem.budget):
        t0 = time.perf_counter()
        trial = study.ask()
        recipe = suggest(trial, problem)
        run.seconds += time.perf_counter() - t0
        value = problem.observe(recipe, _noise_rng(seed, i))
        run.truths.append(problem.truth(recipe) if value is not None else None)
        run.finish.append(float(dur[: i + 1].sum()))
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
    return run
