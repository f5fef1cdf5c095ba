"""A person's hands on the simulated bench (``bench.hands``), and the bench's own accounting.

The world runs out where the lab file says how much there is (stocks, feeders, waste) and behaves as
before where it does not; the hands endpoint refills, loads, empties and replaces, and reports the
bench's true state; it answers every line with one line of JSON and refuses what a person cannot do.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from simulators.base import ConfigError
from simulators.clock import VirtualClock
from simulators.hands import HandsClient, HandsRefused, parse
from simulators.lab import build_lab, endpoint_names
from simulators.testing import run_lab
from simulators.world import World

LAB = {
    "world": {
        "stocks": {
            "red": {"concentrations": {"red": 1e-4}, "volume_ul": 20000, "lot": "R-1"},
            "water": {},
        },
        "stations": {
            "feeder": {"kind": "feeder", "count": 2, "lot": "V-1"},
            "dispense": {},
            "waste": {"kind": "waste", "capacity_ul": 2500, "capacity_vials": 2},
        },
    },
    "instruments": {
        "pumps": {"kind": "ne1000", "pumps": [
            {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000, "reagent": "red",
             "outlet": "dispense", "fill_ul": 5000},
            {"address": 1, "diameter_mm": 14.57, "syringe_volume_ul": 10000, "reagent": "water",
             "outlet": "dispense"},
        ]},
    },
}  # fmt: skip


def world(config=LAB["world"]) -> World:
    return World.from_config(config, VirtualClock())


def test_a_world_without_declared_amounts_behaves_as_before():
    bench = world(
        {"stocks": {"water": {}}, "stations": {"feeder": {"kind": "feeder"}, "waste": {"kind": "waste"}}}
    )
    for _ in range(500):
        vial = bench.pick("feeder")
        assert vial is not None
        vial.put(bench.stocks["water"].take(4000))
        assert bench.place("waste", vial)
    assert math.isinf(bench.stocks["water"].volume_ul) and bench.vessel_at("feeder") is not None
    assert bench.state()["waste"]["waste"]["overflowed_ul"] == 0.0 and len(bench.discarded) == 500


def test_a_declared_bench_runs_out_and_overflows_and_remembers_where_each_vial_went():
    bench = world()
    first, second = bench.pick("feeder"), bench.pick("feeder")
    assert (
        first is not None and second is not None and bench.pick("feeder") is None
    )  # the gripper closes on air
    assert (first.slot, second.slot, first.lot, first.feeder) == (1, 2, "V-1", "feeder")
    first.put(bench.stocks["red"].take(1500))
    second.put(bench.stocks["red"].take(1500))
    assert first.sources == {"red@R-1": 1500.0}
    assert bench.place("waste", first) and bench.place("waste", second)
    waste = bench.state()["waste"]["waste"]
    assert (waste["volume_ul"], waste["overflowed_ul"], waste["vials"]) == (2500.0, 500.0, 2)
    third = bench.new_vessel()
    assert bench.place("waste", third) and bench.state()["waste"]["waste"]["overflowed_vials"] == 1
    # A stock gives what it has, then nothing: a pump draws air.
    assert bench.stocks["red"].take(50000).volume_ul == pytest.approx(17000.0)
    assert bench.stocks["red"].take(10).volume_ul == 0.0
    assert bench.state()["stocks"]["red"]["drawn_ul"] == pytest.approx(20000.0)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"stocks": {"red": {"volume": 10}}}, "stocks.red: unknown key(s) volume; allowed: concentrations"),
        ({"stocks": {"red": {"volume_ul": -1}}}, "stocks.red.volume_ul: expected a number of µL >= 0"),
        ({"stations": {"dispense": {"count": 3}}}, "stations.dispense: unknown key(s) count; allowed:"),
        (
            {"stations": {"feeder": {"kind": "feeder", "count": 2.5}}},
            "stations.feeder.count: expected a whole",
        ),
        (
            {"stations": {"waste": {"kind": "waste", "capacity_vials": -2}}},
            "capacity_vials: expected a whole",
        ),
        ({"stations": {"feeder": {"kind": "feeder", "lot": ""}}}, "stations.feeder.lot: a lot is 1-64"),
    ],
)
def test_a_bad_declaration_names_the_field_and_what_is_allowed(config, message):
    with pytest.raises(ValueError) as refused:
        World.from_config(config, VirtualClock())
    assert message in str(refused.value)


def test_the_hands_endpoint_is_listed_last_and_bench_is_not_an_instrument_name():
    lab = build_lab(LAB, VirtualClock())
    assert endpoint_names(lab) == ["pumps.pump", "bench.hands"]
    with pytest.raises(ConfigError, match="'bench' names the bench's own endpoint"):
        build_lab({**LAB, "instruments": {"bench": LAB["instruments"]["pumps"]}}, VirtualClock())


@pytest.mark.parametrize("link", ["tcp", "pty"])
def test_hands_refill_load_empty_and_replace_and_the_state_says_so(link):
    with run_lab(LAB, link=link, clock=VirtualClock()) as sim:
        hands = HandsClient(sim.url("bench.hands"))
        assert hands.request("help")["commands"][0].startswith("refill stock=")
        reply = hands.refill_stock("red", 30000, lot="R-2")
        assert (reply["volume_ul"], reply["lot"], reply["origin"]) == (30000.0, "R-2", "red@R-2")
        # Topped up from the new bottle: the syringe held 5000 µL of R-1.
        syringe = hands.refill_syringe("pumps:red", 9000)
        assert syringe["plunger_ul"] == 9000.0 and syringe["sources"] == {
            "red@R-1": 5000.0,
            "red@R-2": 4000.0,
        }
        syringe = hands.replace_syringe("pumps:0", 2000, lot="R-3")
        assert syringe["sources"] == {"red@R-3": 2000.0} and syringe["removed_ul"] == 9000.0
        assert hands.refill_syringe("pumps:1", 10000)["reagent"] == "water"
        assert hands.load_feeder("feeder", 48, lot="V-2") == {
            "ok": True, "feeder": "feeder", "count": 48, "lot": "V-2", "slot": 1, "taken": 0}  # fmt: skip
        sim.call(lambda: sim.lab.world.stations["waste"].put(
            sim.lab.world.stocks["water"].take(700)))  # fmt: skip
        assert hands.empty_waste("waste")["emptied_ul"] == 700.0
        state = hands.state()
        assert state["stocks"]["red"]["volume_ul"] == pytest.approx(24000.0)
        assert state["stocks"]["water"]["volume_ul"] is None  # unlimited, as before
        assert state["feeders"]["feeder"]["count"] == 48 and state["waste"]["waste"]["volume_ul"] == 0.0
        assert state["instruments"]["pumps"]["syringes"]["0"]["liquid_ul"] == 2000.0


def test_hands_refuse_what_a_person_cannot_do_with_the_reason():
    with run_lab(LAB, clock=VirtualClock()) as sim:
        hands = HandsClient(sim.url("bench.hands"))
        refusals = {
            "refill stock=blue volume_ul=10": "no stock named 'blue'; stocks: ['red', 'water']",
            "refill stock=red volume_ul=lots": "volume_ul: expected a number of µL",
            "refill stock=red volume_ul=inf": "volume_ul: expected 0..",
            "refill volume_ul=10": "give stock=NAME or syringe=INSTRUMENT:PUMP",
            "refill syringe=pumps:7 volume_ul=10": "pumps has no pump '7'; pumps: 0 (red), 1 (water)",
            "refill syringe=arm:0 volume_ul=10": "name it INSTRUMENT:PUMP; instruments: pumps",
            "refill syringe=pumps:0 volume_ul=20000": "volume_ul must be 0..10000",
            "refill syringe=pumps:0 volume_ul=100": "holds 5000 µL already; replace it",
            "load feeder=dispense count=3": "no feeder named 'dispense'; feeders: ['feeder']",
            "load feeder=feeder count=-3": "count: expected a whole number",
            "empty waste=feeder": "no waste named 'feeder'",
            "empty": "empty: missing waste",
            "dance": "unknown command 'dance'; commands: help, state, vials",
            "state verbose=1": "state: unknown argument 'verbose'",
            "refill stock=red stock=red volume_ul=1": "stock given twice",
            'refill stock="red volume_ul=1': "cannot split the line into words",
            "refill stock=red volume_ul=1 lot=" + "x" * 65: "lot: 1-64 printable characters",
        }
        for line, reason in refusals.items():
            with pytest.raises(HandsRefused) as refused:
                hands.request(line)
            assert reason in str(refused.value), line
        # Nothing was done (the syringe's first 5000 µL came out of the declared 20000 at power-up).
        assert hands.state()["stocks"]["red"]["volume_ul"] == 15000.0


def test_a_moving_pump_keeps_its_syringe():
    with run_lab(LAB, clock=VirtualClock()) as sim:
        line = sim.lab.simulators["pumps"]
        for command in ("0", "0RUN"):  # acknowledge the power-up alarm, then pump (VOL 0: until stopped)
            sim.call(
                lambda c=command: line.pumps[0].handle(parse_request(c), sim.lab.world.now(), line.faults)
            )
        with pytest.raises(HandsRefused, match="is infusing: stop it before taking the syringe off"):
            HandsClient(sim.url("bench.hands")).refill_syringe("pumps:0", 9000)


def parse_request(text: str):
    from drivers.newera import codec

    return codec.parse_request(text)


def test_a_line_too_long_is_answered_once_and_the_session_goes_on():
    with run_lab(LAB, clock=VirtualClock()) as sim:
        url = urlsplit(sim.url("bench.hands"))
        with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
            stream = conn.makefile("rwb")
            stream.write(b"state " + b"x" * 100_000 + b"\n" + b"help\n")
            stream.flush()
            first, second = json.loads(stream.readline()), json.loads(stream.readline())
            assert first == {"ok": False, "error": "a command is at most 4096 bytes"}
            assert second["ok"] and "commands" in second


def test_parse_splits_like_a_shell_and_knows_every_command():
    assert parse('refill stock=red volume_ul=10 lot="Lot 4"') == (
        "refill", {"stock": "red", "volume_ul": "10", "lot": "Lot 4"})  # fmt: skip
    assert parse("STATE") == ("state", {})


def test_python_m_simulators_hands_is_the_same_hands_from_a_shell():
    with run_lab(LAB, clock=VirtualClock()) as sim:
        url = sim.url("bench.hands")

        def hands(*words: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "simulators", "hands", url, *words],
                                  capture_output=True, text=True, timeout=60)  # fmt: skip

        done = hands("refill", "stock=red", "volume_ul=12000", "lot=R 9")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["origin"] == "red@R 9"
        refused = hands("load", "feeder=nowhere", "count=1")
        assert refused.returncode == 1 and "no feeder named 'nowhere'" in refused.stderr
        assert hands().returncode == 2
