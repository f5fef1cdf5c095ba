"""What an instrument reported using, as a change of the lab's inventory.

A driver reports each action's use (docs/drivers.md, "Consumables"): liquid ``dispensed`` from a syringe or
``drawn`` from a reservoir and a vial ``picked`` from a feeder leave the stock; liquid ``withdrawn`` back
into a syringe returns to it; what a valve pump pushes to its waste port (``wasted``) was drawn already.
"""

from __future__ import annotations

import logging
from typing import Any

from sdl.store import StockChange, Store

log = logging.getLogger("sdl.worker")

#: Usage events and the sign of their change to the stock they name.
TAKES = {"dispensed": 1.0, "drawn": 1.0, "picked": 1.0, "withdrawn": -1.0}


def book_usage(
    store: Store, experiment_id: int | None, instrument: str, record: dict[str, Any], who: str
) -> StockChange | None:
    """Book one usage record against ``experiment_id`` (None: outside an experiment, e.g. a recovery);
    None when it changes no stock the inventory tracks."""
    sign = TAKES.get(str(record.get("event")))
    consumable, amount = record.get("consumable"), record.get("amount")
    if sign is None or not isinstance(consumable, str) or not isinstance(amount, int | float) or not amount:
        return None
    why = str(record["event"]) + ("" if record.get("complete", True) else " (may be short: the link failed)")
    return store.book_usage(
        experiment_id, instrument, consumable, sign * float(amount), lot=record.get("lot"), who=who, why=why
    )
