"""What every instrument simulator is: a protocol server over the shared world.

A simulator declares its endpoints (one per socket the real instrument opens: the UR arm has
``dashboard``, ``script`` and ``gripper``), the faults it can inject, and one coroutine that
serves a connection to an endpoint. ``simulators.server`` puts each endpoint behind a TCP port
or a pseudo-terminal; the simulator does not know which.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from simulators.faults import LINK_FAULTS, FaultPlan
from simulators.stream import Stream
from simulators.world import World


class ConfigError(ValueError):
    """A simulator or lab configuration that does not make sense (named field, allowed values)."""


@dataclass(frozen=True)
class WireRecord:
    """One request as the simulated instrument received it: when (``time.monotonic()``), where, what."""

    time: float
    endpoint: str
    data: bytes


#: Requests each simulator remembers (the oldest are forgotten first).
WIRE_LOG_SIZE = 10_000


class Simulator(ABC):
    kind: ClassVar[str]
    endpoints: ClassVar[tuple[str, ...]]
    #: Faults this instrument can show, besides the link faults every simulator has.
    instrument_faults: ClassVar[dict[str, str]] = {}
    #: The TCP port of each endpoint on the real instrument, for clients that take no port number.
    standard_ports: ClassVar[dict[str, int]] = {}

    def __init__(
        self,
        world: World,
        config: Mapping[str, Any] | None = None,
        faults: FaultPlan | None = None,
        *,
        name: str | None = None,
    ):
        self.world = world
        self.config = dict(config or {})
        self.faults = faults or FaultPlan()
        self.name = name or self.kind
        self.log = logging.getLogger(f"simulators.{self.name}")
        #: Connections per endpoint since start, and those still open (kept by simulators.server).
        self.sessions_opened: Counter[str] = Counter()
        self.sessions_open: Counter[str] = Counter()
        #: Every request received, with its arrival time: tests prove on it what reached the wire.
        self.wire_log: deque[WireRecord] = deque(maxlen=WIRE_LOG_SIZE)

    def record(self, endpoint: str, request: bytes) -> None:
        """Note a complete request on ``endpoint`` in the wire log (call it as each one arrives)."""
        self.wire_log.append(WireRecord(time.monotonic(), endpoint, bytes(request)))

    @classmethod
    def supported_faults(cls) -> dict[str, str]:
        return {**LINK_FAULTS, **cls.instrument_faults}

    @classmethod
    def default_world(cls) -> dict[str, Any]:
        """World config for serving this instrument alone (``python -m simulators KIND``)."""
        return DEFAULT_WORLD

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """Instrument config for serving this instrument alone."""
        return {}

    @abstractmethod
    async def serve(self, endpoint: str, stream: Stream) -> None:
        """Serve one connection to ``endpoint`` until the client leaves (raise or return)."""

    def close(self) -> None:  # noqa: B027  (optional hook: most simulators hold nothing to release)
        """Called once when the server shuts down."""

    # -- a person's hands (simulators.hands) -------------------------------------------------------
    def bench_state(self) -> dict[str, Any]:
        """What this instrument holds, by its own accounting (a syringe's content...), for tests."""
        return {}

    def refill(self, part: str, volume_ul: float, *, lot: str | None, replace: bool) -> dict[str, Any]:
        """A person fills ``part`` (a syringe) to ``volume_ul`` (a new one when ``replace``); its state."""
        raise ValueError(f"{self.name} ({self.kind}) has no syringe a person fills by hand")


# A small bench that makes any single instrument useful on its own: three dye stocks and water,
# a vial feeder, a dispense position, the spectrometer's holder and a waste chute.
DEFAULT_WORLD: dict[str, Any] = {
    "chemistry": {"model": "beer-lambert", "path_length_cm": 1.0},
    "stocks": {
        "yellow": {"concentrations": {"yellow": 4.0e-5}},
        "red": {"concentrations": {"red": 4.0e-5}},
        "blue": {"concentrations": {"blue": 1.0e-5}},
        "water": {},
    },
    "stations": {
        "feeder": {"kind": "feeder"},
        "dispense": {"vessel": True},
        "spectrometer": {},
        "waste": {"kind": "waste"},
    },
}

_REGISTRY: dict[str, type[Simulator]] = {}

#: The entry-point group through which installed packages offer simulators (kind -> class).
ENTRY_POINT_GROUP = "sdl.simulators"


def register(cls: type[Simulator]) -> type[Simulator]:
    _REGISTRY[cls.kind] = cls
    return cls


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def simulator_class(kind: str) -> type[Simulator]:
    """The simulator class of ``kind``: registered here, or offered by an installed package's entry point."""
    from simulators import _kinds  # noqa: F401  (importing registers the built-in kinds)

    if kind in _REGISTRY:
        return _REGISTRY[kind]
    entry = _entry_points().get(kind)
    if entry is None:
        raise ConfigError(f"unknown instrument kind {kind!r}; allowed: {', '.join(kinds())}")
    try:
        cls = entry.load()
    except Exception as exc:
        raise ConfigError(f"instrument kind {kind!r} ({entry.value}) cannot be loaded: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Simulator)):
        raise ConfigError(f"instrument kind {kind!r} ({entry.value}) is not a simulators.base.Simulator")
    _REGISTRY[kind] = cls
    return cls


def kinds() -> list[str]:
    from simulators import _kinds  # noqa: F401

    return sorted(set(_REGISTRY) | set(_entry_points()))
