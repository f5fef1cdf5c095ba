"""The lab file: the instruments a lab has, the workcells they form, and how the lab service keeps them.

    name: two-station colour bench
    simulated: bench.yaml             # optional: `python -m simulators lab bench.yaml` serves them
    speed: 200
    instruments:                      # name -> driver, address, options (as in a campaign's lab:)
      pumps_a: {driver: drivers.newera:make_device, address: "{pumps_a.pump}", options: {...}}
      arm: {driver: drivers.ur:make_device, address: {...}, options: {...}}
    workcells:                        # an instrument may belong to several workcells
      station_a:
        capabilities: [dye-mixing]
        devices: {dye_pumps: pumps_a, water_pump: water_a, arm: arm, spectrometer: spectrometer}
        options: {dispense_station: dispense_a}   # extra plan options for experiments here
    health: {quarantine_after: 3}
    inventory:                        # instrument -> consumable (the driver's name for it) -> what is in it
      pumps_a:
        red: {amount: 10000, unit: uL, lot: R-0412, material: red dye 200 uM, warn_below: 1500}
      arm:
        feeder: {amount: 48, unit: vials, lot: V-7}

A campaign names the devices its plan uses (``requires.devices``, or the names in its own ``lab:``) and
the capabilities it needs; it runs on any workcell that provides them. A campaign run with `sdl run` and
an inline ``lab:`` is a lab of one workcell holding all its instruments under their own names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sdl.spec.campaign import IDENTIFIER, Campaign, Instrument, Lab, parse_duration
from sdl.spec.importpaths import UnresolvedImport
from sdl.spec.loading import check_lab, check_procedure_options, describe_error, locate, wrong_kind


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Workcell(_Model):
    """A set of instruments that run one experiment at a time, each under the name the plan uses."""

    devices: dict[str, str] = Field(
        default_factory=dict, description="Device name the plan is handed -> instrument of this lab."
    )
    capabilities: list[str] = Field(default_factory=list, description="Tags campaigns can require.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Plan options for experiments on this workcell (e.g. which station to dispense at); "
        "they override the campaign's procedure.options.",
    )
    agent: str | None = Field(
        default=None,
        description="The agent (`sdl agent`, named by its key on the allow-list) whose PC runs this "
        "workcell's worker: its instruments are cabled there. Unset: the service's own PC runs it.",
    )

    @property
    def instruments(self) -> list[str]:
        return list(dict.fromkeys(self.devices.values()))


class Stock(_Model):
    """One consumable an instrument draws from, as the lab starts with it: a syringe's fill, a reservoir, a
    feeder's rack. The store keeps it from then on, changed only by recorded transactions
    (docs/inventory.md)."""

    kind: Literal["supply", "waste"] = Field(
        default="supply",
        description="supply: experiments draw from it (a syringe, a reservoir, a feeder); waste: they fill "
        "it (a waste container, by the vials or liquid put in it) up to its capacity; a person empties it.",
    )
    amount: float = Field(ge=0, description="How much is in it when the lab first starts (its unit).")
    unit: str = Field(default="uL", description="uL for liquids, vials for a feeder: the driver's unit.")
    lot: str | None = Field(default=None, description="The lot it was filled from (recorded per experiment).")
    material: str | None = Field(default=None, description="What it is (e.g. 'red dye, 200 uM').")
    capacity: float | None = Field(
        default=None, gt=0, description="The most it holds (a syringe's volume): no refill exceeds it."
    )
    warn_below: float | None = Field(
        default=None, ge=0, description="Warn (status, page) when less than this is left."
    )

    @model_validator(mode="after")
    def _fits(self) -> Stock:
        if self.kind == "waste" and self.capacity is None:
            raise ValueError("a waste stock needs its capacity (what it holds when full)")
        if self.capacity is not None and self.amount > self.capacity:
            raise ValueError(f"amount {self.amount:g} is more than its capacity {self.capacity:g}")
        return self


class Health(_Model):
    """When an instrument is taken out of service, and how it comes back."""

    quarantine_after: int = Field(
        default=3,
        ge=1,
        description="Quarantine an instrument after this many experiments in a row lost to it.",
    )
    auto_release: bool = Field(
        default=True,
        description="Try the driver's recovery and health check on a quarantined instrument, and release it "
        "if both pass.",
    )
    recheck_after: float = Field(
        default=60.0,
        gt=0,
        description="Seconds before the first automatic check; the wait doubles after each one that fails "
        "and each automatic release.",
    )
    max_rechecks: int = Field(
        default=6,
        ge=0,
        description="Automatic checks that may fail in a row before they stop and an alert asks for a "
        "person.",
    )
    max_auto_releases: int = Field(
        default=2,
        ge=0,
        description="Automatic releases per instrument before only an operator may release it.",
    )

    @field_validator("recheck_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)


class Workers(_Model):
    """How the lab service supervises the processes that touch hardware."""

    heartbeat_timeout: float = Field(
        default=10.0, gt=0, description="A worker silent this long (seconds) is killed and replaced."
    )
    startup_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a new worker has to say hello (it imports bluesky first, which on a busy "
        "machine takes far longer than a heartbeat).",
    )
    restart_backoff: float = Field(
        default=1.0, gt=0, description="Seconds before the first restart; doubles to 30 s."
    )
    agent_limit: float = Field(
        default=90.0,
        gt=0,
        description="Seconds an agent goes on without hearing the service before it aborts its workcells' "
        "experiments and makes their instruments safe. Until then an experiment in flight runs on.",
    )
    agent_grace: float = Field(
        default=120.0,
        gt=0,
        description="Seconds the service waits for an unreachable agent before it records the experiments "
        "there interrupted; longer than agent_limit, so the agent has stopped them by then and recorded "
        "what they measured.",
    )

    @field_validator("agent_grace")
    @classmethod
    def _grace_after_limit(cls, value: float, info: Any) -> float:
        limit = info.data.get("agent_limit")
        if limit is not None and value <= limit:
            raise ValueError(f"must be longer than agent_limit ({limit:g} s), got {value:g} s")
        return value

    @field_validator(
        "heartbeat_timeout", "startup_timeout", "restart_backoff", "agent_limit", "agent_grace", mode="before"
    )
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)


class LabSpec(_Model):
    """A lab: its instruments, its workcells, and the lab service's policies."""

    name: str = "lab"
    description: str = ""
    simulated: Path | None = Field(default=None, description="Simulated lab file, relative to this file.")
    speed: float | None = Field(default=None, gt=0, description="Simulated-time speed factor.")
    startup_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for the simulator's endpoints."
    )
    instruments: dict[str, Instrument] = Field(default_factory=dict)
    workcells: dict[str, Workcell] = Field(min_length=1)
    health: Health = Field(default_factory=Health)
    workers: Workers = Field(default_factory=Workers)
    on_task: list[str] = Field(
        default_factory=list,
        description="A command (program and arguments, no shell) run for each new task for a person, with "
        "the task in its environment (SDL_TASK_ID, SDL_TASK_KIND, SDL_TASK_TITLE, SDL_TASK_DETAIL, "
        "SDL_TASK_WORKCELL): page someone, post to a chat. Its output is logged; it may take 30 s.",
    )
    inventory: dict[str, dict[str, Stock]] = Field(
        default_factory=dict,
        description="Instrument -> consumable (its driver's name: a pump's label, a valve port's label, an "
        "arm's feeder station) -> what it holds when the lab first starts.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> LabSpec:
        for name in [*self.instruments, *self.workcells]:
            if not re.match(IDENTIFIER, name):
                raise ValueError(f"{name!r} is not a name (letters, digits and _, not starting with a digit)")
        for workcell, spec in self.workcells.items():
            unknown = sorted(set(spec.devices.values()) - set(self.instruments))
            if unknown:
                raise ValueError(
                    f"workcell {workcell!r} names unknown instrument(s) {', '.join(unknown)} "
                    f"(instruments: {', '.join(sorted(self.instruments)) or 'none'})"
                )
        unknown = sorted(set(self.inventory) - set(self.instruments))
        if unknown:
            raise ValueError(
                f"inventory names unknown instrument(s) {', '.join(unknown)} "
                f"(instruments: {', '.join(sorted(self.instruments)) or 'none'})"
            )
        Lab(simulated=self.simulated, instruments=self.instruments)  # the placeholder checks
        return self

    def stocks(self) -> dict[tuple[str, str], Stock]:
        """(instrument, consumable) -> its declared stock."""
        return {(i, c): s for i, items in self.inventory.items() for c, s in items.items()}

    def workcells_of(self, instrument: str) -> list[str]:
        return [w for w, spec in self.workcells.items() if instrument in spec.devices.values()]

    def shared(self, instrument: str) -> bool:
        return len(self.workcells_of(instrument)) > 1

    def fits(self, workcell: str, campaign: Campaign) -> list[str]:
        """Why ``campaign`` cannot run on ``workcell`` (empty: it can)."""
        spec = self.workcells[workcell]
        missing = [d for d in campaign.device_roles if d not in spec.devices]
        lacking = [c for c in campaign.requires.capabilities if c not in spec.capabilities]
        reasons = []
        if missing:
            reasons.append(f"no device(s) {', '.join(missing)}")
        if lacking:
            reasons.append(f"no capability {', '.join(lacking)}")
        return reasons

    def why_not(self, workcell: str, campaign: Campaign, base_dir: Path | None) -> list[str]:
        """Why ``campaign`` cannot run on ``workcell`` (empty: it can): what :meth:`fits` says, and the
        workcell's plan options that its plan does not take (this imports the plan). A plain function is
        never handed a workcell's options: they say where its instruments are, and it has none."""
        reasons = self.fits(workcell, campaign)
        options = self.workcells[workcell].options
        if options and campaign.procedure.plan is not None:
            merged = {**campaign.procedure.options, **options}
            try:
                problems = check_procedure_options(campaign, base_dir, merged)
            except UnresolvedImport:
                problems = []  # checked when it was submitted; the worker will say what is wrong now
            reasons += [f"its plan options ({', '.join(options)}) do not fit: {m}" for _, m in problems]
        return reasons

    def instruments_for(self, workcell: str, campaign: Campaign) -> dict[str, str]:
        """Device name -> instrument, for the devices ``campaign``'s plan uses on ``workcell``."""
        devices = self.workcells[workcell].devices
        return {role: devices[role] for role in campaign.device_roles}


class LabFileError(ValueError):
    """A lab file that cannot be used; ``problems`` holds one located message per mistake."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


def load_lab(path: Path | str) -> LabSpec:
    """Read and validate a lab file, with every mistake located by file, line and field."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
        root = yaml.compose(source)
        data = yaml.safe_load(source)
    except OSError as exc:
        raise LabFileError(path, [f"{path}: cannot read lab file: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise LabFileError(
            path, [f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]
        ) from None
    if not isinstance(data, dict):
        raise LabFileError(path, [f"{path}: a lab file is a mapping with instruments: and workcells:"])
    try:
        lab = LabSpec.model_validate(data)
    except ValidationError as exc:
        other = wrong_kind(path, data, "lab")
        problems = [other] if other else [describe_error(path, root, e, LabSpec) for e in exc.errors()]
        raise LabFileError(path, problems) from None
    if lab.simulated is not None:
        simulated = lab.simulated if lab.simulated.is_absolute() else path.parent / lab.simulated
        if not simulated.is_file():
            raise LabFileError(path, [f"{path}: simulated: lab file not found: {simulated}"])
        lab = lab.model_copy(update={"simulated": simulated.resolve()})
    problems = check_lab(lab.instruments, lab.simulated, path.parent, ("instruments",))
    if problems:
        raise LabFileError(path, [locate(path, root, loc, msg) for loc, msg in problems])
    return lab
