"""Conformance and faults: the IKA hotplate driver against its simulator over TCP and a pty, plain and
through the ophyd face in a RunEngine. The third-party client is in test_ika_fidelity.py."""

from __future__ import annotations

from contextlib import contextmanager

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import pytest

from drivers.errors import FaultKind, SafetyLimitError
from drivers.ika import HeaterNotHeating, IkaHotplate, SettingsLost, TemperatureNotReached, make_device
from drivers.ika.hotplate import SAFETY_MARGIN_K
from drivers.testing import wait_for
from simulators.clock import ScaledClock
from simulators.ika import plate_state
from simulators.testing import run_simulator

# A minute of heating takes 0.06 s: fast enough for tests, slow enough that the driver polls on the way.
SPEED = 1000.0


@contextmanager
def bench(link="tcp", faults=None, config=None, **options):
    with run_simulator("ika-rct", link=link, clock=ScaledClock(SPEED), faults=faults, config=config) as sim:
        plate = IkaHotplate.connect(sim.url("serial"), **options)
        try:
            yield sim, plate
        finally:
            plate.close()


def simulator(sim):
    return sim.lab.simulators["ika-rct"]


def state(sim):
    return sim.call(lambda: dict(plate_state(simulator(sim))))


@pytest.mark.parametrize("link", ["tcp", "pty"])
def test_heats_to_a_set_point_and_stirs_over_either_link(link):
    with bench(link) as (sim, plate):
        assert plate.name() == "RCT digital"
        assert plate.safety_temperature_c == 340.0
        reached = plate.heat_to(55.0, poll_s=0.005)
        assert abs(reached - 55.0) <= 1.0
        assert plate.temperature_setpoint() == 55.0
        assert plate.plate_temperature() > plate.temperature() - 1.0
        assert abs(plate.stir_at(600, poll_s=0.005) - 600) <= 10
        plate.stop()
        # STOP answers nothing: poll the simulator until it has handled both.
        wait_for(lambda: not state(sim)["heating"] and not state(sim)["stirring"], 10, what="both off")


def test_limits_are_checked_before_anything_is_sent():
    with bench(max_temperature_c=120) as (sim, plate):
        before = sim.call(lambda: simulator(sim).requests_received)
        for refused in (130.0, -5.0, float("nan")):
            with pytest.raises(SafetyLimitError):
                plate.heat_to(refused)
        with pytest.raises(SafetyLimitError):
            plate.stir_at(2000)
        assert sim.call(lambda: simulator(sim).requests_received) == before
    # The plate's own safety temperature caps the set point too, with a margin.
    with (
        bench(config={"station": "dispense", "safety_temperature_c": 100.0}) as (_sim, plate),
        pytest.raises(SafetyLimitError, match="safety temperature"),
    ):
        plate.check_temperature(100.0 - SAFETY_MARGIN_K + 1)


def test_the_ophyd_face_in_a_plan(engine):
    with run_simulator("ika-rct", clock=ScaledClock(SPEED)) as sim:
        device = make_device("plate", sim.url("serial"), max_temperature_c=150, poll_s=0.005)
        try:
            device.connect()
            documents = []
            engine(heat_stir_read(device), lambda name, doc: documents.append((name, doc)))
            event = next(doc for name, doc in documents if name == "event")
            assert abs(event["data"]["plate_temperature_medium"] - 45.0) <= 1.0
            assert abs(event["data"]["plate_stirrer_speed"] - 300) <= 10
            assert event["data"]["plate_temperature_plate"] > 40.0
            device.make_safe()
            wait_for(lambda: not state(sim)["heating"] and not state(sim)["stirring"], 10, what="safe")
        finally:
            device.destroy()


def heat_stir_read(device):
    @bpp.run_decorator()
    def plan():
        yield from bps.mv(device.temperature, 45.0, device.stirrer, 300)
        yield from bps.trigger_and_read([device])

    return (yield from plan())


@pytest.mark.parametrize("fault", ["reset@6", "watchdog@6"])
def test_a_heater_switched_off_behind_the_drivers_back_is_found_and_started_again(fault):
    with bench(faults=fault) as (sim, plate):
        events = []
        plate.events.subscribe(events.append)
        # A second of heating is a millisecond here: the heater's grace shrinks with it.
        assert abs(plate.heat_to(50.0, poll_s=0.005, heater_grace_s=0.01) - 50.0) <= 1.0
        assert [e["event"] for e in events if e["fault"] == FaultKind.ALARM] == ["retry"]
        assert state(sim)["heating"] and state(sim)["error"] is None


def test_without_recoveries_the_typed_alarm_is_raised():
    with bench(faults="watchdog@6") as (_sim, plate):
        with pytest.raises((HeaterNotHeating, SettingsLost)) as raised:
            plate.heat_to(50.0, poll_s=0.005, recoveries=0, heater_grace_s=0.01)
        assert raised.value.fault is FaultKind.ALARM


def test_a_plate_warming_from_cold_in_real_time_is_not_taken_for_a_dead_heater():
    # The plate needs a second or two to run a kelvin above the medium: that is no fault.
    with run_simulator("ika-rct", clock=ScaledClock(1.0)) as sim:
        plate = IkaHotplate.connect(sim.url("serial"))
        events = []
        plate.events.subscribe(events.append)
        try:
            with pytest.raises(TemperatureNotReached):
                plate.heat_to(60.0, timeout=3.0)  # minutes to 60 °C; only the first seconds matter
        finally:
            plate.stop()
            plate.close()
        assert [e for e in events if e["fault"] == FaultKind.ALARM] == []


@pytest.mark.parametrize("fault", ["garble@3", "silent@3", "partial@3", "drop@3"])
def test_link_faults_are_retried(fault):
    with bench(faults=fault, reply_timeout=0.2) as (_sim, plate):
        events = []
        plate.events.subscribe(events.append)
        assert plate.temperature() > 0
        assert plate.temperature_setpoint() == 0.0
        assert plate.speed() == 0.0
        assert any(e["event"] == "retry" for e in events)


def test_make_safe_and_recover_through_the_device():
    with run_simulator("ika-rct", clock=ScaledClock(SPEED), faults="watchdog@8") as sim:
        device = make_device("plate", sim.url("serial"), poll_s=0.005)
        try:
            device.connect()
            device.stirrer.set(500).wait(10)
            for _ in range(5):  # each reading is three commands; the 8th meets the event
                if state(sim)["error"] is not None:
                    break
                device.trigger().wait(10)
            assert state(sim)["error"] == "Er 2"
            events = []
            device.subscribe_faults(events.append)
            device.recover()
            assert state(sim)["error"] is None
            assert any(e["event"] == "recovered" for e in events)
            device.make_safe()
            wait_for(lambda: [r.data.split()[0] for r in sim.wire_log()][-2:] == [b"STOP_1", b"STOP_4"], 10,
                     what="STOP_1 and STOP_4 on the wire")  # fmt: skip
        finally:
            device.destroy()
