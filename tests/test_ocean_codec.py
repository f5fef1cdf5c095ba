"""OBP framing: our pure codec against hand-written frames and against seabreeze's OBPProtocol."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from seabreeze.pyseabreeze.exceptions import SeaBreezeError
from seabreeze.pyseabreeze.protocol import OBPProtocol
from seabreeze.pyseabreeze.transport import IPv4Transport

from drivers.ocean import codec, spectra
from drivers.ocean.codec import ChecksumError, ErrorCode, Flag, FrameError, Message, MessageType

# GET_SERIAL_NUMBER as a host sends it, laid out field by field from the OBP header description.
GET_SERIAL_FRAME = bytes.fromhex(
    "c1c0"  # start bytes
    "0011"  # protocol version 0x1100
    "0000"  # flags
    "0000"  # error number
    "00010000"  # message type 0x00000100
    "00000000"  # regarding
    "000000000000"  # reserved
    "00"  # checksum type: none
    "00"  # immediate length
    + "00" * 16  # immediate data
    + "14000000"  # bytes remaining: 20
    + "00" * 16  # checksum
    + "c5c4c3c2"  # footer
)


@pytest.fixture
def seabreeze_obp():
    transport = IPv4Transport(OBPProtocol)  # never opened: only its frame builder and parser are used
    yield OBPProtocol(transport)


def test_a_request_without_data_is_the_64_byte_frame_of_the_manual():
    frame = codec.request(MessageType.GET_SERIAL_NUMBER)
    assert frame == GET_SERIAL_FRAME and len(frame) == codec.MIN_FRAME_SIZE


@pytest.mark.parametrize(
    ("message_type", "data", "ack"),
    [
        (MessageType.GET_SERIAL_NUMBER, b"", False),
        (MessageType.GET_SPECTRUM_NOW_HDX, b"", False),
        (MessageType.SET_INTEGRATION_TIME_US, struct.pack("<L", 100_000), True),
        (MessageType.GET_WAVELENGTH_COEFFICIENT, struct.pack("<B", 3), False),
        (MessageType.SET_TRIGGER_MODE, struct.pack("<B", 0), True),
        (0x00ABCDEF, bytes(range(40)), False),  # a payload beyond 16 bytes
    ],
)
def test_requests_match_seabreeze_byte_for_byte(seabreeze_obp, message_type, data, ack):
    theirs = seabreeze_obp._construct_outgoing_message(message_type, data, request_ack=ack)
    assert codec.request(message_type, data, ack=ack) == theirs


def test_seabreeze_parses_our_replies(seabreeze_obp):
    request = codec.decode(codec.request(MessageType.GET_WAVELENGTH_COEFFICIENT, b"\x01"))
    small = codec.encode(codec.reply(request, codec.pack_f32(0.3145)))
    remaining, checksum_type = seabreeze_obp._check_incoming_message_header(small[:44])
    assert (remaining, checksum_type) == (20, 0)
    assert struct.unpack("<f", seabreeze_obp._extract_message_data(small))[0] == pytest.approx(0.3145)
    counts = np.arange(2068, dtype=np.uint16)
    spectrum = codec.encode(codec.reply(request, codec.pack_spectrum(counts)))
    assert len(spectrum) == 64 + 2 * 2068
    assert seabreeze_obp._extract_message_data(spectrum) == counts.astype("<u2").tobytes()


def test_seabreeze_raises_on_our_nack(seabreeze_obp):
    request = codec.decode(codec.request(MessageType.GET_SPECTRUM_NOW_HDX))
    nack = codec.encode(codec.reply(request, error=ErrorCode.NOT_READY))
    with pytest.raises(SeaBreezeError, match="not ready"):
        seabreeze_obp._check_incoming_message_header(nack[:44])


def test_decode_round_trip_keeps_every_field():
    message = Message(0x00101000, bytes(range(100)), Flag.RESPONSE, 0, 77, codec.Checksum.MD5)
    assert codec.decode(codec.encode(message)) == message
    short = Message(0x100, b"HDX01234", Flag.RESPONSE | Flag.ACK, regarding=5)
    frame = codec.encode(short)
    assert frame[23] == 8 and frame[24:32] == b"HDX01234" and codec.decode(frame) == short


def test_md5_covers_header_and_payload_and_catches_corruption():
    frame = codec.request(MessageType.SET_INTEGRATION_TIME_US, codec.pack_u32(6000), md5=True)
    assert frame[22] == codec.Checksum.MD5 and frame[44:60] == hashlib.md5(frame[:44]).digest()
    corrupt = bytearray(frame)
    corrupt[30] ^= 0x5A  # one byte of the immediate data
    with pytest.raises(ChecksumError) as caught:
        codec.decode(bytes(corrupt))
    assert caught.value.code == ErrorCode.BAD_CHECKSUM
    assert caught.value.message_type == MessageType.SET_INTEGRATION_TIME_US


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda f: b"\xc1\xc1" + f[2:], ErrorCode.INVALID_PROTOCOL),  # start bytes
        (lambda f: f[:2] + b"\x00\x20" + f[4:], ErrorCode.INVALID_PROTOCOL),  # version 0x2000 (OBP2)
        (lambda f: f[:-4] + b"\x00\x00\x00\x00", ErrorCode.INVALID_PROTOCOL),  # footer
        (lambda f: f[:22] + b"\x07" + f[23:], ErrorCode.UNKNOWN_CHECKSUM_TYPE),
        (lambda f: f[:23] + b"\x11" + f[24:], ErrorCode.PAYLOAD_LENGTH_MISMATCH),  # immediate length 17
        (lambda f: f[:40] + struct.pack("<I", 8) + f[44:], ErrorCode.PAYLOAD_LENGTH_MISMATCH),
        (lambda f: f[:40] + struct.pack("<I", 1 << 24) + f[44:], ErrorCode.MESSAGE_TOO_LARGE),
        (lambda f: f[:-1], ErrorCode.PAYLOAD_LENGTH_MISMATCH),  # shorter than announced
    ],
)
def test_malformed_frames_carry_the_error_number_a_device_would_nack_with(mutate, code):
    with pytest.raises(FrameError) as caught:
        codec.decode(mutate(GET_SERIAL_FRAME))
    assert caught.value.code == code


def test_immediate_data_and_payload_together_are_refused():
    frame = bytearray(codec.encode(Message(0x100, bytes(20))))
    frame[23] = 2  # claims immediate data as well
    with pytest.raises(FrameError, match="both"):
        codec.decode(bytes(frame))


def test_reply_flags_follow_the_request():
    asked = codec.decode(codec.request(MessageType.SET_LAMP_ENABLE, b"\x01", ack=True, regarding=9, md5=True))
    ack = codec.reply(asked)
    assert ack.is_response and ack.is_ack and not ack.is_nack and ack.regarding == 9
    assert ack.checksum_type == codec.Checksum.MD5
    nack = codec.reply(asked, error=ErrorCode.INVALID_PAYLOAD)
    assert nack.is_nack and not nack.is_ack and nack.error == 6 and nack.data == b""
    plain = codec.reply(codec.decode(codec.request(MessageType.GET_SERIAL_NUMBER)), b"X")
    assert plain.flags == Flag.RESPONSE


def test_payload_helpers_check_their_length():
    assert codec.unpack_u32(codec.pack_u32(123456)) == 123456
    assert codec.unpack_f32(codec.pack_f32(0.5)) == 0.5
    with pytest.raises(FrameError) as caught:
        codec.unpack_u32(b"\x01\x02")
    assert caught.value.code == ErrorCode.PAYLOAD_LENGTH_MISMATCH
    with pytest.raises(FrameError):
        codec.unpack_spectrum(bytes(10), 2068)


def test_wavelength_polynomial_and_seabreeze_agree():
    coefficients = [190.0, 0.3145, -1.1e-5, -1.0e-10]
    ours = spectra.wavelengths(coefficients, 2068)
    indices = np.arange(2068, dtype=np.float64)
    theirs = sum(c * indices**i for i, c in enumerate(coefficients))  # seabreeze's get_wavelengths
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_nonlinearity_correction_divides_by_the_polynomial_like_seabreeze():
    coefficients = [0.95, 1.6e-6, -2.0e-11]
    counts = np.array([0.0, 1000.0, 30000.0, 60000.0])
    theirs = counts / np.polyval(np.poly1d(coefficients[::-1]), counts)
    np.testing.assert_allclose(spectra.correct_nonlinearity(counts, coefficients)[1:], theirs[1:])
    assert spectra.correct_nonlinearity(counts, coefficients)[0] == 0.0


def test_absorbance_guards_dark_reference_and_empty_light():
    dark = np.full(4, 1000.0)
    reference = np.array([11000.0, 2000.0, 1000.0, 11000.0])
    sample = np.array([2000.0, 1100.0, 1200.0, 900.0])
    absorbance = spectra.absorbance(sample, dark, reference)
    assert absorbance[0] == pytest.approx(1.0)
    assert absorbance[1] == pytest.approx(1.0)
    assert np.isnan(absorbance[2])  # no light in the reference: unmeasurable, not infinite
    assert absorbance[3] == pytest.approx(4.0)  # below the dark: floored at one count
    assert list(spectra.saturated_pixels(np.array([1, 65535, 3, 65535]), 65535)) == [1, 3]
