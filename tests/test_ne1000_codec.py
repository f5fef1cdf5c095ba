"""The NE-1000 codec against byte strings from the New Era manuals (Publication #1200-01, section 10)."""

from __future__ import annotations

import math

import pytest

from drivers.newera import codec
from drivers.newera.codec import CodecError, Reply


def test_safe_mode_saf0_frame_is_the_manuals_example():
    # "To return the pump to Basic mode when in the Safe mode, send (0x2)(0x8)SAF0(0x55)(0x43)(0x3)"
    manual = bytes.fromhex("02 08 53 41 46 30 55 43 03")
    assert codec.encode_safe(None, "SAF", "0") == manual
    assert codec.crc16(b"SAF0") == 0x5543
    assert codec.unframe_safe(manual) == b"SAF0"


@pytest.mark.parametrize(
    ("packet", "problem"),
    [
        (bytes.fromhex("02 08 53 41 46 30 55 44 03"), "CRC"),
        (bytes.fromhex("02 09 53 41 46 30 55 43 03"), "length"),
        (bytes.fromhex("02 08 53 41 46 30 55 43 0D"), "not a safe-mode packet"),
    ],
)
def test_corrupted_safe_packets_are_refused(packet, problem):
    with pytest.raises(CodecError, match=problem):
        codec.unframe_safe(packet)


def test_basic_requests_and_replies():
    assert codec.encode_basic(0, "RAT", "1200MH") == b"0RAT1200MH\r"
    assert codec.encode_basic(None) == b"\r"
    assert codec.encode_basic("*", "RUN") == b"*RUN\r"
    assert codec.decode_basic_reply(b"\x0200S?OOR\x03") == Reply(0, "S", None, "OOR", "")
    assert codec.decode_basic_reply(b"\x0200A?S\x03") == Reply(0, None, "S")
    assert codec.decode_basic_reply(b"\x0201S?\x03").error == ""
    assert codec.decode_basic_reply(b"\x0212SNE1000V3.928\x03") == Reply(12, "S", data="NE1000V3.928")
    for reply in (Reply(3, "I", data="I0.974W0.959ML"), Reply(0, None, "R"), Reply(7, "P", error="NA")):
        assert codec.decode_basic_reply(codec.encode_reply(reply)) == reply
        assert codec.decode_safe_reply(codec.encode_reply(reply, safe=True)) == reply


@pytest.mark.parametrize(
    "reply", [b"\x0200S14.57\x03", b"\x0200SI0.974W0.959ML\x03", b"\x0201A?R\x03", b"\x0200W\x03"]
)
def test_a_single_corrupted_byte_never_parses_as_a_valid_basic_reply(reply):
    # The simulator's garble fault flips bits with 0x5A; pump replies use only upper case, digits, '.'
    # and '?', so the strict parser catches every such corruption even without a CRC.
    for index in range(1, len(reply) - 1):
        garbled = reply[:index] + bytes([reply[index] ^ 0x5A]) + reply[index + 1 :]
        with pytest.raises(CodecError):
            codec.decode_basic_reply(garbled)


def test_requests_are_stripped_and_upper_cased_like_the_pump_does():
    assert codec.parse_request(" 01 rat 1200 mh") == codec.Request(1, "RAT", "1200MH")
    assert codec.parse_request(b"0SAF0") == codec.Request(0, "SAF", "0")
    assert codec.parse_request("") == codec.Request(None, "", "")
    assert codec.parse_request("7") == codec.Request(7, "", "")
    assert codec.parse_request("*stp") == codec.Request("*", "STP", "")
    assert codec.parse_request("0?!").command == "?!"


@pytest.mark.parametrize(
    ("value", "command", "query"),
    [
        (14.57, "14.57", "14.57"),
        (0.974, "0.974", "0.974"),
        (10, "10", "10.00"),
        (1000, "1000", "1000."),
        (5, "5", "5.000"),
        (1.23456, "1.235", "1.235"),
        (120.04, "120", "120.0"),
        (99.995, "100", "100.0"),
        (0.0004, "0", "0.000"),
    ],
)
def test_numbers_have_at_most_four_digits_and_three_decimals(value, command, query):
    assert codec.format_number(value) == command
    assert codec.format_number(value, trailing_point=True) == query


@pytest.mark.parametrize("value", [9999.5, 12345, -1, math.nan, math.inf])
def test_numbers_the_pump_cannot_hold_are_refused(value):
    with pytest.raises(CodecError):
        codec.format_number(value)


def test_parse_number_enforces_the_same_rule():
    assert codec.parse_number("0.974") == 0.974
    assert codec.parse_number(".5") == 0.5
    assert codec.parse_number("9999") == 9999
    for text in ("12345", "1.2345", "99.999", "", ".", "1e3", "-1"):
        with pytest.raises(CodecError):
            codec.parse_number(text)


def test_units_are_chosen_to_keep_precision():
    assert codec.best_units(120.0, codec.VOLUME_UNITS_UL) == ("UL", "120", 120.0)
    assert codec.best_units(12345.6, codec.VOLUME_UNITS_UL) == ("ML", "12.35", 12350.0)
    assert codec.best_units(2000.0, codec.RATE_UNITS_UL_MIN) == ("UM", "2000", 2000.0)
    units, text, held = codec.best_units(0.0123456, codec.RATE_UNITS_UL_MIN)
    assert (units, text) == ("UH", "0.741") and held == pytest.approx(0.01235)


def test_volume_units_follow_the_diameter():
    # "At or below 14.00 mm syringe diameter, volume units are µL. Above 14.00 mm ... mL."
    assert codec.default_volume_units(14.0) == "UL"
    assert codec.default_volume_units(14.01) == "ML"


def test_reply_data_parsers():
    assert codec.parse_dispensed("I0.974W0.959ML") == codec.Dispensed(974.0, 959.0)
    assert codec.parse_dispensed("I120.0W0.000UL") == codec.Dispensed(120.0, 0.0)
    assert codec.parse_quantity("10.00MM", codec.RATE_UNITS_UL_MIN) == 10000.0
    assert codec.parse_quantity("1.000ML", codec.VOLUME_UNITS_UL) == 1000.0
    assert codec.parse_version("NE1000V3.928") == codec.Firmware("NE1000", "3.928")
    assert codec.parse_version("NE1002X2V3.934") == codec.Firmware("NE1002", "3.934", "X2")
    for bad in ("I0.9W", "0.974ML", "NE1000"):
        with pytest.raises(CodecError):
            codec.parse_dispensed(bad) if bad.startswith("I") else codec.parse_version(bad)


def test_rate_limits_come_from_the_diameter():
    ne1000 = codec.pump_model("NE-1000")
    # The published end points the speeds were derived from: 1699 mL/h with a 60 mL syringe
    # (26.59 mm), 0.73 µL/h with a 1 mL syringe (4.699 mm).
    assert ne1000.rate_limits_ul_min(26.59)[1] == pytest.approx(1699e3 / 60)
    assert ne1000.rate_limits_ul_min(4.699)[0] == pytest.approx(0.73 / 60)
    low, high = ne1000.rate_limits_ul_min(14.57)
    assert 0.1 < low < 0.2 and 8000 < high < 9000  # scales with the cross-section
    with pytest.raises(ValueError, match="allowed: NE1000"):
        codec.pump_model("NE-2000")
