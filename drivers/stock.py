"""What a driver knows of the consumables its instrument draws from, and what each action used.

A syringe pump's syringe, a valve pump's reservoir, a vial feeder at an arm's station: each is a
*consumable* with a name on its device (the pump's label, the valve port's label, the arm's position).
The driver does not know how much is in one until it is told — ``device.set_contents(name, amount,
lot=...)`` at connect and after every refill — and from then on counts down by what the instrument
reports it did (the NE-1000's ``DIS``, the Cavro's plunger position, the gripper's object detection).
With a tracked amount the driver tells an empty consumable from a fault (``drivers.errors.Empty``)
and refuses an action that needs more than is left, before anything moves.

Every action that used something reports it, as a usage record, to whoever subscribed with
``device.subscribe_usage(callback)``, from the action's thread, before the action's Status completes
(and also when it fails part-way, for what it used until then)::

    {"instrument": "dye_pumps", "device": "dye_pumps_red", "event": "dispensed",
     "consumable": "red", "amount": 119.98, "unit": "uL", "lot": "R-0412",
     "remaining": 3380.02, "requested": 120.0, "slot": None, "complete": True}

``event`` is one of :data:`USAGE_EVENTS`; ``remaining`` is None when the consumable is not tracked;
``complete`` is False when the amount may be short of what was used (the link failed before the
instrument could say).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

#: What a usage record says happened: liquid pushed out of a syringe to its outlet (``dispensed``),
#: pulled back into it (``withdrawn``), drawn from a reservoir (``drawn``), pushed to a waste port
#: (``wasted``), a vial taken by the gripper (``picked``), a vial left at a station (``placed``: the lab may
#: keep that station as a waste container that fills).
USAGE_EVENTS = ("dispensed", "withdrawn", "drawn", "wasted", "picked", "placed")
#: Kinds of consumable a driver tracks.
KINDS = ("syringe", "reservoir", "feeder")

UsageCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Contents:
    """One consumable as its driver tracks it (``amount`` None: the driver has not been told)."""

    kind: str  # syringe | reservoir | feeder
    unit: str  # uL | vials
    amount: float | None = None
    lot: str | None = None
    #: What it can hold at most (a syringe's volume); None when the driver does not know.
    capacity: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_amount(
    name: str, amount: float | None, *, unit: str, capacity: float | None = None
) -> float | None:
    """``amount`` as a float, or None (not tracked); ValueError naming ``name`` for anything else."""
    if amount is None:
        return None
    if isinstance(amount, bool) or not isinstance(amount, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]  (callers pass anything: checked at run time)
        raise ValueError(f"{name}: the amount must be a number of {unit} or None, not {amount!r}")
    value = float(amount)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: the amount must be a finite number >= 0 {unit}, not {amount!r}")
    if capacity is not None and value > capacity * (1 + 1e-9):
        raise ValueError(f"{name}: {value:g} {unit} is more than it holds ({capacity:g} {unit})")
    if unit == "vials" and value != int(value):
        raise ValueError(f"{name}: a number of vials is whole, not {amount!r}")
    return value


def check_lot(name: str, lot: str | None) -> str | None:
    """A lot is a short printable name (or None: unknown)."""
    if lot is None:
        return None
    if not isinstance(lot, str) or not lot or len(lot) > 64 or not lot.isprintable():  # pyright: ignore[reportUnnecessaryIsInstance]  (callers pass anything: checked at run time)
        raise ValueError(f"{name}: a lot is 1-64 printable characters, not {lot!r}")
    return lot


class UsageEvents:
    """Subscribers to one instrument's usage records; ``emit`` calls each one, from any thread.

    A subscriber that raises is logged and kept (as with ``drivers.retry.FaultEvents``).
    """

    def __init__(self, instrument: str = "") -> None:
        self.instrument = instrument
        self._subscribers: list[UsageCallback] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: UsageCallback) -> Callable[[], None]:
        """Call ``callback(record)`` for every usage record from now on; returns an unsubscribe."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def emit(
        self,
        event: str,
        *,
        device: str,
        consumable: str | None,
        amount: float,
        unit: str = "uL",
        lot: str | None = None,
        remaining: float | None = None,
        requested: float | None = None,
        slot: int | None = None,
        complete: bool = True,
    ) -> dict[str, Any]:
        if event not in USAGE_EVENTS:
            raise ValueError(f"usage event {event!r} is not one of {', '.join(USAGE_EVENTS)}")
        record: dict[str, Any] = {
            "instrument": self.instrument,
            "device": device,
            "event": event,
            "consumable": consumable,
            "amount": amount,
            "unit": unit,
            "lot": lot,
            "remaining": remaining,
            "requested": requested,
            "slot": slot,
            "complete": complete,
        }
        log.info("%s: %s %.6g %s of %s%s", self.instrument or "instrument", event, amount, unit,
                 consumable or "?", f" (lot {lot})" if lot else "")  # fmt: skip
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(dict(record))
            except Exception:
                log.exception("%s: usage subscriber %r failed", self.instrument, callback)
        return record


__all__ = ["KINDS", "USAGE_EVENTS", "Contents", "UsageCallback", "UsageEvents", "check_amount", "check_lot"]
