"""Property: over any sequence of dispenses and refills, a driver's count of its consumable is the
simulator's own accounting, within the instrument's resolution, and never negative.

A dispense may be aborted at any moment (the stop goes out at once, wherever the pump is). A refill
goes through the bench's hands endpoint (as a person would refill) and is then told to the
driver (``set_contents``), as the lab service will after a refill task is done. A dispense the count
says cannot be served is refused before anything moves, and then nothing changed on the bench.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import drivers.cavro
import drivers.newera
from drivers.cavro import ReservoirEmpty
from drivers.errors import Stopped
from drivers.newera import SyringeEmpty
from simulators.base import DEFAULT_WORLD
from simulators.clock import ScaledClock
from simulators.hands import HandsClient
from simulators.testing import BackgroundLab, run_lab

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
#: ``DIS`` reports four digits: below 10 mL, at worst half of 1 µL off what the plunger moved.
NE1000_RESOLUTION_UL = 0.5

lots = st.sampled_from([None, "L-1", "L-2"])
ne1000_steps = st.lists(
    st.one_of(
        st.tuples(st.just("dispense"), st.integers(5, 40000).map(lambda tenths: tenths / 10)),
        st.tuples(st.just("abort"), st.integers(5, 40000).map(lambda tenths: tenths / 10)),
        st.tuples(st.just("refill"), st.integers(0, 10000).map(float), st.booleans(), lots),
    ),
    min_size=1,
    max_size=8,
)


@pytest.fixture(scope="module")
def pump_bench() -> Iterator[tuple[BackgroundLab, Any]]:
    lab = {
        "world": DEFAULT_WORLD,
        "instruments": {"pumps": {"kind": "ne1000", "pumps": [
            {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000, "reagent": "red",
             "outlet": "dispense"}]}},
    }  # fmt: skip
    with run_lab(lab, clock=ScaledClock(5000)) as sim:
        pumps = drivers.newera.make_device("pumps", sim.url("pumps.pump"), poll_s=0.002, pumps={
            "red": {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000,
                    "max_rate_ul_min": 5000, "rate_ul_min": 5000}})  # fmt: skip
        pumps.connect()
        try:
            yield sim, pumps
        finally:
            pumps.destroy()


@SETTINGS
@given(steps=ne1000_steps)
def test_an_ne1000_count_is_the_simulators_syringe(pump_bench, steps):
    sim, pumps = pump_bench
    hands = HandsClient(sim.url("bench.hands"))
    pump = sim.lab.simulators["pumps"].pumps[0]

    def truth() -> float:
        return sim.call(lambda: (pump.settle(sim.lab.world.now()), pump.plunger_ul)[1])

    hands.replace_syringe("pumps:0", 10000)
    pumps.set_contents("red", 10000)
    for step in steps:
        before = truth()
        if step[0] == "refill":
            _, volume, replace, lot = step
            if replace or volume < before:
                hands.replace_syringe("pumps:0", volume, lot=lot)
            else:
                hands.refill_syringe("pumps:0", volume, lot=lot)
            pumps.set_contents("red", volume, lot=lot)
        elif step[0] == "abort":  # stopped at once: before, during or after RUN, whatever the timing
            status = pumps.red.set(step[1])
            pumps.red.stop()
            try:
                status.wait(30)
            except (Stopped, SyringeEmpty):
                event("aborted")
            else:  # a short dispense on a fast clock can finish before the stop reaches the pump
                event("finished before the stop")
            pumps.red.action.join()  # a stopped Status fails at once; its thread counts what moved, then ends
        else:
            volume = step[1]
            status = pumps.red.set(volume)
            try:
                status.wait(30)
            except SyringeEmpty as empty:
                event("refused: the syringe holds too little")
                assert empty.needed is not None and empty.needed > empty.remaining
                assert truth() == before  # refused: nothing moved
            else:
                event("dispensed")
                assert pumps.red.dispensed.get() == pytest.approx(volume, abs=NE1000_RESOLUTION_UL)
        counted = pumps.contents()["red"]["amount"]
        assert counted is not None and counted >= 0
        assert counted == pytest.approx(truth(), abs=NE1000_RESOLUTION_UL)


cavro_steps = st.lists(
    st.one_of(
        st.tuples(st.just("transfer"), st.integers(5, 25000).map(lambda tenths: tenths / 10)),
        st.tuples(st.just("refill"), st.integers(0, 6000).map(float), lots),
    ),
    min_size=1,
    max_size=8,
)


@pytest.fixture(scope="module")
def water_bench() -> Iterator[tuple[BackgroundLab, Any]]:
    lab = {
        "world": {**DEFAULT_WORLD, "stocks": {**DEFAULT_WORLD["stocks"], "water": {"volume_ul": 0}}},
        "instruments": {"water": {"kind": "cavro", "address": 1, "syringe_volume_ul": 1000, "valve_ports": 6,
                                  "ports": {1: "stock:water", 2: "station:dispense", 3: "station:waste"},
                                  "init_output_port": 3, "init_duration_s": 0.05, "valve_switch_s": 0.01}},
    }  # fmt: skip
    with run_lab(lab, clock=ScaledClock(2000)) as sim:
        water = drivers.cavro.make_device(
            "water", sim.url("water.pump"), syringe_volume_ul=1000, flow_ul_s=500, max_flow_ul_s=500,
            ports={"water": 1, "outlet": 2, "waste": 3}, poll_interval_s=0.002,
        )  # fmt: skip
        water.connect()
        try:
            yield sim, water
        finally:
            water.destroy()


@SETTINGS
@given(steps=cavro_steps)
def test_a_cavro_reservoir_count_is_the_simulators_stock(water_bench, steps):
    sim, water = water_bench
    hands = HandsClient(sim.url("bench.hands"))
    increment = 1000 / 3000  # µL per plunger increment at standard resolution

    def truth() -> float:
        return hands.state()["stocks"]["water"]["volume_ul"]

    hands.refill_stock("water", 3000)
    water.set_contents("water", 3000)
    for step in steps:
        before = truth()
        if step[0] == "refill":
            _, volume, lot = step
            hands.refill_stock("water", volume, lot=lot)
            water.set_contents("water", volume, lot=lot)
        else:
            volume = step[1]
            status = water.set(volume)
            try:
                status.wait(60)
            except ReservoirEmpty as empty:
                event("refused: the reservoir holds too little")
                assert empty.needed is not None and empty.needed > empty.remaining
                assert truth() == before  # refused: nothing was drawn
            else:
                event("transferred")
                assert water.volume.get() == pytest.approx(round(volume / increment) * increment)
        counted = water.contents()["water"]["amount"]
        assert counted is not None and counted >= 0
        assert counted == pytest.approx(truth(), abs=increment)
