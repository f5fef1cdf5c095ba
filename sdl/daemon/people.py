"""The API's handlers for what the lab holds and what people are asked to do: the inventory, its changes,
restocks, tasks acknowledged, done or cancelled, and proposals approved or rejected (docs/inventory.md).
Each writes to the store, with the events announcing it, in one transaction; the server audits every one
that changes something."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sdl.access.roles import Caller
from sdl.api import models as m
from sdl.api.convert import proposal_status, stock_change, stock_status, task_status
from sdl.api.models import ApiError
from sdl.daemon.state import LabState
from sdl.daemon.stock import StockKeeper, approval_body, task_body
from sdl.store import ApprovalError, InventoryError, Store, TaskRecord


class PeopleHandlers:
    def __init__(self, state: LabState, stock: StockKeeper) -> None:
        self.state = state
        self.stock = stock

    @property
    def store(self) -> Store:
        return self.state.store

    def table(self) -> dict[type[m.Request], Callable[[Any, Caller], Awaitable[Any]]]:
        return {
            m.ListInventory: self.inventory,
            m.ListStockChanges: self.stock_changes,
            m.Restock: self.restock,
            m.ListTasks: self.tasks,
            m.AcknowledgeTask: self.acknowledge_task,
            m.CompleteTask: self.complete_task,
            m.CancelTask: self.cancel_task,
            m.ListApprovals: self.approvals,
            m.ApproveProposal: self.approve,
            m.RejectProposal: self.reject,
        }

    async def inventory(self, request: m.ListInventory, caller: Caller) -> m.StockList:
        claimed = self.stock.claimed()
        tasks = {(t.instrument, t.consumable): t.id for t in self.store.tasks(pending=True)}
        return m.StockList(
            stocks=[
                stock_status(record, claimed.get(key, 0.0), tasks.get(key))
                for key, record in self.store.stocks().items()
            ]
        )

    async def stock_changes(self, request: m.ListStockChanges, caller: Caller) -> m.StockChangeList:
        changes = self.store.stock_changes(
            experiment_id=request.experiment_id, after=request.after_id, limit=request.limit
        )
        return m.StockChangeList(changes=[stock_change(c) for c in changes])

    async def restock(self, request: m.Restock, caller: Caller) -> m.Stock:
        state = self.state
        try:
            with state.recording():
                record = self.store.restock(
                    request.instrument,
                    request.consumable,
                    request.change,
                    request.amount,
                    lot=request.lot,
                    who=caller.name,
                    why=request.reason,
                )
                state.publish("stock.changed", {"instrument": record.instrument,
                                                "consumable": record.consumable, "change": request.change,
                                                "amount": record.amount, "lot": record.lot,
                                                "who": caller.name})  # fmt: skip
        except InventoryError as exc:
            raise ApiError("not_found" if "no stock" in str(exc) else "invalid_params", str(exc)) from None
        state.wake.set()
        return stock_status(record)

    async def tasks(self, request: m.ListTasks, caller: Caller) -> m.TaskList:
        tasks = self.store.tasks(pending=not request.all, limit=request.limit)
        return m.TaskList(tasks=[task_status(t) for t in tasks])

    def _task(self, task_id: int) -> TaskRecord:
        task = self.store.task(task_id)
        if task is None:
            raise ApiError("not_found", f"no task {task_id} (see `sdl tasks --all`)")
        if not task.pending:
            raise ApiError("conflict", f"task {task_id} is {task.state} already (by {task.closed_by})")
        return task

    async def acknowledge_task(self, request: m.AcknowledgeTask, caller: Caller) -> m.Task:
        task = self._task(request.task_id)
        if task.state == "acknowledged":
            raise ApiError("conflict", f"task {task.id} was acknowledged by {task.acknowledged_by} already")
        with self.state.recording():
            task = self.store.acknowledge_task(task.id, caller.name)
            self.state.publish("task.acknowledged", task_body(task))
        return task_status(task)

    async def complete_task(self, request: m.CompleteTask, caller: Caller) -> m.Task:
        task = self._task(request.task_id)
        outcome: dict[str, Any] = {"note": request.note} if request.note else {}
        stock = (
            self.store.stock(task.instrument, task.consumable)
            if task.kind == "refill" and task.instrument and task.consumable
            else None
        )
        if stock is None and (request.amount is not None or request.lot is not None):
            raise ApiError("invalid_params", f"task {task.id} is not a refill of a stock the inventory keeps")
        waste = stock is not None and stock.kind == "waste"
        default = 0.0 if waste else stock.capacity if stock else None
        amount = request.amount if request.amount is not None else default
        if stock is not None and amount is None:
            raise ApiError(
                "invalid_params",
                f"say how much {task.instrument}.{task.consumable} holds now (amount, in {stock.unit}): "
                "its capacity is not declared in the lab file",
            )
        state = self.state
        try:
            with state.recording():
                if stock is not None and amount is not None:
                    new_lot = bool(request.lot) and request.lot != stock.lot
                    change = "empty" if waste else "replace" if new_lot else "refill"
                    record = self.store.restock(
                        stock.instrument, stock.consumable, change, amount, lot=request.lot,
                        who=caller.name, why=f"task {task.id}",
                    )  # fmt: skip
                    outcome.update(change=change, amount=record.amount, lot=record.lot, unit=record.unit)
                    state.publish("stock.changed", {"instrument": record.instrument,
                                                    "consumable": record.consumable, "change": change,
                                                    "amount": record.amount, "lot": record.lot,
                                                    "who": caller.name})  # fmt: skip
                task = self.store.close_task(task.id, "done", caller.name, outcome)
                self.stock.closed(task)
        except InventoryError as exc:
            raise ApiError("invalid_params", str(exc)) from None
        return task_status(task)

    async def cancel_task(self, request: m.CancelTask, caller: Caller) -> m.Task:
        task = self._task(request.task_id)
        with self.state.recording():
            outcome = {"note": request.reason} if request.reason else None
            task = self.store.close_task(task.id, "cancelled", caller.name, outcome)
            self.stock.closed(task)
        return task_status(task)

    async def approvals(self, request: m.ListApprovals, caller: Caller) -> m.ProposalList:
        records = self.store.approvals(pending=not request.all, campaign_id=request.campaign_id)
        return m.ProposalList(proposals=[proposal_status(r) for r in records])

    async def approve(self, request: m.ApproveProposal, caller: Caller) -> m.Proposal:
        return self._decide(request.experiment_id, True, caller, request.reason)

    async def reject(self, request: m.RejectProposal, caller: Caller) -> m.Proposal:
        return self._decide(request.experiment_id, False, caller, request.reason)

    def _decide(self, experiment_id: int, approve: bool, caller: Caller, reason: str | None) -> m.Proposal:
        state = self.state
        try:
            with state.recording():
                record = self.store.decide_approval(experiment_id, approve, caller.name, reason)
                state.publish("approval.decided", approval_body(record), record.campaign_id)
                state.announce()  # a rejected proposal ends failed
        except ApprovalError as exc:
            kind = "conflict" if "already" in str(exc) else "not_found"
            raise ApiError(kind, f"{exc} (see `sdl approvals`)") from None
        state.active.refresh_experiment(record.campaign_id, experiment_id)
        state.wake.set()
        return proposal_status(record)
