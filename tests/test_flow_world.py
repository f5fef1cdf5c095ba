"""Continuous flow in the simulated world: plugs through a reactor of given volume, each reacting for
exactly its residence time, into a flow cell; conditions at stations; a fluorescing sample."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivers.newera import NE1000Line, NE1000Pump
from simulators.clock import ScaledClock, VirtualClock
from simulators.flow import FlowReactor
from simulators.testing import run_lab
from simulators.world import Conditions, Portion, World


class FirstOrder:
    """A -> B at rate k(T) = k0 · 2^((T - 22 °C)/10); A absorbs nothing, B absorbs at 500 nm."""

    def __init__(self, k0_per_s: float = 0.01):
        self.k0 = k0_per_s

    def evolve(self, contents, seconds: float, conditions: Conditions) -> None:
        k = self.k0 * 2 ** ((conditions.temperature_c - 22.0) / 10.0)
        a = contents.amounts.get("A", 0.0)
        reacted = a * (1 - math.exp(-k * seconds))
        contents.amounts["A"] = a - reacted
        contents.amounts["B"] = contents.amounts.get("B", 0.0) + reacted

    def absorbance(self, vessel, wavelengths_nm):
        wl = np.asarray(wavelengths_nm, dtype=float)
        concentration = 0.0 if vessel is None else vessel.concentration("B")
        return 1000.0 * concentration * np.exp(-0.5 * ((wl - 500.0) / 30.0) ** 2)

    def photoluminescence(self, vessel, wavelengths_nm, lamp_counts):
        wl = np.asarray(wavelengths_nm, dtype=float)
        return 1e6 * vessel.concentration("B") * np.exp(-0.5 * ((wl - 650.0) / 10.0) ** 2)


def flow_world(clock, chemistry=None, volume_ul=100.0):
    world = World.from_config(
        {
            "stocks": {"a": {"concentrations": {"A": 1.0}}, "solvent": {}},
            "stations": {
                "bay": {"downstream": "cell"},
                "cell": {"kind": "flow-cell", "vessel_capacity_ul": 10},
            },
            "reactors": {"coil": {"volume_ul": volume_ul, "station": "bay"}},
        },
        clock,
    )
    if chemistry is not None:
        world.chemistry = chemistry
    return world


def pump_for(world, clock, seconds, ul_per_s, share_a=0.5, steps=1):
    """Deliver ``ul_per_s`` for ``seconds``: a share of stock a, the rest solvent, as two pumps would."""
    for _ in range(steps):
        start = clock.now()
        clock.advance(seconds / steps)
        span = (start, clock.now())
        volume = ul_per_s * seconds / steps
        a = Portion(volume * share_a, {"A": volume * share_a}, span=span)
        world.stations["bay"].put(a)
        world.stations["bay"].put(Portion(volume * (1 - share_a), span=span))
        world.settle()


def test_a_plug_leaves_after_one_reactor_volume_and_reacts_for_its_residence_time():
    clock = VirtualClock()
    world = flow_world(clock, FirstOrder(0.01), volume_ul=100.0)
    pump_for(world, clock, 60.0, 5.0, steps=60)  # 300 µL: three reactor volumes at 5 µL/s, tau = 20 s
    reactor: FlowReactor = world.reactors["coil"]
    assert reactor.last_residence_s == pytest.approx(20.0, rel=1e-6)
    cell = world.vessel_at("cell")
    converted = cell.concentration("B") / (cell.concentration("A") + cell.concentration("B"))
    assert converted == pytest.approx(1 - math.exp(-0.01 * 20.0), rel=1e-3)
    assert cell.concentration("A") + cell.concentration("B") == pytest.approx(0.5, rel=1e-6)


def test_the_answer_does_not_depend_on_how_often_the_world_is_looked_at():
    outcomes = []
    for steps in (1, 7, 300):
        clock = VirtualClock()
        world = flow_world(clock, FirstOrder(0.02))
        pump_for(world, clock, 60.0, 5.0, steps=steps)
        outcomes.append(world.vessel_at("cell").concentration("B"))
    assert outcomes == pytest.approx([outcomes[0]] * 3, rel=1e-3)  # plugs of 1 µL: to a part in 1000


def test_the_reactor_reacts_at_the_temperature_of_its_station():
    clock = VirtualClock()
    world = flow_world(clock, FirstOrder(0.01))
    world.stations["bay"].temperature_c = 42.0  # what a hotplate there would hold
    pump_for(world, clock, 60.0, 5.0, steps=10)
    cell = world.vessel_at("cell")
    converted = cell.concentration("B") / 0.5
    assert converted == pytest.approx(1 - math.exp(-0.04 * 20.0), rel=1e-3)


def test_a_vessel_standing_at_a_station_reacts_under_its_conditions():
    clock = VirtualClock()
    world = World.from_config({"stations": {"lamp_box": {"light": 1.0, "vessel": True}}}, clock)
    world.chemistry = FirstOrder(0.001)
    world.stations["lamp_box"].vessel.put(Portion(100.0, {"A": 100.0}))
    clock.advance(100.0)
    assert world.vessel_at("lamp_box").concentration("B") == pytest.approx(1 - math.exp(-0.1), rel=1e-6)
    assert world.stations["lamp_box"].conditions().light == 1.0


def test_two_ne1000_pumps_feed_the_reactor_and_the_flow_cell_holds_their_mixture():
    lab = {
        "world": {
            "stocks": {"a": {"concentrations": {"A": 1.0}}, "solvent": {}},
            "stations": {
                "bay": {"downstream": "cell"},
                "cell": {"kind": "flow-cell", "vessel_capacity_ul": 10},
            },
            "reactors": {"coil": {"volume_ul": 100, "station": "bay"}},
        },
        "instruments": {
            "pumps": {
                "kind": "ne1000",
                "pumps": [
                    {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000, "reagent": "a",
                     "outlet": "bay"},
                    {"address": 1, "diameter_mm": 14.57, "syringe_volume_ul": 10000, "reagent": "solvent",
                     "outlet": "bay"},
                ],
            }
        },
    }  # fmt: skip
    with run_lab(lab, clock=ScaledClock(200.0)) as sim:
        line = NE1000Line.connect(sim.url("pumps.pump"))
        try:
            limits = {"diameter_mm": 14.57, "syringe_volume_ul": 10000, "max_rate_ul_min": 5000}
            a, solvent = NE1000Pump(line, 0, **limits), NE1000Pump(line, 1, **limits)
            for pump in (a, solvent):
                pump.configure()
            # 100 + 300 µL/min for three reactor volumes (tau = 15 s)
            a.infuse(75.0, 100.0)
            solvent.infuse(225.0, 300.0)
            for pump in (a, solvent):
                pump.wait_until_stopped(30, poll_s=0.01)
        finally:
            line.close()
        cell = sim.call(lambda: sim.lab.world.vessel_at("cell"))
        assert sim.call(lambda: cell.concentration("A")) == pytest.approx(0.25, rel=0.02)
        assert sim.call(lambda: sim.lab.world.reactors["coil"].last_residence_s) == pytest.approx(
            15.0, rel=0.05
        )


def test_a_fluorescing_sample_adds_its_emission_to_the_spectrum():
    from simulators.ocean import OceanHDX

    clock = VirtualClock()
    world = World.from_config({"stations": {"spectrometer": {"vessel": True}}}, clock)
    world.chemistry = FirstOrder()
    world.stations["spectrometer"].vessel.put(Portion(1000.0, {"B": 1.0}))
    spectrometer = OceanHDX(world, {"read_noise": 0.001, "electrons_per_count": 1e9})
    sample = spectrometer.counts(0.1).astype(float)
    world.stations["spectrometer"].vessel.take(1000.0)
    blank = spectrometer.counts(0.1).astype(float)
    wl = spectrometer.wavelengths
    assert sample[np.argmin(abs(wl - 650))] > blank[np.argmin(abs(wl - 650))] + 50  # emission on top
    assert sample[np.argmin(abs(wl - 500))] < blank[np.argmin(abs(wl - 500))] - 1000  # absorption below
