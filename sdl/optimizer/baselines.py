"""Space-filling designs and the two honest baselines: random (scrambled Sobol) and grid.

Every stream here is indexed: the ``i``-th point depends on the seed and ``i`` (and, under linear
constraints, on the points already taken) only, so a proposal made after a crash from the stored history
equals the one a long-running process would have made.

Under linear constraints a unit-cube design would violate an equality almost surely, so the design picks,
from a fixed pool of points spread over the constraint polytope, the one farthest from every point already
taken (a greedy maximin design); the random baseline walks the same pool in order.
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
from sdl.optimizer.gp import sqdist
from sdl.space import CategoricalParameter, IntegerParameter, RealParameter

# The designs pass scipy's legacy `seed` (hidden from its signature since scipy 1.15): an integer `rng` draws
# another stream, so every campaign's design would change. The designs are a pure function of the seed.


@lru_cache(maxsize=32)
def _sobol(d: int, seed: int, log2n: int) -> np.ndarray:
    # Powers of two keep Sobol' balance properties (and keep scipy from warning).
    return qmc.Sobol(d, scramble=True, seed=seed).random_base2(log2n)  # pyright: ignore[reportCallIssue]


def sobol_points(d: int, seed: int, start: int, count: int) -> np.ndarray:
    """Points ``start .. start+count-1`` of the scrambled Sobol' sequence for ``seed``, in [0, 1)^d."""
    log2n = max(4, int(np.ceil(np.log2(start + count))))
    return _sobol(d, seed, log2n)[start : start + count]


@lru_cache(maxsize=32)
def _lhs(d: int, seed: int, n: int) -> np.ndarray:
    return qmc.LatinHypercube(d, seed=seed).random(n)  # pyright: ignore[reportCallIssue]


POOL_CHUNK = 1024


class FeasiblePool:
    """Encoded points spread over the constraint polytope, in chunks that depend on (seed, chunk) only."""

    def __init__(self, encoder: Encoder, seed: int) -> None:
        assert encoder.polytope is not None
        self.encoder, self.seed = encoder, seed
        self._chunks: list[np.ndarray] = []

    def chunk(self, c: int) -> np.ndarray:
        while len(self._chunks) <= c:
            k = len(self._chunks)
            rng = np.random.default_rng([self.seed, 11, k])
            U = rng.random((POOL_CHUNK, self.encoder.n_params))
            self._chunks.append(self.encoder.snap(self.encoder.sample_encoded(U, rng)))
        return self._chunks[c]


def _too_close(z: np.ndarray, others: np.ndarray | None, radius: float) -> bool:
    return others is not None and len(others) > 0 and float(((others - z) ** 2).sum(1).min()) < radius**2


class DesignStream:
    """The initial design (Sobol' or LHS) continued by Sobol' points, skipping recipes already taken.

    ``avoid`` (encoded points still running, or earlier in the batch) keeps every point at least
    ``settings.duplicate_radius`` from them. Under linear constraints the design is a greedy maximin
    selection from a :class:`FeasiblePool` instead.
    """

    def __init__(self, encoder: Encoder, settings: OptimizerSettings, size: int) -> None:
        self.encoder = encoder
        self.kind = settings.initial_design_kind
        self.seed = settings.seed
        self.size = size
        self.radius = settings.duplicate_radius
        self.pool = FeasiblePool(encoder, settings.seed) if encoder.polytope is not None else None

    def _unit(self, i: int) -> np.ndarray:
        d = self.encoder.n_params
        if self.kind == "lhs" and i < self.size:
            return _lhs(d, self.seed, self.size)[i]
        return sobol_points(d, self.seed, i, 1)[0]

    def take(
        self,
        index: int,
        taken: set[tuple[Any, ...]],
        avoid: np.ndarray | None = None,
        seen: np.ndarray | None = None,
    ) -> tuple[dict[str, Any], str]:
        """The first point at or after ``index`` whose recipe is not in ``taken`` nor near ``avoid``.

        Under constraints: the pool point farthest from ``seen`` (every encoded point observed, running or
        earlier in the batch)."""
        if self.pool is not None:
            return self._maximin(taken, avoid, seen)
        limit = index + 64 * (self.size + 16)
        fallback = None
        for i in range(index, limit):
            recipe = self.encoder.unit_to_recipes(self._unit(i)[None, :])[0]
            if self.encoder.key(recipe) not in taken:
                kind = self.kind if i < self.size else "sobol"
                if not _too_close(self.encoder.encode([recipe])[0], avoid, self.radius):
                    return recipe, kind
                fallback = fallback or (recipe, kind)
        if fallback is not None:  # a space too small to keep every point apart: distinct is what is left
            return fallback
        raise OptimizerExhausted("the space-filling design found no unseen recipe; the space looks exhausted")

    def _maximin(
        self, taken: set[tuple[Any, ...]], avoid: np.ndarray | None, seen: np.ndarray | None
    ) -> tuple[dict[str, Any], str]:
        assert self.pool is not None
        fallback = None
        for c in range(64):
            Z = self.pool.chunk(c)
            recipes = self.encoder.decode(Z)
            ok = np.array(
                [
                    self.encoder.key(r) not in taken and self.encoder.space.satisfies_constraints(r)
                    for r in recipes
                ]
            )
            if avoid is not None and len(avoid):
                apart = ok & (sqdist(Z, avoid).min(1) >= self.radius**2)
                if fallback is None and ok.any() and not apart.any():
                    # A feasible region narrower than the radius: the unseen point farthest from the rest.
                    near = np.vstack([avoid, seen]) if seen is not None and len(seen) else avoid
                    fallback = recipes[int(np.argmax(np.where(ok, sqdist(Z, near).min(1), -1.0)))]
                ok = apart
            if not ok.any():
                continue
            if seen is None or not len(seen):
                return recipes[int(np.argmax(ok))], "maximin"
            gap = np.where(ok, sqdist(Z, seen).min(1), -1.0)
            return recipes[int(np.argmax(gap))], "maximin"
        if fallback is not None:
            return fallback, "maximin"
        raise OptimizerExhausted(
            "no unseen recipe satisfying the constraints was found; the space looks exhausted"
        )


def _taken(
    encoder: Encoder, observations: Sequence[Observation], pending: Sequence[Mapping[str, Any]]
) -> set[tuple[Any, ...]]:
    return {encoder.key(o.recipe) for o in observations} | {encoder.key(r) for r in pending}


class RandomOptimizer:
    """Uniform baseline: successive points of one scrambled Sobol' sequence per seed (under linear
    constraints, successive points of the feasible pool)."""

    def __init__(self, encoder: Encoder, settings: OptimizerSettings) -> None:
        self.encoder = encoder
        self.stream = DesignStream(encoder, settings.model_copy(update={"initial_design_kind": "sobol"}), 0)
        self.pool = self.stream.pool

    def _take(self, index: int, taken: set[tuple[Any, ...]]) -> dict[str, Any]:
        if self.pool is None:
            return self.stream.take(index, taken)[0]
        for i in range(index, index + 64 * POOL_CHUNK):
            c, j = divmod(i, POOL_CHUNK)
            recipe = self.encoder.decode(self.pool.chunk(c)[j : j + 1])[0]
            if self.encoder.key(recipe) not in taken and self.encoder.space.satisfies_constraints(recipe):
                return recipe
        raise OptimizerExhausted("no unseen recipe satisfying the constraints was found")

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
            recipe = self._take(index, taken)
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
        """Grid points in a fixed order; under linear constraints only those that satisfy them."""
        names = self.encoder.space.names
        for values in itertools.product(*self.axes):
            recipe = dict(zip(names, values, strict=True))
            if self.encoder.space.satisfies_constraints(recipe):
                yield recipe

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
            feasible = " feasible" if self.encoder.space.constraints else ""
            raise OptimizerExhausted(
                f"the grid of {self.size} points has only {len(out)} unseen{feasible} point(s) left, "
                f"{n} were asked for"
            )
        return out
