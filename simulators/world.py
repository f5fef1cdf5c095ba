"""The simulated bench that every instrument simulator shares.

Liquid lives in stocks (reservoirs of known composition), syringes and vessels; vessels sit at
named stations (the dispense position, the spectrometer's cuvette holder, a feeder that presents a
clean vial, a waste container). Pumps move liquid between places, the arm moves vessels
between stations, the spectrometer looks at whatever sits in its holder.

The bench runs out as a real one does, where the lab file says how much there is: a stock with a
``volume_ul`` gives what it has left and then nothing (a pump draws air), a feeder with a ``count``
presents that many vials and then none (the gripper closes on nothing), a waste with a
``capacity_ul`` or ``capacity_vials`` overflows onto the bench. Without them, as before: stocks never
empty, feeders never run out, waste takes everything. Each stock has a ``lot``; every portion of
liquid carries how much of it came from which stock and lot (``sources``, keyed ``STOCK@LOT``), so
each vial knows what it received. A person's hands (``simulators.hands``) refill stocks, load
feeders and empty waste.

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
    #: µL of it by origin, ``STOCK@LOT`` (``STOCK`` when the stock has no lot).
    sources: dict[str, float] = field(default_factory=dict)


def scaled(sources: Mapping[str, float], fraction: float) -> dict[str, float]:
    return {origin: volume * fraction for origin, volume in sources.items()}


def merge(into: dict[str, float], sources: Mapping[str, float]) -> None:
    for origin, volume in sources.items():
        into[origin] = into.get(origin, 0.0) + volume


class LiquidHolder:
    """Something liquid can be taken from and put into."""

    name: str

    def take(self, volume_ul: float) -> Portion:
        raise NotImplementedError

    def put(self, portion: Portion) -> None:
        raise NotImplementedError


@dataclass
class Stock(LiquidHolder):
    """A reservoir of fixed composition (mol/L); ``volume_ul`` may be infinite (the default)."""

    name: str
    concentrations: dict[str, float] = field(default_factory=dict)
    volume_ul: float = math.inf
    lot: str | None = None
    #: What was taken out of it and put back into it since the start (the bench's own accounting).
    drawn_ul: float = 0.0
    returned_ul: float = 0.0

    @property
    def origin(self) -> str:
        return f"{self.name}@{self.lot}" if self.lot else self.name

    def take(self, volume_ul: float) -> Portion:
        volume = max(0.0, min(volume_ul, self.volume_ul))
        self.volume_ul -= volume
        self.drawn_ul += volume
        sources = {self.origin: volume} if volume > 0 else {}
        return Portion(volume, {s: c * volume for s, c in self.concentrations.items()}, sources=sources)

    def put(self, portion: Portion) -> None:
        # Liquid pushed back into a reservoir (a withdraw reversed) just dilutes into it.
        self.volume_ul += portion.volume_ul
        self.returned_ul += portion.volume_ul


@dataclass
class Vessel(LiquidHolder):
    """A vial, well or cuvette holding a mixture."""

    name: str
    capacity_ul: float = 4000.0
    volume_ul: float = 0.0
    amounts: dict[str, float] = field(default_factory=dict)
    overflowed_ul: float = 0.0
    #: µL received by origin (``STOCK@LOT``), net of what was taken out again.
    sources: dict[str, float] = field(default_factory=dict)
    #: Where a vial came from: its feeder, the rack slot it stood in, and the vials' lot.
    feeder: str | None = None
    slot: int | None = None
    lot: str | None = None

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
        sources = scaled(self.sources, fraction)
        for origin, part in sources.items():
            self.sources[origin] -= part
        self.volume_ul -= volume
        return Portion(volume, taken, sources=sources)

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
        merge(self.sources, scaled(portion.sources, fraction))

    def describe(self) -> dict[str, Any]:
        """What it is and holds, for the bench's true state."""
        return {
            "vessel": self.name,
            "feeder": self.feeder,
            "slot": self.slot,
            "lot": self.lot,
            "volume_ul": self.volume_ul,
            "overflowed_ul": self.overflowed_ul,
            "sources": {origin: volume for origin, volume in self.sources.items() if volume > 1e-12},
        }


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


@dataclass
class Feeder(Station):
    """A rack of clean vials, presented one at a time at the pick position, slot after slot.

    ``count`` vials are left (the one presented included); None: it never runs out. A person loads a
    fresh rack (``load``): ``count`` vials in slots 1…count, of ``lot``.
    """

    count: int | None = None
    lot: str | None = None
    #: The slot of the vial presented now (0: none), and the vials taken since the start.
    slot: int = 0
    taken: int = 0

    def describe(self) -> dict[str, Any]:
        return {"count": self.count, "lot": self.lot, "slot": self.slot if self.vessel else None,
                "taken": self.taken}  # fmt: skip


@dataclass
class Waste(Station):
    """A waste container: vials dropped in and liquid poured in, up to its capacities (None: unbounded).

    Past a capacity it overflows onto the bench (``overflowed_ul``, ``overflowed_vials``): nothing on any
    instrument's wire says so, as in a real lab, but the bench's accounting does.
    """

    capacity_ul: float | None = None
    capacity_vials: int | None = None
    volume_ul: float = 0.0
    vials: int = 0
    overflowed_ul: float = 0.0
    overflowed_vials: int = 0
    emptied_ul: float = 0.0
    emptied_vials: int = 0

    def put(self, portion: Portion) -> None:
        self._pour(portion.volume_ul)

    def take(self, volume_ul: float) -> Portion:
        return Portion(0.0)  # nothing is drawn back out of the waste

    def _pour(self, volume_ul: float) -> None:
        room = math.inf if self.capacity_ul is None else max(self.capacity_ul - self.volume_ul, 0.0)
        kept = min(volume_ul, room)
        self.volume_ul += kept
        if kept < volume_ul:
            self.overflowed_ul += volume_ul - kept
            log.warning("waste %s overflowed by %.1f µL", self.name, volume_ul - kept)

    def receive(self, vessel: Vessel) -> None:
        """A vial dropped in, with what it holds; one too many falls beside the full container."""
        if self.capacity_vials is not None and self.vials >= self.capacity_vials:
            self.overflowed_vials += 1
            self.overflowed_ul += vessel.volume_ul
            log.warning("waste %s is full: %s falls beside it", self.name, vessel.name)
            return
        self.vials += 1
        self._pour(vessel.volume_ul)

    def empty(self) -> None:
        self.emptied_ul += self.volume_ul
        self.emptied_vials += self.vials
        self.volume_ul, self.vials = 0.0, 0

    def describe(self) -> dict[str, Any]:
        return {
            "volume_ul": self.volume_ul,
            "vials": self.vials,
            "capacity_ul": self.capacity_ul,
            "capacity_vials": self.capacity_vials,
            "overflowed_ul": self.overflowed_ul,
            "overflowed_vials": self.overflowed_vials,
            "emptied_ul": self.emptied_ul,
            "emptied_vials": self.emptied_vials,
        }


_STATION_KEYS = {"kind", "vessel_capacity_ul", "vessel", "light", "downstream", "temperature_c"}
_KIND_KEYS = {"feeder": {"count", "lot"}, "waste": {"capacity_ul", "capacity_vials"}}
_STOCK_KEYS = {"concentrations", "volume_ul", "lot", "description"}


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
        #: Every vial a feeder gave out, in the order the gripper took them.
        self.vials: list[Vessel] = []
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
            unknown = set(stock) - _STOCK_KEYS
            if unknown:
                raise ValueError(
                    f"stocks.{name}: unknown key(s) {', '.join(sorted(unknown))}; "
                    f"allowed: {', '.join(sorted(_STOCK_KEYS))}"
                )
            world.stocks[name] = Stock(
                name,
                {k: float(v) for k, v in (stock.get("concentrations") or {}).items()},
                _amount(stock, "volume_ul", f"stocks.{name}", math.inf),
                lot=_lot(stock.get("lot"), f"stocks.{name}.lot"),
            )
        for name, station in (config.get("stations") or {}).items():
            station = dict(station or {})
            kind = station.get("kind", "place")
            allowed = _STATION_KEYS | _KIND_KEYS.get(kind, set())
            unknown = set(station) - allowed
            if unknown:
                raise ValueError(
                    f"stations.{name}: unknown key(s) {', '.join(sorted(unknown))}"
                    f"{' for a ' + kind if kind in _KIND_KEYS else ''}; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
            where = f"stations.{name}"
            added = world.add_station(
                name,
                kind=kind,
                vessel_capacity_ul=float(station.get("vessel_capacity_ul", 4000.0)),
                with_vessel=bool(station.get("vessel", False)),
                count=_count(station, "count", where),
                lot=_lot(station.get("lot"), f"{where}.lot"),
                capacity_ul=_amount(station, "capacity_ul", where, None),
                capacity_vials=_count(station, "capacity_vials", where),
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
        self,
        name: str,
        *,
        kind: str = "place",
        vessel_capacity_ul: float = 4000.0,
        with_vessel: bool = False,
        count: int | None = None,
        lot: str | None = None,
        capacity_ul: float | None = None,
        capacity_vials: int | None = None,
    ) -> Station:
        if kind not in ("place", "feeder", "waste", "flow-cell"):
            raise ValueError(
                f"station {name!r}: kind must be place, feeder, waste or flow-cell, not {kind!r}"
            )
        station: Station
        if kind == "feeder":
            station = Feeder(name, kind, vessel_capacity_ul=vessel_capacity_ul, count=count, lot=lot)
            self._present(station)
        elif kind == "waste":
            station = Waste(name, kind, vessel_capacity_ul=vessel_capacity_ul, capacity_ul=capacity_ul,
                            capacity_vials=capacity_vials)  # fmt: skip
        else:
            station = Station(name, kind, vessel_capacity_ul=vessel_capacity_ul)
            if kind == "flow-cell":
                from simulators.flow import FlowCell

                station.vessel = FlowCell(f"{name}-cell", vessel_capacity_ul)
            elif with_vessel:
                station.vessel = self.new_vessel(vessel_capacity_ul)
        self.stations[name] = station
        return station

    def _present(self, feeder: Feeder) -> None:
        """The feeder's next vial at the pick position, if it has one left."""
        if feeder.count is not None and feeder.count <= 0:
            feeder.vessel = None
            return
        feeder.slot += 1
        vial = self.new_vessel(feeder.vessel_capacity_ul)
        vial.feeder, vial.slot, vial.lot = feeder.name, feeder.slot, feeder.lot
        feeder.vessel = vial

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
        """Lift the vessel off a station (a feeder presents its next one, while it has any)."""
        self.settle()
        station = self.stations[station_name]
        vessel, station.vessel = station.vessel, None
        if isinstance(station, Feeder) and vessel is not None:
            station.taken += 1
            if station.count is not None:
                station.count -= 1
            self.vials.append(vessel)
            self._present(station)
        return vessel

    def place(self, station_name: str, vessel: Vessel) -> bool:
        """Set a vessel down; False if the station is occupied (the vessel stays in the gripper)."""
        self.settle()
        station = self.stations[station_name]
        if isinstance(station, Waste):
            station.receive(vessel)
            self.discarded.append(vessel)
            return True
        if station.vessel is not None:
            return False
        station.vessel = vessel
        return True

    def vessel_at(self, station_name: str) -> Vessel | None:
        self.settle()
        return self.stations[station_name].vessel

    # -- a person's hands (simulators.hands) -------------------------------------------------------
    def refill_stock(self, name: str, volume_ul: float, lot: str | None = None) -> Stock:
        """The stock holds ``volume_ul`` now: a new bottle of ``lot`` when one is given, else the same
        lot topped up (or poured off) to that volume."""
        stock = self._stock(name)
        self.settle()
        stock.volume_ul = volume_ul
        if lot is not None:
            stock.lot = lot
        return stock

    def load_feeder(self, name: str, count: int, lot: str | None = None) -> Feeder:
        """A fresh rack of ``count`` vials of ``lot`` in the feeder (the old rack, and any vial left in
        it, taken away)."""
        feeder = self.stations.get(name)
        if not isinstance(feeder, Feeder):
            raise KeyError(f"no feeder named {name!r}; feeders: {sorted(self._of(Feeder))}")
        self.settle()
        feeder.count, feeder.lot, feeder.slot = count, lot, 0
        self._present(feeder)
        return feeder

    def empty_waste(self, name: str) -> Waste:
        waste = self.stations.get(name)
        if not isinstance(waste, Waste):
            raise KeyError(f"no waste named {name!r}; waste containers: {sorted(self._of(Waste))}")
        self.settle()
        waste.empty()
        return waste

    def _stock(self, name: str) -> Stock:
        if name not in self.stocks:
            raise KeyError(f"no stock named {name!r}; stocks: {sorted(self.stocks)}")
        return self.stocks[name]

    def _of(self, kind: type[Station]) -> list[str]:
        return [name for name, station in self.stations.items() if isinstance(station, kind)]

    def state(self) -> dict[str, Any]:
        """The bench's own accounting: stocks, feeders, waste, and where the vials went."""
        self.settle()
        return {
            "time": self.now(),
            "stocks": {name: describe_stock(stock) for name, stock in self.stocks.items()},
            "feeders": {name: self.stations[name].describe() for name in self._of(Feeder)},
            "waste": {name: self.stations[name].describe() for name in self._of(Waste)},
            "vials": {"taken": len(self.vials), "discarded": len(self.discarded)},
        }


def describe_stock(stock: Stock) -> dict[str, Any]:
    return {
        "volume_ul": None if math.isinf(stock.volume_ul) else stock.volume_ul,
        "lot": stock.lot,
        "origin": stock.origin,
        "drawn_ul": stock.drawn_ul,
        "returned_ul": stock.returned_ul,
        "concentrations": dict(stock.concentrations),
    }


def _amount(config: Mapping[str, Any], key: str, where: str, default: float | None) -> Any:
    if key not in config:
        return default
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or value < 0:
        raise ValueError(f"{where}.{key}: expected a number of µL >= 0, got {value!r}")
    return float(value)


def _count(config: Mapping[str, Any], key: str, where: str) -> int | None:
    if key not in config:
        return None
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}.{key}: expected a whole number >= 0, got {value!r}")
    return value


def _lot(value: Any, where: str) -> str | None:
    if value is None:
        return None
    text = str(value)
    if not text or len(text) > 64 or not text.isprintable():
        raise ValueError(f"{where}: a lot is 1-64 printable characters, got {value!r}")
    return text
