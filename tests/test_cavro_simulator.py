"""The Cavro simulator spoken to in raw DT bytes, on a virtual clock the tests advance."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from drivers.cavro.codec import SpeedProfile
from drivers.transport import Transport
from simulators.base import ConfigError
from simulators.clock import VirtualClock
from simulators.lab import build_single
from simulators.testing import BackgroundLab, run_simulator

READY, BUSY = b"/0`\x03\r\n", b"/0@\x03\r\n"
INIT_S = 2.5  # the simulator's default initialisation time
FULL_STROKE_S = SpeedProfile().move_time(6000)  # at the power-up speeds (V1400)


class Line:
    def __init__(self, sim: BackgroundLab, transport: Transport, clock: VirtualClock):
        self.sim, self.transport, self.clock = sim, transport, clock

    def ask(self, request: bytes) -> bytes:
        return self.transport.exchange(request, lambda t: t.read_until(b"\n", timeout=1.0))

    def silent(self, request: bytes) -> bytes:
        """Send and collect whatever comes back within a short wait (nothing, for other pumps)."""
        self.transport.write(request)
        self.ask(b"/1Q\r")  # a reply to this proves the simulator has handled the request before it
        return self.transport.read_available()

    def world(self, function):
        return self.sim.call(function)

    @property
    def pump(self):
        return self.sim.lab.simulators["cavro"].pump

    def vial_volume(self) -> float:
        return self.world(lambda: self.sim.lab.world.vessel_at("dispense").volume_ul)

    def initialise(self) -> None:
        assert self.ask(b"/1ZR\r") == BUSY
        self.clock.advance(INIT_S)
        assert self.ask(b"/1Q\r") == READY


@contextmanager
def line(faults: str | None = None, config: dict | None = None) -> Iterator[Line]:
    clock = VirtualClock()
    with (
        run_simulator("cavro", clock=clock, faults=faults, config=config) as sim,
        Transport(sim.url("pump")) as transport,
    ):
        yield Line(sim, transport, clock)


def test_moves_before_initialisation_answer_error_7_and_init_takes_time():
    with line() as pump:
        assert pump.ask(b"/1Q\r") == READY
        assert pump.ask(b"/1A3000R\r") == b"/0g\x03\r\n"  # 0x67: ready, error 7
        assert pump.ask(b"/1I2R\r") == b"/0g\x03\r\n"
        assert pump.ask(b"/1ZR\r") == BUSY
        pump.clock.advance(INIT_S - 0.01)
        assert pump.ask(b"/1Q\r") == BUSY
        pump.clock.advance(0.02)
        assert pump.ask(b"/1Q\r") == READY
        assert pump.ask(b"/1?\r") == b"/0`0\x03\r\n"
        assert pump.ask(b"/1?6\r") == b"/0`1\x03\r\n"  # the input port after Z
        assert pump.ask(b"/1?15\r") == b"/0`1\x03\r\n"  # one initialisation so far


def test_a_full_stroke_takes_the_trapezoid_time_and_moves_water_to_the_vial():
    with line() as pump:
        pump.initialise()
        assert pump.ask(b"/1I1A3000R\r") == BUSY
        pump.clock.advance(0.25)  # the valve is already at port 1: the plunger starts at once
        pump.clock.advance(FULL_STROKE_S - 0.3)
        assert pump.ask(b"/1Q\r") == BUSY
        pump.clock.advance(0.1)
        assert pump.ask(b"/1Q\r") == READY and pump.ask(b"/1?\r") == b"/0`3000\x03\r\n"
        assert pump.world(lambda: pump.pump.syringe.volume_ul) == pytest.approx(1000)
        assert pump.ask(b"/1I2V6000A1500R\r") == BUSY
        pump.clock.advance(0.25 + SpeedProfile(top=6000).move_time(3000) + 0.01)
        assert pump.ask(b"/1Q\r") == READY
        assert pump.vial_volume() == pytest.approx(500)
        assert pump.ask(b"/1?2\r") == b"/0`6000\x03\r\n"


def test_liquid_follows_the_plunger_while_it_moves():
    with line() as pump:
        pump.initialise()
        pump.ask(b"/1A3000R\r")
        pump.clock.advance(FULL_STROKE_S)
        pump.ask(b"/1I2R\r")
        pump.clock.advance(0.25)
        pump.ask(b"/1A0R\r")
        pump.clock.advance(FULL_STROKE_S / 2)
        half = pump.vial_volume()
        assert 400 < half < 600
        # T stops the plunger where it is; the liquid already out stays out.
        assert pump.ask(b"/1TR\r") == READY
        position = int(pump.ask(b"/1?\r")[3:-3])
        assert pump.vial_volume() == pytest.approx(1000 - position / 3)
        pump.clock.advance(FULL_STROKE_S)
        assert pump.vial_volume() == pytest.approx(half, abs=1)


def test_command_while_busy_is_ignored_with_error_15_but_top_speed_may_change():
    with line() as pump:
        pump.initialise()
        pump.ask(b"/1A3000R\r")
        assert pump.ask(b"/1A0R\r") == b"/0O\x03\r\n"  # 0x4F: busy, command overflow
        assert pump.ask(b"/1I3R\r") == b"/0O\x03\r\n"
        assert pump.ask(b"/1V6000R\r") == BUSY  # V is allowed on the fly
        assert pump.ask(b"/1?\r").startswith(b"/0@")  # reports answer while busy
        pump.clock.advance(FULL_STROKE_S)
        assert pump.ask(b"/1Q\r") == READY and pump.ask(b"/1?\r") == b"/0`3000\x03\r\n"


def test_errors_from_the_manual_examples():
    with line() as pump:
        pump.initialise()
        # [E2000R] returns an invalid command error immediately (no "extra" port on a distribution valve).
        assert pump.ask(b"/1E2000R\r") == b"/0b\x03\r\n"
        assert pump.ask(b"/1Q\r") == b"/0b\x03\r\n"
        # [A4000R] does not answer with the error, but Q reports "invalid operand".
        assert pump.ask(b"/1A4000R\r") == BUSY
        assert pump.ask(b"/1Q\r") == b"/0c\x03\r\n"
        # [A3000A3500R] moves to 3000, then stops with the error.
        pump.ask(b"/1A3000A3500R\r")
        pump.clock.advance(FULL_STROKE_S)
        assert pump.ask(b"/1Q\r") == b"/0c\x03\r\n" and pump.ask(b"/1?\r") == b"/0c3000\x03\r\n"
        # Valve in bypass, [A1000R]: "plunger move not allowed" on the next Q.
        pump.ask(b"/1BR\r")
        pump.clock.advance(0.25)
        assert pump.ask(b"/1A1000R\r") == BUSY and pump.ask(b"/1Q\r") == b"/0k\x03\r\n"
        assert pump.ask(b"/1I9R\r") == BUSY and pump.ask(b"/1Q\r") == b"/0c\x03\r\n"  # 6-port valve
        assert pump.ask(b"/1?99\r") == b"/0b\x03\r\n"
        assert pump.ask(b"/1V1R\r") == BUSY and pump.ask(b"/1Q\r") == b"/0c\x03\r\n"  # V is 5..6000


def test_buffered_strings_loops_delays_and_repeat():
    with line() as pump:
        pump.initialise()
        assert pump.ask(b"/1V6000gP300M100G3\r") == READY  # loaded, not run
        assert pump.ask(b"/1F\r") == b"/0`1\x03\r\n"
        assert pump.ask(b"/1R\r") == BUSY and pump.ask(b"/1F\r") == b"/0@0\x03\r\n"
        pump.clock.advance(3 * (SpeedProfile(top=6000).move_time(600) + 0.1) + 0.01)
        assert pump.ask(b"/1?\r") == b"/0`900\x03\r\n"
        assert pump.ask(b"/1X\r") == BUSY  # the same string again
        pump.clock.advance(1.0)
        assert pump.ask(b"/1?\r") == b"/0`1800\x03\r\n"
        assert pump.ask(b"/1gP10R\r") == b"/0d\x03\r\n"  # g without its G: refused at once
        # An endless loop runs until T.
        pump.ask(b"/1gP1D1GR\r")
        pump.clock.advance(5.0)
        assert pump.ask(b"/1Q\r") == BUSY
        assert pump.ask(b"/1T\r") == READY


def test_lowercase_moves_report_ready_but_still_refuse_new_moves():
    with line() as pump:
        pump.initialise()
        pump.ask(b"/1a3000R\r")
        assert pump.ask(b"/1Q\r") == READY
        assert pump.ask(b"/1A0R\r") == b"/0o\x03\r\n"  # 0x6F: ready bit, command overflow
        pump.clock.advance(FULL_STROKE_S)
        assert pump.ask(b"/1?\r") == b"/0`3000\x03\r\n"


def test_fine_resolution_reports_24000_increments_per_stroke():
    with line() as pump:
        pump.initialise()
        pump.ask(b"/1N1R\r")
        assert pump.ask(b"/1A12000R\r") == BUSY
        pump.clock.advance(FULL_STROKE_S)
        assert pump.ask(b"/1?\r") == b"/0`12000\x03\r\n"
        pump.ask(b"/1N0R\r")
        assert pump.ask(b"/1?\r") == b"/0`1500\x03\r\n"


def test_only_this_pumps_address_answers_and_group_commands_run_silently():
    with line() as pump:
        assert pump.silent(b"/2ZR\r") == b""
        assert pump.pump.counters["inits"] == 0
        assert pump.silent(b"/_ZR\r") == b""  # everyone initialises, nobody answers
        assert pump.pump.counters["inits"] == 1
        pump.clock.advance(INIT_S)
        assert pump.silent(b"garbage\r") == b""
        assert pump.ask(b"/1Q\r") == READY


def test_plunger_overload_stalls_and_blocks_moves_until_reinitialised():
    with line(faults="plunger-overload@1") as pump:
        pump.initialise()
        pump.ask(b"/1A3000R\r")
        pump.clock.advance(FULL_STROKE_S)
        assert pump.ask(b"/1Q\r") == b"/0i\x03\r\n"  # 0x69: ready, error 9
        assert 0 < int(pump.ask(b"/1?\r")[3:-3]) < 3000  # stalled part-way
        assert pump.ask(b"/1A0R\r") == b"/0i\x03\r\n"  # refused until initialised
        assert pump.ask(b"/1I2R\r") == b"/0i\x03\r\n"
        pump.initialise()
        pump.ask(b"/1A3000R\r")
        pump.clock.advance(FULL_STROKE_S)
        assert pump.ask(b"/1Q\r") == READY and pump.ask(b"/1?\r") == b"/0`3000\x03\r\n"


def test_valve_overload_and_init_failure():
    with line(faults="valve-overload@1,init-failure@1") as pump:
        pump.ask(b"/1ZR\r")
        pump.clock.advance(INIT_S)
        assert pump.ask(b"/1Q\r") == b"/0a\x03\r\n"  # 0x61: initialisation error
        assert pump.ask(b"/1A10R\r") == b"/0g\x03\r\n"  # then moves say "not initialised"
        pump.initialise()  # the second attempt works
        pump.ask(b"/1I3R\r")
        pump.clock.advance(0.3)
        assert pump.ask(b"/1Q\r") == b"/0j\x03\r\n"  # 0x6A: valve overload
        assert pump.ask(b"/1?6\r") == b"/0j1\x03\r\n"  # the valve did not move
        assert pump.ask(b"/1A10R\r") == b"/0j\x03\r\n"
        pump.initialise()
        assert pump.ask(b"/1I3R\r") == BUSY


def test_config_errors_name_the_field():
    clock = VirtualClock()
    for config, message in [
        ({"valve_ports": 40}, "valve_ports: a distribution valve has 2..12 ports"),
        ({"ports": {9: "stock:water"}}, r"ports: port 9 is outside 1..6"),
        ({"ports": {1: "stock:milk"}}, "ports.1: no stock named 'milk'"),
        ({"address": 0}, "address: pump address must be 1..15"),
        ({"resolution": "coarse"}, "resolution: resolution must be one of"),
        ({"syringe_volume_ul": -5}, "syringe_volume_ul: must be > 0"),
        ({"colour": "red"}, "unknown key"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_single("cavro", clock, config=config)
