"""The driver contract suite (docs/decisions/0003): what every driver/simulator pair promises.

An integrator describes a driver once, as a :class:`DriverCase`, and runs :class:`DriverContract`
on it from a pytest file of their own::

    import pytest
    from drivers.testing.contract import DriverCase, DriverContract

    CASE = DriverCase(name="acme-balance", make_device=acme_balance.make_device, ...)

    class TestAcmeBalance(DriverContract):
        @pytest.fixture(params=[CASE], ids=lambda case: case.name)
        def case(self, request):
            return request.param

The suite never imports a simulator: ``DriverCase.simulator`` starts one (any object with the
:class:`SimulatorHandle` methods; ``simulators.testing.run_simulator`` returns one) and
``is_stop``/``is_motion`` read the simulator's wire log, so a third-party driver with its own
simulator runs it unchanged.

It checks: an offline build that refuses unknown options without a connection; connect,
disconnect and connect again; destroy releasing every link; every settable child forwarding
``stop()`` to the instrument; an aborted plan stopping motion on the wire with nothing moving
after; after a stop and ``make_safe()``, a recovery, a health check and an ordinary action that
pass (a stop ends the operation it interrupted, never a later one); typed errors with a fault
kind; ``make_safe``, ``recover``, ``check_health`` and ``subscribe_faults`` present and working;
consumables (``drivers.stock``) described by ``contents()`` and told with ``set_contents`` offline.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pytest
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky.protocols import Movable, Readable, Triggerable, check_supports
from bluesky.utils import RunEngineInterrupted

from drivers.errors import FaultKind, InstrumentError, Stopped
from drivers.stock import KINDS
from drivers.testing import wait_for

#: Generous bounds that only a hang can exceed, even on a loaded two-core machine.
SETTLE_TIMEOUT_S = 30.0


class WireRecordLike(Protocol):
    time: float  # time.monotonic() at arrival
    endpoint: str
    data: bytes


class SimulatorHandle(Protocol):
    """What the suite needs of a running simulator (``simulators.testing.BackgroundLab`` has it all)."""

    def sessions_opened(self) -> int: ...

    def sessions_open(self) -> int: ...

    def wait_until_clients_leave(self, timeout: float = 5.0) -> None: ...

    def wire_log(self) -> Sequence[WireRecordLike]: ...


@dataclass(frozen=True)
class DriverCase:
    """One driver under test, with the simulator it is tested against."""

    name: str
    #: The driver's ``make_device(name, address, **options)``.
    make_device: Callable[..., Any]
    #: Options for a device the tests can drive.
    options: Mapping[str, Any]
    #: Starts the simulator (a context manager yielding a SimulatorHandle).
    simulator: Callable[[], AbstractContextManager[Any]]
    #: The device's address given the running simulator.
    address: Callable[[Any], Any]
    #: Starts a long action on the device: returns (face, value) for ``bps.mv(face, value)``, or
    #: (face, None) for ``bps.trigger(face, wait=True)``.
    long_action: Callable[[Any], tuple[Any, Any]]
    #: A short, ordinary action (same shape as ``long_action``) that completes within seconds: the
    #: proof that the device works again after a stop and a recovery.
    short_action: Callable[[Any], tuple[Any, Any]]
    #: Classify wire-log records: the instrument's stop command, and a command that moves something.
    is_stop: Callable[[WireRecordLike], bool]
    is_motion: Callable[[WireRecordLike], bool]
    #: The module whose ``__all__`` exports the driver's exception types.
    package: str = ""
    #: (attribute path on the device, bluesky protocols it must support)
    faces: Sequence[tuple[str, tuple[type[Any], ...]]] = field(
        default_factory=list[tuple[str, tuple[type[Any], ...]]]
    )
    #: A long action of a settable child whose stop() answers for its own action only (a hotplate's
    #: stirrer, beside its heater), by the child's dotted path; other children stop ``long_action``.
    child_actions: Mapping[str, Callable[[Any], tuple[Any, Any]]] = field(
        default_factory=dict[str, Callable[[Any], tuple[Any, Any]]]
    )


def _face(device: Any, path: str) -> Any:
    for part in filter(None, path.split(".")):
        device = getattr(device, part)
    return device


def settable_children(device: Any) -> list[str]:
    """Dotted paths ("" for the device) of the device and every child Device that has a ``set()``."""
    from drivers.ophyd_types import Device

    paths = [""] if callable(getattr(device, "set", None)) else []
    for attr in getattr(device, "component_names", ()):
        child = getattr(device, attr)
        if isinstance(child, Device):
            paths += [f"{attr}.{sub}".rstrip(".") for sub in settable_children(child)]
    return paths


@contextmanager
def running_engine() -> Generator[RunEngine, None, None]:
    """A RunEngine without signal handlers, torn down fully afterwards (no leaked loop or thread)."""
    loop = asyncio.new_event_loop()
    engine = RunEngine({}, loop=loop, context_managers=[])  # bluesky runs the loop on a thread of its own
    try:
        yield engine
    finally:
        loop.call_soon_threadsafe(loop.stop)
        wait_for(lambda: not loop.is_running(), SETTLE_TIMEOUT_S, what="the RunEngine's loop to stop")
        loop.close()


@contextmanager
def connected(case: DriverCase, sim: Any, **options: Any) -> Generator[Any, None, None]:
    device = case.make_device("dut", case.address(sim), **{**case.options, **options})
    try:
        device.connect()
        yield device
    finally:
        device.destroy()


def _motion_started(case: DriverCase, sim: Any, after: float) -> Callable[[], bool]:
    return lambda: any(case.is_motion(r) and r.time >= after for r in sim.wire_log())


def _stop_after(case: DriverCase, sim: Any, moment: float) -> WireRecordLike | None:
    return next((r for r in sim.wire_log() if r.time >= moment and case.is_stop(r)), None)


class DriverContract:
    """The contract; subclass it and provide a ``case`` fixture returning a :class:`DriverCase`."""

    #: Measured latencies (s) from an abort to the stop command on the wire, by case name.
    abort_latencies: ClassVar[dict[str, float]] = {}

    def test_offline_build_refuses_unknown_options_without_a_connection(self, case: DriverCase) -> None:
        with case.simulator() as sim:
            with pytest.raises(ValueError) as refused:
                case.make_device("dut", case.address(sim), **case.options, flow_rate_typo=3)
            assert "flow_rate_typo" in str(refused.value)
            device = case.make_device("dut", case.address(sim), **case.options)  # builds, offline
            device.destroy()
            assert sim.sessions_opened() == 0, "make_device (or destroy before connect) opened a link"

    def test_connect_disconnect_and_connect_again(self, case: DriverCase) -> None:
        with case.simulator() as sim:
            device = case.make_device("dut", case.address(sim), **case.options)
            try:
                device.connect()
                device.connect()  # idempotent
                opened = sim.sessions_opened()
                assert opened > 0
                device.check_health()
                device.disconnect()
                sim.wait_until_clients_leave(timeout=SETTLE_TIMEOUT_S)
                device.connect()
                device.check_health()
                assert sim.sessions_opened() > opened, "connect() after disconnect() opened no link"
            finally:
                device.destroy()
            sim.wait_until_clients_leave(timeout=SETTLE_TIMEOUT_S)  # destroy released every link

    def test_faces_support_their_protocols(self, case: DriverCase) -> None:
        with case.simulator() as sim, connected(case, sim) as device:
            for path, protocols in case.faces:
                face = _face(device, path)
                for protocol in protocols:
                    check_supports(face, protocol)
                if Readable in protocols:
                    reading, description = face.read(), face.describe()
                    assert set(reading) == set(description), f"{path or 'device'}: read() and describe()"
                    assert all(key.startswith("dut") for key in reading)

    def test_every_settable_child_forwards_stop_to_the_instrument(self, case: DriverCase) -> None:
        with case.simulator() as sim, connected(case, sim) as device:
            paths = settable_children(device)
            for path in paths:
                face, value = case.child_actions.get(path, case.long_action)(device)
                started = time.monotonic()
                status = face.set(value) if value is not None else face.trigger()
                wait_for(_motion_started(case, sim, started), SETTLE_TIMEOUT_S, what=f"{case.name} moving")
                asked = time.monotonic()
                _face(device, path).stop()
                wait_for(lambda asked=asked: _stop_after(case, sim, asked) is not None, SETTLE_TIMEOUT_S,
                         what=f"{path or 'device'}.stop() reaching the instrument")  # fmt: skip
                with pytest.raises(Stopped):  # the driver's own stop error, a drivers.errors.Stopped
                    status.wait(SETTLE_TIMEOUT_S)
                for action in device._actions():
                    action.join()

    def test_an_aborted_plan_stops_the_instrument_and_nothing_moves_after(self, case: DriverCase) -> None:
        with case.simulator() as sim, connected(case, sim) as device, running_engine() as engine:
            face, value = case.long_action(device)
            # bluesky's mv takes untyped *args: the one type hole of this suite.
            plan = bps.mv(face, value) if value is not None else bps.trigger(face, wait=True)  # pyright: ignore[reportUnknownMemberType]
            started = time.monotonic()
            aborted_at: list[float] = []

            def abort_once_moving() -> None:
                wait_for(_motion_started(case, sim, started), SETTLE_TIMEOUT_S, what=f"{case.name} moving")
                aborted_at.append(time.monotonic())
                engine.abort("contract test")

            aborter = threading.Thread(target=abort_once_moving, name="contract-abort")
            aborter.start()
            try:
                with pytest.raises(RunEngineInterrupted):  # not a failed status: the abort ended it
                    engine(plan)
            finally:
                aborter.join(SETTLE_TIMEOUT_S)
            assert aborted_at, "the plan ended before it moved anything"
            assert engine.state == "idle", f"the engine is {engine.state}, not aborted"
            if value is None:
                # bluesky stops only what a plan set(); a triggered acquisition is stopped by
                # whoever aborts the lab (the lab service stops every device), so do that here.
                aborted_at[0] = time.monotonic()
                device.stop()
            wait_for(lambda: _stop_after(case, sim, aborted_at[0]) is not None, SETTLE_TIMEOUT_S,
                     what="the stop command on the wire")  # fmt: skip
            stop = _stop_after(case, sim, aborted_at[0])
            assert stop is not None
            latency = stop.time - aborted_at[0]
            type(self).abort_latencies[case.name] = latency
            print(f"{case.name}: the stop reached the instrument {latency * 1e3:.1f} ms after the abort")
            for action in device._actions():
                action.join()  # the action's thread ends...
                assert not action.busy
            late = [r for r in sim.wire_log() if r.time > stop.time and case.is_motion(r)]
            assert late == [], f"motion commands after the stop: {[r.data[:40] for r in late]}"

    def test_after_stop_and_make_safe_it_recovers_checks_healthy_and_works(self, case: DriverCase) -> None:
        # The lab service's path after a fault: stop what runs, make it safe, then (later, in the same
        # worker) recover and check it before it serves again. A stop must end the operation it
        # interrupted and nothing after it.
        with case.simulator() as sim, connected(case, sim) as device:
            face, value = case.long_action(device)
            started = time.monotonic()
            status = face.set(value) if value is not None else face.trigger()
            wait_for(_motion_started(case, sim, started), SETTLE_TIMEOUT_S, what=f"{case.name} moving")
            device.stop()
            with pytest.raises(Stopped):
                status.wait(SETTLE_TIMEOUT_S)
            device.make_safe()
            device.recover()
            device.check_health()
            face, value = case.short_action(device)
            status = face.set(value) if value is not None else face.trigger()
            status.wait(SETTLE_TIMEOUT_S)
            assert status.success

    def test_errors_derive_from_drivers_errors_and_carry_a_fault_kind(self, case: DriverCase) -> None:
        module = importlib.import_module(case.package or case.make_device.__module__)
        exported = [getattr(module, name) for name in getattr(module, "__all__", dir(module))]
        errors = [obj for obj in exported if inspect.isclass(obj) and issubclass(obj, BaseException)]
        assert [e.__name__ for e in errors if not issubclass(e, InstrumentError)] == []
        assert all(isinstance(getattr(e, "fault", None), FaultKind) for e in errors)

    def test_make_safe_recover_health_and_fault_events(self, case: DriverCase) -> None:
        with case.simulator() as sim:
            device = case.make_device("dut", case.address(sim), **case.options)
            try:
                events: list[dict[str, Any]] = []
                unsubscribe = device.subscribe_faults(events.append)
                assert callable(unsubscribe)
                device.make_safe()  # connects first if it must
                device.check_health()
                device.recover()
                device.check_health()
                assert any(e["event"] == "recovered" and e["instrument"] == "dut" for e in events)
                unsubscribe()
            finally:
                device.destroy()

    def test_consumables_are_described_and_told_without_a_connection(self, case: DriverCase) -> None:
        with case.simulator() as sim:
            device = case.make_device("dut", case.address(sim), **case.options)
            try:
                described: dict[str, dict[str, Any]] = device.contents()
                for name, item in described.items():
                    assert set(item) == {"kind", "unit", "amount", "lot", "capacity"}, name
                    assert item["kind"] in KINDS and item["unit"] in ("uL", "vials"), name
                    device.set_contents(name, 1.0, lot="contract")
                    told = device.contents()[name]
                    assert (told["amount"], told["lot"]) == (1.0, "contract"), name
                    device.set_contents(name, None)
                    assert device.contents()[name]["amount"] is None, name
                with pytest.raises(ValueError):
                    device.set_contents("no such consumable", 1.0)
                records: list[dict[str, Any]] = []
                unsubscribe = device.subscribe_usage(records.append)
                assert callable(unsubscribe)
                unsubscribe()
                assert sim.sessions_opened() == 0, "telling a device what it holds opened a link"
            finally:
                device.destroy()


__all__ = [
    "DriverCase",
    "DriverContract",
    "Movable",
    "SimulatorHandle",
    "Triggerable",
    "WireRecordLike",
    "connected",
    "running_engine",
    "settable_children",
]
