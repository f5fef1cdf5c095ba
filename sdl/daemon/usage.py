"""What an instrument reported using, as a change of the lab's inventory.

A driver reports each action's use (docs/drivers.md, "Consumables"), and says what kind each consumable is
(``contents()``): liquid ``dispensed`` from a syringe, ``drawn`` from a reservoir and a vial ``picked`` from a
feeder leave the stock; liquid ``withdrawn`` back into a syringe returns to it; a valve pump's ``dispensed``
and ``wasted`` left its syringe, drawn already. A vial ``placed`` at a station fills it, if the lab keeps that
station as a waste stock.
"""

from __future__ import annotations

import logging
from typing import Any

from sdl.store import StockChange, Store

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
