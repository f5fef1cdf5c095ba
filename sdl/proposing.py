"""Deciding a campaign's next experiment from its record: a recipe to repeat, or the optimizer's proposal.

The optimizer sees every result and recipe failure as observations and every experiment still proposed
or running as pending, so several workcells never get the same recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdl.campaign import Campaign
from sdl.history import History, observations, pending, retry_candidate
from sdl.optimizer import CampaignOptimizer, Observation, make_optimizer
from sdl.store import Decision, ExperimentRecord
from sdl.store.schema import to_jsonable

RETRY_MODEL = "retry"


@dataclass(frozen=True)
class NextExperiment:
    recipe: dict[str, Any]
    decision: Decision
    retry_of: int | None = None


def optimizer_for(campaign: Campaign) -> CampaignOptimizer:
    """The campaign's optimizer, over its space and constraints, combining its objectives as it says."""
    return make_optimizer(campaign.space, campaign.optimizer, campaign.objective_set())


def decide_next(
    campaign: Campaign,
    optimizer: CampaignOptimizer,
    history: History,
    observed: list[Observation] | None = None,
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
