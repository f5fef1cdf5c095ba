"""Map recipes to points of the unit cube the surrogate works in, and back.

Two coordinate systems are used:

* *unit* coordinates: one column per parameter in [0, 1) — what space-filling designs produce;
* *encoded* coordinates: what the Gaussian process sees — a real is its (log-)scaled position, an integer the
  centre of its cell, a categorical a one-hot block (so no false order is imposed on the choices), or, when
  the choices have descriptors, the choice's descriptor values scaled to [0, 1],
  so similar choices sit close.

Linear constraints on reals become a polytope in the reals' encoded columns (``Encoder.polytope``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import qmc

from sdl.space import CategoricalParameter, IntegerParameter, RealParameter, SearchSpace


@dataclass(frozen=True)
class _Block:
    param: RealParameter | IntegerParameter | CategoricalParameter
    start: int
    stop: int
    #: a categorical's encoded row per choice: the identity (one-hot) or its scaled descriptors
    rows: np.ndarray | None = None

    def choice_index(self, Z: np.ndarray) -> np.ndarray:
        """The choice whose row is nearest to each encoded row (argmax for one-hot blocks)."""
        assert self.rows is not None
        block = Z[:, self.start : self.stop]
        if isinstance(self.param, CategoricalParameter) and self.param.descriptors is None:
            return np.argmax(block, axis=1)
        d2 = ((block[:, None, :] - self.rows[None, :, :]) ** 2).sum(-1)
        return np.argmin(d2, axis=1)


def _descriptor_rows(p: CategoricalParameter) -> np.ndarray:
    assert p.descriptors is not None
    M = np.array(list(p.descriptors.values()), dtype=float).T  # choices x descriptors
    lo, hi = M.min(0), M.max(0)
    keep = hi > lo  # a descriptor equal for every choice tells the model nothing
    return (M[:, keep] - lo[keep]) / (hi[keep] - lo[keep])


class Encoder:
    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        blocks: list[_Block] = []
        col = 0
        for p in space.parameters:
            rows = None
            if isinstance(p, CategoricalParameter):
                rows = np.eye(len(p.choices)) if p.descriptors is None else _descriptor_rows(p)
            width = 1 if rows is None else rows.shape[1]
            blocks.append(_Block(p, col, col + width, rows))
            col += width
        self.blocks = blocks
        self.n_params = len(blocks)
        self.n_columns = col
        #: encoded columns that may move continuously (polished by gradient ascent)
        self.real_columns = np.array(
            [b.start for b in blocks if isinstance(b.param, RealParameter)], dtype=int
        )
        #: the linear constraints as a polytope over ``real_columns`` (None when there are none)
        self.polytope = None
        if space.constraints:
            from sdl.space.parameters import space_polytope

            self.polytope = space_polytope(space)[0]

    def feasible(self, Z: np.ndarray) -> np.ndarray:
        """Which encoded rows satisfy the linear constraints (all of them when there are none)."""
        Z = np.atleast_2d(Z)
        if self.polytope is None:
            return np.ones(len(Z), dtype=bool)
        return self.polytope.contains(Z[:, self.real_columns])

    # -- sizes ---------------------------------------------------------------------------------------------
    def n_points(self) -> float:
        """How many distinct recipes the space holds (inf when any parameter is real)."""
        total = 1.0
        for b in self.blocks:
            p = b.param
            if isinstance(p, RealParameter):
                return float("inf")
            total *= len(p.choices) if isinstance(p, CategoricalParameter) else p.high - p.low + 1
        return total

    # -- recipes <-> keys ----------------------------------------------------------------------------------
    def key(self, recipe: Mapping[str, Any]) -> tuple[Any, ...]:
        """A hashable identity of a recipe that ignores int/float spelling (``2`` vs ``2.0``)."""
        out: list[Any] = []
        for b in self.blocks:
            v = recipe[b.param.name]
            if isinstance(b.param, RealParameter):
                out.append(float(v))
            elif isinstance(b.param, IntegerParameter):
                out.append(int(v))
            else:
                out.append(v)
        return tuple(out)

    # -- unit cube -> recipes / encoded --------------------------------------------------------------------
    def unit_to_recipes(self, U: np.ndarray) -> list[dict[str, Any]]:
        return self.decode(self.unit_to_encoded(U))

    def unit_to_encoded(self, U: np.ndarray) -> np.ndarray:
        U = np.atleast_2d(np.asarray(U, dtype=float))
        Z = np.zeros((U.shape[0], self.n_columns))
        for j, b in enumerate(self.blocks):
            u = np.clip(U[:, j], 0.0, np.nextafter(1.0, 0.0))
            p = b.param
            if isinstance(p, RealParameter):
                Z[:, b.start] = u
            elif isinstance(p, IntegerParameter):
                count = p.high - p.low + 1
                Z[:, b.start] = (np.floor(u * count) + 0.5) / count
            else:
                assert b.rows is not None
                idx = np.floor(u * len(p.choices)).astype(int)
                Z[:, b.start : b.stop] = b.rows[idx]
        return Z

    def sample_encoded(self, U: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Encoded points from unit-cube points ``U``, with the real columns redrawn inside the constraint
        polytope when there is one (a unit-cube design would violate an equality almost surely)."""
        Z = self.unit_to_encoded(U)
        if self.polytope is not None:
            Z[:, self.real_columns] = self.polytope.sample(len(Z), rng)
        return Z

    def sobol_encoded(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` (a power of two) scrambled Sobol' points spread over the space, encoded, inside the polytope
        when there is one: the global candidates of an acquisition search."""
        # scipy's legacy `seed`, as in baselines.py
        sobol = qmc.Sobol(self.n_params, scramble=True, seed=rng)  # pyright: ignore[reportCallIssue]
        U = sobol.random_base2(int(math.log2(n)))
        return self.sample_encoded(U, rng)

    # -- recipes <-> encoded -------------------------------------------------------------------------------
    def encode(self, recipes: Sequence[Mapping[str, Any]]) -> np.ndarray:
        Z = np.zeros((len(recipes), self.n_columns))
        for i, r in enumerate(recipes):
            for b in self.blocks:
                p, v = b.param, r[b.param.name]
                if isinstance(p, RealParameter):
                    if p.log:
                        Z[i, b.start] = (np.log(float(v)) - np.log(p.low)) / (np.log(p.high) - np.log(p.low))
                    else:
                        Z[i, b.start] = (float(v) - p.low) / (p.high - p.low)
                elif isinstance(p, IntegerParameter):
                    Z[i, b.start] = (int(v) - p.low + 0.5) / (p.high - p.low + 1)
                else:
                    assert b.rows is not None
                    Z[i, b.start : b.stop] = b.rows[p.choices.index(v)]
        return np.clip(Z, 0.0, 1.0)

    def decode(self, Z: np.ndarray) -> list[dict[str, Any]]:
        Z = np.atleast_2d(Z)
        columns: list[list[Any]] = []
        for b in self.blocks:
            p = b.param
            if isinstance(p, RealParameter):
                u = np.clip(Z[:, b.start], 0.0, 1.0)
                if p.log:
                    vals = np.exp(np.log(p.low) + u * (np.log(p.high) - np.log(p.low)))
                else:
                    vals = p.low + u * (p.high - p.low)
                columns.append([float(v) for v in np.clip(vals, p.low, p.high)])
            elif isinstance(p, IntegerParameter):
                count = p.high - p.low + 1
                idx = np.clip(np.floor(Z[:, b.start] * count), 0, count - 1).astype(int)
                columns.append([int(p.low + i) for i in idx])
            else:
                columns.append([p.choices[i] for i in b.choice_index(Z)])
        names = self.space.names
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]

    def snap(self, Z: np.ndarray) -> np.ndarray:
        """Move encoded points onto the lattice of real recipes (integer cell centres, exact one-hots)."""
        Z = np.clip(np.atleast_2d(Z), 0.0, 1.0).copy()
        for b in self.blocks:
            p = b.param
            if isinstance(p, IntegerParameter):
                count = p.high - p.low + 1
                Z[:, b.start] = (np.minimum(np.floor(Z[:, b.start] * count), count - 1) + 0.5) / count
            elif isinstance(p, CategoricalParameter):
                assert b.rows is not None
                Z[:, b.start : b.stop] = b.rows[b.choice_index(Z)]
        return Z

    # -- local moves ---------------------------------------------------------------------------------------
    def perturb(self, parents: np.ndarray, scale: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gaussian steps of per-row ``scale`` around encoded ``parents``; categoricals switch w.p. 0.2.

        Under linear constraints the reals move along a random feasible line instead, so the step never
        leaves the polytope."""
        Z = parents.copy()
        m = len(Z)
        for b in self.blocks:
            p = b.param
            if isinstance(p, CategoricalParameter):
                assert b.rows is not None
                switch = rng.random(m) < 0.2
                new = rng.integers(0, len(p.choices), size=m)
                Z[switch, b.start : b.stop] = b.rows[new[switch]]
            elif isinstance(p, IntegerParameter) or self.polytope is None:
                Z[:, b.start] = np.clip(Z[:, b.start] + scale * rng.standard_normal(m), 0.0, 1.0)
        if self.polytope is not None and len(self.real_columns):
            Z[:, self.real_columns] = self.polytope.perturb(Z[:, self.real_columns], scale, rng)
        return self.snap(Z) if len(self.real_columns) < self.n_params else Z
