"""The simulated bench that every instrument simulator shares.

Liquid lives in stocks (reservoirs of known composition), syringes and vessels; vessels sit at
named stations (the dispense position, the spectrometer's cuvette holder, a feeder that always
presents a clean vial, a waste chute). Pumps move liquid between places, the arm moves vessels
between stations, the spectrometer looks at whatever sits in its holder.

Amounts are in µmol and volumes in µL, so a concentration is µmol/µL = mol/L with no factors.
Instruments advance lazily: each registers a ``settle`` callback that brings its effect on the
world up to ``clock.now()``, and anyone who observes the world calls ``settle()`` first.

Stations have conditions (a temperature a hotplate holds, light from a lamp box); a chemistry model
that has ``evolve(contents, seconds, conditions)`` reacts what sits there as time passes. A flow
reactor (``simulators.flow``) is a vessel the pumps infuse into while it sits at a station plumbed
``downstream`` to a flow cell: its contents move through as plugs, each reacting for exactly its
residence time, and what leaves it fills the flow cell the spectrometer reads.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulators.chemistry import ChemistryModel, load_chemistry
from simulators.clock import Clock, ScaledClock

log = logging.getLogger(__name__)


#: The room's temperature, °C: what a station without a hotplate holds.
AMBIENT_C = 22.0


@dataclass(frozen=True)
class Conditions:
    """What a chemistry model's ``evolve`` is told about where the contents are."""

    temperature_c: float = AMBIENT_C
    #: Irradiance in suns (1 sun = 100 mW/cm²), from a lamp box or a photoreactor module.
    light: float = 0.0
    stir_rpm: float = 0.0
    #: What a packed-bed module holds, if anything (a campaign's chemistry decides what it does).
    catalyst: str | None = None


@dataclass
class Portion:
    """Some liquid in flight: a volume and the amounts of each species it carries.

    ``span`` is the simulated time over which it was delivered (a pump sets it), so a flow reactor
    can spread it over the right stretch of its tube.
    """

    volume_ul: float
    amounts: dict[str, float] = field(default_factory=dict)
    span: tuple[float, float] | None = None


class LiquidHolder:
    """Something liquid can be taken from and put into."""

    name: str

    def take(self, volume_ul: float) -> Portion:
        raise NotImplementedError

    def put(self, portion: Portion) -> None:
        raise NotImplementedError


@dataclass
class Stock(LiquidHolder):
    """A reservoir of fixed composition (mol/L); ``volume_ul`` may be infinite."""

    name: str
    concentrations: dict[str, float] = field(default_factory=dict)
    volume_ul: float = math.inf

    def take(self, volume_ul: float) -> Portion:
        volume = min(volume_ul, self.volume_ul)
        self.volume_ul -= volume
        return Portion(volume, {s: c * volume for s, c in self.concentrations.items()})

    def put(self, portion: Portion) -> None:
        # Liquid pushed back into a reservoir (a withdraw reversed) just dilutes into it.
        self.volume_ul += portion.volume_ul


@dataclass
class Vessel(LiquidHolder):
    """A vial, well or cuvette holding a mixture."""

    name: str
    capacity_ul: float = 4000.0
    volume_ul: float = 0.0
    amounts: dict[str, float] = field(default_factory=dict)
    overflowed_ul: float = 0.0

    def concentration(self, species: str) -> float:
        if self.volume_ul <= 0:
            return 0.0
        return self.amounts.get(species, 0.0) / self.volume_ul

    def take(self, volume_ul: float) -> Portion:
        volume = min(volume_ul, self.volume_ul)
        if volume <= 0:
            return Portion(0.0)
        fraction = volume / self.volume_ul
        taken = {s: a * fraction for s, a in self.amounts.items()}
        for s, a in taken.items():
            self.amounts[s] -= a
        self.volume_ul -= volume
        return Portion(volume, taken)

    def put(self, portion: Portion) -> None:
        room = self.capacity_ul - self.volume_ul
        kept = portion.volume_ul if portion.volume_ul <= room else max(room, 0.0)
        fraction = kept / portion.volume_ul if portion.volume_ul > 0 else 0.0
        if kept < portion.volume_ul:
            self.overflowed_ul += portion.volume_ul - kept
            log.warning("%s overflowed by %.1f µL", self.name, portion.volume_ul - kept)
        self.volume_ul += kept
        for s, a in portion.amounts.items():
            self.amounts[s] = self.amounts.get(s, 0.0) + a * fraction


@dataclass
class Station(LiquidHolder):
    """A named place on the deck; liquid delivered to it goes into the vessel sitting there."""

    name: str
    kind: str = "place"  # place | feeder | waste | flow-cell
    vessel: Vessel | None = None
    vessel_capacity_ul: float = 4000.0
    spilled_ul: float = 0.0
    #: Held by a hotplate standing here (None: the room's temperature).
    temperature_c: float | None = None
    light: float = 0.0
    stir_rpm: float = 0.0
    #: Where a flow reactor placed here sends what leaves it (a flow-cell station).
    downstream: str | None = None

    def conditions(self) -> Conditions:
        catalyst = getattr(self.vessel, "catalyst", None)
        light = max(self.light, float(getattr(self.vessel, "light", 0.0) or 0.0))
        temperature = AMBIENT_C if self.temperature_c is None else self.temperature_c
        return Conditions(temperature, light, self.stir_rpm, catalyst)

    def take(self, volume_ul: float) -> Portion:
        if self.vessel is None:
            return Portion(0.0)
        return self.vessel.take(volume_ul)

    def put(self, portion: Portion) -> None:
        if self.vessel is None:
            self.spilled_ul += portion.volume_ul
            log.warning("%.1f µL spilled at %s: no vessel there", portion.volume_ul, self.name)
            return
        self.vessel.put(portion)


_STATION_KEYS = {"kind", "vessel_capacity_ul", "vessel", "light", "downstream", "temperature_c"}


class World:
    """Stocks, stations, vessels, a chemistry model, a clock and a seeded random generator."""

    def __init__(self, clock: Clock | None = None, chemistry: ChemistryModel | None = None, seed: int = 0):
        self.clock = clock or ScaledClock()
        self.chemistry = chemistry or load_chemistry(None)
        self.rng = np.random.default_rng(seed)
        self.stocks: dict[str, Stock] = {}
        self.stations: dict[str, Station] = {}
        self._settlers: list[Callable[[float], None]] = []
        self._vessel_numbers = itertools.count(1)
        self.discarded: list[Vessel] = []
        #: Flow reactor modules by name, wherever they are (a station, a rack, the gripper).
        self.reactors: dict[str, Vessel] = {}
        self._advanced_to = self.clock.now()

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, clock: Clock | None = None) -> World:
        config = dict(config or {})
        world = cls(clock, load_chemistry(config.get("chemistry")), seed=int(config.get("seed", 0)))
        for name, stock in (config.get("stocks") or {}).items():
            stock = dict(stock or {})
            world.stocks[name] = Stock(
                name,
                {k: float(v) for k, v in (stock.get("concentrations") or {}).items()},
                float(stock.get("volume_ul", math.inf)),
            )
        for name, station in (config.get("stations") or {}).items():
            station = dict(station or {})
            unknown = set(station) - _STATION_KEYS
            if unknown:
                raise ValueError(
                    f"stations.{name}: unknown key(s) {', '.join(sorted(unknown))}; "
                    f"allowed: {', '.join(sorted(_STATION_KEYS))}"
                )
            added = world.add_station(
                name,
                kind=station.get("kind", "place"),
                vessel_capacity_ul=float(station.get("vessel_capacity_ul", 4000.0)),
                with_vessel=bool(station.get("vessel", False)),
            )
            added.light = float(station.get("light", 0.0))
            added.downstream = station.get("downstream")
            if "temperature_c" in station:
                added.temperature_c = float(station["temperature_c"])
        for name, station in world.stations.items():
            if station.downstream is not None and station.downstream not in world.stations:
                raise ValueError(f"stations.{name}.downstream: no station {station.downstream!r}")
        from simulators.flow import FlowReactor

        for name, spec in (config.get("reactors") or {}).items():
            spec = dict(spec or {})
            where = spec.pop("station", None)
            try:
                reactor = FlowReactor(name, **spec)
            except TypeError as exc:
                raise ValueError(f"reactors.{name}: {exc}") from None
            world.reactors[name] = reactor
            if where is not None:
                if where not in world.stations or world.stations[where].vessel is not None:
                    raise ValueError(f"reactors.{name}.station: {where!r} is not a free station")
                world.stations[where].vessel = reactor
        return world

    def add_station(
        self, name: str, *, kind: str = "place", vessel_capacity_ul: float = 4000.0, with_vessel: bool = False
    ) -> Station:
        if kind not in ("place", "feeder", "waste", "flow-cell"):
            raise ValueError(
                f"station {name!r}: kind must be place, feeder, waste or flow-cell, not {kind!r}"
            )
        station = Station(name, kind, vessel_capacity_ul=vessel_capacity_ul)
        if kind == "flow-cell":
            from simulators.flow import FlowCell

            station.vessel = FlowCell(f"{name}-cell", vessel_capacity_ul)
        elif kind == "feeder" or with_vessel:
            station.vessel = self.new_vessel(vessel_capacity_ul)
        self.stations[name] = station
        return station

    def new_vessel(self, capacity_ul: float = 4000.0) -> Vessel:
        return Vessel(f"vessel-{next(self._vessel_numbers)}", capacity_ul)

    def holder(self, ref: str) -> LiquidHolder:
        """Resolve ``stock:NAME`` or ``station:NAME`` (a bare name tries stations, then stocks)."""
        kind, _, name = ref.partition(":")
        if not name:
            kind, name = "", ref
        if kind in ("", "station") and name in self.stations:
            return self.stations[name]
        if kind in ("", "stock") and name in self.stocks:
            return self.stocks[name]
        raise KeyError(
            f"no {kind or 'station or stock'} named {name!r}; "
            f"stations: {sorted(self.stations)}, stocks: {sorted(self.stocks)}"
        )

    # -- time -------------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock.now()

    def add_settler(self, settle: Callable[[float], None]) -> None:
        """Register an instrument's catch-up callback, called with the current simulated time."""
        self._settlers.append(settle)

    def settle(self) -> None:
        now = self.clock.now()
        for settle in self._settlers:
            settle(now)
        self._advance(now)

    def _advance(self, now: float) -> None:
        """Flow through the reactors, then let the chemistry react what sits at each station."""
        since, self._advanced_to = self._advanced_to, max(now, self._advanced_to)
        for station in self.stations.values():
            vessel = station.vessel
            if hasattr(vessel, "advance"):
                downstream = self.stations.get(station.downstream) if station.downstream else None
                vessel.advance(now, station.conditions(), downstream, self.chemistry)
        evolve = getattr(self.chemistry, "evolve", None)
        if evolve is None or now <= since:
            return
        for station in self.stations.values():
            vessel = station.vessel
            if vessel is not None and vessel.volume_ul > 0 and getattr(vessel, "reacts", True):
                evolve(vessel, now - since, station.conditions())

    # -- moving things -----------------------------------------------------------------------------
    def transfer(self, source: LiquidHolder, destination: LiquidHolder, volume_ul: float) -> Portion:
        portion = source.take(volume_ul)
        destination.put(portion)
        return portion

    def pick(self, station_name: str) -> Vessel | None:
        """Lift the vessel off a station (a feeder immediately presents a fresh one)."""
        self.settle()
        station = self.stations[station_name]
        vessel, station.vessel = station.vessel, None
        if station.kind == "feeder":
            station.vessel = self.new_vessel(station.vessel_capacity_ul)
        return vessel

    def place(self, station_name: str, vessel: Vessel) -> bool:
        """Set a vessel down; False if the station is occupied (the vessel stays in the gripper)."""
        self.settle()
        station = self.stations[station_name]
        if station.kind == "waste":
            self.discarded.append(vessel)
            return True
        if station.vessel is not None:
            return False
        station.vessel = vessel
        return True

    def vessel_at(self, station_name: str) -> Vessel | None:
        self.settle()
        return self.stations[station_name].vessel
