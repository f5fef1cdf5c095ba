"""What the lab holds and what people are asked to do: stocks changed only by recorded transactions, and
tasks that go open -> acknowledged -> done or cancelled.

A stock is one consumable an instrument draws from (a syringe's fill, a valve pump's reservoir, an arm's
vial feeder), named as its driver names it. The lab file declares what each holds when the lab first
starts; from then on the store's figure changes only by a row of ``stock_changes``: ``consume`` (what an
experiment's instruments reported using, with the lot it came from), ``refill``, ``replace`` (a new lot)
and ``correct`` (a person counted), each with who and why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sdl.store.connection import Connection
from sdl.store.schema import StockChange, StockRecord, TaskRecord, dumps, loads, now_iso

#: Changes a person makes; ``consume`` comes from instruments, ``declare`` from the lab file.
RESTOCKS = ("refill", "replace", "correct", "empty")
TASK_KINDS = ("refill", "question", "other")
TASK_STATES = ("open", "acknowledged", "done", "cancelled")
PENDING = ("open", "acknowledged")
_AMOUNT = "SELECT amount, lot, kind, capacity FROM stocks WHERE instrument = ? AND consumable = ?"


class InventoryError(ValueError):
    """A change the inventory refuses (unknown stock, more than it holds, a closed task): the message says
    why and what is allowed."""


class InventoryMixin(Connection):
    # -- stocks --------------------------------------------------------------------------------------------

    def declare_stocks(self, declared: Mapping[tuple[str, str], Mapping[str, Any]], who: str) -> list[str]:
        """Add the stocks a lab file declares that the store does not know yet, at their declared amount and
        lot; for those it knows, take the file's unit, material, capacity and warning level but keep the
        amount and lot (what happened since the first start is the record's). Return those added."""
        added: list[str] = []
        now = now_iso()
        with self._tx() as conn:
            for (instrument, consumable), spec in declared.items():
                row = conn.execute(_AMOUNT, (instrument, consumable)).fetchone()
                meta = tuple(spec.get(k) for k in ("unit", "material", "capacity", "warn_below"))
                kind = spec.get("kind") or "supply"
                if row is not None:
                    conn.execute(
                        "UPDATE stocks SET unit = ?, material = ?, capacity = ?, warn_below = ?, kind = ? "
                        "WHERE instrument = ? AND consumable = ?",
                        (meta[0] or "uL", *meta[1:], kind, instrument, consumable),
                    )
                    continue
                amount, lot = float(spec["amount"]), spec.get("lot")
                conn.execute(
                    "INSERT INTO stocks (instrument, consumable, amount, unit, lot, material, capacity, "
                    "warn_below, updated_at, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (instrument, consumable, amount, meta[0] or "uL", lot, *meta[1:], now, kind),
                )
                self._change(conn, instrument, consumable, "declare", amount, amount, lot, None, who, None)
                added.append(f"{instrument}.{consumable}")
        return added

    def stocks(self) -> dict[tuple[str, str], StockRecord]:
        rows = self._read("SELECT * FROM stocks ORDER BY instrument, consumable")
        return {(r["instrument"], r["consumable"]): _stock(r) for r in rows}

    def stock(self, instrument: str, consumable: str) -> StockRecord | None:
        rows = self._read(
            "SELECT * FROM stocks WHERE instrument = ? AND consumable = ?", (instrument, consumable)
        )
        return _stock(rows[0]) if rows else None

    def book_usage(
        self,
        experiment_id: int | None,
        instrument: str,
        consumable: str,
        amount: float,
        *,
        lot: str | None,
        who: str,
        why: str | None = None,
    ) -> StockChange | None:
        """What an instrument reported using, taken off its stock and recorded against the experiment (None:
        the stock is not in the inventory). A stock never goes below zero: a report of more than the record
        holds leaves it at zero and says so in ``why``."""
        with self._tx() as conn:
            row = conn.execute(_AMOUNT, (instrument, consumable)).fetchone()
            if row is None:
                return None
            if row["kind"] == "waste":  # experiments fill it
                after = row["amount"] + amount
                if row["capacity"] is not None and after > row["capacity"]:
                    note = f"overflowed: {after:g} put in what holds {row['capacity']:g}"
                    why = f"{why}; {note}" if why else note
                    after = float(row["capacity"])
                after = max(after, 0.0)
            else:
                after = row["amount"] - amount
            if after < 0:
                note = f"reported {amount:g} with {row['amount']:g} on record"
                why = f"{why}; {note}" if why else note
                after = 0.0
            conn.execute(
                "UPDATE stocks SET amount = ?, updated_at = ? WHERE instrument = ? AND consumable = ?",
                (after, now_iso(), instrument, consumable),
            )
            lot = lot or row["lot"]
            return self._change(
                conn, instrument, consumable, "consume", amount, after, lot, experiment_id, who, why
            )

    def restock(
        self,
        instrument: str,
        consumable: str,
        change: str,
        amount: float,
        *,
        lot: str | None = None,
        who: str,
        why: str | None = None,
    ) -> StockRecord:
        """A person's change: ``refill`` (it holds ``amount`` now, same lot unless one is given), ``replace``
        (a new lot, which must be given), ``correct`` (counted: it holds ``amount``) or ``empty`` (a waste
        emptied: it holds ``amount`` now, usually nothing)."""
        if change not in RESTOCKS:
            raise InventoryError(f"unknown stock change {change!r} (allowed: {', '.join(RESTOCKS)})")
        if change == "replace" and not lot:
            raise InventoryError("a replaced stock needs its new lot")
        if not amount >= 0:
            raise InventoryError(f"amount must be zero or more, not {amount!r}")
        with self._tx() as conn:
            row = conn.execute(
                "SELECT * FROM stocks WHERE instrument = ? AND consumable = ?", (instrument, consumable)
            ).fetchone()
            if row is None:
                known = ", ".join(f"{i}.{c}" for i, c in self.stocks()) or "none"
                raise InventoryError(f"no stock {instrument}.{consumable} in the inventory (stocks: {known})")
            if row["capacity"] is not None and amount > row["capacity"]:
                raise InventoryError(
                    f"{instrument}.{consumable} holds at most {row['capacity']:g} {row['unit']}, "
                    f"not {amount:g}"
                )
            lot = lot or row["lot"]
            conn.execute(
                "UPDATE stocks SET amount = ?, lot = ?, updated_at = ? "
                "WHERE instrument = ? AND consumable = ?",
                (float(amount), lot, now_iso(), instrument, consumable),
            )
            amount = float(amount)
            self._change(conn, instrument, consumable, change, amount, amount, lot, None, who, why)
        record = self.stock(instrument, consumable)
        assert record is not None
        return record

    def stock_changes(
        self, *, experiment_id: int | None = None, after: int = 0, limit: int = 1000
    ) -> list[StockChange]:
        """Changes in order: all of them (from id ``after``), or one experiment's consumption."""
        if experiment_id is not None:
            rows = self._read(
                "SELECT * FROM stock_changes WHERE experiment_id = ? ORDER BY id", (experiment_id,)
            )
        else:
            rows = self._read("SELECT * FROM stock_changes WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
        return [_change(r) for r in rows]

    def consumption(self, campaign_id: str) -> dict[int, list[tuple[str, float, str, str | None]]]:
        """What each experiment of the campaign used, by experiment id: (``instrument.consumable``, amount,
        unit, lot), summed per stock and lot, in the order first used."""
        rows = self._read(
            "SELECT c.experiment_id, c.instrument, c.consumable, c.lot, SUM(c.amount) AS amount, "
            "MIN(c.id) AS first, s.unit FROM stock_changes c JOIN experiments e ON e.id = c.experiment_id "
            "LEFT JOIN stocks s ON s.instrument = c.instrument AND s.consumable = c.consumable "
            "WHERE e.campaign_id = ? AND c.change = 'consume' "
            "GROUP BY c.experiment_id, c.instrument, c.consumable, c.lot, s.unit "
            "ORDER BY c.experiment_id, first",
            (campaign_id,),
        )
        out: dict[int, list[tuple[str, float, str, str | None]]] = {}
        for r in rows:
            stock = f"{r['instrument']}.{r['consumable']}"
            out.setdefault(r["experiment_id"], []).append((stock, r["amount"], r["unit"] or "", r["lot"]))
        return out

    def used_by(self, experiment_ids: Iterable[int]) -> dict[int, dict[tuple[str, str], float]]:
        """What each experiment has used so far, by stock."""
        out: dict[int, dict[tuple[str, str], float]] = {}
        for experiment_id in experiment_ids:
            used = out.setdefault(experiment_id, {})
            for change in self.stock_changes(experiment_id=experiment_id):
                key = (change.instrument, change.consumable)
                used[key] = used.get(key, 0.0) + change.amount
        return out

    def _change(
        self,
        conn: Any,
        instrument: str,
        consumable: str,
        change: str,
        amount: float,
        after: float,
        lot: str | None,
        experiment_id: int | None,
        who: str,
        why: str | None,
    ) -> StockChange:
        at = now_iso()
        row = conn.execute(
            "INSERT INTO stock_changes (at, instrument, consumable, change, amount, after, lot, "
            "experiment_id, who, why) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (at, instrument, consumable, change, amount, after, lot, experiment_id, who, why),
        ).fetchone()
        return StockChange(
            row[0], at, instrument, consumable, change, amount, after, lot, experiment_id, who, why
        )

    # -- tasks ---------------------------------------------------------------------------------------------

    def open_task(
        self,
        kind: str,
        title: str,
        *,
        who: str,
        detail: str | None = None,
        instrument: str | None = None,
        consumable: str | None = None,
        workcell: str | None = None,
        experiment_id: int | None = None,
    ) -> TaskRecord:
        if kind not in TASK_KINDS:
            raise InventoryError(f"unknown task kind {kind!r} (allowed: {', '.join(TASK_KINDS)})")
        with self._tx() as conn:
            row = conn.execute(
                "INSERT INTO tasks (kind, state, title, detail, instrument, consumable, workcell, "
                "experiment_id, opened_at, opened_by) "
                "VALUES (?, 'open', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (kind, title, detail, instrument, consumable, workcell, experiment_id, now_iso(), who),
            ).fetchone()
        task = self.task(int(row[0]))
        assert task is not None
        return task

    def task(self, task_id: int) -> TaskRecord | None:
        rows = self._read("SELECT * FROM tasks WHERE id = ?", (task_id,))
        return _task(rows[0]) if rows else None

    def tasks(self, *, pending: bool = False, limit: int = 200) -> list[TaskRecord]:
        """Tasks newest first: every one (at most ``limit``), or those still to do."""
        if pending:
            rows = self._read("SELECT * FROM tasks WHERE state IN ('open', 'acknowledged') ORDER BY id DESC")
        else:
            rows = self._read("SELECT * FROM tasks ORDER BY id DESC LIMIT ?", (limit,))
        return [_task(r) for r in rows]

    def pending_task(self, instrument: str, consumable: str) -> TaskRecord | None:
        rows = self._read(
            "SELECT * FROM tasks WHERE instrument = ? AND consumable = ? "
            "AND state IN ('open', 'acknowledged') ORDER BY id LIMIT 1",
            (instrument, consumable),
        )
        return _task(rows[0]) if rows else None

    def acknowledge_task(self, task_id: int, who: str) -> TaskRecord:
        """Someone is on it (an open task only; acknowledging twice is refused)."""
        return self._move_task(task_id, "acknowledged", who, None)

    def close_task(
        self, task_id: int, state: str, who: str, outcome: Mapping[str, Any] | None = None
    ) -> TaskRecord:
        """``done`` or ``cancelled``, with what was done."""
        if state not in ("done", "cancelled"):
            raise InventoryError(f"a task closes as done or cancelled, not {state!r}")
        return self._move_task(task_id, state, who, outcome)

    def _move_task(self, task_id: int, state: str, who: str, outcome: Mapping[str, Any] | None) -> TaskRecord:
        with self._tx() as conn:
            row = conn.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                raise InventoryError(f"no task {task_id}")
            allowed = ("open",) if state == "acknowledged" else PENDING
            if row["state"] not in allowed:
                raise InventoryError(f"task {task_id} is {row['state']}; it cannot become {state}")
            if state == "acknowledged":
                conn.execute(
                    "UPDATE tasks SET state = ?, acknowledged_at = ?, acknowledged_by = ? WHERE id = ?",
                    (state, now_iso(), who, task_id),
                )
            else:
                conn.execute(
                    "UPDATE tasks SET state = ?, closed_at = ?, closed_by = ?, outcome = ? WHERE id = ?",
                    (state, now_iso(), who, dumps(dict(outcome)) if outcome else None, task_id),
                )
        task = self.task(task_id)
        assert task is not None
        return task


def _stock(row: Any) -> StockRecord:
    return StockRecord(
        row["instrument"],
        row["consumable"],
        row["amount"],
        row["unit"],
        row["lot"],
        row["material"],
        row["capacity"],
        row["warn_below"],
        row["updated_at"],
        row["kind"],
    )


def _change(row: Any) -> StockChange:
    return StockChange(
        row["id"],
        row["at"],
        row["instrument"],
        row["consumable"],
        row["change"],
        row["amount"],
        row["after"],
        row["lot"],
        row["experiment_id"],
        row["who"],
        row["why"],
    )


def _task(row: Any) -> TaskRecord:
    outcome = row["outcome"]
    return TaskRecord(
        row["id"],
        row["kind"],
        row["state"],
        row["title"],
        row["detail"],
        row["instrument"],
        row["consumable"],
        row["workcell"],
        row["experiment_id"],
        row["opened_at"],
        row["opened_by"],
        row["acknowledged_at"],
        row["acknowledged_by"],
        row["closed_at"],
        row["closed_by"],
        loads(outcome) if outcome else None,
    )
