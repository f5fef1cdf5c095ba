"""Space-filling designs and the two honest baselines: random (scrambled Sobol) and grid.

Every stream here is indexed: the ``i``-th point depends on the seed and ``i`` only, so a proposal made
after a crash from the stored history equals the one a long-running process would have made.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.stats import qmc

from sdl.optimizer.api import Observation, OptimizerExhausted, OptimizerSettings, Proposal
from sdl.optimizer.encoding import Encoder
from sdl.space import CategoricalParameter, IntegerParameter, RealParameter


@lru_cache(maxsize=32)
def _sobol(d: int, seed: int, log2n: int) -> np.ndarray:
    # Powers of two keep Sobol' balance properties (and keep scipy from warning).
    return qmc.Sobol(d, scramble=True, seed=seed).random_base2(log2n)


def sobol_points(d: int, seed: int, start: int, count: int) -> np.ndarray:
    """Points ``start .. start+count-1`` of the scrambled Sobol' sequence for ``seed``, in [0, 1)^d."""
    log2n = max(4, int(np.ceil(np.log2(start + count))))
    return _sobol(d, seed, log2n)[start : start + count]


@lru_cache(maxsize=32)
def _lhs(d: int, seed: int, n: int) -> np.ndarray:
    return qmc.LatinHypercube(d, seed=seed).random(n)


class DesignStream:
    """The initial design (Sobol' or LHS) continued by Sobol' points, skipping recipes already taken."""

    def __init__(self, encoder: Encoder, settings: OptimizerSettings, size: int) -> None:
        self.encoder = encoder
        self.kind = settings.initial_design_kind
        self.seed = settings.seed
        self.size = size

    def _unit(self, i: int) -> np.ndarray:
        d = self.encoder.n_params
        if self.kind == "lhs" and i < self.size:
            return _lhs(d, self.seed, self.size)[i]
        return sobol_points(d, self.seed, i, 1)[0]

    def take(self, index: int, taken: set[tuple[Any, ...]]) -> tuple[dict[str, Any], str]:
        """The first point at or after ``index`` whose recipe is not in ``taken``."""
        limit = index + 64 * (self.size + 16)
        for i in range(index, limit):
            recipe = self.encoder.unit_to_recipes(self._unit(i)[None, :])[0]
            if self.encoder.key(recipe) not in taken:
                kind = self.kind if i < self.size else "sobol"
                return recipe, kind
        raise OptimizerExhausted("the space-filling design found no unseen recipe; the space looks exhausted")


def _taken(encoder: Encoder, observations: Sequence[Observation], pending: Sequence[Mapping[str, Any]]):
    return {encoder.key(o.recipe) for o in observations} | {encoder.key(r) for r in pending}


class RandomOptimizer:
    """Uniform baseline: successive points of one scrambled Sobol' sequence per seed."""

    def __init__(self, encoder: Encoder, settings: OptimizerSettings) -> None:
        self.encoder = encoder
        self.stream = DesignStream(encoder, settings.model_copy(update={"initial_design_kind": "sobol"}), 0)

    def propose(
        self, observations: Sequence[Observation], pending: Sequence[Mapping[str, Any]], n: int = 1
    ) -> list[Proposal]:
        t0 = time.perf_counter()
        taken = _taken(self.encoder, observations, pending)
        if len(taken) + n > self.encoder.n_points():
            raise OptimizerExhausted(
                f"only {self.encoder.n_points() - len(taken):.0f} unseen recipes are left"
            )
        out = []
        index = len(observations) + len(pending)
        for _ in range(n):
            recipe, _kind = self.stream.take(index, taken)
            taken.add(self.encoder.key(recipe))
            index += 1
            out.append(Proposal(recipe, "random", None, None, time.perf_counter() - t0))
        return out


class GridOptimizer:
    """Enumerates a regular grid in a fixed order, skipping recipes seen or pending."""

    def __init__(self, encoder: Encoder, settings: OptimizerSettings) -> None:
        self.encoder = encoder
        self.axes: list[list[Any]] = []
        k = settings.grid_points
        for b in encoder.blocks:
            p = b.param
            if isinstance(p, RealParameter):
                axis = np.geomspace(p.low, p.high, k) if p.log else np.linspace(p.low, p.high, k)
                axis[0], axis[-1] = p.low, p.high
                self.axes.append([float(v) for v in axis])
            elif isinstance(p, IntegerParameter):
                count = p.high - p.low + 1
                values = range(p.low, p.high + 1) if count <= k else np.linspace(p.low, p.high, k).round()
                self.axes.append(sorted({int(v) for v in values}))
            else:
                assert isinstance(p, CategoricalParameter)
                self.axes.append(list(p.choices))

    @property
    def size(self) -> int:
        return int(np.prod([len(a) for a in self.axes]))

    def _points(self) -> Iterator[dict[str, Any]]:
        names = self.encoder.space.names
        for values in itertools.product(*self.axes):
            yield dict(zip(names, values, strict=True))

    def propose(
        self, observations: Sequence[Observation], pending: Sequence[Mapping[str, Any]], n: int = 1
    ) -> list[Proposal]:
        t0 = time.perf_counter()
        taken = _taken(self.encoder, observations, pending)
        out: list[Proposal] = []
        for recipe in self._points():
            if len(out) == n:
                break
            key = self.encoder.key(recipe)
            if key not in taken:
                taken.add(key)
                out.append(Proposal(recipe, "grid", None, None, time.perf_counter() - t0))
        if len(out) < n:
            raise OptimizerExhausted(
                f"the grid of {self.size} points has only {len(out)} unseen point(s) left, {n} were asked for"
            )
        return out
