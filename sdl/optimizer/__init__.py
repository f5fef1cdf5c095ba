"""Proposes the next recipes of a campaign from its history: Bayesian optimisation plus honest baselines.

``make_optimizer(space, settings).propose(observations, pending, n)`` is the whole interface; see
docs/optimizer.md for the design.
"""

from __future__ import annotations

from sdl.optimizer.api import (
    CampaignOptimizer,
    CostSettings,
    Observation,
    OptimizerExhausted,
    OptimizerSettings,
    Proposal,
    SkoptSettings,
)
from sdl.optimizer.objectives import Objectives, ObjectiveSpec, hypervolume, pareto_mask
from sdl.space import SearchSpace

__all__ = [
    "CampaignOptimizer",
    "CostSettings",
    "ObjectiveSpec",
    "Objectives",
    "Observation",
    "OptimizerExhausted",
    "OptimizerSettings",
    "Proposal",
    "SkoptSettings",
    "hypervolume",
    "make_optimizer",
    "pareto_mask",
]


def make_optimizer(
    space: SearchSpace, settings: OptimizerSettings, objectives: Objectives | None = None
) -> CampaignOptimizer:
    """Build the optimizer named by ``settings.kind`` over ``space`` (linear constraints included).

    ``objectives`` says how several objectives combine (the campaign's ``Campaign.objective_set()``); without
    it each observation's scalar ``value`` is minimised.
    """
    # Imported here, not at the top: the campaign model imports this package for its settings, and these
    # modules bring scipy.optimize and scipy.stats (0.6-1.4 s more than the package's own 0.2-0.4 s on the
    # 2-core machine; skopt another 0.4-1.2 s), which `sdl validate` and the other commands need not pay.
    from sdl.optimizer.baselines import GridOptimizer, RandomOptimizer
    from sdl.optimizer.bayesian import BayesianOptimizer
    from sdl.optimizer.encoding import Encoder
    from sdl.optimizer.objectives import Scalariser

    encoder = Encoder(space)
    scalariser = Scalariser(objectives, settings.seed)
    if settings.kind == "random":
        return RandomOptimizer(encoder, settings)
    if settings.kind == "grid":
        return GridOptimizer(encoder, settings)
    if settings.kind == "skopt":
        from sdl.optimizer.skopt_backend import SkoptOptimizer

        return SkoptOptimizer(encoder, settings, scalariser)
    return BayesianOptimizer(encoder, settings, scalariser)
