"""What an instrument reported using, as a change of the lab's inventory.

A driver reports each action's use (docs/drivers.md, "Consumables"), and says what kind each consumable is
(``contents()``): liquid ``dispensed`` from a syringe, ``drawn`` from a reservoir and a vial ``picked`` from a
feeder leave the stock; liquid ``withdrawn`` back into a syringe returns to it; a valve pump's ``dispensed``
and ``wasted`` left its syringe, drawn already. A vial ``placed`` at a station fills it, if the lab keeps that
station as a waste stock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sdl.spec.devices import HoldsConsumables
from sdl.store import StockChange, Store, StoreFull

log = logging.getLogger("sdl.worker")

#: (kind of consumable, usage event) -> the sign of its change to the stock; a consumable the driver does not
#: list (a station the arm placed a vial at) has kind None.
TAKES: dict[tuple[str | None, str], float] = {
    ("syringe", "dispensed"): 1.0,
    ("syringe", "withdrawn"): -1.0,
    ("reservoir", "drawn"): 1.0,
    ("feeder", "picked"): 1.0,
    (None, "placed"): 1.0,
}


def book_usage(
    store: Store,
    experiment_id: int | None,
    instrument: str,
    record: dict[str, Any],
    who: str,
    kind: str | None = None,
) -> StockChange | None:
    """Book one usage record against ``experiment_id`` (None: outside an experiment, e.g. a recovery), the
    consumable being of ``kind`` (its driver's ``contents()``); None when it changes no stock the inventory
    tracks."""
    sign = TAKES.get((kind, str(record.get("event"))))
    consumable, amount = record.get("consumable"), record.get("amount")
    if sign is None or not isinstance(consumable, str) or not isinstance(amount, int | float) or not amount:
        return None
    why = str(record["event"]) + ("" if record.get("complete", True) else " (may be short: the link failed)")
    return store.book_usage(
        experiment_id, instrument, consumable, sign * float(amount), lot=record.get("lot"), who=who, why=why
    )


class Ledger:
    """A worker's side of the inventory: it tells each device what the record says it holds (the device's
    count is a cache of the store's), and books what the devices report using against the experiment
    running. ``device`` finds an instrument's device; ``full`` is told when the store has no room."""

    def __init__(
        self,
        store: Store,
        workcell: str,
        device: Callable[[str], object | None],
        full: Callable[[str], None],
    ) -> None:
        self.store, self.workcell, self.device, self.full = store, workcell, device, full
        #: Usage the store had no room for, booked before the next write that has.
        self._held: list[tuple[int | None, str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def tell(self, instrument: str, device: object) -> None:
        if not isinstance(device, HoldsConsumables):
            return
        for (name, consumable), stock in self.store.stocks().items():
            if name != instrument or stock.kind == "waste":  # a waste is the lab's count, not the driver's
                continue
            try:
                device.set_contents(consumable, stock.amount, lot=stock.lot)
            except Exception as exc:  # an unknown name, or busy: the count it has stands
                log.warning("%s: could not tell it %s holds %g: %s", instrument, consumable, stock.amount,
                            exc)  # fmt: skip

    def book(self, experiment_id: int | None, instrument: str, record: dict[str, Any]) -> None:
        """What an action used, booked against ``experiment_id`` (from the action's thread, before its
        Status completes)."""
        device = self.device(instrument)
        kinds = device.contents() if isinstance(device, HoldsConsumables) else {}
        kind = kinds.get(str(record.get("consumable")), {}).get("kind")
        with self._lock:
            self._held.append((experiment_id, instrument, {**record, "kind": kind}))
            held, self._held = self._held, []
            for i, (held_id, name, usage) in enumerate(held):
                try:
                    book_usage(self.store, held_id, name, usage, self.workcell, usage["kind"])
                except StoreFull as exc:
                    self._held = held[i:]
                    self.full(str(exc))
                    return
