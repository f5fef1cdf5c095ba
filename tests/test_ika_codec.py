"""The IKA NAMUR codec against the manual's bytes (RCT digital operating instructions, interface pages)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ika import codec
from drivers.ika.codec import Channel


def test_requests_end_with_blank_cr_lf_as_the_manual_says():
    # "Each individual command ... and each response are terminated with Blank CR LF (hex 0x20 0x0d 0x0a)"
    assert codec.encode("IN_PV_1") == b"IN_PV_1 \r\n"
    assert codec.read_pv(Channel.SPEED) == b"IN_PV_4 \r\n"
    assert codec.read_sp(Channel.SAFETY_TEMPERATURE) == b"IN_SP_3 \r\n"
    assert codec.encode("START_1") == b"START_1 \r\n"


def test_set_points_are_separated_by_a_blank_and_use_a_decimal_dot():
    assert codec.set_point(Channel.EXTERNAL_TEMPERATURE, 60) == b"OUT_SP_1 60.0 \r\n"
    assert codec.set_point(Channel.EXTERNAL_TEMPERATURE, 37.25) == b"OUT_SP_1 37.2 \r\n"
    assert codec.set_point(Channel.SPEED, 500.4) == b"OUT_SP_4 500 \r\n"
    assert codec.encode("OUT_WD1", "30", at=True) == b"OUT_WD1@30 \r\n"


def test_refuses_what_the_device_could_not_take():
    with pytest.raises(codec.CodecError):
        codec.encode("out_sp_1", 60)  # commands are capital letters
    with pytest.raises(codec.CodecError):
        codec.encode("OUT_SP_1", math.nan)
    with pytest.raises(codec.CodecError):
        codec.encode("IN_NAME_" + "X" * 80)  # at most 80 characters


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"IN_PV_1 \r\n", codec.Request("IN_PV_1")),
        (b"IN_PV_1\r\n", codec.Request("IN_PV_1")),  # third-party clients often leave the blank out
        (b"OUT_SP_1 60.0 \r\n", codec.Request("OUT_SP_1", "60.0")),
        (b"OUT_SP_4   500\r\n", codec.Request("OUT_SP_4", "500")),
        (b"OUT_WD1@30 \r\n", codec.Request("OUT_WD1", "30")),
    ],
)
def test_the_simulator_reads_requests_with_or_without_the_blank(line, expected):
    assert codec.parse_request(line) == expected


def test_a_reading_is_the_value_and_its_channel():
    assert codec.parse_reading(b"24.8 1 \r\n", Channel.EXTERNAL_TEMPERATURE) == 24.8
    assert codec.parse_reading(b"500.0 4\r\n", Channel.SPEED) == 500.0
    assert codec.encode_reading(61.26, Channel.PLATE_TEMPERATURE) == b"61.3 2 \r\n"
    with pytest.raises(codec.CodecError, match="channel 2"):
        codec.parse_reading(b"61.3 2 \r\n", Channel.EXTERNAL_TEMPERATURE)  # a late reply to another query
    for garbled in (b"RCT digital\r\n", b"6\xb1.3 2\r\n", b"\r\n", b"61.3\r\n"):
        with pytest.raises(codec.CodecError):
            codec.parse_reading(garbled, Channel.PLATE_TEMPERATURE)


def test_the_watchdog_echo_is_a_number():
    assert codec.parse_echo(b"30 \r\n") == 30
    with pytest.raises(codec.CodecError):
        codec.parse_echo(b"Er 2\r\n")


@given(value=st.floats(min_value=-50, max_value=400), channel=st.sampled_from(list(Channel)))
def test_readings_round_trip_to_a_tenth(value, channel):
    read = codec.parse_reading(codec.encode_reading(value, channel), channel)
    assert read == pytest.approx(value, abs=0.051)
