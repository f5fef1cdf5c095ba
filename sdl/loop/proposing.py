"""Deciding a campaign's next experiment from its record: a recipe to repeat, or the optimizer's proposal.

The optimizer sees every result and recipe failure as observations and every experiment still proposed
or running as pending, so several workcells never get the same recipe. A warm-started campaign's optimizer
sees the earlier campaigns' compatible experiments first (see :mod:`sdl.loop.warmstart`): they are
observations like its own, copied into its record when it was created, so its decisions stay a function of
its record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sdl.loop.history import History, observations, pending, retry_candidate
from sdl.optimizer import CampaignOptimizer, Observation, Proposal, make_optimizer
from sdl.spec.campaign import Campaign, MissingMeasurement
from sdl.store import Decision, ExperimentRecord
from sdl.store.schema import to_jsonable

RETRY_MODEL = "retry"


@dataclass(frozen=True)
class NextExperiment:
    recipe: dict[str, Any]
    decision: Decision
    retry_of: int | None = None


def optimizer_for(campaign: Campaign, prior: Sequence[Mapping[str, Any]] = ()) -> CampaignOptimizer:
    """The campaign's optimizer, over its space and constraints, combining its objectives as it says;
    ``prior``: the warm-start rows of its record (``Store.prior_observations``)."""
    optimizer = make_optimizer(campaign.space, campaign.optimizer, campaign.objective_set())
    seeded = prior_observations(campaign, prior)
    return WarmStarted(optimizer, seeded) if seeded else optimizer


def prior_observations(campaign: Campaign, prior: Sequence[Mapping[str, Any]]) -> list[Observation]:
    """Warm-start rows as observations, scored by this campaign's own objectives (an earlier campaign may
    have weighted or targeted them differently); a row lacking an objective's measurement is left out."""
    out = []
    for row in prior:
        recipe = dict(row["recipe"])
        if row["status"] != "done":
            out.append(Observation(recipe=recipe, value=None, failure=row.get("failure")))
            continue
        measurements = dict(row.get("measurements") or {})
        try:
            value = campaign.scalarise(measurements)
        except MissingMeasurement:
            continue
        out.append(Observation(recipe=recipe, value=value, measurements=measurements))
    return out


class WarmStarted:
    """An optimizer that sees the warm-start observations before the campaign's own history."""

    def __init__(self, optimizer: CampaignOptimizer, prior: Sequence[Observation]) -> None:
        self.optimizer = optimizer
        self.prior = list(prior)

    def propose(
        self, observations: Sequence[Observation], pending: Sequence[Mapping[str, Any]], n: int = 1
    ) -> list[Proposal]:
        return self.optimizer.propose([*self.prior, *observations], pending, n)


def decide_next(
    campaign: Campaign,
    optimizer: CampaignOptimizer,
    history: History,
    observed: Sequence[Observation] | None = None,
    in_flight: list[ExperimentRecord] | None = None,
) -> NextExperiment:
    """The next recipe to run; raises ``OptimizerExhausted`` when nothing new is left to propose.

    ``observed`` and ``in_flight``: ``observations(history)`` and ``pending(history)``, when the caller keeps
    them (a `Tally` does) — the same inputs, without rebuilding them from thousands of experiments."""
    observed = observed if observed is not None else observations(history)
    in_flight = in_flight if in_flight is not None else pending(history)
    retry = retry_candidate(campaign, history)
    if retry is not None:
        decision = Decision(
            model=RETRY_MODEL,
            acquisition=None,
            acquisition_value=None,
            seconds=0.0,
            n_observations=len(observed),
            n_pending=len(in_flight),
        )
        return NextExperiment(dict(retry.recipe), decision, retry_of=retry.id)
    proposal = optimizer.propose(observed, [e.recipe for e in in_flight], n=1)[0]
    recipe = to_jsonable(proposal.recipe)
    campaign.space.validate_recipe(recipe)
    decision = Decision(
        model=proposal.model,
        acquisition=proposal.acquisition,
        acquisition_value=proposal.acquisition_value,
        seconds=proposal.seconds,
        n_observations=len(observed),
        n_pending=len(in_flight),
    )
    return NextExperiment(recipe, decision)
