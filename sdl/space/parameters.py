"""The search space of a campaign: what the optimizer may vary, and within which limits.

These models are shared by the campaign file (validation, JSON Schema) and the optimizer adapter
(conversion to scikit-optimize dimensions), so both read the same definition.

Linear constraints tie real parameters together (mixture fractions summing to one, a total volume); a
recipe satisfies one when ``sum(coefficient * value)`` is within :data:`CONSTRAINT_TOLERANCE` (relative) of
its bound.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sdl.space.units import Stage, check_units

if TYPE_CHECKING:
    from sdl.space.polytope import Polytope

#: relative slack allowed when checking a linear constraint: floating point cannot hit ``== 1`` exactly
CONSTRAINT_TOLERANCE = 1e-9


class _Parameter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Identifier used in recipes and exports."
    )
    description: str = ""
    stage: Stage | None = Field(
        default=None,
        description="What the parameter sets: raw_material, composition, process or property "
        "(default: undeclared).",
    )


class _Quantity(_Parameter):
    units: str = Field(
        default="", description="Units of the value, checked with pint ('uL' and 'µL' are one)."
    )
    material: str | None = Field(
        default=None, description="The material (a key of `materials`) this parameter is an amount of."
    )

    @field_validator("units")
    @classmethod
    def _units(cls, value: str) -> str:
        return check_units(value)


class RealParameter(_Quantity):
    """A continuous parameter between two bounds, optionally searched on a log scale."""

    type: Literal["real"] = "real"
    low: float
    high: float
    log: bool = Field(default=False, description="Search on a log scale (both bounds must be > 0).")

    @model_validator(mode="after")
    def _bounds(self) -> RealParameter:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and self.low <= float(value) <= self.high


class IntegerParameter(_Quantity):
    """A whole-number parameter between two inclusive bounds."""

    type: Literal["integer"] = "integer"
    low: int
    high: int

    @model_validator(mode="after")
    def _bounds(self) -> IntegerParameter:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high


class CategoricalParameter(_Parameter):
    """A choice among named options (a solvent, a catalyst, a dye), optionally described by numbers."""

    type: Literal["categorical"] = "categorical"
    choices: list[str | int | float] = Field(min_length=2)
    descriptors: dict[str, list[float]] | None = Field(
        default=None,
        description="Optional numeric descriptors of the choices: descriptor name -> one value per choice, "
        "in the order of `choices` (e.g. a solvent's dielectric constant). The optimizer then models the "
        "choices by these numbers, so what it learns about one solvent carries over to similar ones.",
    )

    @model_validator(mode="after")
    def _unique(self) -> CategoricalParameter:
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"choices must be unique, got {self.choices}")
        if self.descriptors is not None:
            if not self.descriptors:
                raise ValueError("descriptors, when given, need at least one descriptor")
            for name, values in self.descriptors.items():
                if len(values) != len(self.choices):
                    raise ValueError(
                        f"descriptor {name!r} has {len(values)} value(s); it needs one per choice "
                        f"({len(self.choices)})"
                    )
                if not all(math.isfinite(v) for v in values):
                    raise ValueError(f"descriptor {name!r} has a value that is not a finite number")
            rows = [tuple(v[i] for v in self.descriptors.values()) for i in range(len(self.choices))]
            for i in range(len(rows)):
                for j in range(i):
                    if rows[i] == rows[j]:
                        raise ValueError(
                            f"choices {self.choices[j]!r} and {self.choices[i]!r} have identical "
                            "descriptors, so the optimizer could not tell them apart"
                        )
        return self

    def contains(self, value: Any) -> bool:
        return value in self.choices


Parameter = Annotated[RealParameter | IntegerParameter | CategoricalParameter, Field(discriminator="type")]


class LinearConstraint(BaseModel):
    """``at_least <= sum(coefficient * value) <= at_most`` over real parameters, or ``== equals``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coefficients: dict[str, float] = Field(
        min_length=1,
        description="Real parameter name -> coefficient, e.g. {water: 1, ethanol: 1, dmso: 1} for a sum.",
    )
    at_most: float | None = Field(default=None, description="Upper bound of the weighted sum.")
    at_least: float | None = Field(default=None, description="Lower bound of the weighted sum.")
    equals: float | None = Field(default=None, description="The value the weighted sum must equal.")
    description: str = ""

    @model_validator(mode="after")
    def _bounds(self) -> LinearConstraint:
        if self.equals is not None and (self.at_most is not None or self.at_least is not None):
            raise ValueError("give either `equals`, or `at_least` and/or `at_most`, not both")
        if self.equals is None and self.at_most is None and self.at_least is None:
            raise ValueError("a constraint needs `equals`, `at_most` or `at_least`")
        if self.at_most is not None and self.at_least is not None and self.at_least > self.at_most:
            raise ValueError(f"at_least ({self.at_least}) is above at_most ({self.at_most})")
        bad = [n for n, c in self.coefficients.items() if not math.isfinite(c) or c == 0]
        if bad:
            raise ValueError(f"coefficients must be finite and non-zero: {', '.join(bad)}")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        """(lower, upper) of the weighted sum; infinite when open."""
        if self.equals is not None:
            return self.equals, self.equals
        return (
            -math.inf if self.at_least is None else self.at_least,
            math.inf if self.at_most is None else self.at_most,
        )

    def text(self) -> str:
        terms = " + ".join((f"{c:g}*{n}" if c != 1 else n) for n, c in self.coefficients.items()).replace(
            "+ -", "- "
        )
        if self.equals is not None:
            return f"{terms} == {self.equals:g}"
        parts = []
        if self.at_least is not None:
            parts.append(f"{terms} >= {self.at_least:g}")
        if self.at_most is not None:
            parts.append(f"{terms} <= {self.at_most:g}")
        return " and ".join(parts)

    def violation(self, recipe: dict[str, Any]) -> float:
        """How far the recipe's weighted sum lies outside the bounds (0 when satisfied within tolerance)."""
        terms = [c * float(recipe[n]) for n, c in self.coefficients.items()]
        total = math.fsum(terms)
        lo, hi = self.bounds
        scale = max(1.0, *(abs(t) for t in terms), *(abs(b) for b in (lo, hi) if math.isfinite(b)))
        slack = CONSTRAINT_TOLERANCE * scale
        return max(0.0, lo - slack - total, total - hi - slack)


class SearchSpace(BaseModel):
    """An ordered list of parameters, and linear constraints between real ones; a recipe is a dict with one
    value per parameter name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parameters: list[Parameter] = Field(min_length=1)
    constraints: list[LinearConstraint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> SearchSpace:
        names = [p.name for p in self.parameters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"parameter names must be unique; repeated: {', '.join(duplicates)}")
        by_name = {p.name: p for p in self.parameters}
        for i, c in enumerate(self.constraints):
            for name in c.coefficients:
                p = by_name.get(name)
                if p is None:
                    raise ValueError(
                        f"constraint {i + 1} ({c.text()}) names unknown parameter {name!r} "
                        f"(parameters: {', '.join(names)})"
                    )
                if not isinstance(p, RealParameter):
                    raise ValueError(
                        f"constraint {i + 1} ({c.text()}) names {name!r}, a {p.type} parameter; "
                        "linear constraints apply to real parameters only"
                    )
                if p.log:
                    raise ValueError(
                        f"constraint {i + 1} ({c.text()}) names {name!r}, which is searched on a log scale; "
                        "linear constraints apply to linear-scale real parameters only"
                    )
        if self.constraints:
            # The polytope's geometry decides whether the constraints leave room to search. Imported here:
            # it needs scipy.optimize, 0.5-0.9 s to import on a loaded 2-core machine, which a space
            # without constraints (and `sdl --help`, `sdl status`) should not pay.
            from sdl.space.polytope import NoRoom

            try:
                space_polytope(self)
            except NoRoom as exc:
                listed = "; ".join(c.text() for c in self.constraints)
                raise ValueError(f"{exc} (constraints: {listed})") from None
        return self

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def validate_recipe(self, recipe: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing or out of its limits."""
        for p in self.parameters:
            if p.name not in recipe:
                raise ValueError(f"recipe lacks parameter {p.name!r}")
            if not p.contains(recipe[p.name]):
                raise ValueError(
                    f"recipe value {recipe[p.name]!r} for {p.name!r} is outside the search space"
                )
        extra = set(recipe) - set(self.names)
        if extra:
            raise ValueError(f"recipe has unknown parameters: {', '.join(sorted(extra))}")
        for c in self.constraints:
            if c.violation(recipe) > 0:
                raise ValueError(f"recipe violates the constraint {c.text()}")

    def satisfies_constraints(self, recipe: dict[str, Any]) -> bool:
        return all(c.violation(recipe) == 0 for c in self.constraints)


def space_polytope(space: SearchSpace) -> tuple[Polytope, list[str]]:
    """The polytope of a search space's linear constraints over its linear-scale real parameters, in unit
    coordinates ``u = (value - low) / (high - low)``; returns it with the parameter names of its columns."""
    from sdl.space.polytope import Polytope  # scipy: see SearchSpace._unique_names

    reals = [p for p in space.parameters if isinstance(p, RealParameter)]
    names = [p.name for p in reals]
    k = len(reals)
    low = np.array([p.low for p in reals])
    width = np.array([p.high - p.low for p in reals])
    A_ub, b_ub, A_eq, b_eq = [], [], [], []
    for c in space.constraints:
        a = np.zeros(k)
        for name, coef in c.coefficients.items():
            a[names.index(name)] = coef
        lo, hi = c.bounds
        shift = float(a @ low)
        au = a * width
        if c.equals is not None:
            A_eq.append(au)
            b_eq.append(c.equals - shift)
            continue
        if np.isfinite(hi):
            A_ub.append(au)
            b_ub.append(hi - shift)
        if np.isfinite(lo):
            A_ub.append(-au)
            b_ub.append(shift - lo)
    return Polytope(np.array(A_ub), np.array(b_ub), np.array(A_eq), np.array(b_eq), k), names
