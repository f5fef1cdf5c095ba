"""The campaign file: what to vary, what to measure, how much to spend, and how each experiment runs.

A campaign file is YAML validated by :class:`Campaign`; ``sdl schema`` prints its JSON Schema and
``sdl validate FILE`` checks one file (see :mod:`sdl.spec.loading` for reading files and reporting mistakes).

Objectives are scalarised into one number for the optimizer, to be *minimised*::

    loss(minimize) = value
    loss(maximize) = -value
    loss(target)   = |value - target|
    scalar         = sum(weight_i * loss_i)

Weights therefore also carry the units of each objective; every raw measurement stays in the store, and the
stored scalar is always this weighted sum. With ``multi_objective: chimera`` (hierarchy with tolerances) or
``pareto`` (a front, searched by random scalarisations) the optimizer recombines the measurements itself on
every proposal (see :mod:`sdl.optimizer.objectives` and docs/optimizer.md).

Long because it is the campaign file's schema: read top to bottom it is the file format, section by
section, with the checks that span sections at the end (:meth:`Campaign._consistent`); `sdl schema` is
generated from it.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sdl.optimizer import Objectives, ObjectiveSpec, OptimizerSettings
from sdl.space import LinearConstraint, Parameter, SearchSpace
from sdl.space.units import Condition, Material, MeasurementMeaning, check_units, same_units

IMPORT_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$"
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
DRIVER_PATTERN = IMPORT_PATH_PATTERN[:-1] + r"|^[A-Za-z0-9][A-Za-z0-9_.-]*$"
PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w-]*)\.([A-Za-z_][\w-]*)\}")
_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$"
)


class MissingMeasurement(ValueError):
    """An experiment's measurements lack a value an objective needs."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Objective(_Model):
    """One measurement to optimise. Several objectives are combined by a weighted sum (see module doc)."""

    measurement: str = Field(pattern=IDENTIFIER, description="Name of the measurement this objective reads.")
    goal: Literal["minimize", "maximize", "target"] = Field(
        default="minimize", description="minimize or maximize the value, or bring it to `target`."
    )
    target: float | None = Field(
        default=None, description="The value to hit; required when goal is 'target'."
    )
    weight: float = Field(
        default=1.0, gt=0, description="Weight in the scalarised objective (carries units)."
    )
    units: str = Field(
        default="",
        description="Units of the measurement (checked with pint); or declare them under `measurements`.",
    )
    tolerance: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="multi_objective chimera: how much worse than the best seen this objective may get while "
        "the objectives below it are optimised, as a fraction of its observed range (0.1 = 10 %).",
    )
    threshold: float | None = Field(
        default=None,
        description="multi_objective chimera: the value that is good enough (instead of a relative "
        "`tolerance`), in the measurement's units; for goal 'target', the allowed distance from the target.",
    )
    reference: float | None = Field(
        default=None,
        description="The worst value worth anything: the reference point of the hypervolume (and the clip of "
        "the Pareto search's scaling). Default: the worst value seen.",
    )

    @field_validator("units")
    @classmethod
    def _units(cls, value: str) -> str:
        return check_units(value)

    @model_validator(mode="after")
    def _target_given(self) -> Objective:
        if self.goal == "target" and self.target is None:
            raise ValueError("goal 'target' needs a `target` value")
        if self.goal != "target" and self.target is not None:
            raise ValueError(f"`target` only applies to goal 'target', not {self.goal!r}")
        if self.tolerance is not None and self.threshold is not None:
            raise ValueError("give a relative `tolerance` or an absolute `threshold`, not both")
        return self

    def spec(self) -> ObjectiveSpec:
        return ObjectiveSpec(
            measurement=self.measurement,
            goal=self.goal,
            target=self.target,
            weight=self.weight,
            tolerance=self.tolerance,
            threshold=self.threshold,
            reference=self.reference,
        )

    def loss(self, value: float) -> float:
        """This objective's contribution to the scalar, before weighting (lower is better)."""
        if self.goal == "minimize":
            return value
        if self.goal == "maximize":
            return -value
        assert self.target is not None
        return abs(value - self.target)

    def better(self, a: float, b: float) -> bool:
        """Whether measurement ``a`` is strictly better than ``b`` for this objective."""
        return self.loss(a) < self.loss(b)


class Budget(_Model):
    """How much a campaign may spend, and when it may stop early."""

    max_experiments: int = Field(ge=1, description="Experiments to finish (done or failed) before stopping.")
    max_wall_time: float | None = Field(
        default=None,
        gt=0,
        description="Stop starting new experiments this long after `sdl run` (or a resume) started: "
        "seconds, or '90m', '2h', '1h30m'.",
    )
    stop_when: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Stop once one experiment is good enough on every listed objective (by measurement name): "
            "value <= threshold to minimize, >= threshold to maximize, "
            "|value - target| <= threshold for target."
        ),
    )
    max_consecutive_failures: int | None = Field(
        default=5,
        ge=1,
        description="Stop the campaign after this many failed experiments in a row (null: never).",
    )

    @field_validator("max_wall_time", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)


def parse_duration(value: Any) -> Any:
    """'90s', '45m', '2h', '1h30m' -> seconds; anything else is left for pydantic to check."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not value.strip() or not match or not any(match.groups()):
            raise ValueError(f"not a duration: {value!r} (use seconds, or e.g. '90s', '45m', '2h', '1h30m')")
        hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        return hours * 3600 + minutes * 60 + seconds
    return value


class MeasurementRule(_Model):
    """Reduce one field of one event stream of the run to a number."""

    stream: str = Field(
        default="primary", description="Event stream name (bluesky's default stream is 'primary')."
    )
    field: str = Field(description="Data key in the stream's events, e.g. 'spectrometer_delta_e'.")
    reduce: Literal["last", "first", "mean", "max", "min", "sum"] = Field(
        default="last", description="How to combine the field's values over the stream's events."
    )


class Procedure(_Model):
    """How one experiment runs: a bluesky plan over the lab's devices, or a plain Python function."""

    plan: str | None = Field(
        default=None,
        pattern=IMPORT_PATH_PATTERN,
        description="Bluesky plan factory 'package.module:function' called as "
        "plan(recipe, devices, **options); "
        "it must open and close one run.",
    )
    function: str | None = Field(
        default=None,
        pattern=IMPORT_PATH_PATTERN,
        description="Plain function 'package.module:function' called as function(recipe, **options) and "
        "returning a dict of measurements (computational or dry-run campaigns).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the plan/function."
    )
    measurements: dict[str, MeasurementRule] = Field(
        default_factory=dict,
        description="Plans only: measurement name -> rule reading it from the documents.",
    )
    extractor: str | None = Field(
        default=None,
        pattern=IMPORT_PATH_PATTERN,
        description="Plans only: 'package.module:function' called as f(documents) with documents a list of "
        "(name, doc) pairs, returning a dict of measurements (merged over `measurements`).",
    )
    needs: str | None = Field(
        default=None,
        pattern=IMPORT_PATH_PATTERN,
        description="What one experiment uses up: 'package.module:function' called as "
        "needs(recipe, **options) and returning {'device.consumable': amount} (e.g. "
        "{'dye_pumps.red': 150.0, 'arm.feeder': 1}) in the lab inventory's units. The lab service starts "
        "an experiment only when what is left covers it, and otherwise asks a person to refill.",
    )
    lease_on_demand: list[str] = Field(
        default_factory=list,
        description="Devices the plan leases itself for the steps that use them (sdl.plans.leased), "
        "instead of holding them for the whole experiment: two workcells sharing an arm then overlap. Using "
        "such a device without leasing it fails the experiment.",
    )
    safe_to_repeat: bool = Field(
        default=False,
        description="Whether a recipe whose experiment was cut short by a crash, an instrument fault or a "
        "timeout may simply run again (a fresh vial, nothing half-done carried over). When false, such a "
        "recipe is never repeated automatically; the optimizer proposes afresh.",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="With safe_to_repeat: how many times one recipe may be tried in all.",
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Abort an experiment that runs longer than this (seconds, or '90s', '5m'); the lab "
        "service then counts it against the instruments it held.",
    )

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout_duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @model_validator(mode="after")
    def _one_kind(self) -> Procedure:
        if (self.plan is None) == (self.function is None):
            raise ValueError("give exactly one of `plan` (a bluesky plan) or `function` (a plain function)")
        if self.function is not None and (self.measurements or self.extractor):
            raise ValueError(
                "`measurements` and `extractor` apply to plans; a function returns its measurements"
            )
        if self.plan is not None and not (self.measurements or self.extractor):
            raise ValueError("a plan needs `measurements` rules or an `extractor` to compute the objectives")
        return self


class Instrument(_Model):
    """One instrument: an ophyd device built by a driver factory at an address."""

    driver: str = Field(
        pattern=DRIVER_PATTERN,
        description="An installed driver's name (ne1000, cavro, ur, ocean-hdx, or an instrument package's: "
        "the 'sdl.drivers' entry points), or a factory 'package.module:make_device' called as "
        "factory(name, address, **options) -> ophyd Device, built offline and connected by sdl.",
    )
    address: str | dict[str, str] | None = Field(
        default=None,
        description="A pyserial URL (/dev/ttyUSB0, socket://host:port, rfc2217://...) or, for multi-endpoint "
        "instruments, a mapping endpoint -> URL. '{instrument.endpoint}' placeholders are filled from the "
        "simulated lab's announced endpoints.",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the factory.")

    def placeholders(self) -> list[tuple[str, str]]:
        values = [self.address] if isinstance(self.address, str) else list((self.address or {}).values())
        return [(m.group(1), m.group(2)) for v in values for m in PLACEHOLDER.finditer(v)]


def fill(address: Any, endpoints: dict[str, str]) -> Any:
    """Replace '{instrument.endpoint}' placeholders in an address (string or mapping)."""
    if isinstance(address, dict):
        return {key: fill(value, endpoints) for key, value in address.items()}
    if isinstance(address, str):
        return PLACEHOLDER.sub(lambda m: endpoints[f"{m.group(1)}.{m.group(2)}"], address)
    return address


class Lab(_Model):
    """The instruments the procedure uses, optionally served by a simulated lab."""

    simulated: Path | None = Field(
        default=None,
        description="Simulated lab file, relative to the campaign file. "
        "sdl runs `python -m simulators lab FILE "
        "--speed SPEED` for the campaign's lifetime and fills address placeholders from its output.",
    )
    speed: float | None = Field(
        default=None,
        gt=0,
        description="Simulated-time speed factor passed to the simulator "
        "(default: the lab file's own, else 1).",
    )
    startup_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for the simulator's endpoints."
    )
    instruments: dict[str, Instrument] = Field(
        default_factory=dict,
        description="Instrument name -> driver and address; the plan gets devices by name.",
    )

    @model_validator(mode="after")
    def _placeholders_known(self) -> Lab:
        for name, instrument in self.instruments.items():
            for other, _endpoint in instrument.placeholders():
                if other not in self.instruments:
                    known = ", ".join(sorted(self.instruments)) or "none"
                    raise ValueError(
                        f"instrument {name!r} refers to unknown instrument {other!r} in its address "
                        f"(declared instruments: {known})"
                    )
            if instrument.placeholders() and self.simulated is None:
                raise ValueError(
                    f"instrument {name!r} has '{{instrument.endpoint}}' placeholders "
                    "but no `simulated` lab fills them"
                )
        return self


class Requirements(_Model):
    """What a workcell must offer to run this campaign's experiments (the lab service matches them)."""

    devices: list[str] | None = Field(
        default=None,
        description="Device names the plan uses (workcell roles). Default: the names under lab.instruments.",
    )
    capabilities: list[str] = Field(
        default_factory=list, description="Capability tags the workcell must have, e.g. [dye-mixing]."
    )


class Scheduling(_Model):
    """How the lab service shares workcells between this campaign and others."""

    priority: int = Field(default=0, description="Campaigns with a higher priority get free workcells first.")
    weight: float = Field(
        default=1.0,
        gt=0,
        description="Among equal priorities, workcells are shared in proportion to weights.",
    )


class WarmStart(_Model):
    """Earlier experiments that seed the optimizer: a campaign of this store, or an exported data package."""

    campaign: str | None = Field(
        default=None, description="A campaign id in this store (see `sdl campaigns`)."
    )
    package: Path | None = Field(
        default=None,
        description="A data package written by `sdl export --format datapackage` (its directory), "
        "relative to the campaign file.",
    )
    may_differ: list[str] = Field(
        default_factory=list,
        description="Fixed conditions (see `conditions`) whose value may differ between that campaign and "
        "this one; every other condition must match, or its experiments are left out.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> WarmStart:
        if (self.campaign is None) == (self.package is None):
            raise ValueError(
                "give exactly one of `campaign` (an id in this store) or `package` (a directory)"
            )
        return self

    def text(self) -> str:
        return f"campaign {self.campaign}" if self.campaign is not None else f"package {self.package}"


class Approval(_Model):
    """Which proposals wait for an operator's approval before they run (docs/inventory.md, "Approvals")."""

    require: Literal["none", "all", "first", "outside"] = Field(
        default="none",
        description="none; all (every proposal); first (the first `first` proposals); outside (proposals "
        "outside the `safe` region).",
    )
    first: int = Field(default=0, ge=0, description="With require: first, how many proposals need approval.")
    safe: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="With require: outside, parameter -> [low, high]: a proposal with every listed parameter "
        "inside its range runs without approval; any other waits for one.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Approval:
        if self.require == "first" and self.first < 1:
            raise ValueError("require: first needs `first`, how many proposals (1 or more)")
        if self.require == "outside" and not self.safe:
            raise ValueError("require: outside needs `safe`, the region that runs without approval")
        for name, (low, high) in self.safe.items():
            if not low <= high:
                raise ValueError(f"safe.{name}: low {low:g} is above high {high:g}")
        return self

    def why(self, recipe: Mapping[str, Any], seq: int) -> str | None:
        """Why the proposal numbered ``seq`` with ``recipe`` needs approval (None: it does not)."""
        if self.require == "all":
            return "every proposal of this campaign needs approval"
        if self.require == "first" and seq <= self.first:
            return f"the first {self.first} proposals need approval"
        if self.require == "outside":
            outside = [
                f"{name} {recipe[name]:g} outside [{low:g}, {high:g}]"
                for name, (low, high) in self.safe.items()
                if isinstance(recipe.get(name), int | float) and not low <= recipe[name] <= high
            ]
            return "; ".join(outside) or None
        return None


class Campaign(_Model):
    """A closed-loop campaign: the search space, objectives, budget, optimizer, procedure and lab."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Short name (letters, digits, _.-)."
    )
    description: str = ""
    parameters: list[Parameter] = Field(
        min_length=1, description="The search space: real, integer, categorical."
    )
    objectives: list[Objective] = Field(min_length=1)
    multi_objective: Literal["weighted_sum", "chimera", "pareto"] = Field(
        default="weighted_sum",
        description="How several objectives combine: weighted_sum (the weights' sum of losses); chimera "
        "(objectives in order of importance, each but the last with a `tolerance` or `threshold`); "
        "pareto (search the trade-off front; `sdl show` and `sdl plot` show it).",
    )
    constraints: list[LinearConstraint] = Field(
        default_factory=list,
        description="Linear constraints between real parameters (mixture fractions summing to 1, a total "
        "volume); every proposal honours them.",
    )
    budget: Budget
    # (model_validate, not the class: a type checker reads the settings' defaults only when given by keyword)
    optimizer: OptimizerSettings = Field(default_factory=lambda: OptimizerSettings.model_validate({}))
    procedure: Procedure
    lab: Lab = Field(default_factory=Lab)
    requires: Requirements = Field(default_factory=Requirements)
    scheduling: Scheduling = Field(default_factory=Scheduling)
    approval: Approval = Field(
        default_factory=Approval,
        description="Proposals that wait for an operator's approval before they run (the lab service only).",
    )
    materials: dict[str, Material] = Field(
        default_factory=dict,
        description="Stocks and reagents by name (supplier, lot, concentration), declared once; a parameter "
        "says which one it is an amount of with `material:`.",
    )
    conditions: dict[str, Condition] = Field(
        default_factory=dict,
        description="Fixed conditions of every experiment by name (value or procedure option, units, stage); "
        "the exports carry them as columns.",
    )
    measurements: dict[str, MeasurementMeaning] = Field(
        default_factory=dict,
        description="What each measurement means: units, stage (default property) and description.",
    )
    warm_start: list[WarmStart] = Field(
        default_factory=list,
        description="Earlier campaigns whose compatible experiments seed the optimizer (same parameter names "
        "and units, values inside this campaign's ranges, the same fixed conditions unless `may_differ` "
        "names them; failures count as failures).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Campaign:
        space = SearchSpace(parameters=self.parameters, constraints=self.constraints)  # names, constraints
        self._check_meaning()
        names = [o.measurement for o in self.objectives]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"objectives repeat measurement(s): {', '.join(repeated)}")
        unknown = sorted(set(self.budget.stop_when) - set(names))
        if unknown:
            raise ValueError(
                f"budget.stop_when names {', '.join(unknown)}, which is not an objective "
                f"(objectives: {', '.join(names)})"
            )
        rules = self.procedure.measurements
        if rules and self.procedure.extractor is None:
            missing = sorted(set(names) - set(rules))
            if missing:
                raise ValueError(
                    f"objective(s) {', '.join(missing)} have no rule in procedure.measurements "
                    f"(rules: {', '.join(sorted(rules))})"
                )
        if self.procedure.plan is None and self.lab.instruments:
            raise ValueError("lab.instruments are for plans; a plain `function` procedure gets no devices")
        self._check_multi_objective()
        if self.optimizer.kind == "skopt" and any(c.equals is not None for c in self.constraints):
            raise ValueError(
                "optimizer kind 'skopt' cannot honour equality constraints (it samples by rejection); "
                "use kind 'bayesian'"
            )
        if self.optimizer.cost is not None:
            self.optimizer.cost.check(space)
        unknown = sorted(set(self.approval.safe) - {p.name for p in self.parameters})
        if unknown:
            raise ValueError(
                f"approval.safe names {', '.join(unknown)}, which is not a parameter "
                f"(parameters: {', '.join(p.name for p in self.parameters)})"
            )
        return self

    def _check_meaning(self) -> None:
        for p in self.parameters:
            material = getattr(p, "material", None)
            if material is not None and material not in self.materials:
                known = ", ".join(sorted(self.materials)) or "none declared"
                raise ValueError(
                    f"parameter {p.name!r} names material {material!r}, which `materials` does not declare "
                    f"(materials: {known})"
                )
        taken = {p.name for p in self.parameters}
        for name, condition in self.conditions.items():
            if name in taken:
                raise ValueError(f"condition {name!r} has the name of a parameter; columns need unique names")
            if condition.option is not None and condition.option not in self.procedure.options:
                known = ", ".join(sorted(self.procedure.options)) or "none"
                raise ValueError(
                    f"condition {name!r} reads procedure option {condition.option!r}, which is not set "
                    f"(options: {known})"
                )
        for o in self.objectives:
            declared = self.measurements.get(o.measurement)
            if (
                declared is not None
                and o.units
                and declared.units
                and not same_units(o.units, declared.units)
            ):
                raise ValueError(
                    f"objective {o.measurement!r} says units {o.units!r} but measurements.{o.measurement} "
                    f"says {declared.units!r}"
                )
        clash = sorted((taken | set(self.conditions)) & set(self.measurements))
        if clash:
            raise ValueError(f"measurements {', '.join(clash)} have the name of a parameter or condition")

    def measurement_meaning(self, name: str) -> MeasurementMeaning:
        """A measurement's declared meaning; an objective's own `units` fill in what is not declared."""
        declared = self.measurements.get(name, MeasurementMeaning())
        objective = next((o for o in self.objectives if o.measurement == name), None)
        if objective is not None and objective.units and not declared.units:
            return declared.model_copy(update={"units": objective.units})
        return declared

    def condition_values(self) -> dict[str, Any]:
        """Each fixed condition's value (read from procedure.options where it says so)."""
        return {
            name: c.value if c.option is None else self.procedure.options[c.option]
            for name, c in self.conditions.items()
        }

    def _check_multi_objective(self) -> None:
        method = self.multi_objective
        if method != "weighted_sum" and len(self.objectives) < 2:
            raise ValueError(f"multi_objective {method!r} needs at least two objectives")
        for i, o in enumerate(self.objectives):
            given = "tolerance" if o.tolerance is not None else "threshold" if o.threshold is not None else ""
            if given and method != "chimera":
                raise ValueError(
                    f"objective {o.measurement!r} has a `{given}`, which applies to multi_objective "
                    f"'chimera' only (this campaign uses {method!r})"
                )
            if given and i == len(self.objectives) - 1:
                raise ValueError(
                    f"objective {o.measurement!r} is the last of the chimera hierarchy: nothing below it "
                    f"needs its `{given}`; give tolerances to the objectives above it"
                )

    @property
    def space(self) -> SearchSpace:
        return SearchSpace(parameters=self.parameters, constraints=self.constraints)

    def objective_set(self) -> Objectives:
        """What the optimizer needs to know about the objectives (``make_optimizer``'s third argument)."""
        return Objectives(tuple(o.spec() for o in self.objectives), self.multi_objective)

    @property
    def device_roles(self) -> list[str]:
        """The device names the procedure is handed (what a workcell must provide)."""
        if self.procedure.plan is None:
            return []
        if self.requires.devices is not None:
            return list(self.requires.devices)
        return list(self.lab.instruments)

    def scalarise(self, measurements: Mapping[str, Any]) -> float:
        """The number the optimizer minimises; raises :class:`MissingMeasurement` when a value is absent."""
        total = 0.0
        for objective in self.objectives:
            total += objective.weight * objective.loss(self.value_of(objective, measurements))
        return total

    @staticmethod
    def value_of(objective: Objective, measurements: Mapping[str, Any]) -> float:
        value = measurements.get(objective.measurement)
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isnan(float(value)):
            raise MissingMeasurement(f"measurement {objective.measurement!r} is NaN (not a number)")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise MissingMeasurement(
                f"measurement {objective.measurement!r} is missing or not a number (got {value!r}; "
                f"measured: {', '.join(sorted(measurements)) or 'nothing'})"
            )
        return float(value)

    def target_reached(self, measurements: Mapping[str, Any]) -> bool:
        """Whether one experiment's measurements meet every ``budget.stop_when`` threshold."""
        if not self.budget.stop_when:
            return False
        by_name = {o.measurement: o for o in self.objectives}
        for name, threshold in self.budget.stop_when.items():
            objective = by_name[name]
            try:
                value = self.value_of(objective, measurements)
            except MissingMeasurement:
                return False
            if objective.goal == "minimize" and not value <= threshold:
                return False
            if objective.goal == "maximize" and not value >= threshold:
                return False
            if objective.goal == "target" and not abs(value - (objective.target or 0.0)) <= threshold:
                return False
        return True
