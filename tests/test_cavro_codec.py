"""Cavro DT codec: byte strings and tables from the XP 3000 / XLP 6000 operating manuals."""

from __future__ import annotations

import pytest

from drivers.cavro import codec
from drivers.cavro.codec import Command, ErrorCode, SpeedProfile
from drivers.cavro.errors import (
    CavroError,
    CommandOverflow,
    InitFailure,
    NotInitialised,
    PlungerMoveNotAllowed,
    PlungerOverload,
    ValveOverload,
    error_for,
)
from drivers.errors import CommandRejected, InstrumentAlarm, InstrumentBusy


def test_requests_frame_as_slash_address_commands_cr():
    # "/1ZR<CR>" initialises the pump whose address switch is 0 (address character 0x31).
    assert codec.encode_request(1, "ZR") == b"/1ZR\r"
    assert codec.encode_request("?", "Q") == b"/?Q\r"  # switch E
    assert codec.encode_request(15, "A3000R") == b"/?A3000R\r"
    assert codec.decode_request(b"/1IA3000OA0R\r") == codec.Request("1", "IA3000OA0R")
    # Bytes before the start character (line noise, a 0xFF turnaround byte) are skipped.
    assert codec.decode_request(b"\xff\x00/2Q\r") == codec.Request("2", "Q")
    for bad in (b"1ZR\r", b"/1ZR", b"/\r"):
        with pytest.raises(codec.FrameError):
            codec.decode_request(bad)
    for bad_commands in ("", "Z\rR", "A/3"):
        with pytest.raises(ValueError):
            codec.encode_request(1, bad_commands)


def test_address_switch_table():
    # Table 3-2: switch 0..E answer to 31h..3Fh; 41h.. dual, 51h.. quad, 5Fh ("_") every pump.
    assert [codec.address_char(n) for n in (1, 2, 10, 15)] == ["1", "2", ":", "?"]
    assert codec.address_switch("1") == 0 and codec.address_switch("?") == 14
    assert codec.addressed_switches("1") == {0}
    assert codec.addressed_switches("A") == {0, 1} and codec.addressed_switches("C") == {2, 3}
    assert codec.addressed_switches("Q") == set(range(4)) and codec.addressed_switches("U") == {4, 5, 6, 7}
    assert codec.addressed_switches("_") == set(range(16))
    assert codec.addressed_switches("0") == set()  # the master's own address
    for bad in (0, 16, "0", "@", "12", True):
        with pytest.raises(ValueError, match=r"'1'..'\?'"):
            codec.address_char(bad)


# Table 3-8 of the XP 3000 manual: status byte 0 1 X 0 e3 e2 e1 e0, hex when busy / ready.
STATUS_TABLE = [
    (0, 0x40, 0x60),
    (1, 0x41, 0x61),
    (2, 0x42, 0x62),
    (3, 0x43, 0x63),
    (4, 0x44, 0x64),
    (5, 0x45, 0x65),
    (6, 0x46, 0x66),
    (7, 0x47, 0x67),
    (9, 0x49, 0x69),
    (10, 0x4A, 0x6A),
    (11, 0x4B, 0x6B),
    (15, 0x4F, 0x6F),
]


@pytest.mark.parametrize(("error", "busy", "ready"), STATUS_TABLE)
def test_status_byte_table(error, busy, ready):
    assert codec.status_byte(False, error) == busy
    assert codec.status_byte(True, error) == ready
    assert codec.decode_status(busy) == codec.Status(False, error)
    assert codec.decode_status(ready) == codec.Status(True, error)


def test_replies_are_slash_zero_status_data_etx_cr_lf():
    assert codec.encode_reply(True) == b"/0`\x03\r\n"
    assert codec.encode_reply(False) == b"/0@\x03\r\n"
    assert codec.encode_reply(True, 0, "3000") == b"/0`3000\x03\r\n"
    reply = codec.decode_reply(b"/0`3000\x03\r\n")
    assert reply.status.ready and reply.status.error == 0 and reply.data == "3000"
    busy_overload = codec.decode_reply(b"/0I\x03\r\n")
    assert busy_overload.status == codec.Status(False, ErrorCode.PLUNGER_OVERLOAD)
    assert busy_overload.status.error_text == "plunger overload"
    # Real pumps on RS-485 may put a 0xFF before the answer; it is not part of the frame.
    assert codec.decode_reply(b"\xff/0`\x03\r\n").status.ready


@pytest.mark.parametrize(
    "bad",
    [
        b"/0`3000\x03\r",  # no line feed
        b"/0`Y\r\n",  # ETX corrupted
        b"/0:\x03\r\n",  # status 0x3A lacks bit 6
        b"/0\x03\r\n",  # no status byte
        b"/0`30\x8a0\x03\r\n",  # data not ASCII
        b"`\x03\r\n",  # no "/0"
    ],
)
def test_malformed_replies_raise_frame_error(bad):
    with pytest.raises(codec.FrameError):
        codec.decode_reply(bad)


def test_command_strings_split_into_commands():
    # The XP 3000 manual's EEPROM example program, without its leading "s8".
    assert codec.parse_commands("ZS1gIA3000OA0GR") == [
        Command("Z"),
        Command("S", (1,)),
        Command("g"),
        Command("I"),
        Command("A", (3000,)),
        Command("O"),
        Command("A", (0,)),
        Command("G"),
        Command("R"),
    ]
    assert codec.parse_commands("Z0,0,9R")[0] == Command("Z", (0, 0, 9))
    assert codec.parse_commands("?6") == [Command("?", (6,))]
    assert codec.parse_commands("Z1,,3")[0].operands == (1, None, 3)
    assert str(Command("Z", (0, 0, 9))) == "Z0,0,9"
    assert codec.format_commands("I2", Command("A", (0,))) == "I2A0"
    with pytest.raises(codec.CommandSyntaxError):
        codec.parse_commands("A3000%")


def test_units_follow_the_resolution():
    assert codec.volume_to_increments(500, 1000) == 1500  # N0: 3000 increments per stroke
    assert codec.volume_to_increments(500, 1000, mode=1) == 12000  # N1: 24000
    assert codec.increments_to_volume(3000, 250) == 250
    assert codec.flow_to_speed(1000, 1000) == 6000  # one stroke per second = 6000 half-steps/s
    assert codec.speed_to_flow(1400, 1000) == pytest.approx(233.33, abs=0.01)
    assert codec.resolution_mode("fine") == 1 and codec.resolution_mode(2) == 2
    with pytest.raises(ValueError, match="standard, fine, microstep"):
        codec.resolution_mode("coarse")
    assert codec.top_speed_for_code(0) == 6000 and codec.top_speed_for_code(11) == 1400
    assert codec.top_speed_for_code(40) == 10


def test_trapezoid_move_time():
    # Defaults v900 V1400 c900 L14 (35000 half-steps/s²): ramps of 1/70 s each and a cruise between.
    profile = SpeedProfile()
    ramp = 500 / 35000
    ramp_distance = (1400**2 - 900**2) / (2 * 35000)
    assert profile.move_time(6000) == pytest.approx(2 * ramp + (6000 - 2 * ramp_distance) / 1400)
    assert profile.distance_at(6000, profile.move_time(6000)) == pytest.approx(6000)
    # A short move never reaches the top speed: a triangle whose peak solves v² = a·d + (v0² + vc²)/2.
    short = SpeedProfile(start=100, top=6000, cutoff=100, slope=1)
    peak = (2500 * 200 + 100**2) ** 0.5
    assert short.move_time(200) == pytest.approx(2 * (peak - 100) / 2500)
    assert short.distance_at(200, short.move_time(200) / 2) == pytest.approx(100)
    # Equal speeds move at constant speed; start/cutoff above the top speed are held at it.
    assert SpeedProfile(start=500, top=500, cutoff=500).move_time(1000) == pytest.approx(2.0)
    assert SpeedProfile(start=900, top=100, cutoff=900).move_time(600) == pytest.approx(6.0)
    assert SpeedProfile().move_time(0) == 0.0
    # The fastest full stroke takes about 1.1 s (manuals quote ~1.2 s minimum stroke time).
    assert 1.0 < SpeedProfile(top=6000).move_time(6000) < 1.2


def test_error_codes_become_typed_exceptions():
    assert isinstance(error_for(9), PlungerOverload) and isinstance(error_for(9), InstrumentAlarm)
    assert isinstance(error_for(10), ValveOverload) and error_for(10).needs_initialisation
    assert isinstance(error_for(1), InitFailure)
    assert isinstance(error_for(7), NotInitialised) and isinstance(error_for(7), CommandRejected)
    assert isinstance(error_for(11), PlungerMoveNotAllowed) and not error_for(11).needs_initialisation
    assert isinstance(error_for(15), CommandOverflow) and isinstance(error_for(15), InstrumentBusy)
    odd = error_for(13, command="A10", address="1")
    assert type(odd) is CavroError and odd.code == 13 and "undocumented error 13" in str(odd)
    overload = error_for(9, command="A3000", address="1")
    assert "pump 1: error 9 (plunger overload) after 'A3000'" in str(overload)
