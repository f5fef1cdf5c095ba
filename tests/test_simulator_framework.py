"""The shared simulator machinery: streams over TCP and pty, link faults, clocks, the world."""

from __future__ import annotations

import asyncio
import math

import pytest

from drivers.errors import ConnectionLost, InstrumentTimeout, ReplyCutShort
from drivers.transport import Transport
from simulators.base import Simulator
from simulators.clock import ScaledClock, VirtualClock
from simulators.faults import LINK_FAULTS, FaultPlan, FaultSpecError
from simulators.lab import Lab
from simulators.testing import BackgroundLab
from simulators.world import Portion, World


class EchoSimulator(Simulator):
    """Answers every line with the same line upper-cased, to exercise the framework alone."""

    kind = "echo"
    endpoints = ("echo",)

    async def serve(self, endpoint, stream):
        while True:
            line = await stream.read_until(b"\n")
            await stream.send(line.upper())


def echo_lab(faults: str = "", link: str = "tcp") -> BackgroundLab:
    world = World(ScaledClock())
    plan = FaultPlan.parse(faults, LINK_FAULTS, seed=1)
    return BackgroundLab(Lab(world, {"echo": EchoSimulator(world, faults=plan)}), link, prefixed=False)


def ask(transport: Transport, text: bytes) -> bytes:
    return transport.exchange(text, lambda t: t.read_until(b"\n", timeout=0.5))


@pytest.mark.parametrize("link", ["tcp", "pty"])
def test_round_trip_over_each_link(link):
    with echo_lab(link=link) as sim, Transport(sim.url("echo")) as transport:
        assert sim.url("echo").startswith("socket://" if link == "tcp" else "/dev/")
        for _ in range(3):
            assert ask(transport, b"hello\n") == b"HELLO\n"


def test_drop_fault_closes_tcp_and_reconnect_recovers():
    with echo_lab("drop@2") as sim, Transport(sim.url("echo")) as transport:
        assert ask(transport, b"a\n") == b"A\n"
        with pytest.raises(ConnectionLost):
            ask(transport, b"b\n")
        transport.reconnect()
        assert ask(transport, b"c\n") == b"C\n"


def test_garble_partial_and_silent_faults_reach_the_wire():
    with echo_lab("silent@1,garble@2,partial@3") as sim, Transport(sim.url("echo")) as transport:
        # Each reply is one opportunity for every link fault: reply 1 is lost, 2 garbled, 3 halved.
        with pytest.raises(InstrumentTimeout):
            ask(transport, b"abcdef\n")
        garbled = ask(transport, b"abcdef\n")
        assert garbled != b"ABCDEF\n" and len(garbled) == 7
        transport.write(b"abcdef\n")
        with pytest.raises(ReplyCutShort, match="ABC"):
            transport.read_until(b"\n", timeout=0.3)  # half a line never completes: cut, not silent


def test_fault_spec_errors_name_the_allowed_faults():
    with pytest.raises(FaultSpecError, match="allowed: drop, garble, partial, silent"):
        FaultPlan.parse("melt@3", LINK_FAULTS)
    with pytest.raises(FaultSpecError, match="NAME@N"):
        FaultPlan.parse("drop@", LINK_FAULTS)
    with pytest.raises(FaultSpecError, match="between 0 and 1"):
        FaultPlan.parse("drop%2", LINK_FAULTS)


def test_probabilistic_faults_are_seeded():
    first = [FaultPlan.parse("garble%0.3", LINK_FAULTS, seed=7).fires("garble") for _ in range(1)]
    plan_a = FaultPlan.parse("garble%0.3", LINK_FAULTS, seed=7)
    plan_b = FaultPlan.parse("garble%0.3", LINK_FAULTS, seed=7)
    draws_a = [plan_a.fires("garble") for _ in range(200)]
    assert draws_a == [plan_b.fires("garble") for _ in range(200)]
    assert 30 < sum(draws_a) < 90 and first


def test_fault_groups_stand_for_every_link_fault_or_every_instrument_fault():
    allowed = {**LINK_FAULTS, "stall": "a stall", "reset": "a reset"}
    plan = FaultPlan.parse("link%0.05,instrument@2", allowed)
    assert sorted((r.name, r.probability, r.at) for r in plan.rules) == [
        ("drop", 0.05, None), ("garble", 0.05, None), ("partial", 0.05, None), ("reset", None, 2),
        ("silent", 0.05, None), ("stall", None, 2),
    ]  # fmt: skip
    with pytest.raises(FaultSpecError, match="instrument"):
        FaultPlan.parse("links%0.05", allowed)


def test_an_injected_fault_fires_at_its_next_opportunities_after_a_skip():
    plan = FaultPlan.parse("", LINK_FAULTS)
    assert not plan.fires("garble")
    plan.inject("garble", times=2, skip=1)
    assert [plan.fires("garble") for _ in range(5)] == [False, True, True, False, False]
    assert plan.fired["garble"] == 2 and plan.opportunities("garble") == 6


def test_virtual_clock_wakes_sleepers_only_when_advanced():
    clock = VirtualClock()

    async def scenario():
        woke = []

        async def sleeper(delay):
            await clock.sleep(delay)
            woke.append(delay)

        tasks = [asyncio.create_task(sleeper(d)) for d in (5, 1)]
        await asyncio.sleep(0)
        clock.advance(0.5)
        await asyncio.sleep(0)
        assert woke == []
        clock.advance(1)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert woke == [1]
        clock.advance(10)
        await asyncio.gather(*tasks)
        assert woke == [1, 5] and clock.now() == 11.5

    asyncio.run(scenario())


def test_world_moves_liquid_and_vessels():
    world = World.from_config(
        {
            "stocks": {"red": {"concentrations": {"red": 1e-4}}, "water": {}},
            "stations": {
                "feeder": {"kind": "feeder", "vessel_capacity_ul": 1000},
                "dispense": {},
                "waste": {"kind": "waste"},
            },
        },
        VirtualClock(),
    )
    vial = world.pick("feeder")
    assert (
        vial is not None and world.vessel_at("feeder") is not None and world.vessel_at("feeder") is not vial
    )
    assert world.place("dispense", vial)
    world.transfer(world.holder("stock:red"), world.holder("dispense"), 250)
    world.transfer(world.holder("water"), world.holder("station:dispense"), 750)
    assert vial.volume_ul == pytest.approx(1000)
    assert vial.concentration("red") == pytest.approx(2.5e-5)
    world.transfer(world.holder("water"), world.holder("dispense"), 100)
    assert vial.overflowed_ul == pytest.approx(100)
    spectrum = world.chemistry.absorbance(vial, [504.0, 800.0])
    assert spectrum[0] == pytest.approx(2.5e-5 * 25000, rel=0.02) and spectrum[1] < 1e-3
    assert world.pick("dispense") is vial and world.place("waste", vial) and world.discarded == [vial]
    world.holder("dispense").put(Portion(10.0))
    assert world.stations["dispense"].spilled_ul == 10.0
    assert math.isinf(world.stocks["water"].volume_ul)


def test_the_server_closes_every_socket_even_for_clients_caught_mid_exchange_at_shutdown():
    # A client that connected but whose session never started, and one that left half a request
    # while the server stopped: every server-side socket must be closed by the server itself
    # (an unclosed one would surface as a ResourceWarning, an error here).
    import gc
    import socket
    from urllib.parse import urlsplit

    for _ in range(20):
        with echo_lab() as sim:
            parts = urlsplit(sim.url("echo"))
            idle = socket.create_connection((parts.hostname, parts.port))
            leaving = socket.create_connection((parts.hostname, parts.port))
            leaving.sendall(b"half a requ")
            leaving.close()
        idle.close()
        gc.collect()
    with echo_lab() as sim:  # and the server still serves after all that
        transport = Transport(sim.url("echo")).open()
        try:
            assert ask(transport, b"ping\n") == b"PING\n"
        finally:
            transport.close()
