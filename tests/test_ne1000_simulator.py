"""The NE-1000 simulator spoken to in raw bytes: state machine, timing, liquid, alarms, safe mode."""

from __future__ import annotations

import pytest

from drivers.errors import InstrumentTimeout
from drivers.newera import codec
from drivers.transport import Transport
from simulators.base import ConfigError
from simulators.clock import VirtualClock
from simulators.lab import build_single
from simulators.testing import run_simulator

TWO_PUMPS = {
    "pumps": [
        {
            "address": 0,
            "diameter_mm": 14.57,
            "syringe_volume_ul": 10000,
            "reagent": "yellow",
            "outlet": "dispense",
        },
        {
            "address": 5,
            "diameter_mm": 4.699,
            "syringe_volume_ul": 1000,
            "reagent": "red",
            "outlet": "dispense",
        },
    ]
}


class Bench:
    def __init__(self, sim, transport, clock):
        self.sim, self.transport, self.clock = sim, transport, clock

    def raw(self, request: bytes, terminator: bytes = b"\x03") -> bytes:
        return self.transport.exchange(request, lambda t: t.read_until(terminator, timeout=0.5))

    def ask(self, text: str) -> bytes:
        return self.raw(text.encode() + b"\r")

    def safe(self, text: str) -> bytes:
        return self.safe_raw(codec.frame_safe(text.encode()))

    def safe_raw(self, packet: bytes) -> bytes:
        def read(t: Transport) -> bytes:
            head = t.read_exactly(2, timeout=0.5)
            return head + t.read_exactly(head[1] - 1, timeout=0.5)

        return self.transport.exchange(packet, read)

    def vial(self):
        return self.sim.call(lambda: self.sim.lab.world.vessel_at("dispense"))

    @property
    def simulator(self):
        return self.sim.lab.simulators["ne1000"]


@pytest.fixture
def bench(request):
    config, faults = getattr(request, "param", (TWO_PUMPS, None))
    clock = VirtualClock()
    with (
        run_simulator("ne1000", link="pty", clock=clock, config=config, faults=faults) as sim,
        Transport(sim.url("pump")) as transport,
    ):
        yield Bench(sim, transport, clock)


def power_up(bench, *addresses):
    for address in addresses:
        assert bench.ask(str(address)) == f"\x02{address:02d}A?R\x03".encode()


def test_alarm_is_reported_once_and_blocks_the_command_it_answers(bench):
    # Power-up: the first reply carries A?R; the command it answered was not carried out.
    assert bench.ask("0DIA 20") == b"\x0200A?R\x03"
    assert bench.ask("0DIA") == b"\x0200S14.57\x03"
    assert bench.ask("0DIA 20") == b"\x0200S\x03"
    assert bench.ask("0 dia") == b"\x0200S20.00\x03"
    assert bench.ask("0VER") == b"\x0200SNE1000V3.928\x03"


def test_pumps_on_one_line_answer_only_to_their_address(bench):
    power_up(bench, 0, 5)
    assert bench.ask("5DIA") == b"\x0205S4.699\x03"
    assert bench.ask("0DIA") == b"\x0200S14.57\x03"
    with pytest.raises(InstrumentTimeout):
        bench.raw(b"7\r")  # nobody at address 7: the line stays silent
    both = bench.transport.exchange(b"*\r", lambda t: t.read_until(b"\x0205S\x03", timeout=0.5))
    assert both == b"\x0200S\x03\x0205S\x03"


def test_a_one_millilitre_dispense_at_one_ml_per_min_takes_sixty_seconds(bench):
    power_up(bench, 0)
    for command in ("0VOL 1", "0RAT 1 MM", "0DIR INF"):
        assert bench.ask(command) == b"\x0200S\x03"
    assert bench.ask("0VOL") == b"\x0200S1.000ML\x03"  # 14.57 mm > 14 mm: millilitres
    assert bench.ask("0RUN") == b"\x0200I\x03"
    bench.clock.advance(30)
    assert bench.ask("0DIS") == b"\x0200II0.500W0.000ML\x03"
    bench.clock.advance(29.9)
    assert bench.ask("0") == b"\x0200I\x03"
    bench.clock.advance(0.2)
    assert bench.ask("0") == b"\x0200S\x03"
    assert bench.ask("0DIS") == b"\x0200SI1.000W0.000ML\x03"
    vial = bench.vial()
    assert vial.volume_ul == pytest.approx(1000)
    assert vial.concentration("yellow") == pytest.approx(4.0e-5)


def test_withdraw_pulls_liquid_back_from_the_outlet(bench):
    power_up(bench, 5)
    for command in ("5VOL 100", "5RAT 500 UM", "5RUN"):
        bench.ask(command)
    bench.clock.advance(60)
    assert bench.vial().volume_ul == pytest.approx(100)
    for command in ("5DIR WDR", "5VOL 40", "5RUN"):
        bench.ask(command)
    bench.clock.advance(60)
    assert bench.ask("5DIS") == b"\x0205SI100.0W40.00UL\x03"  # 4.699 mm: microlitres
    assert bench.vial().volume_ul == pytest.approx(60)


def test_rate_units_cannot_change_while_pumping(bench):
    power_up(bench, 0)
    bench.ask("0VOL 0")  # continuous
    bench.ask("0RAT 100 UM")
    bench.ask("0RUN")
    assert bench.ask("0RAT 1 MM") == b"\x0200I?NA\x03"
    assert bench.ask("0RAT 200 UM") == b"\x0200I\x03"  # the rate may change, the units may not
    assert bench.ask("0RAT") == b"\x0200I200.0UM\x03"
    assert bench.ask("0DIA 10") == b"\x0200I?NA\x03"
    bench.clock.advance(30)  # 100 µL out: room in the syringe to pull back
    assert bench.ask("0DIR WDR") == b"\x0200W\x03"  # continuous pumping may reverse
    bench.clock.advance(60)  # back to full after 30 s: the plunger hits the end of travel
    assert bench.ask("0") == b"\x0200A?S\x03"


def test_errors_for_bad_values_and_unknown_commands(bench):
    power_up(bench, 0)
    assert bench.ask("0RAT 9000 UM") == b"\x0200S?OOR\x03"  # above the 14.57 mm syringe's maximum
    assert bench.ask("0RAT 0.1 UM") == b"\x0200S?OOR\x03"  # below its minimum
    assert bench.ask("0VOL 12345") == b"\x0200S?OOR\x03"  # five digits
    assert bench.ask("0DIA 60") == b"\x0200S?OOR\x03"
    assert bench.ask("0XYZ") == b"\x0200S?\x03"
    assert bench.ask("0CLD") == b"\x0200S?OOR\x03"


def test_volume_units_follow_the_diameter(bench):
    power_up(bench, 0)
    bench.ask("0DIA 14.0")
    assert bench.ask("0VOL").endswith(b"UL\x03")
    bench.ask("0DIA 14.01")
    assert bench.ask("0VOL").endswith(b"ML\x03")
    bench.ask("0VOL UL")
    assert bench.ask("0VOL").endswith(b"UL\x03")


def test_stop_pauses_then_stops_and_run_resumes(bench):
    power_up(bench, 0)
    for command in ("0VOL 1", "0RAT 1 MM", "0RUN"):
        bench.ask(command)
    bench.clock.advance(15)
    assert bench.ask("0STP") == b"\x0200P\x03"
    bench.clock.advance(100)
    assert bench.ask("0RUN") == b"\x0200I\x03"
    bench.clock.advance(45)
    assert bench.ask("0DIS") == b"\x0200SI1.000W0.000ML\x03"
    bench.ask("0RUN")
    assert bench.ask("0STP") == b"\x0200P\x03"
    assert bench.ask("0STP") == b"\x0200S\x03"


SMALL_FILL = {
    "pumps": [
        {
            "address": 0,
            "diameter_mm": 10,
            "syringe_volume_ul": 1000,
            "fill_ul": 50,
            "reagent": "blue",
            "outlet": "dispense",
        }
    ]
}


@pytest.mark.parametrize("bench", [(SMALL_FILL, None)], indirect=True)
def test_infusing_past_empty_stalls_the_motor(bench):
    power_up(bench, 0)
    for command in ("0VOL 100", "0RAT 100 UM", "0RUN"):
        bench.ask(command)
    bench.clock.advance(60)
    assert bench.ask("0") == b"\x0200A?S\x03"
    assert bench.ask("0") == b"\x0200S\x03"  # acknowledged by the reply that carried it
    assert bench.ask("0DIS") == b"\x0200SI50.00W0.000UL\x03"
    assert bench.vial().volume_ul == pytest.approx(50)
    assert bench.ask("0RUN") == b"\x0200A?S\x03"  # an empty syringe stalls at once


@pytest.mark.parametrize("bench", [(TWO_PUMPS, "stall@1,reset@6")], indirect=True)
def test_injected_stall_and_reset(bench):
    power_up(bench, 0)  # reset opportunity 1
    for command in ("0VOL 1", "0RAT 1 MM", "0RUN"):  # opportunities 2-4; the RUN stalls halfway
        bench.ask(command)
    bench.clock.advance(60)
    assert bench.ask("0") == b"\x0200A?S\x03"  # 5
    assert bench.ask("0DIS") == b"\x0200A?R\x03"  # 6: power cycle; the DIS is not carried out
    assert bench.ask("0DIS") == b"\x0200SI0.000W0.000ML\x03"  # counters and settings are back to power-up
    assert bench.ask("0VOL") == b"\x0200S0.000ML\x03"
    assert bench.vial().volume_ul == pytest.approx(500)
    assert bench.simulator.faults.fired == {"stall": 1, "reset": 1}


def test_safe_mode_frames_timeout_and_return_to_basic(bench):
    power_up(bench, 0)
    assert bench.safe("0SAF5") == codec.frame_safe(b"00S")  # the reply to SAF5 is already framed
    assert bench.safe("0VER") == codec.frame_safe(b"00SNE1000V3.928")
    with pytest.raises(InstrumentTimeout):
        bench.ask("0VER")  # a pump in safe mode ignores basic-mode packets
    corrupt = bytearray(codec.encode_safe(0, "VER"))
    corrupt[3] ^= 0x01
    assert bench.safe_raw(bytes(corrupt)) == codec.frame_safe(b"00S?COM")
    for command in ("0VOL 0", "0RAT 100 UM", "0RUN"):
        bench.safe(command)
    bench.clock.advance(4.9)
    assert bench.safe("0") == codec.frame_safe(b"00I")  # each valid packet restarts the timer
    bench.clock.advance(5.1)
    assert bench.safe("0") == codec.frame_safe(b"00A?T")
    dispensed = codec.decode_safe_reply(bench.safe("0DIS")).data
    assert codec.parse_dispensed(dispensed).infused_ul == pytest.approx(16.5, abs=0.5)  # 4.9 s + 5 s
    # The manual's SAF0 packet returns the pump to basic mode; its reply is basic already.
    assert bench.raw(bytes.fromhex("02 08 53 41 46 30 55 43 03")) == b"\x0200S\x03"
    # A packet without an address reaches every pump: pump 05 answers too, with its pending power-up
    # alarm. Read that reply here, or a loaded machine may deliver it as the answer to the next request.
    assert bench.transport.read_until(b"\x03", timeout=5) == b"\x0205A?R\x03"
    assert bench.ask("0") == b"\x0200S\x03"


def test_config_mistakes_name_the_field():
    clock = VirtualClock()
    bad = [
        ({"pumps": []}, "pumps: give a list"),
        ({"pumps": [{"address": 0}]}, r"pumps\[0\]: missing diameter_mm"),
        ({"pumps": [{**TWO_PUMPS["pumps"][0], "colour": 1}]}, r"unknown key\(s\) colour"),
        (
            {"pumps": [{**TWO_PUMPS["pumps"][0], "diameter_mm": 80}]},
            r"pumps\[0\]\.diameter_mm: 80.0 is outside",
        ),
        ({"pumps": [TWO_PUMPS["pumps"][0], TWO_PUMPS["pumps"][0]]}, "used twice"),
        ({"pumps": [{**TWO_PUMPS["pumps"][0], "reagent": "green"}]}, "no stock named 'green'"),
        ({"pumps": [{**TWO_PUMPS["pumps"][0], "model": "NE2000"}]}, "allowed: NE1000"),
    ]
    for config, message in bad:
        with pytest.raises(ConfigError, match=message):
            build_single("ne1000", clock, config=config)
