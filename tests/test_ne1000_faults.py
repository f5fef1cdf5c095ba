"""Every injectable NE-1000 fault gives its own exception type, and the driver's recovery works.

Link faults count replies (every reply is one opportunity); ``stall`` counts RUN commands and
``reset`` counts commands a pump handles. ``configure()`` takes two exchanges (status, DIA) and
``infuse()`` eleven (status, CLD, CLD, DIR, VOL, VOL, RAT, then DIR, VOL and RAT read back, RUN), so
replies 3.. follow configure.
"""

from __future__ import annotations

import bluesky.plan_stubs as bps
import pytest
from bluesky.utils import FailedStatus
from test_ne1000_driver import DYES, SYRINGE, bench, simulator, vial

from drivers.errors import ConnectionLost, InstrumentTimeout, ProtocolError
from drivers.newera import (
    GarbledReply,
    MotorStall,
    NE1000Pump,
    NoReply,
    PartialReply,
    PumpReset,
    PumpStatus,
    make_device,
)
from simulators.clock import ScaledClock, VirtualClock
from simulators.testing import run_simulator

LINK_FAULTS = [
    ("tcp", "drop", ConnectionLost),
    ("pty", "drop", NoReply),  # a pty cannot hang up: the reply is simply lost
    ("tcp", "garble", GarbledReply),
    ("pty", "garble", GarbledReply),
    ("pty", "partial", PartialReply),
    ("tcp", "silent", NoReply),
]


@pytest.mark.parametrize(("link", "fault", "error"), LINK_FAULTS)
def test_link_faults_raise_specific_errors_and_the_line_recovers(link, fault, error):
    with bench(link, faults=f"{fault}@3,{fault}@5", retries=0, reply_timeout=0.3) as (sim, line):
        pump = NE1000Pump(line, 0, **SYRINGE)
        pump.configure()
        with pytest.raises(error):
            pump.status()
        assert pump.status() is PumpStatus.STOPPED  # the next exchange works (reopening a dropped link)
        line.retries = 1
        assert pump.firmware().model == "NE1000"  # reply 5 is hit too, and retried transparently
        assert simulator(sim).faults.fired[fault] == 2


@pytest.mark.parametrize(("link", "fault"), [("tcp", "drop"), ("pty", "silent"), ("pty", "garble")])
def test_a_lost_run_reply_is_not_answered_by_running_twice(link, fault):
    clock = VirtualClock()
    # Reply 13 answers the RUN of the first infuse.
    with bench(link, clock, faults=f"{fault}@13", reply_timeout=0.3) as (sim, line):
        pump = NE1000Pump(line, 0, **SYRINGE)
        pump.configure()
        pump.infuse(100, 1000)
        clock.advance(6)
        assert pump.wait_until_stopped(timeout=2).infused_ul == pytest.approx(100.0)
        assert vial(sim).volume_ul == pytest.approx(100.0)


def test_a_power_cycle_whose_alarm_is_lost_never_runs_on_power_up_settings():
    # Command 9 is the move's RAT: the pump power-cycles on it (so it is not carried out) and the reply
    # that carried A?R is lost. The RAT sent again is taken; DIR, VOL and the rate are back to power-up,
    # and VOL 0 means "pump until the syringe is empty". Read back before RUN, they are set up again.
    clock = VirtualClock()
    with bench(clock=clock, faults="reset@9,silent@9", reply_timeout=0.3) as (sim, line):
        pump = NE1000Pump(line, 0, **SYRINGE)
        pump.configure()
        pump.infuse(100, 1000)
        assert simulator(sim).faults.fired == {"reset": 1, "silent": 1}
        clock.advance(6)
        assert pump.wait_until_stopped(timeout=2).infused_ul == pytest.approx(100.0)
        assert vial(sim).volume_ul == pytest.approx(100.0)


def test_garbled_safe_mode_reply_fails_its_crc():
    with bench(faults="garble@4", retries=0) as (_, line):
        pump = NE1000Pump(line, 0, **SYRINGE)
        pump.configure()
        pump.enter_safe_mode(30)
        with pytest.raises(GarbledReply, match="CRC mismatch"):
            pump.status()
        assert pump.status() is PumpStatus.STOPPED


def test_stall_surfaces_as_motor_stall_and_the_next_move_works():
    clock = VirtualClock()
    with bench(clock=clock, faults="stall@1") as (sim, line):
        pump = NE1000Pump(line, 0, **SYRINGE)
        pump.configure()
        pump.infuse(200, 1000)
        clock.advance(12)
        with pytest.raises(MotorStall) as stalled:
            pump.wait_until_stopped(timeout=2)
        assert stalled.value.address == 0
        assert pump.dispensed().infused_ul == pytest.approx(100.0)  # stalled halfway
        pump.infuse(200, 1000)  # the reply that carried the alarm acknowledged it
        clock.advance(12)
        assert pump.wait_until_stopped(timeout=2).infused_ul == pytest.approx(200.0)
        assert vial(sim).volume_ul == pytest.approx(300.0)


@pytest.mark.parametrize(("faults", "error"), [("stall@1", MotorStall), ("reset@14", PumpReset)])
def test_stall_and_reset_fail_the_bluesky_plan_with_the_typed_error(faults, error, engine):
    # reset@14: connecting takes 2 commands (status, DIA), infuse 11 (its set-up read back before RUN);
    # the 14th is the first poll.
    with run_simulator("ne1000", clock=ScaledClock(400), faults=faults) as sim:
        pumps = make_device(
            "pumps", sim.url("pump"), pumps={"yellow": DYES["yellow"]}, poll_s=0.01, stall_retries=0
        )
        try:
            with pytest.raises(FailedStatus) as failed:
                engine(bps.mv(pumps.yellow, 100.0))
            status = failed.value.args[0]
            assert isinstance(status.exception(), error)
            engine(bps.mv(pumps.yellow, 100.0))  # after a reset the driver configures the pump again
            assert pumps.yellow.dispensed.get() == pytest.approx(100.0)
            assert simulator(sim).faults.fired == {faults.split("@")[0]: 1}
        finally:
            pumps.destroy()


def test_generic_handlers_catch_the_typed_errors():
    # Code that knows only drivers.errors still does the right thing.
    assert issubclass(GarbledReply, ProtocolError) and issubclass(PartialReply, ProtocolError)
    assert issubclass(NoReply, InstrumentTimeout)


def test_a_stall_is_recovered_by_dispensing_the_remainder(engine):
    # The documented recovery: the reply that carried A?S acknowledged it, the counters hold what was
    # delivered, so the rest is dispensed once more and the vial gets exactly what was asked.
    with run_simulator("ne1000", clock=ScaledClock(400), faults="stall@1") as sim:
        pumps = make_device("pumps", sim.url("pump"), pumps={"yellow": DYES["yellow"]}, poll_s=0.01)
        events: list[dict] = []
        pumps.subscribe_faults(events.append)
        try:
            engine(bps.mv(pumps.yellow, 100.0))
            assert pumps.yellow.dispensed.get() == pytest.approx(100.0)
            assert vial(sim).volume_ul == pytest.approx(100.0)
            assert [e["event"] for e in events if e["fault"] == "alarm"] == ["retry", "recovered"]
        finally:
            pumps.destroy()


def test_a_reset_before_run_is_absorbed_and_nothing_moves_twice():
    # reset@5: after configure (status, DIA?) and the move's status and CLD INF, the pump power-cycles on
    # CLD WDR: nothing has moved, so the move is set up again and runs once.
    with bench(faults="reset@5", reply_timeout=0.3) as (sim, line):
        pump = NE1000Pump(line, 0, **SYRINGE)
        pump.configure()
        pump.infuse(100, 1000)
        assert simulator(sim).faults.fired["reset"] == 1
        assert pump.status() is PumpStatus.INFUSING
