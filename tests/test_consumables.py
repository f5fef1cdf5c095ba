"""A bench that runs out: each driver tells an empty consumable from a fault, against its simulator.

The NE-1000 stalls at the end of its travel (``A?S``), as the real pump's stall detection stops it; with
the syringe's content counted down to about zero the driver raises ``SyringeEmpty`` (fault kind
``empty``), with liquid left it stays a ``MotorStall``. The Cavro pump draws air from a dry reservoir
without a word, so its driver refuses to draw more than it counts. The gripper closes on nothing at an
empty feeder; the arm's driver tells that from a missed grip by its count. Every action reports what it
used (``subscribe_usage``), from what the instrument reported, before its Status completes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bluesky.plan_stubs as bps
import pytest
from bluesky.utils import FailedStatus, RunEngineInterrupted

import drivers.cavro
import drivers.newera
import drivers.ur
from drivers.cavro import ReservoirEmpty
from drivers.errors import Empty, FaultKind, InstrumentBusy
from drivers.newera import MotorStall, SyringeEmpty
from drivers.testing import wait_for
from drivers.ur import FeederEmpty, GripperMissedObject
from simulators.base import DEFAULT_WORLD
from simulators.clock import ScaledClock
from simulators.hands import HandsClient
from simulators.testing import BackgroundLab, run_lab
from simulators.ur import DEFAULT_POSITIONS

SYRINGE = {"diameter_mm": 14.57, "syringe_volume_ul": 10000, "max_rate_ul_min": 5000, "rate_ul_min": 5000}


def world(**changes: Any) -> dict[str, Any]:
    """The default bench with some stocks and stations declared."""
    stocks = {**DEFAULT_WORLD["stocks"], **changes.pop("stocks", {})}
    stations = {**DEFAULT_WORLD["stations"], **changes.pop("stations", {})}
    return {**DEFAULT_WORLD, "stocks": stocks, "stations": stations, **changes}


@contextmanager
def pump_bench(fill_ul: float, **options: Any) -> Iterator[tuple[BackgroundLab, Any]]:
    """One NE-1000 whose syringe holds ``fill_ul`` of red, behind the ophyd face."""
    lab = {
        "world": world(),
        "instruments": {"pumps": {"kind": "ne1000", "pumps": [
            {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000, "reagent": "red",
             "outlet": "dispense", "fill_ul": fill_ul},
        ]}},
    }  # fmt: skip
    with run_lab(lab, clock=ScaledClock(2000)) as sim:
        pumps = drivers.newera.make_device(
            "pumps", sim.url("pumps.pump"), pumps={"red": {"address": 0, **SYRINGE}}, poll_s=0.002, **options
        )
        try:
            yield sim, pumps
        finally:
            pumps.destroy()


def dispensed_ul(sim: BackgroundLab) -> float:
    return sim.call(lambda: sim.lab.world.vessel_at("dispense").volume_ul)


def runs(sim: BackgroundLab) -> int:
    """RUN commands the NE-1000 line received."""
    return sum(1 for r in sim.wire_log() if r.data.lstrip(b"0123456789").startswith(b"RUN"))


def test_an_ne1000_run_to_the_end_of_its_travel_is_empty_by_the_count(engine):
    # The person said 505 µL and filled 500: the stall at the end of travel is within the 100 µL margin.
    with pump_bench(500.0) as (sim, pumps):
        usage: list[dict] = []
        pumps.subscribe_usage(usage.append)
        pumps.set_contents("red", 505.0, lot="R-1")
        with pytest.raises(FailedStatus) as failed:
            engine(bps.mv(pumps.red, 505.0))
        error = failed.value.__cause__
        assert isinstance(error, SyringeEmpty) and isinstance(error, Empty)
        assert error.fault is FaultKind.EMPTY and error.consumable == "red" and error.instrument == "pumps"
        assert isinstance(error.__cause__, MotorStall)  # what the pump said: A?S
        assert dispensed_ul(sim) == pytest.approx(500.0)
        assert pumps.contents()["red"]["amount"] == pytest.approx(5.0)
        # What it used is reported, from the pump's own count, though the move failed.
        assert [(u["event"], u["consumable"], u["lot"], u["complete"]) for u in usage] == [
            ("dispensed", "red", "R-1", True)
        ]
        assert usage[0]["amount"] == pytest.approx(500.0) and usage[0]["requested"] == 505.0


def test_an_ne1000_stall_with_liquid_left_stays_a_motor_stall(engine):
    with pump_bench(10000.0, stall_retries=0) as (sim, pumps):
        pumps.set_contents("red", 10000.0)
        sim.inject("stall", instrument="pumps")  # the motor stalls half-way: a blocked line
        with pytest.raises(FailedStatus) as failed:
            engine(bps.mv(pumps.red, 400.0))
        error = failed.value.__cause__
        assert type(error) is MotorStall and error.fault is FaultKind.ALARM
        assert pumps.contents()["red"]["amount"] == pytest.approx(9800.0)


def test_an_untracked_ne1000_syringe_run_dry_is_a_motor_stall_as_before(engine):
    with pump_bench(300.0, stall_retries=0) as (_sim, pumps):
        with pytest.raises(FailedStatus) as failed:
            engine(bps.mv(pumps.red, 500.0))
        assert type(failed.value.__cause__) is MotorStall
        assert pumps.contents()["red"]["amount"] is None


def test_an_ne1000_infusion_beyond_the_count_is_refused_with_nothing_sent(engine):
    with pump_bench(10000.0) as (sim, pumps):
        pumps.set_contents("red", 300.0)
        engine(bps.mv(pumps.red, 200.0))
        before = runs(sim)
        with pytest.raises(FailedStatus) as failed:
            engine(bps.mv(pumps.red, 200.0))
        error = failed.value.__cause__
        assert isinstance(error, SyringeEmpty) and error.needed == 200.0
        assert error.remaining == pytest.approx(100.0)
        assert runs(sim) == before and dispensed_ul(sim) == pytest.approx(200.0)


def test_a_refill_by_hand_then_set_contents_lets_the_pump_dispense_again(engine):
    with pump_bench(100.0) as (sim, pumps):
        hands = HandsClient(sim.url("bench.hands"))
        pumps.set_contents("red", 100.0, lot="R-1")
        with pytest.raises(FailedStatus):
            engine(bps.mv(pumps.red, 150.0))
        hands.refill_syringe("pumps:red", 8000.0, lot="R-2")  # from a new bottle
        pumps.set_contents("red", 8000.0, lot="R-2")
        usage: list[dict] = []
        pumps.subscribe_usage(usage.append)
        engine(bps.mv(pumps.red, 150.0))
        assert pumps.red.dispensed.get() == pytest.approx(150.0) and usage[0]["lot"] == "R-2"
        assert pumps.contents()["red"] == {"kind": "syringe", "unit": "uL", "amount": pytest.approx(7850.0),
                                           "lot": "R-2", "capacity": 10000.0}  # fmt: skip
        syringe = hands.state()["instruments"]["pumps"]["syringes"]["0"]
        assert syringe["plunger_ul"] == pytest.approx(7850.0)
        # Topped up, not emptied: the 100 µL of the first bottle (no lot) mix with 7900 µL of R-2.
        assert syringe["sources"] == {"red": pytest.approx(100 * 7850 / 8000),
                                      "red@R-2": pytest.approx(7900 * 7850 / 8000)}  # fmt: skip


def test_set_contents_refuses_what_a_syringe_cannot_hold_and_a_pump_that_is_moving(engine):
    with pump_bench(10000.0) as (_sim, pumps):
        for bad in (-1.0, 10001.0, float("nan"), "lots"):
            with pytest.raises(ValueError, match="red"):
                pumps.set_contents("red", bad)
        with pytest.raises(ValueError, match="no consumable 'green'; it has: red"):
            pumps.set_contents("green", 10.0)
        status = pumps.red.set(5000.0)  # a minute of pumping
        try:
            with pytest.raises(InstrumentBusy):
                pumps.set_contents("red", 10000.0)
        finally:
            pumps.red.stop()
        with pytest.raises(Exception):  # noqa: B017  (stopped: the Status fails with Stopped)
            status.wait(10)


def test_usage_is_reported_before_the_status_completes():
    with pump_bench(10000.0) as (_sim, pumps):
        usage: list[dict] = []
        seen_at_completion: list[int] = []
        pumps.subscribe_usage(usage.append)
        status = pumps.red.set(50.0)
        status.add_callback(lambda st: seen_at_completion.append(len(usage)))
        status.wait(10)
        assert seen_at_completion == [1] and usage[0]["amount"] == pytest.approx(50.0)


# -- Cavro -----------------------------------------------------------------------------------------------

WATER_OPTIONS = {"syringe_volume_ul": 1000, "ports": {"water": 1, "outlet": 2, "waste": 3},
                 "flow_ul_s": 500, "max_flow_ul_s": 500, "poll_interval_s": 0.002}  # fmt: skip


@contextmanager
def water_bench(water_ul: float) -> Iterator[tuple[BackgroundLab, Any]]:
    lab = {
        "world": world(stocks={"water": {"volume_ul": water_ul, "lot": "DI-1"}}),
        "instruments": {"water": {"kind": "cavro", "address": 1, "syringe_volume_ul": 1000, "valve_ports": 6,
                                  "ports": {1: "stock:water", 2: "station:dispense", 3: "station:waste"},
                                  "init_output_port": 3, "init_duration_s": 0.05, "valve_switch_s": 0.01}},
    }  # fmt: skip
    with run_lab(lab, clock=ScaledClock(500)) as sim:
        water = drivers.cavro.make_device("water", sim.url("water.pump"), **WATER_OPTIONS)
        try:
            yield sim, water
        finally:
            water.destroy()


def stock_ul(sim: BackgroundLab, name: str) -> float:
    return sim.call(lambda: sim.lab.world.stocks[name].volume_ul)


def test_a_cavro_pump_refuses_to_draw_more_than_its_reservoir_holds_by_the_count(engine):
    with water_bench(1500.0) as (sim, water):
        usage: list[dict] = []
        water.subscribe_usage(usage.append)
        water.set_contents("water", 1500.0, lot="DI-1")
        engine(bps.mv(water, 1200.0))  # two strokes
        assert water.contents()["water"]["amount"] == pytest.approx(300.0)
        assert stock_ul(sim, "water") == pytest.approx(300.0)
        assert [(u["event"], round(u["amount"], 6)) for u in usage] == [
            ("drawn", 1200.0),
            ("dispensed", 1200.0),
        ]
        assert usage[1]["remaining"] == pytest.approx(300.0) and usage[1]["lot"] == "DI-1"
        before = len(sim.wire_log())
        with pytest.raises(FailedStatus) as failed:
            engine(bps.mv(water, 400.0))
        error = failed.value.__cause__
        assert isinstance(error, ReservoirEmpty) and error.fault == "empty" and error.consumable == "water"
        assert (error.remaining, error.needed) == (pytest.approx(300.0), pytest.approx(400.0))
        assert len(sim.wire_log()) == before  # refused before a byte went out
        assert dispensed_ul(sim) == pytest.approx(1200.0)


def test_an_untracked_cavro_pump_draws_air_from_a_dry_reservoir_and_the_vial_gets_less(engine):
    with water_bench(500.0) as (sim, water):
        engine(bps.mv(water, 800.0))
        # The pump reports its plunger moved 800 µL: nothing on the wire says it was part air.
        assert water.volume.get() == pytest.approx(800.0)
        assert dispensed_ul(sim) == pytest.approx(500.0)
        assert stock_ul(sim, "water") == 0.0


def test_a_cavro_reservoir_is_named_by_its_port_label():
    with water_bench(500.0) as (_sim, water):
        assert water.contents() == {"water": {"kind": "reservoir", "unit": "uL", "amount": None, "lot": None,
                                              "capacity": None}}  # fmt: skip
        with pytest.raises(ValueError, match="no consumable 'milk'"):
            water.set_contents("milk", 10.0)


# -- UR arm ------------------------------------------------------------------------------------------------

ARM_OPTIONS = {"positions": DEFAULT_POSITIONS, "speed": 1.0, "unlock_retry_interval": 0.02}


@contextmanager
def arm_bench(count: int) -> Iterator[tuple[BackgroundLab, Any]]:
    lab = {
        "world": world(stations={"feeder": {"kind": "feeder", "count": count, "lot": "V-7"}}),
        "instruments": {"arm": {"kind": "ur", "positions": DEFAULT_POSITIONS, "initial_mode": "RUNNING",
                                "gripper": {"active": True, "activation_s": 0.05}}},
    }  # fmt: skip
    with run_lab(lab, clock=ScaledClock(200)) as sim:
        arm = drivers.ur.make_device(
            "arm", {e: sim.url(f"arm.{e}") for e in ("dashboard", "script", "gripper")}, **ARM_OPTIONS
        )
        try:
            yield sim, arm
        finally:
            arm.destroy()


def programs(sim: BackgroundLab) -> int:
    return sum(1 for r in sim.wire_log() if r.endpoint == "script")


def test_the_arm_counts_vials_off_a_feeder_and_refuses_an_empty_one_before_moving(engine):
    with arm_bench(2) as (sim, arm):
        usage: list[dict] = []
        arm.subscribe_usage(usage.append)
        arm.set_contents("feeder", 2, lot="V-7")
        for _ in range(2):
            engine(bps.mv(arm.transfer, ("feeder", "waste")))
        assert arm.transfer.slot.get() == 2
        assert [(u["event"], u["consumable"], u["slot"], u["remaining"], u["lot"]) for u in usage] == [
            ("picked", "feeder", 1, 0 + 1, "V-7"), ("placed", "waste", None, None, None),
            ("picked", "feeder", 2, 0, "V-7"), ("placed", "waste", None, None, None)]  # fmt: skip
        vials = HandsClient(sim.url("bench.hands")).vials()
        assert [(v["feeder"], v["slot"], v["lot"], v["where"]) for v in vials] == [
            ("feeder", 1, "V-7", "waste"), ("feeder", 2, "V-7", "waste")]  # fmt: skip
        before = programs(sim)
        with pytest.raises(FailedStatus) as failed:
            engine(bps.mv(arm.transfer, ("feeder", "waste")))
        error = failed.value.__cause__
        assert isinstance(error, FeederEmpty) and error.fault == "empty" and error.unit == "vials"
        assert programs(sim) == before  # the arm never moved


def test_a_grip_on_nothing_where_the_count_says_a_vial_stands_is_a_missed_grip(engine):
    with arm_bench(1) as (sim, arm):
        arm.set_contents("feeder", 2)  # the person miscounted: only one is there
        engine(bps.mv(arm.transfer, ("feeder", "waste")))
        with pytest.raises(FailedStatus) as failed:
            engine(bps.mv(arm.transfer, ("feeder", "waste")))
        assert isinstance(failed.value.__cause__, GripperMissedObject)
        assert failed.value.__cause__.fault == "alarm"
        # A loaded rack, told to the driver, and the arm takes vials again from slot 1.
        HandsClient(sim.url("bench.hands")).load_feeder("feeder", 10, lot="V-8")
        arm.set_contents("feeder", 10, lot="V-8")
        engine(bps.mv(arm.transfer, ("feeder", "waste")))
        assert arm.transfer.slot.get() == 1 and arm.contents()["feeder"]["amount"] == 9


def test_an_abort_stops_a_counted_pump_on_the_wire_and_books_what_it_delivered(engine):
    with pump_bench(10000.0) as (sim, pumps):
        pumps.set_contents("red", 10000.0, lot="R-1")
        usage: list[dict] = []
        pumps.subscribe_usage(usage.append)
        started = len(sim.wire_log())

        def abort_once_pumping() -> None:
            wait_for(lambda: dispensed_ul(sim) > 100, 30, what="the pump delivering")
            engine.abort("the operator")

        aborter = threading.Thread(target=abort_once_pumping)
        aborter.start()
        try:
            with pytest.raises(RunEngineInterrupted):
                engine(bps.mv(pumps.red, 9000.0))  # almost two minutes of pumping
        finally:
            aborter.join(30)
        pumps.red.action.join()
        commands = [r.data.lstrip(b"0123456789")[:3] for r in sim.wire_log()[started:]]
        assert b"STP" in commands and b"RUN" not in commands[commands.index(b"STP") :]
        delivered = sim.call(lambda: sim.lab.simulators["pumps"].bench_state())["syringes"]["0"][
            "delivered_ul"
        ]
        assert 100 < delivered < 9000
        assert [u["event"] for u in usage] == ["dispensed"]
        assert usage[0]["amount"] == pytest.approx(delivered, abs=0.5)
        assert pumps.contents()["red"]["amount"] == pytest.approx(10000.0 - delivered, abs=0.5)
