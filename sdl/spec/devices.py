"""The device contract of decision 0003 as typed protocols: what `sdl` may ask of an instrument's device.

A driver's factory returns an ophyd device (bluesky's `HasName`, `Stoppable`, ... describe its face); beyond
that, each of these lifecycle steps is optional. The core checks which a device supports with ``isinstance``
(the protocols are runtime-checkable, so a driver implements them by name, without importing anything of
`sdl`), and skips — and logs — what a device lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

#: Called (from any thread) for each retry, reconnect, recovery and give-up of a device's link.
FaultListener = Callable[[dict[str, Any]], None]


@runtime_checkable
class Connectable(Protocol):
    """Built offline, connected separately; ``disconnect`` leaves it ready to connect again."""

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...


@runtime_checkable
class Destroyable(Protocol):
    """Torn down for good (ophyd's own ``destroy``)."""

    def destroy(self) -> None: ...


@runtime_checkable
class MakesSafe(Protocol):
    """Brings the instrument to a safe state (pumps stopped, arm stopped, lamp off), connecting if needed."""

    def make_safe(self) -> None: ...


@runtime_checkable
class Recovers(Protocol):
    """Runs the instrument's documented recovery from a recoverable fault."""

    def recover(self) -> None: ...


@runtime_checkable
class ChecksHealth(Protocol):
    """A short self-test that moves nothing irreversible; raises when the instrument is unhealthy."""

    def check_health(self) -> None: ...


@runtime_checkable
class ReportsFaults(Protocol):
    """Calls ``callback(event)`` for each retry, reconnect, recovery and give-up of its link."""

    def subscribe_faults(self, callback: FaultListener) -> None: ...


@runtime_checkable
class Identifies(Protocol):
    """Says what it is over its own protocol (model, serial number, firmware): recorded as provenance."""

    def identity(self) -> Any: ...


#: Called (from an action's thread) with what one action used: ``{"consumable", "amount", "unit", "lot",
#: "remaining", "event", ...}`` (docs/drivers.md, "Consumables").
UsageListener = Callable[[dict[str, Any]], None]


@runtime_checkable
class HoldsConsumables(Protocol):
    """Counts down the consumables it draws from (a syringe, a reservoir, a feeder) once told how much each
    holds; its count is a cache of the lab's inventory, told again at every connect and experiment."""

    def contents(self) -> dict[str, dict[str, Any]]: ...

    def set_contents(self, name: str, amount: float | None, *, lot: str | None = None) -> None: ...


@runtime_checkable
class ReportsUsage(Protocol):
    """Calls ``callback(record)`` with what each action used, before the action's Status completes."""

    def subscribe_usage(self, callback: UsageListener) -> Any: ...
