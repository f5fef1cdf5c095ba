"""What a campaign calls its best experiment: the one definition that `sdl show`, `sdl campaigns`, `sdl run`'s
summary, the lab service's campaign summaries (and so the dashboard and `sdl status`), and the exports use.

Every objective becomes a loss to minimise (`sdl.optimizer.objectives`), and the campaign's own
``multi_objective`` decides which experiment is best, as its optimizer ranks them:

* ``weighted_sum`` — the lowest weighted sum of losses (the scalar stored with each experiment);
* ``chimera`` — the hierarchy with tolerances: an experiment that meets the first objective's threshold
  beats one that misses it, whatever the objectives below say. A tolerance is relative to the range of
  results, so the ranking is made over the whole record, as the optimizer makes it;
* ``pareto`` — no single best: the front of non-dominated experiments is the answer.

With any method the best is a done experiment no other beats on every objective (the earliest among
equals), and with several objectives the front is reported beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from sdl.optimizer import Objectives, pareto_mask
from sdl.spec.campaign import Campaign
from sdl.spec.status import ExperimentStatus


class Result(Protocol):
    """An experiment as the store or the API holds it."""

    @property
    def seq(self) -> int: ...

    @property
    def status(self) -> ExperimentStatus: ...

    @property
    def measurements(self) -> Mapping[str, Any] | None: ...


R = TypeVar("R", bound=Result)


@dataclass(frozen=True)
class Leaders(Generic[R]):
    """The best experiment by the campaign's own definition (None for a Pareto campaign, or before any
    result), its scalar, and with several objectives the non-dominated experiments."""

    best: R | None = None
    #: the best's scalar as the campaign ranks experiments (lower is better)
    score: float | None = None
    #: with two or more objectives: every done experiment no other beats on all of them, in order
    front: list[R] = field(default_factory=list[R])


def losses(campaign: Campaign, history: Sequence[Result]) -> np.ndarray:
    """Each experiment's objective losses (minimised); NaN rows for experiments not done or lacking one."""
    return loss_matrix(campaign.objective_set(), history)


def loss_matrix(objectives: Objectives, history: Sequence[Result]) -> np.ndarray:
    out = np.full((len(history), len(objectives.specs)), np.nan)
    for i, e in enumerate(history):
        if e.status is ExperimentStatus.DONE:
            row = objectives.losses(e.measurements)
            if row is not None:
                out[i] = row
    return out


def scores(
    campaign: Campaign, history: Sequence[Result], ranges: np.ndarray | None = None
) -> np.ndarray | None:
    """Each experiment's scalar as the campaign ranks them (lower is better; NaN without a result); None
    for a Pareto campaign, which ranks no experiment of its front above another. ``ranges``: the loss
    rows of results of the same record left out of ``history`` (a chimera's tolerances are relative to
    the range of every result)."""
    objectives = campaign.objective_set()
    L = loss_matrix(objectives, history)
    ok = np.all(np.isfinite(L), axis=1)
    context = L[ok] if ranges is None or not len(ranges) else np.vstack([L[ok], ranges])
    ranked = objectives.scores(context)
    if ranked is None:
        return None
    out = np.full(len(history), np.nan)
    out[ok] = ranked[: int(ok.sum())]
    return out


def leaders(campaign: Campaign, history: Sequence[R], ranges: np.ndarray | None = None) -> Leaders[R]:
    """The campaign's best of ``history`` and, with several objectives, its front (see the module's
    docstring); ``ranges`` as for :func:`scores`."""
    L = losses(campaign, history)
    ok = np.all(np.isfinite(L), axis=1)
    if not ok.any():
        return Leaders()
    non_dominated = pareto_mask(L)
    front = [e for e, keep in zip(history, non_dominated, strict=True) if keep]
    shown = front if len(campaign.objectives) > 1 else []
    ranked = scores(campaign, history, ranges)
    if ranked is None:
        return Leaders(front=shown)
    chosen = min(np.flatnonzero(non_dominated).tolist(), key=lambda i: (float(ranked[i]), history[i].seq))
    return Leaders(history[chosen], float(ranked[chosen]), shown)


def best(campaign: Campaign, history: Sequence[R]) -> R | None:
    """The campaign's best experiment (None for a Pareto campaign: see :func:`leaders`' front)."""
    return leaders(campaign, history).best


class Running(Generic[R]):
    """The leaders of a growing record, kept one result at a time without holding every experiment: the
    non-dominated ones (the only candidates) and, where the ranking depends on the whole record (a
    chimera's tolerances), the losses of the rest."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self._objectives = campaign.objective_set()
        #: whether one experiment's scalar depends on the others (else the best of two is enough)
        self._relative = len(campaign.objectives) > 1 and campaign.multi_objective != "weighted_sum"
        self._front: list[R] = []
        self._front_rows: list[np.ndarray] = []
        self._others: list[np.ndarray] = []
        self._cached: Leaders[R] | None = Leaders()

    def add(self, experiment: R) -> None:
        if experiment.status is not ExperimentStatus.DONE:
            return
        row = self._objectives.losses(experiment.measurements)
        if row is None:
            return
        if any(_dominates(f, row) for f in self._front_rows):
            self._others.append(row)
        else:
            kept = [not _dominates(row, f) for f in self._front_rows]
            self._others += [f for f, k in zip(self._front_rows, kept, strict=True) if not k]
            self._front = [e for e, k in zip(self._front, kept, strict=True) if k] + [experiment]
            self._front_rows = [f for f, k in zip(self._front_rows, kept, strict=True) if k] + [row]
        if not self._relative:
            self._others.clear()  # a weighted sum ranks each experiment on its own
        self._cached = None

    @property
    def leaders(self) -> Leaders[R]:
        if self._cached is None:
            ranges = np.array(self._others) if self._others else None
            self._cached = leaders(self.campaign, sorted(self._front, key=lambda e: e.seq), ranges)
        return self._cached


def _dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))
