"""What the optimizer searches: the parameters a campaign varies and the linear constraints between them
(`sdl.space.parameters`), the polytope those constraints cut from the unit cube (`sdl.space.polytope`), and
what every number means — its units and stage (`sdl.space.units`).

The optimizer imports this package and nothing else of `sdl`; the campaign file (`sdl.spec`) builds on it.
"""

from __future__ import annotations

from sdl.space.parameters import (
    CONSTRAINT_TOLERANCE,
    CategoricalParameter,
    IntegerParameter,
    LinearConstraint,
    Parameter,
    RealParameter,
    SearchSpace,
    space_polytope,
)

__all__ = [
    "CONSTRAINT_TOLERANCE",
    "CategoricalParameter",
    "IntegerParameter",
    "LinearConstraint",
    "Parameter",
    "RealParameter",
    "SearchSpace",
    "space_polytope",
]
