"""Several objectives: from measurements to the one number a surrogate models, and the Pareto front.

Every objective becomes a *loss* to minimise (``minimize``: the value, ``maximize``: minus the value,
``target``: the distance to the target). How the losses of one experiment become one number depends on the
campaign's ``multi_objective`` method:

* ``weighted_sum`` — ``sum(weight_i * loss_i)``: what :meth:`sdl.spec.campaign.Campaign.scalarise` stores;
* ``chimera`` — hierarchical with tolerances (Häse, Roch, Aspuru-Guzik, Chem. Sci. 2018): objectives in order
  of importance; an experiment is judged on the first objective whose tolerance it misses, and only the ones
  within every tolerance are judged on the last objective. Because a tolerance is relative to the range
  observed so far, the scalar of one experiment depends on the whole history, so it is recomputed on every
  proposal;
* ``pareto`` — a random scalarisation per proposal (ParEGO, Knowles 2006): losses scaled to [0, 1] by the
  range seen (clipped at each objective's ``reference``, the worst value worth anything), combined by an
  augmented Chebyshev function with weights drawn uniformly from the simplex, seeded by the number of
  experiments issued. Over many proposals the weights sweep the front.

Failures, and successes lacking a measurement an objective needs, are failures for the optimizer too:
never invented numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sdl.optimizer.api import Observation

Method = Literal["weighted_sum", "chimera", "pareto"]
#: weight of the sum term of ParEGO's augmented Chebyshev scalarisation
CHEBYSHEV_RHO = 0.05


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective as the optimizer sees it (built from the campaign file's ``objectives:``)."""

    measurement: str
    goal: Literal["minimize", "maximize", "target"] = "minimize"
    target: float | None = None
    weight: float = 1.0
    #: chimera: how much worse than the best seen this objective may get, as a fraction of its observed range
    tolerance: float | None = None
    #: chimera: the value that is good enough, in the measurement's units (instead of ``tolerance``)
    threshold: float | None = None
    #: the worst value worth anything: the hypervolume reference and the clip of ParEGO's scaling
    reference: float | None = None

    def loss(self, value: float) -> float:
        if self.goal == "minimize":
            return value
        if self.goal == "maximize":
            return -value
        assert self.target is not None
        return abs(value - self.target)

    def loss_of_bound(self, bound: float) -> float:
        """A threshold or reference (in measurement units, or a distance for ``target``) as a loss."""
        return bound if self.goal == "target" else self.loss(bound)


@dataclass(frozen=True)
class Objectives:
    specs: tuple[ObjectiveSpec, ...]
    method: Method = "weighted_sum"

    @property
    def names(self) -> list[str]:
        return [s.measurement for s in self.specs]

    def losses(self, measurements: Mapping[str, Any] | None) -> np.ndarray | None:
        """The loss vector of one experiment's measurements, or None when a value is missing."""
        if measurements is None:
            return None
        out = []
        for spec in self.specs:
            v = measurements.get(spec.measurement)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                return None
            out.append(spec.loss(float(v)))
        return np.array(out)

    def loss_matrix(self, observations: Sequence[Observation]) -> np.ndarray:
        """One row per observation, NaN rows for failures and for successes lacking a measurement."""
        L = np.full((len(observations), len(self.specs)), np.nan)
        for i, o in enumerate(observations):
            if o.value is None or not math.isfinite(o.value):
                continue
            row = self.losses(o.measurements)
            if row is not None:
                L[i] = row
        return L

    def scores(self, L: np.ndarray) -> np.ndarray | None:
        """Each row's scalar as this method ranks experiments (lower is better; NaN for a row without every
        loss), over the rows given: a chimera's tolerances are relative to their ranges. None for
        ``pareto``, whose scalarisation is drawn anew for each proposal and ranks no point of the front
        above another."""
        if self.method == "pareto":
            return None
        ok = np.all(np.isfinite(L), axis=1)
        out = np.full(len(L), np.nan)
        if ok.any():
            if self.method == "chimera":
                out[ok] = chimera(L[ok], self.specs)
            else:
                out[ok] = L[ok] @ np.array([spec.weight for spec in self.specs])
        return out

    def references(self, L: np.ndarray) -> np.ndarray:
        """Per objective, the reference loss: declared, else the worst seen (NaN with no data)."""
        out = np.full(len(self.specs), np.nan)
        with np.errstate(all="ignore"):
            worst = np.nanmax(L, axis=0) if np.isfinite(L).any() else out
        for j, spec in enumerate(self.specs):
            out[j] = spec.loss_of_bound(spec.reference) if spec.reference is not None else worst[j]
        return out


class Scalariser:
    """Turns the history into the numbers the surrogate is fitted on (None for a failure)."""

    def __init__(self, objectives: Objectives | None, seed: int) -> None:
        self.objectives = objectives
        self.seed = seed

    @property
    def varies_per_proposal(self) -> bool:
        """Whether each proposal of a batch needs its own scalarisation (ParEGO draws new weights)."""
        return self.objectives is not None and self.objectives.method == "pareto"

    def values(self, observations: Sequence[Observation], issued: int) -> list[float | None]:
        obj = self.objectives
        plain = [o.value if o.value is not None and math.isfinite(o.value) else None for o in observations]
        if obj is None or (obj.method == "weighted_sum" and len(obj.specs) == 1):
            return plain
        if any(o.value is not None and o.measurements is None for o in observations):
            if obj.method == "weighted_sum":
                return plain  # values stored by Campaign.scalarise are already the weighted sum
            self.require_measurements(observations)
        L = obj.loss_matrix(observations)
        ok = np.all(np.isfinite(L), axis=1)
        ranked = obj.scores(L)  # what `sdl.spec.best` ranks experiments by, too
        if ranked is not None:
            s = ranked
        else:
            s = np.full(len(observations), np.nan)
            if ok.any():
                weights = simplex_weights(len(obj.specs), np.random.default_rng([self.seed, issued, 13]))
                s[ok] = chebyshev(scale_losses(L[ok], obj.references(L)), weights)
        return [float(v) if math.isfinite(v) else None for v in s]

    def require_measurements(self, observations: Sequence[Observation]) -> None:
        obj = self.objectives
        if obj is None or obj.method == "weighted_sum":
            return
        if any(o.value is not None and o.measurements is None for o in observations):
            raise ValueError(
                f"multi_objective {obj.method!r} needs each observation's measurements "
                f"({', '.join(obj.names)}), not only its scalar value"
            )


def simplex_weights(m: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform on the probability simplex."""
    w = rng.exponential(size=m)
    return w / w.sum()


def scale_losses(L: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Losses scaled to [0, 1] between the best seen and the reference (worse than it counts as 1)."""
    best = L.min(axis=0)
    span = np.where(reference - best > 1e-12, reference - best, np.maximum(L.max(axis=0) - best, 1e-12))
    return np.clip((L - best) / span, 0.0, 1.0)


def chebyshev(N: np.ndarray, weights: np.ndarray, rho: float = CHEBYSHEV_RHO) -> np.ndarray:
    """ParEGO's augmented Chebyshev scalarisation of scaled losses."""
    wN = N * weights
    return wN.max(axis=1) + rho * wN.sum(axis=1)


def chimera(L: np.ndarray, specs: Sequence[ObjectiveSpec]) -> np.ndarray:
    """Hierarchical scalarisation of the loss matrix ``L`` (rows: experiments, columns: objectives in order of
    importance). Lower is better; an experiment that misses objective ``i``'s tolerance always scores worse
    than one that meets it, whatever the objectives below ``i`` say."""
    n, m = L.shape
    lo, hi = L.min(axis=0), L.max(axis=0)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    N = (L - lo) / span
    out = np.full(n, np.nan)
    undecided = np.ones(n, dtype=bool)
    region = np.ones(n, dtype=bool)  # experiments meeting every tolerance above the current level
    shift = 0.0
    for i in range(m):
        if i == m - 1:
            out[undecided] = N[undecided, i] + shift
            break
        spec = specs[i]
        if spec.threshold is not None:
            limit = (spec.loss_of_bound(spec.threshold) - lo[i]) / span[i]
        else:
            tol = spec.tolerance if spec.tolerance is not None else 0.0
            in_region = N[region, i]
            limit = in_region.min() + tol * (in_region.max() - in_region.min())
        misses = undecided & (N[:, i] > limit)
        out[misses] = N[misses, i] + shift
        undecided &= ~misses
        meets = region & (N[:, i] <= limit)
        if meets.any():
            region = meets
        # the next level's values sit below this level's limit, so meeting it always ranks better
        shift += limit - N[region, i + 1].max()
    return out


def pareto_mask(L: np.ndarray) -> np.ndarray:
    """Which rows of a loss matrix are non-dominated (NaN rows never are)."""
    n = len(L)
    ok = np.all(np.isfinite(L), axis=1)
    mask = ok.copy()
    for i in np.nonzero(ok)[0]:
        others = L[ok]
        dominated = np.any(np.all(others <= L[i], axis=1) & np.any(others < L[i], axis=1))
        mask[i] = not dominated
    # equal rows: keep every copy (none dominates another)
    return mask if n else np.zeros(0, dtype=bool)


def hypervolume(L: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by the rows of ``L`` and bounded by ``reference`` (all losses, minimised)."""
    pts = L[np.all(np.isfinite(L), axis=1)]
    pts = pts[np.all(pts < reference, axis=1)]
    if not len(pts):
        return 0.0
    pts = pts[pareto_mask(pts)]
    return float(_hv(np.unique(pts, axis=0), np.asarray(reference, dtype=float)))


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    if pts.shape[1] == 2:
        order = np.argsort(pts[:, 0])
        p = pts[order]
        total, best_y = 0.0, ref[1]
        for k in range(len(p)):
            x_next = p[k + 1, 0] if k + 1 < len(p) else ref[0]
            best_y = min(best_y, p[k, 1])
            total += (x_next - p[k, 0]) * (ref[1] - best_y)
        return total
    # slice along the last objective (exact; fine for the few objectives and points of a campaign)
    order = np.argsort(pts[:, -1])
    p = pts[order]
    total = 0.0
    for k in range(len(p)):
        z_next = p[k + 1, -1] if k + 1 < len(p) else ref[-1]
        if z_next > p[k, -1]:
            front = p[: k + 1, :-1]
            total += (z_next - p[k, -1]) * _hv(front[pareto_mask(front)], ref[:-1])
    return total
