"""The optimizer's public contract: settings, observations in, proposals out.

The campaign executor keeps the store as the single source of truth and hands the whole history to
:meth:`CampaignOptimizer.propose` on every call, so an optimizer is a pure function of its inputs
(plus caches that never change the answer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sdl.space import IntegerParameter, RealParameter, SearchSpace


class SkoptSettings(BaseModel):
    """``optimizer: {kind: skopt, skopt: {...}}``: scikit-optimize's own options, with its own defaults."""

    model_config = ConfigDict(extra="forbid")

    base_estimator: Literal["GP", "RF", "ET", "GBRT"] = Field(
        default="GP",
        description="skopt's surrogate: Gaussian process, random forest, extra trees, boosted trees.",
    )
    acq_func: Literal["gp_hedge", "EI", "PI", "LCB"] = Field(
        default="gp_hedge", description="skopt's acquisition."
    )
    acq_optimizer: Literal["auto", "sampling", "lbfgs"] = Field(
        default="auto", description="How skopt maximises the acquisition (sampling under constraints)."
    )
    n_initial_points: int = Field(
        default=10, ge=0, description="Points of the initial design before the model."
    )
    initial_point_generator: Literal["random", "sobol", "halton", "hammersly", "lhs", "grid"] = Field(
        default="random", description="skopt's generator of the initial design."
    )
    strategy: Literal["cl_min", "cl_mean", "cl_max"] = Field(
        default="cl_min",
        description="Constant liar for running experiments and batch points: they are told the minimum, "
        "mean or maximum value seen.",
    )
    xi: float = Field(default=0.01, ge=0.0, description="skopt's EI/PI margin (in objective units).")
    kappa: float = Field(default=1.96, ge=0.0, description="skopt's LCB weight.")
    n_points: int = Field(default=10000, ge=10, description="Random points scored per acquisition search.")
    n_restarts_optimizer: int = Field(
        default=5, ge=1, description="L-BFGS restarts of the acquisition search."
    )


class CostSettings(BaseModel):
    """``optimizer: {cost: {...}}``: what a recipe consumes of something scarce, known before it runs.

    A recipe's cost is ``fixed + sum(per_unit[p] * recipe[p])``: e.g. the microlitres of a scarce stock it
    draws, when a parameter is that stock's volume. The acquisition is divided by it: expected improvement
    per unit cost (docs/optimizer.md, Cost-aware acquisition).
    """

    model_config = ConfigDict(extra="forbid")

    per_unit: dict[str, float] = Field(
        min_length=1,
        description="Cost per unit of each real or integer parameter (e.g. 1 for a parameter that is the "
        "volume of the scarce stock, in the stock's units).",
    )
    fixed: float = Field(
        default=0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="What every experiment costs whatever its recipe (a line's dead volume, the value put on "
        "one experiment), in the same units; every recipe must cost more than zero.",
    )

    @model_validator(mode="after")
    def _weights(self) -> CostSettings:
        bad = sorted(name for name, w in self.per_unit.items() if not 0.0 <= w < math.inf)
        if bad:
            raise ValueError(
                "per_unit: each cost per unit must be a finite number at least 0; "
                f"{', '.join(f'{n}: {self.per_unit[n]}' for n in bad)} is not"
            )
        return self

    def check(self, space: SearchSpace) -> None:
        """Raise ValueError unless the cost names real or integer parameters of ``space`` only and every
        recipe costs more than zero (a recipe that cost nothing would be worth any number of experiments)."""
        by_name = {p.name: p for p in space.parameters}
        lowest = self.fixed
        for name, weight in self.per_unit.items():
            p = by_name.get(name)
            if p is None:
                raise ValueError(
                    f"optimizer.cost.per_unit names {name!r}, which is not a parameter "
                    f"(parameters: {', '.join(space.names)})"
                )
            if not isinstance(p, RealParameter | IntegerParameter):
                raise ValueError(
                    f"optimizer.cost.per_unit names {name!r}, a {p.type} parameter; a cost per unit needs a "
                    "real or integer parameter"
                )
            lowest += weight * p.low
        if not lowest > 0.0:
            raise ValueError(
                f"optimizer.cost: the cheapest recipe would cost {lowest:g}; every recipe must cost more "
                "than zero (raise `fixed`: what every experiment costs whatever its recipe)"
            )


class OptimizerSettings(BaseModel):
    """The campaign file's ``optimizer:`` section."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["bayesian", "random", "grid", "skopt"] = Field(
        default="bayesian",
        description="bayesian: our Gaussian-process model with an acquisition function; "
        "random: scrambled-Sobol baseline; grid: exhaustive grid baseline; "
        "skopt: scikit-optimize's Optimizer (options under `skopt`).",
    )
    initial_design: int | None = Field(
        default=None,
        ge=1,
        description="Number of space-filling points before the model is used; "
        "default 2 * (number of parameters) + 2, clipped to 5..20.",
    )
    initial_design_kind: Literal["sobol", "lhs"] = Field(
        default="sobol",
        description="Space-filling design for the first points: scrambled Sobol or Latin hypercube.",
    )
    acquisition: Literal["ei", "pi", "lcb", "gp_hedge"] = Field(
        default="ei",
        description="ei: expected improvement; pi: probability of improvement; lcb: lower confidence bound; "
        "gp_hedge: a portfolio choosing among the three nominees by their posterior mean.",
    )
    seed: int = Field(default=0, description="Seed of every random choice; `sdl run --seed S` overrides it.")
    xi: float = Field(
        default=0.0,
        ge=0.0,
        description="Exploration margin of ei and pi, in standard deviations of the objective "
        "(0.01 cost Branin a factor of 6 in final regret).",
    )
    kappa: float = Field(default=1.96, ge=0.0, description="Exploration weight of lcb (mean - kappa * sd).")
    duplicate_radius: float = Field(
        default=0.02,
        ge=0.0,
        le=0.5,
        description="No proposal comes closer than this to a running experiment or to another proposal of "
        "the same batch (Euclidean distance with every parameter range scaled to 1; categories count as "
        "far apart). Observed recipes are only never repeated exactly, so refinement is not limited.",
    )
    blas_threads: int | None = Field(
        default=1,
        ge=1,
        le=256,
        description="BLAS threads a bayesian proposal may use (null: as many as the process has). One is the "
        "fastest on the matrices a proposal works with on a 2-core machine (docs/optimizer.md, Speed).",
    )
    grid_points: int = Field(
        default=5,
        ge=2,
        le=1000,
        description="grid kind: points per real parameter (integers use every value up to this many; "
        "categoricals always use every choice).",
    )
    skopt: SkoptSettings = Field(
        default_factory=SkoptSettings,
        description="skopt kind: scikit-optimize's options (its own names and defaults).",
    )
    cost: CostSettings | None = Field(
        default=None,
        description="bayesian kind: penalise recipes by what they consume (expected improvement per unit "
        "of cost); none: every recipe costs the same.",
    )

    @model_validator(mode="after")
    def _skopt_only_for_skopt(self) -> OptimizerSettings:
        # Compared with the defaults, not by presence: a dumped and reloaded campaign spells them all out.
        if self.kind != "skopt" and self.skopt != SkoptSettings():
            raise ValueError(f"the `skopt` options apply to kind 'skopt', not {self.kind!r}")
        if self.cost is not None and self.kind != "bayesian":
            raise ValueError(f"`cost` applies to kind 'bayesian', not {self.kind!r}")
        return self


@dataclass(frozen=True)
class Observation:
    """A finished experiment: its recipe and the scalar objective (to minimise), or why it failed.

    ``measurements`` (name -> value) is what several objectives are computed from; with a single objective
    or a weighted sum the scalar ``value`` is enough.
    """

    recipe: dict[str, Any]
    value: float | None
    failure: str | None = None
    measurements: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Proposal:
    """A recipe to run next, and what produced it."""

    recipe: dict[str, Any]
    model: str
    acquisition: str | None
    acquisition_value: float | None
    seconds: float


class OptimizerExhausted(Exception):
    """No unseen point is left to propose (a finished grid, a fully explored discrete space)."""


class CampaignOptimizer(Protocol):
    def propose(
        self, observations: Sequence[Observation], pending: Sequence[Mapping[str, Any]], n: int = 1
    ) -> list[Proposal]:
        """Return ``n`` new recipes, none equal to a pending one or to another in the batch.

        ``observations`` is the full history in completion order; ``pending`` the recipes still running.
        The result depends on these inputs (and the space and settings) only.
        """
        ...
