"""Conformance: the Cavro driver against the simulator over TCP and a pty, plain API and ophyd face.

Most tests run the simulated clock 1000 times faster than the wall (a 4 s stroke takes 4 ms); the
busy-polling test drives a virtual clock so timings can be checked exactly.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bluesky.plan_stubs as bps
import pytest
from bluesky.utils import FailedStatus

from drivers.cavro import (
    CavroPump,
    GarbledReply,
    InitFailure,
    NoReply,
    NotInitialised,
    PlungerOverload,
    Terminated,
    TruncatedReply,
    ValveOverload,
    make_device,
)
from drivers.cavro.codec import SpeedProfile
from drivers.errors import ConnectionLost, SafetyLimitError
from drivers.transport import Transport
from simulators.clock import Clock, ScaledClock, VirtualClock
from simulators.testing import BackgroundLab, run_simulator

LINKS = ["tcp", "pty"]
PORTS = {"water": 1, "outlet": 2, "waste": 3}
FAST = 1000.0


@contextmanager
def bench(
    link: str = "tcp", *, faults: str | None = None, clock: Clock | None = None, **options: Any
) -> Iterator[tuple[BackgroundLab, CavroPump]]:
    with run_simulator("cavro", link=link, clock=clock or ScaledClock(FAST), faults=faults) as sim:
        settings = {"ports": PORTS, "waste": "waste", "timeout": 0.3, "poll_interval_s": 0.002, **options}
        pump = CavroPump.connect(sim.url("pump"), syringe_volume_ul=1000, **settings)
        try:
            yield sim, pump
        finally:
            pump.close()


def model(sim: BackgroundLab) -> Any:
    return sim.lab.simulators["cavro"].pump


def requests(sim: BackgroundLab) -> int:
    return sim.call(lambda: model(sim).requests)


def fired(sim: BackgroundLab, fault: str) -> int:
    return sim.lab.simulators["cavro"].faults.fired[fault]


def vial(sim: BackgroundLab) -> float:
    return sim.call(lambda: sim.lab.world.vessel_at("dispense").volume_ul)


@pytest.mark.parametrize("link", LINKS)
def test_transfer_aspirate_and_dispense_through_the_plain_api(link):
    with bench(link) as (sim, pump):
        status = pump.status()
        assert status.ready and status.error == 0
        assert pump.firmware() == "XCALIBUR-SIM 1.0"
        # 2500 µL through a 1000 µL syringe: three strokes, initialising first.
        assert pump.transfer(2500, "water", "outlet", 500.0) == pytest.approx(2500)
        assert vial(sim) == pytest.approx(2500)
        assert pump.position_ul() == 0 and pump.valve_port() == 2
        assert sim.call(lambda: model(sim).counters) == {"inits": 1, "plunger_moves": 6, "valve_moves": 5}
        pump.aspirate(300, 200.0, source="water")
        assert pump.position_ul() == pytest.approx(300)
        pump.dispense(100, destination="outlet")
        assert pump.position_ul() == pytest.approx(200) and vial(sim) == pytest.approx(2600)
        # What is left goes to waste before the next transfer, so it never mixes into the vial.
        pump.transfer(10, "water", "outlet")
        assert vial(sim) == pytest.approx(2610) and pump.position_ul() == 0


def test_busy_polling_follows_the_speed_profile_on_a_virtual_clock():
    clock = VirtualClock()
    with bench(clock=clock) as (sim, pump):
        result: dict[str, Any] = {}

        def work() -> None:
            result["moved"] = pump.transfer(600, "water", "outlet", 100.0)

        worker = threading.Thread(target=work)
        worker.start()
        busy_seen = False
        deadline = time.monotonic() + 20
        while worker.is_alive() and time.monotonic() < deadline:
            clock.advance(0.02)
            busy_seen = busy_seen or pump.status().busy
            worker.join(timeout=0.001)
        assert not worker.is_alive() and result["moved"] == pytest.approx(600)
        assert busy_seen and pump.status().ready
        # Init 2.5 s, a valve move 0.25 s, two 3600-half-step moves at V600 (100 µL/s) and
        # v=c=600: 6 s each. The driver sees "ready" within a few clock steps of the true end.
        expected = 2.5 + 0.25 + 2 * SpeedProfile(600, 600, 600).move_time(3600)
        assert expected <= clock.now() < expected + 0.5
        assert vial(sim) == pytest.approx(600)


def test_limits_are_refused_before_any_byte_is_sent():
    with bench() as (sim, pump):
        pump.aspirate(900, source="water")
        before = requests(sim)
        for call, message in [
            (lambda: pump.aspirate(200), "overfill the 1000 µL syringe"),
            (lambda: pump.dispense(950), "the syringe holds 900 µL"),
            (lambda: pump.aspirate(10, 5000.0), r"outside the allowed 0\.8333\d*\.\.1000 µL/s"),
            (lambda: pump.aspirate(10, 0.0), "outside the allowed"),
            (lambda: pump.aspirate(-5), "positive number"),
            (lambda: pump.aspirate(math.nan), "positive number"),
            (lambda: pump.aspirate(0.1), "below one plunger increment"),
            (lambda: pump.valve(7), r"port 1..6 or a label \(water=1, outlet=2, waste=3\)"),
            (lambda: pump.valve("milk"), "valve port 'milk' is not allowed"),
            (lambda: pump.transfer(100, "water", 0), "valve port 0"),
            (lambda: pump.transfer(100, "water", "outlet", math.inf), "flow must be a number"),
        ]:
            with pytest.raises(SafetyLimitError, match=message):
                call()
        assert requests(sim) == before
        with pytest.raises(ValueError, match=r"ports\.sink: port must be 1\.\.6"):
            CavroPump(pump.transport, syringe_volume_ul=1000, ports={"sink": 8})
        with pytest.raises(ValueError, match="flow limits"):
            CavroPump(pump.transport, syringe_volume_ul=1000, max_flow_ul_s=2000)


def test_device_limits_and_options_are_checked_before_the_wire():
    with run_simulator("cavro", clock=ScaledClock(FAST)) as sim:
        device = make_device(
            "water_pump", sim.url("pump"), flow_ul_s=200.0, max_transfer_ul=5000, timeout=0.3
        )
        try:
            before = requests(sim)
            with pytest.raises(SafetyLimitError, match="exceeds max_transfer_ul 5000"):
                device.set(6000)
            with pytest.raises(SafetyLimitError, match="positive number"):
                device.set(-1)
            assert requests(sim) == before
        finally:
            device.destroy()
        with pytest.raises(SafetyLimitError, match="valve port 'milk'"):
            make_device("bad", sim.url("pump"), source="milk")
        with pytest.raises(ValueError, match="unknown option"):
            make_device("bad", sim.url("pump"), colour="red")


@pytest.mark.parametrize("link", LINKS)
def test_ophyd_face_in_a_plan(link, engine):
    with run_simulator("cavro", link=link, clock=ScaledClock(FAST)) as sim:
        water = make_device(
            "water_pump",
            {"pump": sim.url("pump")},
            syringe_volume_ul=1000,
            ports=PORTS,
            source="water",
            outlet="outlet",
            flow_ul_s=250.0,
            max_flow_ul_s=500.0,
            timeout=0.3,
            poll_interval_s=0.002,
        )
        try:
            documents: list[tuple[str, dict]] = []

            def plan():
                yield from bps.open_run()
                yield from bps.mv(water, 650.0)
                yield from bps.trigger_and_read([water])
                yield from bps.mv(water, 1200.0)
                yield from bps.trigger_and_read([water])
                yield from bps.close_run()

            engine(plan(), lambda name, doc: documents.append((name, doc)))
            events = [doc["data"] for name, doc in documents if name == "event"]
            assert [e["water_pump_volume"] for e in events] == pytest.approx([650.0, 1200.0])
            assert events[-1]["water_pump_valve"] == 2 and events[-1]["water_pump_plunger"] == 0
            assert vial(sim) == pytest.approx(1850)
            assert water.read_configuration()["water_pump_flow"]["value"] == 250.0
        finally:
            water.destroy()


def test_a_failed_transfer_fails_the_plan_with_the_driver_error(engine):
    with run_simulator("cavro", clock=ScaledClock(FAST), faults="plunger-overload@1") as sim:
        water = make_device(
            "water_pump", sim.url("pump"), timeout=0.3, poll_interval_s=0.002, overload_retries=0
        )
        try:
            with pytest.raises(FailedStatus) as failure:
                engine(bps.mv(water, 500.0))
            assert isinstance(failure.value.args[0].exception(), PlungerOverload)
            engine(bps.mv(water, 500.0))  # the next move initialises again and goes through
            assert water.volume.get() == 500.0 and vial(sim) == pytest.approx(500)
        finally:
            water.destroy()


def test_ophyd_stop_terminates_the_transfer():
    with run_simulator("cavro", clock=ScaledClock(50)) as sim:
        water = make_device("water_pump", sim.url("pump"), flow_ul_s=20.0, timeout=0.3, poll_interval_s=0.002)
        try:
            status = water.set(900.0)  # 45 s simulated at 20 µL/s: 0.9 s on the wall
            deadline = time.monotonic() + 10
            while sim.call(lambda: model(sim).plunger_volume_ul()) < 50 and time.monotonic() < deadline:
                time.sleep(0.005)
            water.stop()
            with pytest.raises(Terminated):
                status.wait(timeout=5)
            assert 0 < water.pump.position_ul() < 900
            # The next transfer empties what was drawn into waste first, so the vial gets exactly 100 µL.
            water.set(100.0).wait(timeout=20)
            assert vial(sim) == pytest.approx(100) and water.pump.position_ul() == 0
        finally:
            water.destroy()


def test_terminate_stops_a_plain_aspirate_and_the_pump_works_on():
    with bench(clock=ScaledClock(50)) as (sim, pump):
        pump.initialize()
        errors: list[Exception] = []

        def work() -> None:
            try:
                pump.aspirate(900, 20.0, source="water")  # 45 s simulated, 0.9 s on the wall
            except Terminated as exc:
                errors.append(exc)

        worker = threading.Thread(target=work)
        worker.start()
        deadline = time.monotonic() + 10
        while sim.call(lambda: model(sim).plunger_volume_ul()) < 50 and time.monotonic() < deadline:
            time.sleep(0.005)
        pump.terminate()
        worker.join(timeout=5)
        assert len(errors) == 1 and not worker.is_alive()
        held = pump.position_ul()
        assert 50 <= held < 900
        pump.dispense(held, 1000.0, destination="waste")  # a new operation is not stopped
        assert pump.position_ul() == 0


LINK_FAULTS = [
    ("drop", "tcp", ConnectionLost),
    ("drop", "pty", NoReply),  # a pty cannot hang up: the reply is simply lost
    ("silent", "tcp", NoReply),
    ("partial", "tcp", TruncatedReply),
    ("partial", "pty", TruncatedReply),
    ("garble", "tcp", GarbledReply),
    ("garble", "pty", GarbledReply),
]


@pytest.mark.parametrize(("fault", "link", "error"), LINK_FAULTS)
def test_each_link_fault_raises_its_own_error_and_the_next_request_recovers(fault, link, error):
    with bench(link, faults=f"{fault}@1") as (sim, pump):
        pump.retries = 0
        with pytest.raises(error):
            pump.status()
        assert pump.status().ready  # reopened after a drop; stale bytes discarded otherwise
    with bench(link, faults=f"{fault}@1") as (sim, pump):
        assert pump.status().ready  # with retries the fault is absorbed
        assert fired(sim, fault) == 1


@pytest.mark.parametrize("link", LINKS)
def test_transfer_survives_link_faults_on_any_exchange(link):
    faults = "drop@3,garble@7,partial@11,silent@15,drop@19,garble@24"
    with bench(link, faults=faults) as (sim, pump):
        assert pump.transfer(1500, "water", "outlet", 500.0) == pytest.approx(1500)
        assert vial(sim) == pytest.approx(1500)
        assert sum(fired(sim, f) for f in ("drop", "garble", "partial", "silent")) == 6


def test_plunger_overload_then_the_next_transfer_reinitialises():
    # Opportunity 1 is the first stroke's aspirate, 2 its dispense into the vial.
    with bench(faults="plunger-overload@2") as (sim, pump):
        with pytest.raises(PlungerOverload, match="error 9"):
            pump.transfer(1500, "water", "outlet")
        stalled_in_vial = vial(sim)
        assert 0 < stalled_in_vial < 1000
        assert pump.transfer(400, "water", "outlet") == pytest.approx(400)
        assert vial(sim) == pytest.approx(stalled_in_vial + 400)
        assert sim.call(lambda: model(sim).counters["inits"]) == 2


def test_valve_overload_then_recover():
    # After Z the valve is already at "water": the first valve move is the turn to "outlet".
    with bench(faults="valve-overload@1", overload_retries=0) as (sim, pump):
        with pytest.raises(ValveOverload, match="error 10"):
            pump.transfer(500, "water", "outlet")
        pump.recover()  # explicit: terminate, initialise (the drawn water goes to waste)
        assert pump.status().error == 0
        assert pump.transfer(500, "water", "outlet") == pytest.approx(500)
        assert vial(sim) == pytest.approx(500)


def test_failed_initialisation_is_retried_then_reported():
    with bench(faults="init-failure@1") as (sim, pump):
        pump.initialize()
        assert fired(sim, "init-failure") == 1 and pump.status().error == 0
    with bench(faults="init-failure@1,init-failure@2") as (sim, pump):
        with pytest.raises(InitFailure, match="error 1"):
            pump.initialize()
        pump.initialize()  # the third attempt works


def test_a_pump_reset_behind_the_drivers_back_reports_not_initialised():
    with bench() as (sim, pump):
        pump.initialize()

        def power_cycle() -> None:
            pump_model = model(sim)
            pump_model.initialised, pump_model.blocked_by = False, 7

        sim.call(power_cycle)
        with pytest.raises(NotInitialised, match="error 7"):
            pump.aspirate(100, source="water")
        assert pump.transfer(100, "water", "outlet") == pytest.approx(100)  # initialises again


def test_the_driver_waits_for_ready_instead_of_overflowing_a_busy_pump():
    with bench(clock=ScaledClock(100)) as (sim, pump):
        pump.initialize()
        # Another client starts a 4.3 s stroke (43 ms here); the driver must not get error 15.
        with Transport(sim.url("pump")) as other:
            assert other.exchange(b"/1A3000R\r", lambda t: t.read_until(b"\n")) == b"/0@\x03\r\n"
            assert pump.status().busy
            pump.valve("outlet")
        assert pump.valve_port() == 2 and pump.status().error == 0


@pytest.mark.hardware
def test_real_pump_answers_a_status_query():
    url = os.environ.get("SDL_CAVRO_URL")
    if not url:
        pytest.fail("set SDL_CAVRO_URL (e.g. /dev/ttyUSB0) to run the hardware test")
    address = os.environ.get("SDL_CAVRO_ADDRESS", "1")
    pump = CavroPump.connect(url, syringe_volume_ul=float(os.environ.get("SDL_CAVRO_SYRINGE_UL", "1000")),
                             address=address)  # fmt: skip
    try:
        status = pump.status()
        assert status.error in range(16)
        assert pump.firmware()
    finally:
        pump.close()


@pytest.mark.parametrize("fault", ["valve-overload@1", "plunger-overload@1"])
def test_an_overload_before_delivery_is_recovered_by_initialising_again(fault):
    # Turning to the outlet or drawing the stroke stalls: nothing reached the outlet yet, so the pump is
    # initialised again (what it held goes to waste) and the stroke drawn anew; the vial gets exactly 500 µL.
    with bench(faults=fault) as (sim, pump):
        events: list[dict] = []
        pump.events.subscribe(events.append)
        assert pump.transfer(500, "water", "outlet") == pytest.approx(500)
        assert vial(sim) == pytest.approx(500)
        assert [e["event"] for e in events] == ["retry", "recovered"] and events[0]["fault"] == "alarm"


def test_a_stop_during_recovery_stops_the_initialisation_and_the_next_recovery_runs():
    # recover() initialises the pump, which moves the plunger: an e-stop (device.stop()) then must
    # put T on the wire although no action runs, and the stop must not outlive that recovery.
    clock = ScaledClock(1.0)
    with run_simulator("cavro", clock=clock, config={"init_duration_s": 60.0}) as sim:
        water = make_device("water_pump", sim.url("pump"), timeout=0.3, poll_interval_s=0.002)
        try:
            water.connect()
            failures: list[BaseException] = []

            def recover() -> None:
                try:
                    water.recover()
                except Exception as exc:
                    failures.append(exc)

            worker = threading.Thread(target=recover)
            worker.start()
            deadline = time.monotonic() + 10
            while not sim.call(lambda: model(sim).busy) and time.monotonic() < deadline:
                time.sleep(0.005)
            asked = time.monotonic()
            water.stop()
            worker.join(timeout=10)
            assert not worker.is_alive()
            assert [type(e.__cause__) for e in failures] == [Terminated]
            commands = [r.data for r in sim.wire_log() if r.time >= asked]
            assert any(c.startswith(b"/1T") for c in commands), commands
            assert not sim.call(lambda: model(sim).busy)
            sim.call(lambda: setattr(model(sim), "init_duration_s", 0.01))
            water.recover()  # a new operation: the stop belonged to the last one
            water.check_health()
        finally:
            water.destroy()
