"""Conformance: the NE-1000 driver against the simulator over TCP and a pty, plain and through ophyd.

Faults and recovery are in test_ne1000_faults.py, the third-party client in test_ne1000_fidelity.py.
"""

from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import pytest

from drivers.errors import InstrumentBusy, InstrumentError, SafetyLimitError
from drivers.newera import (
    Dispensed,
    Firmware,
    NE1000Line,
    NE1000Pump,
    PumpReset,
    PumpStatus,
    SafeModeTimeout,
    make_device,
)
from drivers.testing import wait_for
from simulators.clock import ScaledClock, VirtualClock
from simulators.testing import run_simulator

LINKS = ["tcp", "pty"]
SYRINGE = {"diameter_mm": 14.57, "syringe_volume_ul": 10000, "max_rate_ul_min": 5000}
DYES = {
    label: {"address": address, **SYRINGE, "rate_ul_min": 2000}
    for address, label in enumerate(("yellow", "red", "blue"))
}


@contextmanager
def bench(link="pty", clock=None, faults=None, config=None, **line_options):
    """The default three-pump simulator and a line to it."""
    with run_simulator(
        "ne1000", link=link, clock=clock or VirtualClock(), faults=faults, config=config
    ) as sim:
        line = NE1000Line.connect(
            sim.url("pump"), reply_timeout=line_options.pop("reply_timeout", 0.5), **line_options
        )
        try:
            yield sim, line
        finally:
            line.close()


def simulator(sim):
    return sim.lab.simulators["ne1000"]


def vial(sim):
    return sim.call(lambda: sim.lab.world.vessel_at("dispense"))


@pytest.mark.parametrize("link", LINKS)
def test_infuse_and_withdraw_through_the_plain_api(link):
    clock = VirtualClock()
    with bench(link, clock) as (sim, line):
        pump = NE1000Pump(line, 0, **SYRINGE)
        assert isinstance(pump.configure(), PumpReset)  # the power-up alarm, acknowledged
        assert pump.configure() is None
        assert pump.firmware() == Firmware("NE1000", "3.928")
        move = pump.infuse(120.0, rate_ul_min=2000)
        assert (move.volume_ul, move.rate_ul_min) == (120.0, 2000.0)
        assert pump.status() is PumpStatus.INFUSING
        with pytest.raises(InstrumentBusy):
            pump.infuse(10, 100)
        clock.advance(3.5)
        assert pump.is_running()
        clock.advance(0.2)  # 120 µL at 2 mL/min take 3.6 s
        assert pump.wait_until_stopped(timeout=2) == Dispensed(120.0, 0.0)
        pump.withdraw(20.0, rate_ul_min=600)
        clock.advance(2.0)
        assert pump.wait_until_stopped(timeout=2) == Dispensed(0.0, 20.0)
        assert vial(sim).volume_ul == pytest.approx(100.0)
        assert vial(sim).concentration("yellow") == pytest.approx(4.0e-5)


@pytest.mark.parametrize("link", LINKS)
def test_stop_ends_a_move_and_reports_what_was_delivered(link):
    clock = VirtualClock()
    with bench(link, clock) as (_, line):
        pump = NE1000Pump(line, 1, **SYRINGE)
        pump.configure()
        pump.infuse(1000.0, rate_ul_min=1000)
        clock.advance(15)
        pump.stop()
        assert pump.status() is PumpStatus.STOPPED  # not merely paused
        assert pump.dispensed().infused_ul == pytest.approx(250.0)
        pump.stop()  # idempotent


def test_safety_limits_are_checked_before_any_byte_is_sent():
    with bench() as (sim, line):
        pump = NE1000Pump(line, 0, max_volume_ul=2000, **SYRINGE)
        pump.configure()
        sent, received = line.requests_sent, sim.call(lambda: simulator(sim).packets_received)
        refused = [
            (3000, 1000, "exceeds the limit of 2000"),
            (0, 1000, "positive"),
            (-5, 1000, "positive"),
            (math.nan, 1000, "positive"),
            (0.0001, 1000, "too small"),
            (100, 6000, "outside the allowed"),  # above max_rate_ul_min
            (100, 0.01, "outside the allowed"),  # below the 14.57 mm syringe's minimum
            (100, math.inf, "outside the allowed"),
        ]
        for volume, rate, message in refused:
            with pytest.raises(SafetyLimitError, match=message):
                pump.infuse(volume, rate)
            with pytest.raises(SafetyLimitError, match=message):
                pump.withdraw(volume, rate)
        with pytest.raises(SafetyLimitError, match="1–255"):
            pump.enter_safe_mode(0)
        assert line.requests_sent == sent  # the driver wrote nothing...
        assert sim.call(lambda: simulator(sim).packets_received) == received  # ...and the pump heard nothing
        with pytest.raises(SafetyLimitError, match="diameter_mm 80"):
            NE1000Pump(line, 2, diameter_mm=80, syringe_volume_ul=10000, max_rate_ul_min=100)
        # The model's speed caps the configured rate: 5000 µL/min is impossible on a 4.699 mm syringe.
        small = NE1000Pump(line, 2, diameter_mm=4.699, syringe_volume_ul=1000, max_rate_ul_min=5000)
        assert small.rate_limits_ul_min()[1] == pytest.approx(1699e3 / 60 * (4.699 / 26.59) ** 2)


def test_values_are_sent_in_the_most_precise_units(caplog):
    with bench() as (sim, line):
        pump = NE1000Pump(line, 0, **SYRINGE)
        pump.configure()
        move = pump.infuse(1234.5678, rate_ul_min=0.3456)
        assert move.volume_ul == pytest.approx(1235.0)  # "1235" µL: four digits
        assert move.rate_ul_min == pytest.approx(0.3456, rel=1e-3)  # "20.74" µL/h beats "0.346" µL/min
        assert sim.call(
            lambda: (simulator(sim).pumps[0].rate_units, simulator(sim).pumps[0].volume_units)
        ) == (
            "UH",
            "UL",
        )
        assert "rounds to" not in caplog.text
        pump.stop()
        pump.infuse(0.0015, rate_ul_min=1.0)  # three decimals at most: 0.002 µL, and the log says so
        assert "volume (µL) 0.0015 rounds to 0.002" in caplog.text
        pump.stop()


def test_reset_alarm_makes_the_next_move_configure_again():
    clock = VirtualClock()
    # Reset opportunities are commands: configure = status, DIA?, DIA 20; the reset hits the next status.
    with bench(clock=clock, faults="reset@4") as (sim, line):
        pump = NE1000Pump(line, 0, diameter_mm=20.0, syringe_volume_ul=10000, max_rate_ul_min=5000)
        pump.configure()
        with pytest.raises(PumpReset):
            pump.status()
        assert sim.call(lambda: simulator(sim).pumps[0].diameter_mm) == 14.57  # back to its power-up value
        pump.infuse(100, 1000)
        assert sim.call(lambda: simulator(sim).pumps[0].diameter_mm) == 20.0
        clock.advance(6)
        assert pump.wait_until_stopped(timeout=2).infused_ul == pytest.approx(100.0)


@pytest.mark.parametrize("link", LINKS)
def test_safe_mode_crc_framing_and_timeout(link):
    clock = VirtualClock()
    with bench(link, clock) as (_, line):
        pump = NE1000Pump(line, 2, **SYRINGE)
        pump.configure()
        pump.enter_safe_mode(5)
        assert pump.firmware().model == "NE1000"
        pump.infuse(1000, 600)
        clock.advance(4)
        assert pump.status() is PumpStatus.INFUSING  # traffic keeps the pump alive
        clock.advance(6)
        with pytest.raises(SafeModeTimeout):
            pump.status()
        assert pump.dispensed().infused_ul == pytest.approx(90.0, abs=0.5)  # 9 s at 10 µL/s
        pump.leave_safe_mode()
        assert not line.is_safe(2) and pump.status() is PumpStatus.STOPPED


@pytest.mark.parametrize("link", LINKS)
def test_two_pumps_dispense_at_once_in_a_bluesky_plan(link, engine):
    # Simulated time stands still until both pumps are seen infusing together: were the moves
    # serialised, the second RUN would wait for the first move to end, which cannot happen before
    # the clock moves, and the overlap would never be seen.
    clock = VirtualClock()
    with run_simulator("ne1000", link=link, clock=clock) as sim:
        pumps = make_device("pumps", {"pump": sim.url("pump")}, pumps=DYES, reply_timeout=0.5, poll_s=0.01)
        documents = []
        moving_together: list[bool] = []

        def both_infusing() -> bool:
            states = sim.call(lambda: [simulator(sim).pumps[a].status_char() for a in (0, 1)])
            return states == ["I", "I"]

        def release_the_clock() -> None:
            try:
                wait_for(both_infusing, 30, what="both pumps infusing at once")
                moving_together.append(True)
            except TimeoutError:
                moving_together.append(False)
            finally:
                clock.advance(60)  # either way, let the plan end: 3.6 s of pumping for the longer move

        @bpp.run_decorator()
        def plan():
            yield from bps.mv(pumps.yellow, 120.0, pumps.red, 80.0)
            yield from bps.trigger_and_read([pumps])

        releaser = threading.Thread(target=release_the_clock)
        try:
            releaser.start()
            engine(plan(), lambda name, doc: documents.append((name, doc)))
        finally:
            releaser.join(60)
            pumps.destroy()
        assert moving_together == [True]
        event = next(doc for name, doc in documents if name == "event")
        assert event["data"]["pumps_yellow_dispensed"] == pytest.approx(120.0)
        assert event["data"]["pumps_red_dispensed"] == pytest.approx(80.0)
        assert event["data"]["pumps_blue_dispensed"] == 0.0
        contents = vial(sim)
        assert contents.volume_ul == pytest.approx(200.0)
        assert contents.concentration("red") == pytest.approx(4.0e-5 * 80 / 200)


def test_ophyd_set_refuses_out_of_limit_volumes_before_sending(engine):
    with run_simulator("ne1000", clock=ScaledClock(400)) as sim:
        pumps = make_device("pumps", sim.url("pump"), pumps={"yellow": DYES["yellow"]}, reply_timeout=0.5)
        try:
            received = sim.call(lambda: simulator(sim).packets_received)
            with pytest.raises(SafetyLimitError, match="exceeds"):
                engine(bps.mv(pumps.yellow, 20000.0))
            assert sim.call(lambda: simulator(sim).packets_received) == received
        finally:
            pumps.destroy()
    with pytest.raises(ValueError, match="rate_ul_min"):
        make_device("pumps", "socket://127.0.0.1:9", pumps={"yellow": {"address": 0, **SYRINGE}})
    with pytest.raises(ValueError, match="unknown option"):
        make_device("pumps", "socket://127.0.0.1:9", pumps={}, colour="red")


def test_ophyd_stop_halts_the_pump_and_fails_the_move():
    clock = VirtualClock()
    with run_simulator("ne1000", clock=clock) as sim:
        pumps = make_device(
            "pumps", sim.url("pump"), pumps={"blue": DYES["blue"]}, reply_timeout=0.5, poll_s=0.01
        )
        try:
            pumps.connect()
            status = pumps.blue.set(1000.0)
            wait_for(lambda: sim.call(lambda: simulator(sim).pumps[2].status_char()) == "I")
            clock.advance(6)
            pumps.stop()
            with pytest.raises(InstrumentError, match="stopped before the move finished"):
                status.wait(timeout=5)
            assert pumps.blue.pump.status() is PumpStatus.STOPPED
            assert pumps.blue.pump.dispensed().infused_ul == pytest.approx(200.0)
        finally:
            pumps.destroy()


@pytest.mark.hardware
def test_real_pump_answers_a_status_query():
    url = os.environ.get("SDL_NE1000_URL")
    if not url:
        pytest.fail("set SDL_NE1000_URL (e.g. /dev/ttyUSB0) to run the hardware test")
    address = int(os.environ.get("SDL_NE1000_ADDRESS", "0"))
    with NE1000Line.connect(url) as line:
        pump = NE1000Pump(line, address, diameter_mm=14.57, syringe_volume_ul=10000, max_rate_ul_min=1)
        pump.acknowledge_alarm()
        assert isinstance(pump.status(), PumpStatus)
        assert pump.firmware().model.startswith("NE")
