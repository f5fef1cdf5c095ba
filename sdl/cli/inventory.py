"""Commands for what the lab holds and what it asks of people: inventory, restock, tasks, task (ack, done,
cancel). Each takes --connect URL (default: the service of --data-dir).

Without a lab service these fail at once, before the client and the API's models are imported: each
command imports what it uses when it runs (sdl/cli/__init__.py).
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from sdl.cli.common import EXIT_OK, BadInput
from sdl.cli.control import adder, client_options, connected, typed_request, when

if TYPE_CHECKING:
    from sdl.api import models as m
    from sdl.api.client import Client

#: The most a stock can be said to hold (the API's bound).
MAX_AMOUNT = 1e12
#: Request fields by the argument that gives them, for a value the API's models refuse.
ARGUMENTS = {"task_id": "ID", "amount": "the amount", "lot": "--lot", "note": "--note", "reason": "--reason"}
#: How a restock reads in a sentence.
DONE_AS = {"refill": "refilled", "replace": "replaced", "correct": "corrected"}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    add = adder(commands, common)
    client = client_options()  # for the `task` subcommands

    p = add(
        "inventory",
        "the lab's stocks: what each holds, its lot, what is claimed, refills to do",
        "Every stock the lab service keeps (a syringe's fill, a reservoir, a feeder's vials, as the lab "
        "file's inventory: section declares them): what it holds of its capacity, its lot and material, what "
        "the experiments in flight will still take of it, LOW when less is left than its warn_below, and the "
        "refill task still to do for it. With --changes, the inventory's transactions instead: declared by "
        "the lab file, consumed by an experiment, refilled, replaced or corrected by a person, with who and "
        "why.",
        cmd_inventory,
    )
    p.add_argument("--changes", action="store_true", help="list the stock transactions instead")
    p.add_argument(
        "--experiment",
        type=int,
        metavar="ID",
        help="only what experiment ID consumed (implies --changes)",
    )
    p.add_argument(
        "--after", type=int, default=0, metavar="ID", help="with --changes: only those after change ID"
    )
    p.add_argument(
        "--limit", type=int, default=1000, help="with --changes: at most this many changes (default 1000)"
    )

    p = add(
        "restock",
        "record a refill, a new lot or a count of a stock",
        "Record what a person did to a stock: refilled it (it holds AMOUNT now, in the stock's unit, of the "
        "same lot unless --lot gives another), replaced it with a new lot (--replace --lot L), or counted "
        "what is in it (--correct). No stock holds more than its capacity. A stock with a refill task still "
        "to do stays unused until that task is done or cancelled (`sdl tasks`, `sdl task done`).",
        cmd_restock,
    )
    p.add_argument("stock", metavar="INSTRUMENT.CONSUMABLE", help="the stock, as `sdl inventory` names it")
    p.add_argument("amount", metavar="AMOUNT", type=float, help="what it holds now (the stock's unit)")
    p.add_argument("--lot", metavar="L", help="the lot it was filled from (default: the one it had)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--replace", action="store_true", help="a new lot replaced what was in it (give --lot)")
    kind.add_argument("--correct", action="store_true", help="a person counted it: the record was wrong")
    p.add_argument("--reason", metavar="TEXT", help="why, for the record")

    p = add(
        "tasks",
        "what people are asked to do (refills), newest first",
        "The tasks the lab service asks of people, newest first: a refill of a stock that ran short or ran "
        "out (the workcell named waits for it), with who acknowledged it. Only those still to do, unless "
        "--all. `sdl task ack|done|cancel ID` answers one.",
        cmd_tasks,
    )
    p.add_argument("--all", action="store_true", help="done and cancelled tasks too")
    p.add_argument("--limit", type=int, default=200, help="at most this many tasks (default 200)")

    task = commands.add_parser(
        "task",
        parents=[common],
        help="acknowledge, complete or cancel a task",
        description="Answer a task of `sdl tasks`: say someone is on it (ack), that it is done (done: for a "
        "refill, the stock is restocked with it and the workcells waiting for it run again), or that nobody "
        "will do it (cancel: the workcells run again on what the record says is left).",
    )
    actions = task.add_subparsers(dest="task_command", metavar="ACTION", required=True)

    p = actions.add_parser(
        "ack",
        parents=[common, client],
        help="say someone is on a task",
        description="Say someone is on a task: the task shows who acknowledged it, and stays to do.",
    )
    p.add_argument("task_id", type=int, metavar="ID", help="the task's id (`sdl tasks`)")
    p.set_defaults(handler=cmd_task_ack)

    p = actions.add_parser(
        "done",
        parents=[common, client],
        help="say a task is done (a refill restocks its stock)",
        description="Say a task is done. For a refill, the stock is restocked: it holds --amount now "
        "(default: its capacity), of lot --lot (default: the one it had; another lot records a replacement), "
        "and the workcells waiting for it run again.",
    )
    p.add_argument("task_id", type=int, metavar="ID", help="the task's id (`sdl tasks`)")
    p.add_argument(
        "--amount", type=float, metavar="X", help="what the stock holds now (default: its capacity)"
    )
    p.add_argument("--lot", metavar="L", help="the lot it was filled from (default: the one it had)")
    p.add_argument("--note", metavar="TEXT", help="what was done, for the record")
    p.set_defaults(handler=cmd_task_done)

    p = actions.add_parser(
        "cancel",
        parents=[common, client],
        help="drop a task nobody will do",
        description="Drop a task nobody will do. The workcells waiting for a refill run again, on what the "
        "record says is left (so one that is still short asks again).",
    )
    p.add_argument("task_id", type=int, metavar="ID", help="the task's id (`sdl tasks`)")
    p.add_argument("--reason", metavar="TEXT", help="why, for the record")
    p.set_defaults(handler=cmd_task_cancel)


# -- requests ------------------------------------------------------------------------------------------------


def call(client: Client, method: str, **fields: Any) -> Any:
    return client.call(typed_request(method, ARGUMENTS, **fields))


def check_amount(amount: float | None, what: str) -> None:
    if amount is not None and not (math.isfinite(amount) and 0 <= amount <= MAX_AMOUNT):
        raise BadInput(f"{what} must be a number from 0 to {MAX_AMOUNT:g}, not {amount:g}")


def number(value: float) -> str:
    """An amount as people write it: 10000, 2.5, 1.5e+06."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"


def stock_name(instrument: str | None, consumable: str | None) -> str:
    return f"{instrument}.{consumable}"


# -- inventory -----------------------------------------------------------------------------------------------


def cmd_inventory(args: argparse.Namespace) -> int:
    if args.experiment is not None or args.changes:
        return _changes(args)
    with connected(args) as client:
        reply: m.StockList = call(client, "ListInventory")
    from rich.console import Console
    from rich.table import Table

    out = Console(width=max(Console().width, 120))
    if not reply.stocks:
        out.print("no stocks: the lab file declares no inventory", highlight=False)
        return EXIT_OK
    table = Table(title="inventory", title_justify="left")
    for column in ("stock", "amount", "lot", "material", "claimed", "low", "task"):
        table.add_column(column)
    for s in reply.stocks:
        held = number(s.amount) + (f"/{number(s.capacity)}" if s.capacity is not None else "")
        table.add_row(
            stock_name(s.instrument, s.consumable),
            f"{held} {s.unit}",
            s.lot or "",
            s.material or "",
            f"{number(s.claimed)} {s.unit}" if s.claimed else "",
            "LOW" if s.low else "",
            str(s.task) if s.task is not None else "",
            style="red" if s.low or s.task is not None else None,
        )
    out.print(table)
    return EXIT_OK


def _changes(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise BadInput(f"--limit must be at least 1, got {args.limit}")
    if args.after < 0:
        raise BadInput(f"--after must be 0 or more, got {args.after}")
    changes: list[m.StockChange] = []
    with connected(args) as client:
        if args.experiment is not None:
            changes = call(client, "ListStockChanges", experiment_id=args.experiment).changes
        else:
            while len(changes) < args.limit:
                batch = call(
                    client,
                    "ListStockChanges",
                    after_id=changes[-1].id if changes else args.after,
                    limit=min(10000, args.limit - len(changes)),
                ).changes
                changes += batch
                if not batch:
                    break
        stocks: m.StockList = call(client, "ListInventory")
    units = {(s.instrument, s.consumable): s.unit for s in stocks.stocks}
    from rich.console import Console
    from rich.table import Table

    out = Console(width=max(Console().width, 140))
    if not changes:
        what = (
            f"experiment {args.experiment} consumed nothing" if args.experiment is not None else "no changes"
        )
        out.print(f"{what} in the inventory's record", highlight=False)
        return EXIT_OK
    title = (
        f"stock changes of experiment {args.experiment}" if args.experiment is not None else "stock changes"
    )
    table = Table(title=title, title_justify="left")
    for column in ("id", "at (UTC)", "stock", "change", "used", "after", "lot", "experiment", "who", "why"):
        table.add_column(column)
    for c in changes:
        unit = units.get((c.instrument, c.consumable), "")
        table.add_row(
            str(c.id),
            when(c.at),
            stock_name(c.instrument, c.consumable),
            c.change,
            f"{number(c.amount)} {unit}".rstrip() if c.change == "consume" else "",
            f"{number(c.after)} {unit}".rstrip(),
            c.lot or "",
            str(c.experiment_id) if c.experiment_id is not None else "",
            c.who,
            c.why or "",
        )
    out.print(table)
    if args.experiment is None and len(changes) == args.limit:
        out.print(f"(the first {args.limit}: --after {changes[-1].id} for the next)", highlight=False)
    return EXIT_OK


def cmd_restock(args: argparse.Namespace) -> int:
    instrument, _, consumable = args.stock.partition(".")
    if not instrument or not consumable:
        raise BadInput(
            f"{args.stock!r} is not INSTRUMENT.CONSUMABLE (e.g. pumps_a.red): "
            "`sdl inventory` lists the stocks"
        )
    check_amount(args.amount, "the amount")
    if args.replace and not args.lot:
        raise BadInput("--replace needs --lot: the new lot")
    change = "replace" if args.replace else "correct" if args.correct else "refill"
    with connected(args) as client:
        stock: m.Stock = call(
            client,
            "Restock",
            instrument=instrument,
            consumable=consumable,
            change=change,
            amount=args.amount,
            lot=args.lot,
            reason=args.reason,
        )
        now = {(s.instrument, s.consumable): s for s in call(client, "ListInventory").stocks}
    lot = f", lot {stock.lot}" if stock.lot else ""
    name = stock_name(stock.instrument, stock.consumable)
    print(f"{name} {DONE_AS[change]} to {number(stock.amount)} {stock.unit}{lot}")
    if stock.low and stock.warn_below is not None:
        print(f"it is LOW: less than its warn_below of {number(stock.warn_below)} {stock.unit}")
    pending = now.get((stock.instrument, stock.consumable))
    if pending is not None and pending.task is not None:
        print(
            f"task {pending.task} (refill {name}) is still to do: "
            f"nothing uses this stock until it is closed (`sdl task cancel {pending.task}` once this restock "
            "is enough)"
        )
    return EXIT_OK


# -- tasks ---------------------------------------------------------------------------------------------------


def cmd_tasks(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise BadInput(f"--limit must be at least 1, got {args.limit}")
    with connected(args) as client:
        reply: m.TaskList = call(client, "ListTasks", all=args.all, limit=args.limit)
    from rich.console import Console
    from rich.table import Table

    out = Console(width=max(Console().width, 140))
    if not reply.tasks:
        out.print("no tasks" if args.all else "no tasks to do", highlight=False)
        return EXIT_OK
    table = Table(title="tasks" if args.all else "tasks to do", title_justify="left")
    columns = ["id", "state", "title", "waiting", "opened (UTC)", "detail"]
    for column in [*columns, "closed", "outcome"] if args.all else columns:
        table.add_column(column)
    for t in reply.tasks:
        state = f"{t.state} ({t.acknowledged_by})" if t.state == "acknowledged" else t.state
        row = [str(t.id), state, t.title, t.workcell or "", when(t.opened_at), t.detail or ""]
        if args.all:
            closed = f"{when(t.closed_at)} by {t.closed_by}" if t.closed_at else ""
            row += [closed, outcome(t) if t.outcome else ""]
        table.add_row(*row)
    out.print(table)
    return EXIT_OK


def outcome(task: m.Task) -> str:
    """What was done for ``task``, in words: 'motor.feeder refilled to 10 vials, lot V-2; note: ...'."""
    done = task.outcome or {}
    parts: list[str] = []
    if "amount" in done and task.instrument and task.consumable:
        lot = f", lot {done['lot']}" if done.get("lot") else ""
        verb = DONE_AS.get(str(done.get("change")), "refilled")
        unit = f" {done['unit']}" if done.get("unit") else ""
        parts.append(
            f"{stock_name(task.instrument, task.consumable)} {verb} to {number(done['amount'])}{unit}{lot}"
        )
    if done.get("note"):
        parts.append(f"note: {done['note']}")
    return "; ".join(parts)


def cmd_task_ack(args: argparse.Namespace) -> int:
    with connected(args) as client:
        task: m.Task = call(client, "AcknowledgeTask", task_id=args.task_id)
    print(f"task {task.id} acknowledged by {task.acknowledged_by}: {task.title}")
    return EXIT_OK


def cmd_task_done(args: argparse.Namespace) -> int:
    check_amount(args.amount, "--amount")
    with connected(args) as client:
        task: m.Task = call(
            client, "CompleteTask", task_id=args.task_id, amount=args.amount, lot=args.lot, note=args.note
        )
    print(f"task {task.id} done: {outcome(task) or task.title}")
    if task.kind == "refill" and task.workcell:
        print(f"workcell {task.workcell} may run again")
    return EXIT_OK


def cmd_task_cancel(args: argparse.Namespace) -> int:
    with connected(args) as client:
        task: m.Task = call(client, "CancelTask", task_id=args.task_id, reason=args.reason)
    print(f"task {task.id} cancelled: {task.title}")
    if task.kind == "refill" and task.workcell:
        print(f"workcell {task.workcell} runs again on what the record says is left")
    return EXIT_OK
