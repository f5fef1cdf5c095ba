"""The colour-matching bench, declared finite, run for more experiments than it holds, by a scripted operator.

Small syringes, a short rack of vials and a small waste bin: the experiments run out of dye, vials and room.
When a driver raises ``Empty`` the operator refills by hand (``bench.hands``: a new syringe of a new lot,
a fresh rack), tells the driver (``set_contents``), clears the abandoned vial and runs the experiment
again; the waste bin is emptied when full. Then, for every vial, what the drivers reported using while it
was being filled (``subscribe_usage``) is what the bench says it received — per stock and lot, within the
pumps' resolution — and nothing was ever reported as a motor stall.

A Cavro reservoir that nobody counts runs dry without a word: the spectrum of that vial shows it.
"""

from __future__ import annotations

import copy
import importlib
import random
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import numpy as np
import pytest
import yaml
from bluesky.utils import FailedStatus

from drivers.errors import Empty, FaultKind
from experiments.color_matching.make_target import mixture_absorbance
from experiments.color_matching.procedure import color_match
from sdl.plans import allow_leases
from simulators.clock import ScaledClock
from simulators.hands import HandsClient
from simulators.testing import BackgroundLab, run_lab

HERE = Path(__file__).resolve().parents[1] / "experiments" / "color_matching"
DYES = ("yellow", "red", "blue")
SYRINGE_FILL_UL = 900.0
RACK = 4
TOTAL_UL = 1500.0
#: DIS reports four digits: at worst half a µL off what the plunger moved (a Cavro increment is 1/3 µL).
RESOLUTION_UL = 0.5


def finite_lab() -> dict[str, Any]:
    lab = yaml.safe_load((HERE / "lab.yaml").read_text())
    world = lab["world"]
    for dye in DYES:
        world["stocks"][dye]["lot"] = f"{dye}-1"
    world["stocks"]["water"] = {"volume_ul": 50000, "lot": "DI-1"}
    world["stations"]["feeder"].update(count=RACK, lot="V-1")
    world["stations"]["waste"].update(capacity_vials=3)
    for pump in lab["instruments"]["dye_pumps"]["pumps"]:
        pump["fill_ul"] = SYRINGE_FILL_UL
    return lab


def devices(sim: BackgroundLab) -> dict[str, Any]:
    """The campaign's own instruments, built as sdl builds them."""
    spec = yaml.safe_load((HERE / "campaign.yaml").read_text())["lab"]["instruments"]
    built = {}
    for name, instrument in spec.items():
        module, _, factory = instrument["driver"].partition(":")
        address = instrument["address"]
        fill = lambda text: sim.url(text.strip("{}"))  # noqa: E731
        address = {k: fill(v) for k, v in address.items()} if isinstance(address, dict) else fill(address)
        built[name] = getattr(importlib.import_module(module), factory)(
            name, address, **instrument["options"]
        )
    return built


@pytest.fixture
def bench() -> Iterator[tuple[BackgroundLab, dict[str, Any]]]:
    with run_lab(finite_lab(), clock=ScaledClock(500)) as sim:
        built = devices(sim)
        try:
            yield sim, built
        finally:
            for device in built.values():
                device.destroy()


def cause(failure: BaseException) -> BaseException:
    while failure.__cause__ is not None:
        failure = failure.__cause__
    return failure


def settle(devices: dict[str, Any]) -> None:
    """Every action thread ended (a failed plan stops what it moved: those threads book what moved)."""
    for device in devices.values():
        for action in device._actions():
            action.join()


def test_a_scripted_operator_keeps_a_finite_bench_running_and_every_vial_is_booked(bench, engine):
    sim, lab = bench
    pumps, water, arm = lab["dye_pumps"], lab["water_pump"], lab["arm"]
    hands = HandsClient(sim.url("bench.hands"))
    allow_leases(engine)
    # The operator tells the drivers what the bench holds (the lab service will, from its inventory).
    for dye in DYES:
        pumps.set_contents(dye, SYRINGE_FILL_UL, lot=f"{dye}-1")
    water.set_contents("water", 50000, lot="DI-1")
    arm.set_contents("feeder", RACK, lot="V-1")
    usage: list[dict] = []
    for device in (pumps, water, arm):
        device.subscribe_usage(usage.append)
    lots = dict.fromkeys(DYES, 1)
    rng = random.Random(3)
    done, refills, empties = 0, defaultdict(int), []
    while done < 8:
        waste = hands.state()["waste"]["waste"]
        if waste["vials"] >= waste["capacity_vials"]:
            hands.empty_waste("waste")
        recipe = {dye: round(rng.uniform(50, 400), 1) for dye in DYES}
        try:
            engine(color_match(recipe, lab, total_volume_ul=TOTAL_UL))
        except FailedStatus as failure:
            settle(lab)
            empty = cause(failure)
            assert isinstance(empty, Empty) and empty.fault is FaultKind.EMPTY, repr(empty)  # never a stall
            empties.append((empty.instrument, empty.consumable))
            refills[empty.consumable] += 1
            if empty.instrument == "dye_pumps":
                lots[empty.consumable] += 1
                lot = f"{empty.consumable}-{lots[empty.consumable]}"
                hands.replace_syringe(f"dye_pumps:{empty.consumable}", 10000, lot=lot)  # a fresh syringe
                pumps.set_contents(empty.consumable, 10000, lot=lot)
                # The vial it was filling is incomplete: the arm clears it before the experiment runs again.
                engine(bps.mv(arm.transfer, ("dispense", "waste")))
            else:
                assert (empty.instrument, empty.consumable) == ("arm", "feeder")
                hands.load_feeder("feeder", RACK, lot=f"V-{refills['feeder'] + 1}")
                arm.set_contents("feeder", RACK, lot=f"V-{refills['feeder'] + 1}")
            continue
        done += 1
    settle(lab)
    state = hands.state()
    assert refills["feeder"] >= 2 and sum(refills[d] for d in DYES) >= 2, empties
    assert state["waste"]["waste"]["overflowed_vials"] == 0

    # Each vial: what the drivers reported while it was the one being filled, against what it received.
    vials = hands.vials()
    picked_from_feeder = [u for u in usage if u["event"] == "picked" and u["consumable"] == "feeder"]
    assert [(u["slot"], u["lot"]) for u in picked_from_feeder] == [(v["slot"], v["lot"]) for v in vials]
    booked: list[dict[str, float]] = []
    for record in usage:  # in the order the actions reported them: a vial is filled after it is picked
        if record["event"] == "picked" and record["consumable"] == "feeder":
            booked.append(defaultdict(float))
        elif record["event"] == "dispensed":
            booked[-1][f"{record['consumable']}@{record['lot']}"] += record["amount"]
    assert len(booked) == len(vials) == done + len([e for e in empties if e[0] == "dye_pumps"])
    for vial, recorded in zip(vials, booked, strict=True):
        assert set(vial["sources"]) == set(recorded), vial
        for origin, volume in vial["sources"].items():
            assert recorded[origin] == pytest.approx(volume, abs=RESOLUTION_UL), (vial["slot"], origin)
    # The bench's own books agree with the drivers' counts.
    for dye, syringe in zip(DYES, state["instruments"]["dye_pumps"]["syringes"].values(), strict=True):
        assert pumps.contents()[dye]["amount"] == pytest.approx(syringe["plunger_ul"], abs=RESOLUTION_UL)
    assert water.contents()["water"]["amount"] == pytest.approx(state["stocks"]["water"]["volume_ul"], abs=1)
    assert arm.contents()["feeder"]["amount"] == state["feeders"]["feeder"]["count"]


def test_an_uncounted_reservoir_runs_dry_silently_and_the_spectrum_shows_it(engine):
    lab_file = copy.deepcopy(finite_lab())
    lab_file["world"]["stocks"]["water"]["volume_ul"] = 600.0  # less than the recipe's water
    with run_lab(lab_file, clock=ScaledClock(500)) as sim:
        lab = devices(sim)
        try:
            allow_leases(engine)
            documents: list[tuple[str, dict]] = []
            recipe = {"yellow": 200.0, "red": 150.0, "blue": 100.0}  # 1050 µL of water to make 1500
            engine(color_match(recipe, lab, total_volume_ul=TOTAL_UL), lambda n, d: documents.append((n, d)))
        finally:
            for device in lab.values():
                device.destroy()
    descriptor = next(doc for name, doc in documents if name == "descriptor" and doc["name"] == "primary")
    event = next(doc for name, doc in documents if name == "event")
    # The pump reports the volume its plunger moved; nothing on the wire says part of it was air.
    assert event["data"]["water_pump_volume"] == pytest.approx(1050.0, abs=RESOLUTION_UL)
    wavelengths = np.asarray(descriptor["configuration"]["spectrometer"]["data"]["spectrometer_wavelengths"])
    measured = np.asarray(event["data"]["spectrometer_absorbance"], dtype=float)
    window = (wavelengths >= 420) & (wavelengths <= 680)
    delivered = {dye: event["data"][f"dye_pumps_{dye}_dispensed"] for dye in recipe}
    as_reported = mixture_absorbance(delivered, wavelengths, TOTAL_UL)[window]
    as_happened = mixture_absorbance(delivered, wavelengths, TOTAL_UL - 450.0)[window]
    # The vial holds 1050 µL, not 1500: the dyes are that much stronger, well beyond the noise.
    assert np.mean(np.abs(measured[window] - as_happened)) < 0.2 * np.mean(
        np.abs(measured[window] - as_reported)
    )
