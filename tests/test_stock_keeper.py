"""An instrument that ran out is a task for a person, not a fault of the instrument: the lab service opens a
refill task, raises an alert, holds the instrument out of new work, and counts nothing against its health;
the task done restocks it, clears the alert and frees the instrument (no processes, a real store)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from test_lab_health import ADMIN, Lab, run

from sdl.api import models as m
from sdl.api.models import ApiError
from sdl.daemon import protocol as p
from sdl.daemon.handlers import Handlers
from sdl.daemon.stock import StockKeeper
from sdl.daemon.supervision import Supervisor
from sdl.store import Decision


def test_an_empty_syringe_opens_a_refill_task_and_costs_the_pump_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path)
        lab.store.declare_stocks({("pump", "red"): {"amount": 40.0, "unit": "uL", "capacity": 100.0,
                                                    "lot": "R-1"}}, who="lab file")  # fmt: skip
        stock = StockKeeper(lab.state)
        supervisor = Supervisor(lab.state, lab.health, lab.leases, None, stock)  # type: ignore[arg-type]
        handlers = Handlers(lab.state, lab.health, supervisor, stop=lambda abort: None, stock=stock)
        campaign_id = lab.store.create_campaign(name="c", spec={}, seed=0, max_experiments=5)
        experiment = lab.store.add_proposal(campaign_id, {"x": 1.0}, Decision("random", None, None, 0.0))
        lab.store.start_experiment(experiment.id)
        lab.state.cells["w1"].experiment = experiment.id
        failure = "pump: pump 01 (red): syringe empty: 0 uL left, 120 uL needed"
        for _ in range(4):  # more than quarantine_after: still no fault
            finished = p.Finished(experiment_id=experiment.id, status="faulted", failure=failure,
                                  fault_kind="empty", fault_instrument="pump", fault_consumable="red",
                                  instruments=["pump"])  # fmt: skip
            supervisor.on_message(b"w1", finished)
        record = lab.store.instrument("pump")
        assert record is not None and (record.faults, record.state.value) == (0, "ok")
        [task] = lab.store.tasks(pending=True)  # one task per stock, however often it is reported
        assert (task.kind, task.instrument, task.consumable, task.workcell, task.detail) == (
            "refill", "pump", "red", "w1", failure
        )  # fmt: skip
        assert stock.waiting() == {"pump": f"waits for task {task.id}: refill pump.red"}
        [alert] = lab.state.alerts.values()
        assert (alert.kind, alert.subject) == ("task", "pump")
        assert [e["id"] for e in lab.events("task.opened")] == [task.id]

        with pytest.raises(ApiError, match="not a refill of a stock"):
            other = lab.store.open_task("other", "load a rack", who="ana")
            await handlers.people.complete_task(m.CompleteTask(task_id=other.id, amount=5), ADMIN)
        done = await handlers.people.complete_task(m.CompleteTask(task_id=task.id, lot="R-2"), ADMIN)
        assert done.state == "done" and done.outcome == {"change": "replace", "amount": 100.0, "lot": "R-2",
                                                         "unit": "uL"}  # fmt: skip
        red = lab.store.stock("pump", "red")
        assert red is not None and (red.amount, red.lot) == (100.0, "R-2")  # filled to its capacity
        assert stock.waiting() == {} and "task:1" not in lab.state.alerts
        assert [e["state"] for e in lab.events("task.closed")] == ["done"]
        with pytest.raises(ApiError, match="done already"):
            await handlers.people.complete_task(m.CompleteTask(task_id=task.id), ADMIN)

    run(scenario())


def test_the_labs_on_task_command_runs_for_each_new_task_with_the_task_in_its_environment(
    tmp_path: Path,
) -> None:
    out = tmp_path / "paged.txt"
    write = (
        "import os, pathlib; pathlib.Path(os.environ['OUT']).open('a').write("
        "' | '.join(os.environ[k] for k in ('SDL_TASK_ID', 'SDL_TASK_KIND', 'SDL_TASK_TITLE', "
        "'SDL_TASK_DETAIL', 'SDL_TASK_WORKCELL')) + '\\n')"
    )

    async def scenario() -> None:
        lab = Lab(tmp_path)
        lab.state.lab = lab.state.lab.model_copy(update={"on_task": [sys.executable, "-c", write]})
        stock = StockKeeper(lab.state)
        first = stock.ask_refill("pump", "red", "needs 120 uL, 40 uL left for it", workcell="w1")
        stock.ask_refill("pump", "red", "needs 130 uL, 40 uL left for it", workcell="w1")  # the same task
        lab.state.lab = lab.state.lab.model_copy(update={"on_task": [str(tmp_path / "missing")]})
        stock.ask_refill("arm", "feeder", "needs 1 vials, 0 vials left for it")  # cannot start: logged only
        await asyncio.gather(*lab.state.background())
        assert (
            out.read_text()
            == f"{first.id} | refill | refill pump.red | needs 120 uL, 40 uL left for it | w1\n"
        )

    os.environ["OUT"] = str(out)
    try:
        run(scenario())
    finally:
        del os.environ["OUT"]
