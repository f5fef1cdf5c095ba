"""scikit-optimize as a selectable backend (``optimizer: {kind: skopt, skopt: {...}}``).

Labs that already run skopt keep its behaviour: its own ``Optimizer`` with its surrogate, acquisition and
acquisition search, told the history and asked with its constant-liar pending-point strategy. What the
adapter adds is what our contract needs:

* **a pure function of the history.** A fresh ``Optimizer`` is built on every call, seeded by (seed, number of
  experiments issued), and told every success at once; skopt refits on every ``tell`` anyway, so this costs
  what a long-lived skopt would;
* **pending experiments** are told the constant-liar value (``cl_min``: the best value seen, as skopt lies
  within its own batches) before ``ask(n_points=n, strategy=...)``;
* **the initial design** is skopt's initial-point generator, indexed by the number of experiments issued
  (failed ones included, so a failure never makes the design repeat a point);
* **failures** are never told as a number; a skopt proposal equal to a seen, failed or pending recipe,
  within the duplicate radius of a running or batch point, or within the failure radius of a failed one is
  replaced by the next point of our space-filling design;
* **inequality constraints** become skopt's ``space_constraint`` (it then rejection-samples its candidates);
  equality constraints have no volume for rejection sampling, so this backend refuses them.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from sdl.optimizer.api import Observation, OptimizerExhausted, OptimizerSettings, Proposal
from sdl.optimizer.baselines import DesignStream
from sdl.optimizer.encoding import Encoder
from sdl.optimizer.gp import sqdist
from sdl.optimizer.objectives import Scalariser
from sdl.space import CategoricalParameter, IntegerParameter, SearchSpace

log = logging.getLogger(__name__)

#: a failed recipe blocks a ball of this radius (unit-cube distance) around it, as in the Bayesian optimizer
FAILURE_RADIUS = 0.02


def skopt_dimensions(space: SearchSpace) -> list[Any]:
    from skopt.space import Categorical, Integer, Real

    dims: list[Any] = []
    for p in space.parameters:
        if isinstance(p, CategoricalParameter):
            dims.append(Categorical(list(p.choices), name=p.name))
        elif isinstance(p, IntegerParameter):
            dims.append(Integer(p.low, p.high, name=p.name))
        else:
            dims.append(Real(p.low, p.high, prior="log-uniform" if p.log else "uniform", name=p.name))
    return dims


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


class SkoptOptimizer:
    def __init__(self, encoder: Encoder, settings: OptimizerSettings, scalariser: Scalariser) -> None:
        space = encoder.space
        if any(c.equals is not None for c in space.constraints):
            raise ValueError(
                "optimizer kind 'skopt' cannot honour equality constraints (it samples candidates by "
                "rejection); use kind 'bayesian'"
            )
        self.enc, self.s, self.k = encoder, settings, settings.skopt
        self.scalariser = scalariser
        self.names = space.names
        self.dims = skopt_dimensions(space)
        self.n_init = self.k.n_initial_points
        self.design = DesignStream(encoder, settings, 0)
        self._initial: list[dict[str, Any]] | None = None

    def _constraint(self) -> Any:
        space = self.enc.space
        if not space.constraints:
            return None
        names = self.names
        return lambda x: space.satisfies_constraints(dict(zip(names, (_plain(v) for v in x), strict=True)))

    def _recipe(self, x: Sequence[Any]) -> dict[str, Any]:
        recipe = dict(zip(self.names, (_plain(v) for v in x), strict=True))
        for p in self.enc.space.parameters:
            if isinstance(p, IntegerParameter):
                recipe[p.name] = int(recipe[p.name])
            elif not isinstance(p, CategoricalParameter):
                recipe[p.name] = float(recipe[p.name])
        return recipe

    def initial_points(self) -> list[dict[str, Any]]:
        """skopt's initial design for this seed: its generator's points (or its own random draws)."""
        if self._initial is None:
            from skopt.space import Space
            from skopt.utils import cook_initial_point_generator

            generator = self.k.initial_point_generator
            space = Space(self.dims, constraint=self._constraint())
            X: list[list[Any]]  # skopt is untyped: its points, one list per point
            if generator == "random" or space.constraint is not None:
                X = space.rvs(n_samples=max(self.n_init, 1), random_state=self.s.seed)
            else:
                cooked = cook_initial_point_generator(generator)
                assert cooked is not None and not isinstance(cooked, str), generator  # a named generator
                X = cast(
                    list[list[Any]], cooked.generate(self.dims, max(self.n_init, 1), random_state=self.s.seed)
                )
            self._initial = [self._recipe(x) for x in X]
        return self._initial

    def _optimizer(self, issued: int) -> Any:
        from skopt import Optimizer

        k = self.k
        state = int(np.random.default_rng([self.s.seed, issued, 5]).integers(2**31 - 1))
        return Optimizer(
            self.dims,
            base_estimator=k.base_estimator,
            n_initial_points=0,
            acq_func=k.acq_func,
            acq_optimizer=k.acq_optimizer,
            acq_func_kwargs={"xi": k.xi, "kappa": k.kappa},
            acq_optimizer_kwargs={"n_points": k.n_points, "n_restarts_optimizer": k.n_restarts_optimizer},
            space_constraint=self._constraint(),
            random_state=state,
        )

    def propose(
        self, observations: Sequence[Observation], pending: Sequence[Mapping[str, Any]], n: int = 1
    ) -> list[Proposal]:
        t0 = time.perf_counter()
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        enc = self.enc
        taken = {enc.key(o.recipe) for o in observations} | {enc.key(r) for r in pending}
        if len(taken) + n > enc.n_points():
            raise OptimizerExhausted(f"only {enc.n_points() - len(taken):.0f} unseen recipes are left")
        issued = len(observations) + len(pending)
        values = self.scalariser.values(observations, issued)
        ok = [(o, v) for o, v in zip(observations, values, strict=True) if v is not None and math.isfinite(v)]
        failed = [
            o.recipe for o, v in zip(observations, values, strict=True) if v is None or not math.isfinite(v)
        ]
        out: list[Proposal] = []
        asked: list[dict[str, Any]] = []
        n_design = max(0, min(n, self.n_init - issued)) if len(ok) else n
        initial = self.initial_points()
        for i in range(n_design):
            j = issued + i
            if j < len(initial) and enc.key(initial[j]) not in taken:
                recipe, kind = initial[j], f"skopt-{self.k.initial_point_generator}"
            else:
                recipe, kind = self._fallback(issued + i, taken, [*pending, *asked])
            out.append(Proposal(recipe, kind, None, None, 0.0))
            asked.append(recipe)
            taken.add(enc.key(recipe))
        if len(out) < n:
            for recipe in self._ask(ok, [*pending, *asked], n - len(out), issued):
                model = f"skopt-{self.k.base_estimator.lower()}"
                if self._unfit(recipe, taken, [*pending, *asked], failed):
                    recipe, model = self._fallback(issued + len(out), taken, [*pending, *asked])
                out.append(Proposal(recipe, model, self.k.acq_func, None, 0.0))
                asked.append(recipe)
                taken.add(enc.key(recipe))
        spent = time.perf_counter() - t0
        return [Proposal(p.recipe, p.model, p.acquisition, None, spent / len(out)) for p in out]

    def _ask(
        self,
        ok: Sequence[tuple[Observation, float]],
        running: Sequence[Mapping[str, Any]],
        n: int,
        issued: int,
    ) -> list[dict[str, Any]]:
        opt = self._optimizer(issued)
        X = [[o.recipe[name] for name in self.names] for o, _ in ok]
        y = [float(v) for _, v in ok]
        lie = {"cl_min": min(y), "cl_mean": float(np.mean(y)), "cl_max": max(y)}[self.k.strategy]
        X += [[r[name] for name in self.names] for r in running]
        y += [lie] * len(running)
        with warnings.catch_warnings(record=True) as caught:
            # skopt warns when its acquisition lands on a told point and it substitutes a random one; that is
            # its documented behaviour, reported here rather than raised.
            warnings.simplefilter("always")
            opt.tell(X, y)
            points = opt.ask(n_points=n, strategy=self.k.strategy) if n > 1 else [opt.ask()]
        for w in caught:
            log.info("scikit-optimize: %s", w.message)
        return [self._recipe(x) for x in points]

    def _unfit(
        self,
        recipe: dict[str, Any],
        taken: set[tuple[Any, ...]],
        running: Sequence[Mapping[str, Any]],
        failed: Sequence[Mapping[str, Any]],
    ) -> bool:
        if self.enc.key(recipe) in taken or not self.enc.space.satisfies_constraints(recipe):
            return True
        z = self.enc.encode([recipe])
        if running and sqdist(z, self.enc.encode(list(running))).min() < self.s.duplicate_radius**2:
            return True
        return bool(failed) and sqdist(z, self.enc.encode(list(failed))).min() < FAILURE_RADIUS**2

    def _fallback(
        self, index: int, taken: set[tuple[Any, ...]], running: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, Any], str]:
        avoid = self.enc.encode(list(running)) if running else None
        recipe, _ = self.design.take(index, taken, avoid, avoid)
        return recipe, "sobol"
