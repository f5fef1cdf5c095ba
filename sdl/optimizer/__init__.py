"""Proposes the next recipes of a campaign from its history: Bayesian optimisation plus honest baselines.

``make_optimizer(space, settings).propose(observations, pending, n)`` is the whole interface; see
docs/optimizer.md for the design.
"""

from __future__ import annotations

from sdl.optimizer.api import (
    CampaignOptimizer,
    Observation,
    OptimizerExhausted,
    OptimizerSettings,
    Proposal,
)
from sdl.space import SearchSpace

__all__ = [
    "CampaignOptimizer",
    "Observation",
    "OptimizerExhausted",
    "OptimizerSettings",
    "Proposal",
    "make_optimizer",
]


def make_optimizer(space: SearchSpace, settings: OptimizerSettings) -> CampaignOptimizer:
    """Build the optimizer named by ``settings.kind`` over ``space``."""
    from sdl.optimizer.baselines import GridOptimizer, RandomOptimizer
    from sdl.optimizer.bayesian import BayesianOptimizer
    from sdl.optimizer.encoding import Encoder

    encoder = Encoder(space)
    if settings.kind == "random":
        return RandomOptimizer(encoder, settings)
    if settings.kind == "grid":
        return GridOptimizer(encoder, settings)
    return BayesianOptimizer(encoder, settings)
