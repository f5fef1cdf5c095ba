"""Keeping the lab's stocks: an experiment starts only when what is left covers what it needs, and a
person is asked (a task) to refill what ran short; the workcells that need it wait meanwhile.

What an experiment needs comes from its campaign's ``procedure.needs`` (``needs(recipe, **options)`` ->
``{"device.consumable": amount}``), mapped to the workcell's instruments. What is left is the store's
figure less what the experiments in flight still have to take of it (their needs less what their
instruments have reported using so far), so two workcells sharing a feeder never both count on its last
vial. A stock with a task still to do is not used at all: the instrument waits for the person.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sdl.daemon import protocol as p
from sdl.daemon.state import LabState
from sdl.optimizer import make_optimizer
from sdl.spec.campaign import Campaign
from sdl.spec.importpaths import UnresolvedImport, resolve
from sdl.spec.lab import LabSpec
from sdl.spec.status import ExperimentStatus
from sdl.store import ApprovalRecord, StockRecord, TaskRecord

log = logging.getLogger("sdl.daemon")

Key = tuple[str, str]  # (instrument, consumable)
#: Who the service writes as in the stock and task records.
SERVICE = "lab service"
#: How long the lab's ``on_task`` command may take.
HOOK_TIMEOUT_S = 30.0


class NeedsError(ValueError):
    """A campaign's ``needs`` failed, or returned something other than {'device.consumable': amount}."""


@dataclass(frozen=True)
class Shortfall:
    instrument: str
    consumable: str
    needed: float
    left: float
    unit: str
    #: The most the stock can hold, when that is less than what is needed: no refill will ever cover it.
    never: float | None = None

    def describe(self) -> str:
        if self.never is not None:
            return (
                f"{self.instrument}.{self.consumable}: needs {self.needed:g} {self.unit}, more than it holds "
                f"at most ({self.never:g} {self.unit})"
            )
        return (
            f"{self.instrument}.{self.consumable}: needs {self.needed:g} {self.unit}, "
            f"{self.left:g} {self.unit} left for it"
        )


def needs_of(
    campaign: Campaign,
    recipe: Mapping[str, Any],
    instruments: Mapping[str, str],
    options: Mapping[str, Any],
    base_dir: Path | None,
) -> dict[Key, float]:
    """What one experiment of ``campaign`` with ``recipe`` uses up, by (instrument, consumable), on a workcell
    whose devices are ``instruments`` (device name -> instrument)."""
    path = campaign.procedure.needs
    if path is None:
        return {}
    try:
        function: Callable[..., Any] = resolve(path, base_dir)
    except UnresolvedImport as exc:
        raise NeedsError(f"procedure.needs {path!r} does not resolve: {exc}") from exc
    try:
        declared = function(dict(recipe), **{**campaign.procedure.options, **options})
    except Exception as exc:
        raise NeedsError(f"procedure.needs {path!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(declared, Mapping):
        raise NeedsError(f"procedure.needs {path!r} returned {type(declared).__name__}, not a mapping")
    out: dict[Key, float] = {}
    for name, amount in cast(Mapping[object, object], declared).items():
        device, _, consumable = str(name).partition(".")
        if device not in instruments or not consumable:
            allowed = ", ".join(sorted(instruments)) or "none"
            raise NeedsError(
                f"procedure.needs {path!r}: {name!r} is not 'device.consumable' with a device of the "
                f"campaign (devices: {allowed})"
            )
        try:
            value = float(amount)  # type: ignore[arg-type]  # checked here: a user's function returned it
        except (TypeError, ValueError):
            raise NeedsError(f"procedure.needs {path!r}: {name!r} is {amount!r}, not an amount") from None
        if value > 0:
            key = (instruments[device], consumable)
            out[key] = out.get(key, 0.0) + value
    return out


def shortfalls(
    needs: Mapping[Key, float],
    stocks: Mapping[Key, StockRecord],
    claimed: Mapping[Key, float],
) -> list[Shortfall]:
    """The stocks that do not cover ``needs`` once ``claimed`` (what experiments in flight will still take) is
    set aside. A stock the inventory does not track never falls short."""
    out: list[Shortfall] = []
    for key, needed in sorted(needs.items()):
        stock = stocks.get(key)
        if stock is None:
            continue
        left = stock.available - claimed.get(key, 0.0)
        never = stock.capacity if stock.capacity is not None and needed > stock.capacity + 1e-9 else None
        if needed > left + 1e-9:
            out.append(Shortfall(key[0], key[1], needed, max(left, 0.0), stock.unit, never))
    return out


def outlook(
    campaign: Campaign,
    lab: LabSpec,
    workcells: Sequence[str],
    stocks: Mapping[Key, StockRecord],
    base_dir: Path | None,
    samples: int = 32,
) -> list[str]:
    """What the campaign's whole budget will take of the lab's stocks, said before it starts: for each stock
    it will draw more of than is there, about how much (its needs averaged over recipes drawn uniformly from
    the search space, the budget shared evenly by ``workcells``) and how many refills that is; and any
    stock a single recipe may need more of than it can hold. Raises :class:`NeedsError`."""
    if campaign.procedure.needs is None or not stocks or not workcells:
        return []
    sampler = make_optimizer(campaign.space, campaign.optimizer.model_copy(update={"kind": "random"}))
    recipes = [proposal.recipe for proposal in sampler.propose([], [], n=samples)]
    share = campaign.budget.max_experiments / len(workcells)
    total: dict[Key, float] = {}
    most: dict[Key, float] = {}
    users: dict[Key, set[str]] = {}
    for workcell in workcells:
        instruments = lab.instruments_for(workcell, campaign)
        options = lab.workcells[workcell].options if campaign.procedure.plan is not None else {}
        for recipe in recipes:
            for key, amount in needs_of(campaign, recipe, instruments, options, base_dir).items():
                total[key] = total.get(key, 0.0) + amount * share / len(recipes)
                most[key] = max(most.get(key, 0.0), amount)
                users.setdefault(key, set()).add(workcell)
    notes: list[str] = []
    for key, needed in sorted(total.items()):
        stock = stocks.get(key)
        if stock is None:
            continue
        name, unit = f"{key[0]}.{key[1]}", stock.unit
        room = stock.capacity if stock.capacity is not None else stock.available
        if most[key] > room:
            notes.append(
                f"{name}: a recipe may need up to {most[key]:.4g} {unit}, more than it holds at most "
                f"({room:.4g} {unit}); such a proposal fails, and the optimizer learns to avoid it"
            )
        if needed > stock.available:
            refills = math.ceil((needed - stock.available) / room) if room > 0 else 0
            each = needed / (share * len(users[key]))
            notes.append(
                f"{name}: the budget of {campaign.budget.max_experiments} will take about {needed:.4g} "
                f"{unit} ({each:.3g} per experiment); {stock.available:.4g} {unit} "
                f"{'of room are' if stock.kind == 'waste' else 'are'} left: expect about {refills} "
                f"{'emptying(s)' if stock.kind == 'waste' else 'refill(s)'} of {room:.4g} {unit} (sdl tasks)"
            )
    return notes


def declared(lab: LabSpec) -> dict[Key, StockRecord]:
    """The stocks as the lab file declares them (a lab's first start), for what needs no store."""
    return {
        key: StockRecord(*key, s.amount, s.unit, s.lot, s.material, s.capacity, s.warn_below, "", s.kind)
        for key, s in lab.stocks().items()
    }


class StockKeeper:
    def __init__(self, state: LabState) -> None:
        self.state = state
        #: What each experiment in flight was started needing.
        self.claims: dict[int, dict[Key, float]] = {}
        #: Questions plans wait on: task id -> (workcell, the worker's request number).
        self.asks: dict[int, tuple[str, int]] = {}

    @property
    def store(self) -> Any:
        return self.state.store

    def declare(self) -> None:
        """Add the lab file's stocks the store does not know yet (the record keeps what it knows)."""
        declared = {key: stock.model_dump() for key, stock in self.state.lab.stocks().items()}
        added = self.store.declare_stocks(declared, who="lab file")
        if added:
            log.info("inventory: %s declared by the lab file", ", ".join(added))
        for task in self.store.tasks(pending=True):  # still to do when the last service stopped
            if task.kind == "question":  # its plan ended with that service
                self.withdraw(task.id, "the lab service stopped while it waited")
            else:
                self.alert(task)

    def alert(self, task: TaskRecord) -> None:
        """A task still to do is on the lab's alerts (status, page) until it is done or cancelled."""
        where = f" (workcell {task.workcell} waits)" if task.workcell else ""
        message = f"task {task.id}: {task.title}{where}: {task.detail or ''}".rstrip(": ")
        self.state.raise_alert(f"task:{task.id}", "task", message, task.instrument)

    def waiting(self) -> dict[str, str]:
        """Instruments that wait for a person (a refill task still to do), with why."""
        return {
            task.instrument: f"waits for task {task.id}: {task.title}"
            for task in self.store.tasks(pending=True)
            if task.kind == "refill" and task.instrument is not None
        }

    def claimed(self, besides: int | None = None) -> dict[Key, float]:
        """What the experiments in flight (but ``besides``) will still take, by stock."""
        for experiment_id in list(self.claims):  # ended by any path (its worker lost, the service's stop)
            if self.store.experiment(experiment_id).status is not ExperimentStatus.RUNNING:
                del self.claims[experiment_id]
        ids = [e for e in self.claims if e != besides]
        used = self.store.used_by(ids)
        out: dict[Key, float] = {}
        for experiment_id in ids:
            for key, amount in self.claims[experiment_id].items():
                out[key] = out.get(key, 0.0) + max(0.0, amount - used[experiment_id].get(key, 0.0))
        return out

    def check(self, needs: Mapping[Key, float], workcell: str, campaign_id: str) -> list[Shortfall]:
        """What keeps an experiment needing ``needs`` from starting; a refill task for each stock a refill
        can cover (one that never can is the recipe's own failure: the caller ends it so)."""
        short = shortfalls(needs, self.store.stocks(), self.claimed())
        if any(s.never is not None for s in short):
            return short
        for s in short:
            self.ask_refill(s.instrument, s.consumable, s.describe(), workcell=workcell)
        if short:
            log.warning(
                "workcell %s waits for a refill before campaign %s's next experiment: %s",
                workcell,
                campaign_id,
                "; ".join(s.describe() for s in short),
            )
        return short

    def started(self, experiment_id: int, needs: Mapping[Key, float]) -> None:
        if needs:
            self.claims[experiment_id] = dict(needs)

    def finished(self, experiment_id: int) -> None:
        self.claims.pop(experiment_id, None)
        for task in self.store.tasks(pending=True):  # a question of an experiment that ended is moot
            if task.kind == "question" and task.experiment_id == experiment_id:
                self.withdraw(task.id, "its experiment ended")

    # -- a plan's questions ------------------------------------------------------------------------------

    def asked(self, workcell: str, message: p.Ask) -> None:
        """A plan asks a person (a task whose done note is the answer), or withdraws its question."""
        if message.withdraw:
            task_id = next(
                (t for t, asked in self.asks.items() if asked == (workcell, message.request)), None
            )
            if task_id is not None:
                self.withdraw(task_id, "the plan stopped waiting (timed out, or aborted)")
            return
        state = self.state
        with state.recording():
            task = self.store.open_task(
                "question",
                f"answer: {message.question[:120]}",
                who=SERVICE,
                detail=message.question,
                workcell=workcell,
                experiment_id=message.experiment_id,
            )
            state.publish("task.opened", task_body(task))
            self.alert(task)
        self.asks[task.id] = (workcell, message.request)
        if state.lab.on_task:
            state.in_background(page(task, state.lab.on_task))

    def withdraw(self, task_id: int, why: str) -> None:
        with self.state.recording():
            task = self.store.close_task(task_id, "cancelled", SERVICE, {"note": why})
            self.closed(task)

    def answer(self, task: TaskRecord) -> None:
        """Hand a question's answer (its done note; None when cancelled) to the plan waiting for it."""
        asked = self.asks.pop(task.id, None)
        cell = self.state.cells.get(asked[0]) if asked else None
        if asked is None or cell is None:
            return
        answer = str((task.outcome or {}).get("note") or "") if task.state == "done" else None
        self.state.in_background(self.state.send(cell, p.Answered(request=asked[1], answer=answer)))

    def ask_refill(
        self,
        instrument: str,
        consumable: str,
        why: str,
        *,
        workcell: str | None = None,
        experiment_id: int | None = None,
    ) -> TaskRecord:
        """Open a refill task for the stock unless one is still to do; announce it."""
        state = self.state
        pending = self.store.pending_task(instrument, consumable)
        if pending is not None:
            return pending
        with state.recording():
            task = self.store.open_task(
                "refill",
                f"{verb(self.store.stock(instrument, consumable))} {instrument}.{consumable}",
                who=SERVICE,
                detail=why,
                instrument=instrument,
                consumable=consumable,
                workcell=workcell,
                experiment_id=experiment_id,
            )
            state.publish("task.opened", task_body(task))
            self.alert(task)
        if state.lab.on_task:
            state.in_background(page(task, state.lab.on_task))
        return task

    def closed(self, task: TaskRecord) -> None:
        """Announce a task done or cancelled (in the caller's recording), clear its alert, look for work."""
        self.state.publish("task.closed", task_body(task))
        self.state.clear_alert(f"task:{task.id}", f"task {task.id} {task.state} by {task.closed_by}")
        self.answer(task)
        self.state.wake.set()


def verb(stock: StockRecord | None) -> str:
    """What a person does to a stock that ran short: refill a supply, empty a waste."""
    return "empty" if stock is not None and stock.kind == "waste" else "refill"


def task_body(task: TaskRecord) -> dict[str, Any]:
    """A task as events carry it."""
    return {
        "id": task.id,
        "kind": task.kind,
        "state": task.state,
        "title": task.title,
        "detail": task.detail,
        "instrument": task.instrument,
        "consumable": task.consumable,
        "workcell": task.workcell,
        "experiment_id": task.experiment_id,
        "outcome": task.outcome,
    }


async def page(task: TaskRecord, command: list[str]) -> None:
    """Run the lab's ``on_task`` command for a new task (its failure is logged, nothing more)."""
    environment = {
        **os.environ,
        "SDL_TASK_ID": str(task.id),
        "SDL_TASK_KIND": task.kind,
        "SDL_TASK_TITLE": task.title,
        "SDL_TASK_DETAIL": task.detail or "",
        "SDL_TASK_WORKCELL": task.workcell or "",
    }
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        log.error("on_task %s could not start for task %d: %s", command[0], task.id, exc)
        return
    try:
        output, _ = await asyncio.wait_for(process.communicate(), HOOK_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        log.error("on_task %s for task %d took over %g s; killed", command[0], task.id, HOOK_TIMEOUT_S)
        return
    text = output.decode(errors="replace").strip()[:500]
    if process.returncode:
        log.error(
            "on_task %s for task %d failed (exit %d): %s", command[0], task.id, process.returncode, text
        )
    else:
        log.info("on_task %s for task %d: %s", command[0], task.id, text or "done")


def approval_body(record: ApprovalRecord) -> dict[str, Any]:
    """A proposal waiting for approval (or decided), as events carry it."""
    return {
        "experiment_id": record.experiment_id,
        "seq": record.seq,
        "recipe": record.recipe,
        "state": record.state,
        "why": record.why,
        "decided_by": record.decided_by,
        "reason": record.reason,
    }
