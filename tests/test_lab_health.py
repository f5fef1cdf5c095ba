"""Instrument health in the lab service, without processes: the health keeper, the lease grants and the
release handler on a real store, the worker socket replaced by a list of what would have been sent, and a
clock the test moves (no sleeps, no timing)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from sdl.access.keys import KeyRing
from sdl.access.roles import Caller, Role
from sdl.api import models as m
from sdl.api.models import ApiError
from sdl.daemon import protocol as p
from sdl.daemon.cells import Cell
from sdl.daemon.handlers import Handlers
from sdl.daemon.health import HealthKeeper
from sdl.daemon.leases import LeaseGrants
from sdl.daemon.leasing import ServiceLeasing
from sdl.daemon.state import LabState
from sdl.execution.experiment import LeaseRefused
from sdl.execution.faults import classify
from sdl.spec.lab import LabSpec
from sdl.spec.status import InstrumentState, WorkcellState
from sdl.store import Store

ADMIN = Caller(name="ana", role=Role.ADMIN, origin="test")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lab:
    """A lab of one workcell w1 with instruments pump and arm (w2 shares the arm), its state on a store in
    ``tmp_path``, and every message to a worker kept in ``sent``."""

    def __init__(self, tmp_path: Path, **health: Any) -> None:
        spec = LabSpec.model_validate(
            {
                "name": "bench",
                "instruments": {
                    "pump": {"driver": "daemon_procedures:make_motor"},
                    "arm": {"driver": "daemon_procedures:make_motor"},
                },
                "workcells": {
                    "w1": {"devices": {"pump": "pump", "arm": "arm"}},
                    "w2": {"devices": {"arm": "arm"}},
                },
                "health": {"recheck_after": 10, **health},
            }
        )
        self.store = Store(tmp_path / "data")
        self.store.ensure_instruments(spec.instruments)
        self.state = LabState(spec, self.store, "daemon:test", KeyRing(tmp_path / "keys.yaml"), curve=False)
        self.clock = Clock()
        self.leases = LeaseGrants(self.state)
        self.health = HealthKeeper(self.state, self.leases, clock=self.clock)
        self.sent: list[tuple[str, BaseModel]] = []

        async def send(cell: Cell, message: BaseModel) -> None:
            self.sent.append((cell.name, message))

        self.state.send = send  # type: ignore[method-assign]
        for cell in self.state.cells.values():
            cell.identity, cell.state = cell.name.encode(), WorkcellState.IDLE

    def checks(self) -> list[str]:
        return [msg.instrument for _, msg in self.sent if isinstance(msg, p.CheckHealth)]

    def events(self, topic: str) -> list[dict[str, Any]]:
        return [e.body for e in self.store.events_since(0, 10_000) if e.topic == topic]

    async def tick(self, seconds: float) -> None:
        """Move the clock on, tick, and let what the tick started run."""
        self.clock.now += seconds
        self.health.tick(self.clock.now)
        for _ in range(3):
            await asyncio.sleep(0)

    def check_fails(self, name: str, detail: str = "pump 00: alarm A?R") -> None:
        self.health.service_result(p.ServiceResult(action="check", instrument=name, ok=False, detail=detail))
        self.state.cells["w1"].servicing.discard(name)


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


def test_automatic_rechecks_back_off_then_give_up_with_an_alert(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path, max_rechecks=3)
        lab.health.quarantine("pump", "3 experiments in a row lost to it")
        await lab.tick(9.9)
        assert lab.checks() == []  # the first check comes after recheck_after
        await lab.tick(0.1)
        assert lab.checks() == ["pump"]
        # Each failed check doubles the wait before the next: 20 s, then 40 s.
        for wait in (20.0, 40.0):
            lab.check_fails("pump")
            await lab.tick(wait - 0.1)
            assert len(lab.checks()) == 1 + (wait == 40.0), f"checked before {wait} s had passed"
            await lab.tick(0.1)
        assert lab.checks() == ["pump"] * 3
        lab.check_fails("pump")
        assert lab.state.alerts == {}
        # Three failed in a row: no more checks, ever; a person is asked for, where people look.
        for _ in range(5):
            await lab.tick(10_000)
        assert lab.checks() == ["pump"] * 3
        [alert] = lab.state.alerts.values()
        assert (alert.kind, alert.subject) == ("instrument", "pump")
        assert "3 automatic recoveries and health checks in a row failed" in alert.message
        [event] = lab.events("lab.alert")
        assert event["active"] and event["subject"] == "pump"
        assert lab.store.instrument("pump").state is InstrumentState.QUARANTINED
        # A person releases it: the alert is over.
        lab.health.release("pump")
        assert lab.state.alerts == {}
        assert [e["active"] for e in lab.events("lab.alert")] == [True, False]

    run(scenario())


def test_a_passing_recheck_releases_and_the_next_quarantine_waits_longer(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path, max_auto_releases=1)
        lab.health.quarantine("pump", "3 experiments in a row lost to it")
        await lab.tick(10)
        lab.health.service_result(p.ServiceResult(action="check", instrument="pump", ok=True))
        assert lab.store.instrument("pump").state is InstrumentState.OK
        lab.state.cells["w1"].servicing.clear()
        lab.health.quarantine("pump", "3 experiments in a row lost to it")
        await lab.tick(10)
        assert lab.checks() == ["pump"]  # its one automatic release is used: no more automatic checks
        [alert] = lab.state.alerts.values()
        assert "released automatically 1 time(s)" in alert.message

    run(scenario())


def test_an_instrument_an_operator_quarantined_is_never_checked_or_released_automatically(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path)
        lab.health.quarantine("pump", "lamp replaced (ana)", by_operator=True)
        for _ in range(5):
            await lab.tick(10_000)
        assert lab.checks() == [] and lab.state.alerts == {}
        # ... not even by the next service on the same store.
        again = HealthKeeper(lab.state, lab.leases, clock=lab.clock)
        again.tick(lab.clock.now + 10_000)
        await asyncio.sleep(0)
        assert lab.checks() == []
        lab.health.release("pump")
        lab.health.quarantine("pump", "3 experiments in a row lost to it")
        await lab.tick(10)
        assert lab.checks() == ["pump"]  # released since: the next quarantine is the lab's own again

    run(scenario())


def handlers(lab: Lab) -> Handlers:
    return Handlers(lab.state, lab.health, None, stop=lambda abort: None)  # type: ignore[arg-type]


def test_a_release_with_a_check_waits_for_it_and_is_refused_with_the_reason_when_it_fails(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path)
        lab.health.quarantine("pump", "lamp replaced (ana)", by_operator=True)
        api = handlers(lab)
        release = asyncio.ensure_future(api.release(m.ReleaseInstrument(name="pump"), ADMIN))
        for _ in range(3):
            await asyncio.sleep(0)
        assert lab.checks() == ["pump"] and not release.done()  # it waits for the worker's result
        lab.check_fails("pump", "pumps: recover failed: pump 00: alarm A?R: pump was reset")
        with pytest.raises(ApiError) as refused:
            await release
        assert refused.value.error.type == "refused"
        assert "pump stays quarantined" in str(refused.value) and "alarm A?R" in str(refused.value)
        assert lab.store.instrument("pump").state is InstrumentState.QUARANTINED

        release = asyncio.ensure_future(api.release(m.ReleaseInstrument(name="pump"), ADMIN))
        for _ in range(3):
            await asyncio.sleep(0)
        lab.health.service_result(p.ServiceResult(action="check", instrument="pump", ok=True))
        reply = await release
        assert "released" in reply.message
        assert lab.store.instrument("pump").state is InstrumentState.OK

    run(scenario())


def test_a_release_whose_worker_dies_mid_check_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path)
        lab.health.quarantine("pump", "lamp replaced (ana)", by_operator=True)
        release = asyncio.ensure_future(handlers(lab).release(m.ReleaseInstrument(name="pump"), ADMIN))
        for _ in range(3):
            await asyncio.sleep(0)
        lab.health.lost("pump", "it exited with code -9")
        with pytest.raises(ApiError, match="its worker died"):
            await release

    run(scenario())


def test_a_lease_refused_for_an_instrument_out_of_service_names_it_and_costs_it_nothing(
    tmp_path: Path,
) -> None:
    """A worker died mid arm move: the arm is suspect, and the other station's plan waiting for it is
    refused. Its experiment ends faulted naming the arm — which is not counted a fault again."""

    async def scenario() -> None:
        lab = Lab(tmp_path)
        lab.health.suspect("arm", "its worker died (it exited with code -9) while it ran set on arm")
        lab.state.cells["w1"].state = WorkcellState.DOWN  # no worker can make it safe yet
        lab.leases.request(
            lab.state.cells["w2"], p.LeaseRequest(request=7, experiment_id=1, instruments=["arm"])
        )
        for _ in range(3):
            await asyncio.sleep(0)
        [(cell, refusal)] = [(c, msg) for c, msg in lab.sent if isinstance(msg, p.LeaseRefused)]
        assert cell == "w2" and refusal.instruments == ["arm"]

        # The worker turns the refusal into the error the plan fails with; it names the arm.
        leasing = ServiceLeasing(lambda message: None, None)  # type: ignore[arg-type]
        waiting = asyncio.ensure_future(leasing.acquire(1, ["arm"]))
        await asyncio.sleep(0)
        leasing.answered(p.LeaseRefused(request=1, reason=refusal.reason, instruments=refusal.instruments))
        with pytest.raises(LeaseRefused) as error:
            await waiting
        fault = classify(error.value)
        assert fault is not None and (fault.kind, fault.instrument) == ("not_ready", "arm")

        lab.health.fault("arm", str(error.value), fault.kind)
        record = lab.store.instrument("arm")
        assert record.faults == 0 and record.state is InstrumentState.SUSPECT

    run(scenario())
