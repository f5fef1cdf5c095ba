"""The IKA RCT digital simulator at the byte level: silence after set commands, the thermal model,
the watchdog, injected faults, and the world's station temperature."""

from __future__ import annotations

import socket
from contextlib import contextmanager

from simulators.clock import VirtualClock
from simulators.ika import plate_state
from simulators.testing import run_simulator


@contextmanager
def plate(faults=None, config=None):
    clock = VirtualClock()
    with run_simulator("ika-rct", clock=clock, faults=faults, config=config) as sim:
        host, port = sim.url("serial").removeprefix("socket://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as link:
            yield sim, clock, link


def ask(link, request: bytes) -> bytes:
    link.sendall(request)
    reply = b""
    while not reply.endswith(b"\r\n"):
        reply += link.recv(100)
    return reply


def state(sim):
    return sim.call(lambda: dict(plate_state(sim.lab.simulators["ika-rct"])))


def advance(sim, clock, seconds):
    clock.advance(seconds)
    sim.call(lambda: sim.lab.world.settle())


def test_queries_answer_and_set_commands_stay_silent():
    with plate() as (_sim, _clock, link):
        assert ask(link, b"IN_NAME \r\n") == b"RCT digital \r\n"
        link.sendall(b"OUT_SP_1 60 \r\nOUT_SP_4 400 \r\nSTART_4 \r\nIN_FOO \r\n")
        # Had any of those answered, its reply would be read here instead of the set point.
        assert ask(link, b"IN_SP_1 \r\n") == b"60.0 1 \r\n"
        assert ask(link, b"IN_SP_4\r\n") == b"400.0 4 \r\n"
        assert ask(link, b"IN_SP_3 \r\n") == b"340.0 3 \r\n"


def test_the_medium_reaches_its_set_point_after_a_small_overshoot_and_holds_it():
    with plate() as (sim, clock, link):
        link.sendall(b"OUT_SP_1 60.0 \r\nSTART_1 \r\n")
        ask(link, b"IN_SP_1 \r\n")
        highest = 0.0
        for _ in range(120):  # 20 minutes
            advance(sim, clock, 10)
            now = state(sim)
            highest = max(highest, now["medium_c"])
            assert now["plate_c"] <= 60.0 + 15.0 + 0.5  # the controller keeps the plate near the set point
        assert 60.5 < highest < 66.0, highest
        assert abs(state(sim)["medium_c"] - 60.0) < 0.5
        assert float(ask(link, b"IN_PV_1 \r\n").split()[0]) == round(state(sim)["medium_c"], 1)
        # The world sees it: whatever stands on the plate reacts at the medium's temperature.
        assert abs(sim.call(lambda: sim.lab.world.stations["dispense"].temperature_c) - 60.0) < 0.5
        link.sendall(b"STOP_1 \r\n")
        ask(link, b"IN_PV_2 \r\n")
        advance(sim, clock, 3600)
        assert state(sim)["medium_c"] < 40.0  # off, it cools towards the room


def test_the_motor_ramps_to_its_speed():
    with plate() as (sim, clock, link):
        link.sendall(b"OUT_SP_4 800 \r\nSTART_4 \r\n")
        ask(link, b"IN_SP_4 \r\n")
        advance(sim, clock, 1.0)
        assert 0 < state(sim)["speed_rpm"] < 800
        advance(sim, clock, 5.0)
        assert ask(link, b"IN_PV_4 \r\n") == b"800.0 4 \r\n"


def test_watchdog_one_switches_everything_off_until_reset():
    with plate() as (sim, clock, link):
        assert ask(link, b"OUT_WD1@30 \r\n") == b"30 \r\n"
        link.sendall(b"OUT_SP_1 50 \r\nSTART_1 \r\nOUT_SP_4 300 \r\nSTART_4 \r\n")
        ask(link, b"IN_SP_1 \r\n")
        advance(sim, clock, 20)
        assert state(sim)["heating"] and state(sim)["stirring"]
        advance(sim, clock, 15)  # 35 s since the watchdog command
        assert state(sim)["error"] == "Er 2" and not state(sim)["heating"] and not state(sim)["stirring"]
        link.sendall(b"START_1 \r\n")
        ask(link, b"IN_PV_1 \r\n")
        assert not state(sim)["heating"]  # Er 2 holds until RESET
        link.sendall(b"RESET \r\nSTART_1 \r\n")
        ask(link, b"IN_PV_1 \r\n")
        assert state(sim)["heating"] and state(sim)["error"] is None


def test_an_injected_power_cycle_forgets_the_set_points_and_switches_off():
    with plate(faults="reset@4") as (sim, _clock, link):
        link.sendall(b"OUT_SP_1 70 \r\nSTART_1 \r\nOUT_SP_4 300 \r\n")
        assert ask(link, b"IN_SP_1 \r\n") == b"0.0 1 \r\n"  # the 4th command met a power cycle
        assert not state(sim)["heating"]


def test_an_injected_watchdog_event_shows_er_2():
    with plate(faults="watchdog@2") as (sim, _clock, link):
        link.sendall(b"OUT_SP_1 70 \r\nSTART_1 \r\n")
        ask(link, b"IN_SP_1 \r\n")
        assert state(sim)["error"] == "Er 2" and not state(sim)["heating"]
