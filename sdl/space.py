"""The search space of a campaign: what the optimizer may vary, and within which limits.

These models are shared by the campaign file (validation, JSON Schema) and the optimizer adapter
(conversion to scikit-optimize dimensions), so both read the same definition.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Parameter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Identifier used in recipes and exports."
    )
    description: str = ""


class RealParameter(_Parameter):
    """A continuous parameter between two bounds, optionally searched on a log scale."""

    type: Literal["real"] = "real"
    low: float
    high: float
    log: bool = Field(False, description="Search on a log scale (both bounds must be > 0).")
    units: str = ""

    @model_validator(mode="after")
    def _bounds(self) -> RealParameter:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and self.low <= float(value) <= self.high


class IntegerParameter(_Parameter):
    """A whole-number parameter between two inclusive bounds."""

    type: Literal["integer"] = "integer"
    low: int
    high: int
    units: str = ""

    @model_validator(mode="after")
    def _bounds(self) -> IntegerParameter:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high


class CategoricalParameter(_Parameter):
    """A choice among named options (a solvent, a catalyst, a dye)."""

    type: Literal["categorical"] = "categorical"
    choices: list[str | int | float] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique(self) -> CategoricalParameter:
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"choices must be unique, got {self.choices}")
        return self

    def contains(self, value: Any) -> bool:
        return value in self.choices


Parameter = Annotated[RealParameter | IntegerParameter | CategoricalParameter, Field(discriminator="type")]


class SearchSpace(BaseModel):
    """An ordered list of parameters; a recipe is a dict with one value per parameter name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parameters: list[Parameter] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> SearchSpace:
        names = [p.name for p in self.parameters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"parameter names must be unique; repeated: {', '.join(duplicates)}")
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
