"""What each column of a campaign's record means: its stage, its units and a description.

Materials-data programmes file every item of a record under one of four stages — the raw material, the
composition (or formulation), the process, and the property measured — so that a record can be read,
merged and modelled by someone who never saw the campaign. A campaign declares them on its parameters,
its fixed conditions and its measurements; the exports, `sdl show` and the plots carry them.

Units are parsed by `pint`, so ``µL``, ``uL`` and ``microliter`` are one unit, ``mL`` converts to it,
and a typo is an error with the file's line. Old spellings stay valid: ``kg m-3 h-1`` (exponents without
``**``) and ``absorbance``.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Stage = Literal["raw_material", "composition", "process", "property"]
STAGES: tuple[str, ...] = ("raw_material", "composition", "process", "property")

# "m-3" -> "m**-3": the compact exponent notation of SI tables, which pint reads as a subtraction.
_EXPONENT = re.compile(r"(?<=[A-Za-zµμ])(-?\d+)(?=$|[\s*/·.)])")


class UnitsError(ValueError):
    """A units string pint cannot read, or two units that do not convert."""


@cache
def registry() -> Any:
    import pint

    ureg = pint.UnitRegistry()
    # pint knows the absorbance unit as "AU"; campaign files say "absorbance".
    ureg.define("@alias absorbance_unit = absorbance")
    return ureg


def _pint_text(text: str) -> str:
    return _EXPONENT.sub(r"**\1", text.strip()).replace("·", "*")


def parse_units(text: str) -> Any:
    """The pint unit for ``text`` ('' is dimensionless); raises :class:`UnitsError` naming the text."""
    if not text.strip():
        return registry().dimensionless
    try:
        return registry().Unit(_pint_text(text))
    except Exception as exc:  # pint raises several kinds (undefined unit, syntax)
        raise UnitsError(f"units {text!r} are not understood ({type(exc).__name__}: {exc})") from None


def check_units(text: str) -> str:
    """Validate ``text`` as units and return it as written (the user's spelling is what exports show)."""
    parse_units(text)
    return text


def canonical_units(text: str) -> str:
    """One spelling per unit: 'µL', 'uL' and 'microliter' all give 'microliter'."""
    return str(parse_units(text))


def same_units(a: str, b: str) -> bool:
    return parse_units(a) == parse_units(b)


def conversion(source: str, target: str) -> Any:
    """A function taking a value in ``source`` units to ``target`` units; raises :class:`UnitsError`."""
    src, dst = parse_units(source), parse_units(target)
    if src == dst:
        return lambda value: value
    if src.dimensionality != dst.dimensionality:
        raise UnitsError(f"{source or 'dimensionless'!r} does not convert to {target or 'dimensionless'!r}")
    quantity = registry().Quantity

    def convert(value: Any) -> Any:
        return quantity(value, src).to(dst).magnitude

    return convert


def parse_quantity(text: str) -> Any:
    """A pint quantity from text such as '0.2 mM' or '200 µmol/L'; raises :class:`UnitsError`."""
    try:
        number, _, units = text.strip().partition(" ")
        return registry().Quantity(float(number), parse_units(units))
    except UnitsError:
        raise
    except Exception:
        raise UnitsError(f"{text!r} is not a quantity: give a number and units, e.g. '0.2 mM'") from None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Material(_Model):
    """A stock or reagent, declared once and referenced by the parameters that dispense it."""

    description: str = ""
    supplier: str = ""
    lot: str = Field(default="", description="The supplier's lot (batch) number of the bottle in use.")
    concentration: str = Field(
        default="", description="Concentration with units, e.g. '200 µM' or '0.5 mg/mL' (checked with pint)."
    )
    components: dict[str, str] = Field(
        default_factory=dict, description="Solute -> concentration with units, for mixtures."
    )

    @field_validator("concentration")
    @classmethod
    def _concentration(cls, value: str) -> str:
        if value:
            parse_quantity(value)
        return value

    @field_validator("components")
    @classmethod
    def _components(cls, value: dict[str, str]) -> dict[str, str]:
        for amount in value.values():
            parse_quantity(amount)
        return value


class Condition(_Model):
    """A fixed condition of every experiment (a total volume, a temperature, a path length)."""

    value: float | int | str | None = Field(default=None, description="The condition's value.")
    option: str | None = Field(
        default=None,
        description="Read the value from this key of procedure.options instead, so it is written once.",
    )
    units: str = Field(default="", description="Units of the value (checked with pint).")
    stage: Stage = Field(default="process", description="raw_material, composition, process or property.")
    description: str = ""

    @field_validator("units")
    @classmethod
    def _units(cls, value: str) -> str:
        return check_units(value)

    @model_validator(mode="after")
    def _one_source(self) -> Condition:
        if (self.value is None) == (self.option is None):
            raise ValueError("give exactly one of `value` or `option` (a key of procedure.options)")
        return self


class MeasurementMeaning(_Model):
    """What one measurement is: its units, stage and description."""

    units: str = Field(default="", description="Units of the measured value (checked with pint).")
    stage: Stage = Field(default="property", description="raw_material, composition, process or property.")
    description: str = ""

    @field_validator("units")
    @classmethod
    def _units(cls, value: str) -> str:
        return check_units(value)


ColumnType = Literal["number", "integer", "string", "boolean", "datetime"]


class Column(BaseModel):
    """One column of the exported record, with everything the campaign declared about it."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Literal["parameter", "condition", "measurement", "record"]
    type: ColumnType
    units: str = ""
    stage: str | None = None
    description: str = ""
    material: str | None = None
