"""Pareto search for two objectives: one Gaussian process per objective and expected hypervolume improvement.

Random scalarisations (ParEGO, :mod:`sdl.optimizer.objectives`) need the losses on comparable scales, and a
front that is narrow next to the range of values seen (the SnAr front spans a few percent of the E-factors
observed) is then flattened into a single point. Expected hypervolume improvement needs no scaling choice:
each objective gets its own surrogate, and a candidate is worth the volume its outcome is expected to add to
the front seen so far, bounded by the reference point (Emmerich et al. 2006; Daulton et al. 2020 for the
Monte-Carlo form used here).

* losses are scaled so that the best value seen is 0 and the reference is 1 (HVI is invariant to this);
* the expectation is a Monte-Carlo average over the same 64 normal draws for every candidate;
* the 2-D improvement is exact: the non-dominated region is a staircase of cells, and a sampled outcome adds
  its box's overlap with each cell;
* running experiments and earlier points of the batch are believed to return their posterior means (kriging
  believer): they join the front and shrink the variance around them;
* failures weigh the improvement by the same kernel-smoothed feasibility as the single-objective search;
* under a cost (sdl/optimizer/cost.py) the improvement is divided by the recipe's cost, like EI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from sdl.optimizer.acquisition import Feasibility
from sdl.optimizer.api import Observation, OptimizerSettings, Proposal
from sdl.optimizer.cost import RecipeCost
from sdl.optimizer.encoding import Encoder
from sdl.optimizer.gp import Hyper, Posterior, sqdist
from sdl.optimizer.objectives import Objectives, pareto_mask

N_GLOBAL = 512
N_PARENTS = 6
N_LOCAL_EACH = 64
N_DRAWS = 64
_LOCAL_SCALES = np.array([0.005, 0.02, 0.05, 0.15])
FAILURE_RADIUS = 0.02


def hvi_2d(front: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Hypervolume that each outcome in ``Y[..., 2]`` adds to the 2-D ``front``, reference (1, 1)."""
    P = front[np.all(front < 1.0, axis=1)]
    if len(P):
        P = P[pareto_mask(P)]
        P = P[np.argsort(P[:, 0], kind="stable")]
    # cells of the non-dominated region: x in [xl_k, xr_k), y below yu_k
    xl = np.concatenate([[-np.inf], P[:, 0]])
    xr = np.concatenate([P[:, 0], [1.0]])
    yu = np.concatenate([[1.0], P[:, 1]])
    y1, y2 = Y[..., 0, None], Y[..., 1, None]
    width = np.clip(xr - np.maximum(y1, xl), 0.0, None)
    height = np.clip(np.minimum(yu, 1.0) - y2, 0.0, None)
    return (width * height).sum(-1)


class Fitter(Protocol):
    """What the Pareto search takes from the optimizer it serves (``bayesian.BayesianOptimizer``): the
    space's encoder, the settings and hyperparameters on the optimizer's refit schedule."""

    enc: Encoder
    s: OptimizerSettings

    def hyper_for(self, X: np.ndarray, y: np.ndarray) -> Hyper: ...


class ParetoStep:
    """The model state shared by the proposals of one ``propose`` call of a two-objective Pareto search."""

    def __init__(
        self,
        opt: Fitter,
        objectives: Objectives,
        observations: Sequence[Observation],
        pending: Sequence[Mapping[str, Any]],
    ) -> None:
        self.enc, self.s = opt.enc, opt.s
        L = objectives.loss_matrix(observations)
        ok = np.all(np.isfinite(L), axis=1)
        self.X = self.enc.encode([o.recipe for o, good in zip(observations, ok, strict=True) if good])
        bad = [o.recipe for o, good in zip(observations, ok, strict=True) if not good]
        self.Xbad = self.enc.encode(bad) if bad else np.zeros((0, self.enc.n_columns))
        Lok = L[ok]
        best = Lok.min(axis=0)
        ref = objectives.references(L)
        span = np.where(ref - best > 1e-12, ref - best, np.maximum(np.ptp(Lok, axis=0), 1e-12))
        self.N = (Lok - best) / span  # 0: best seen, 1: the reference
        self.posts: list[Posterior] = []
        self.centre, self.sd = np.zeros(2), np.ones(2)
        for j in range(2):
            y = self.N[:, j]
            sd = float(y.std()) or 1.0
            centre = float(y.max())  # prior mean at the worst value seen, as in the single-objective model
            hyper = opt.hyper_for(self.X, y)
            self.posts.append(Posterior(self.X, (y - centre) / sd, hyper))
            self.centre[j], self.sd[j] = centre, sd
        self.feas: Feasibility | None = None
        if len(self.Xbad):
            self.feas = Feasibility.fitted(
                np.vstack([self.X, self.Xbad]),
                np.concatenate([np.ones(len(self.X)), np.zeros(len(self.Xbad))]),
                self.posts[0].h.lengthscales,
            )
        self.Xall = np.vstack(
            [self.X, self.Xbad, self.enc.encode(list(pending))] if pending else [self.X, self.Xbad]
        )

    def _predict(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        means, sds = [], []
        for j, post in enumerate(self.posts):
            m, v = post.predict(Z)
            means.append(self.centre[j] + self.sd[j] * m)
            sds.append(self.sd[j] * np.sqrt(v))
        return np.stack(means, -1), np.stack(sds, -1)

    def _blocked(self, Z: np.ndarray, F: np.ndarray) -> np.ndarray:
        blocked = sqdist(Z, self.Xall).min(1) < 1e-18
        if len(F):
            blocked |= sqdist(Z, F).min(1) < max(self.s.duplicate_radius, 1e-9) ** 2
        if len(self.Xbad):
            blocked |= sqdist(Z, self.Xbad).min(1) < FAILURE_RADIUS**2
        if self.enc.polytope is not None:
            blocked |= ~self.enc.feasible(Z)
        return blocked

    def _ehvi(self, Z: np.ndarray, front: np.ndarray, eps: np.ndarray, cost: RecipeCost | None) -> np.ndarray:
        mean, sd = self._predict(Z)
        Y = mean[:, None, :] + sd[:, None, :] * eps[None, :, :]
        value = hvi_2d(front, Y).mean(axis=1)
        if cost is not None:
            value = value * cost.weight(Z)
        return value * self.feas(Z) if self.feas is not None else value

    def propose(
        self,
        F: np.ndarray,
        taken: set[tuple[Any, ...]],
        rng: np.random.Generator,
        cost: RecipeCost | None = None,
    ) -> Proposal | None:
        for post in self.posts:
            post.set_fantasies(F)
        front = self.N[pareto_mask(self.N)]
        if len(F):
            front = np.vstack([front, self._predict(F)[0]])
        eps = rng.standard_normal((N_DRAWS, 2))
        glob = self.enc.sobol_encoded(N_GLOBAL, rng)
        parents = self.X[pareto_mask(self.N)][:N_PARENTS]
        Z = np.vstack([glob, self._local(parents, rng)])
        vals = np.where(self._blocked(Z, F), -np.inf, self._ehvi(Z, front, eps, cost))
        if not np.isfinite(vals).any():
            return None
        # one refinement round around the best few candidates, in place of gradient polishing
        top = Z[np.argsort(-vals, kind="stable")[:4]]
        Z2 = self.enc.perturb(np.repeat(top, 32, axis=0), np.tile([0.002, 0.01], 64), rng)
        vals2 = np.where(self._blocked(Z2, F), -np.inf, self._ehvi(Z2, front, eps, cost))
        Z, vals = np.vstack([Z, Z2]), np.concatenate([vals, vals2])
        for j in np.argsort(-vals, kind="stable")[:16]:
            if not np.isfinite(vals[j]):
                break
            recipe = self.enc.decode(Z[j][None, :])[0]
            if self.enc.key(recipe) not in taken and self.enc.space.satisfies_constraints(recipe):
                name = "ehvi" if cost is None else "ehvi/cost"
                return Proposal(recipe, "gp-pareto", name, float(vals[j]), 0.0)
        return None

    def _local(self, parents: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not len(parents):
            return np.zeros((0, self.enc.n_columns))
        P = np.repeat(parents, N_LOCAL_EACH, axis=0)
        scales = np.tile(_LOCAL_SCALES, len(P) // len(_LOCAL_SCALES) + 1)[: len(P)]
        return self.enc.perturb(P, scales, rng)
