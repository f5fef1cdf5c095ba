"""Ocean Binary Protocol (OBP) frames: building and parsing, with no I/O.

A frame is a 44-byte header, an optional payload, a 16-byte checksum field and the footer
``C5 C4 C3 C2``; a frame without payload is 64 bytes. Up to 16 bytes of data travel inside the
header as "immediate data"; more goes in the payload. Everything is little-endian. The layout
follows Ocean Insight's OBP description and the open ``seabreeze`` implementation
(``seabreeze.pyseabreeze.protocol.OBPProtocol`` and libseabreeze's ``OBPMessage.cpp``); the tests
check our bytes against seabreeze's for the same messages.

Both the driver and the simulator use this module, so a parse error carries the OBP error number
a device would NACK with (``FrameError.code``).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

import numpy as np

from drivers.errors import ProtocolError

START = b"\xc1\xc0"
FOOTER = b"\xc5\xc4\xc3\xc2"
PROTOCOL_VERSION = 0x1100
HEADER_SIZE = 44
TRAILER_SIZE = 20  # checksum field + footer
MIN_FRAME_SIZE = HEADER_SIZE + TRAILER_SIZE
IMMEDIATE_SIZE = 16
#: Longest frame either side accepts; an HDX spectrum is 4200 bytes, so this only stops runaways.
MAX_FRAME_SIZE = 1 << 20

_HEADER = struct.Struct("<2sHHHII6sBB16sI")


class Flag(IntFlag):
    RESPONSE = 0x0001
    ACK = 0x0002
    ACK_REQUESTED = 0x0004
    NACK = 0x0008
    HW_EXCEPTION = 0x0010
    PROTOCOL_DEPRECATED = 0x0020


class ErrorCode(IntEnum):
    SUCCESS = 0
    INVALID_PROTOCOL = 1
    UNKNOWN_MESSAGE_TYPE = 2
    BAD_CHECKSUM = 3
    MESSAGE_TOO_LARGE = 4
    PAYLOAD_LENGTH_MISMATCH = 5
    INVALID_PAYLOAD = 6
    NOT_READY = 7
    UNKNOWN_CHECKSUM_TYPE = 8
    DEVICE_RESET = 9
    TOO_MANY_BUSES = 10
    OUT_OF_MEMORY = 11
    NO_SUCH_INFORMATION = 12
    INTERNAL_DEVICE_ERROR = 13


ERROR_TEXT: dict[int, str] = {
    0: "success",
    1: "invalid or unsupported protocol",
    2: "unknown message type",
    3: "bad checksum",
    4: "message too large",
    5: "payload length does not match message type",
    6: "payload data invalid",
    7: "device not ready for this message type",
    8: "unknown checksum type",
    9: "device reset unexpectedly",
    10: "too many buses",
    11: "out of memory",
    12: "command valid but the information does not exist",
    13: "internal device error",
}


class Checksum(IntEnum):
    NONE = 0
    MD5 = 1


class MessageType(IntEnum):
    """The OBP messages a network spectrometer such as the HDX answers (and our simulator serves)."""

    GET_SERIAL_NUMBER = 0x00000100
    GET_SERIAL_NUMBER_LENGTH = 0x00000101
    GET_VENDOR_ID = 0x00000E00
    GET_PRODUCT_ID = 0x00000E01
    ABORT_ACQUISITION = 0x00100000
    GET_SPECTRUM_NOW_HDX = 0x00101000
    GET_RAW_SPECTRUM_NOW = 0x00101100
    SET_INTEGRATION_TIME_US = 0x00110010
    SET_TRIGGER_MODE = 0x00110110
    SET_LAMP_ENABLE = 0x00110410
    GET_WAVELENGTH_COEFFICIENT_COUNT = 0x00180100
    GET_WAVELENGTH_COEFFICIENT = 0x00180101
    GET_NONLINEARITY_COEFFICIENT_COUNT = 0x00181100
    GET_NONLINEARITY_COEFFICIENT = 0x00181101


def error_text(code: int) -> str:
    return ERROR_TEXT.get(code, f"error {code}")


def type_name(message_type: int) -> str:
    try:
        return MessageType(message_type).name
    except ValueError:
        return f"0x{message_type:08X}"


class FrameError(ProtocolError):
    """Bytes that are not a well-formed OBP frame; ``code`` is the error number a device NACKs with."""

    def __init__(
        self, text: str, code: int = ErrorCode.INVALID_PROTOCOL, *, message_type: int = 0, regarding: int = 0
    ):
        super().__init__(text)
        self.code = code
        self.message_type = message_type
        self.regarding = regarding


class ChecksumError(FrameError):
    """A frame whose MD5 checksum does not match its contents (corrupted on the way)."""

    def __init__(self, text: str, *, message_type: int = 0, regarding: int = 0):
        super().__init__(text, ErrorCode.BAD_CHECKSUM, message_type=message_type, regarding=regarding)


@dataclass(frozen=True)
class Header:
    protocol_version: int
    flags: int
    error: int
    message_type: int
    regarding: int
    checksum_type: int
    immediate_length: int
    immediate: bytes
    bytes_remaining: int

    @property
    def frame_size(self) -> int:
        return HEADER_SIZE + self.bytes_remaining


@dataclass(frozen=True)
class Message:
    """One OBP message; ``data`` is the immediate data or the payload, whichever the frame carried."""

    message_type: int
    data: bytes = b""
    flags: int = 0
    error: int = 0
    regarding: int = 0
    checksum_type: int = Checksum.NONE
    protocol_version: int = PROTOCOL_VERSION

    @property
    def is_response(self) -> bool:
        return bool(self.flags & Flag.RESPONSE)

    @property
    def is_ack(self) -> bool:
        return bool(self.flags & Flag.ACK)

    @property
    def is_nack(self) -> bool:
        return bool(self.flags & Flag.NACK)

    @property
    def wants_ack(self) -> bool:
        return bool(self.flags & Flag.ACK_REQUESTED)

    @property
    def is_hardware_exception(self) -> bool:
        return bool(self.flags & Flag.HW_EXCEPTION)


def encode(message: Message) -> bytes:
    """The frame for ``message``: data up to 16 bytes goes in the header, longer data in a payload."""
    data = bytes(message.data)
    if len(data) <= IMMEDIATE_SIZE:
        immediate, payload = data, b""
    else:
        immediate, payload = b"", data
    header = _HEADER.pack(
        START,
        message.protocol_version,
        int(message.flags),
        int(message.error),
        int(message.message_type),
        int(message.regarding),
        b"",
        int(message.checksum_type),
        len(immediate),
        immediate,
        len(payload) + TRAILER_SIZE,
    )
    body = header + payload
    checksum = hashlib.md5(body).digest() if message.checksum_type == Checksum.MD5 else bytes(16)
    return body + checksum + FOOTER


def decode_header(header: bytes) -> Header:
    """Parse the first 44 bytes of a frame (enough to know how many bytes follow)."""
    if len(header) < HEADER_SIZE:
        raise FrameError(f"OBP header needs {HEADER_SIZE} bytes, got {len(header)}")
    fields = _HEADER.unpack_from(header)
    start, version, flags, error, message_type, regarding, _, checksum_type, length, immediate, remaining = (
        fields
    )
    where = {"message_type": message_type, "regarding": regarding}
    if start != START:
        raise FrameError(f"OBP frame starts with {start.hex(' ')}, expected c1 c0", **where)
    if version != PROTOCOL_VERSION:
        raise FrameError(f"OBP protocol version 0x{version:04X}, expected 0x{PROTOCOL_VERSION:04X}", **where)
    if remaining < TRAILER_SIZE:
        raise FrameError(
            f"OBP bytes-remaining {remaining} is less than the {TRAILER_SIZE} of checksum and footer",
            ErrorCode.PAYLOAD_LENGTH_MISMATCH,
            **where,
        )
    if HEADER_SIZE + remaining > MAX_FRAME_SIZE:
        raise FrameError(
            f"OBP frame of {HEADER_SIZE + remaining} bytes is too large", ErrorCode.MESSAGE_TOO_LARGE, **where
        )
    return Header(version, flags, error, message_type, regarding, checksum_type, length, immediate, remaining)


def decode(frame: bytes) -> Message:
    """Parse and check one whole frame (header, payload, checksum, footer)."""
    header = decode_header(frame)
    where = {"message_type": header.message_type, "regarding": header.regarding}
    if len(frame) != header.frame_size:
        raise FrameError(
            f"OBP frame is {len(frame)} bytes but its header announces {header.frame_size}",
            ErrorCode.PAYLOAD_LENGTH_MISMATCH,
            **where,
        )
    if frame[-4:] != FOOTER:
        raise FrameError(f"OBP footer is {frame[-4:].hex(' ')}, expected c5 c4 c3 c2", **where)
    if header.checksum_type not in (Checksum.NONE, Checksum.MD5):
        raise FrameError(
            f"OBP checksum type {header.checksum_type} is unknown", ErrorCode.UNKNOWN_CHECKSUM_TYPE, **where
        )
    if header.checksum_type == Checksum.MD5 and hashlib.md5(frame[:-TRAILER_SIZE]).digest() != bytes(
        frame[-TRAILER_SIZE:-4]
    ):
        raise ChecksumError(f"OBP {type_name(header.message_type)}: MD5 checksum does not match", **where)
    payload = bytes(frame[HEADER_SIZE:-TRAILER_SIZE])
    if header.immediate_length > IMMEDIATE_SIZE:
        raise FrameError(
            f"OBP immediate length {header.immediate_length} exceeds {IMMEDIATE_SIZE}",
            ErrorCode.PAYLOAD_LENGTH_MISMATCH,
            **where,
        )
    if header.immediate_length and payload:
        raise FrameError(
            "OBP frame carries both immediate data and a payload", ErrorCode.PAYLOAD_LENGTH_MISMATCH, **where
        )
    data = header.immediate[: header.immediate_length] if header.immediate_length else payload
    return Message(
        header.message_type,
        data,
        header.flags,
        header.error,
        header.regarding,
        header.checksum_type,
        header.protocol_version,
    )


# -- requests and replies ---------------------------------------------------------------------------
def request(
    message_type: int, data: bytes = b"", *, ack: bool = False, regarding: int = 0, md5: bool = False
) -> bytes:
    """A host request; ``ack`` asks the device to acknowledge a command that returns no data."""
    return encode(
        Message(
            message_type,
            data,
            Flag.ACK_REQUESTED if ack else 0,
            regarding=regarding,
            checksum_type=Checksum.MD5 if md5 else Checksum.NONE,
        )
    )


def reply(request: Message, data: bytes = b"", *, error: int = ErrorCode.SUCCESS) -> Message:
    """The device's answer to ``request``: data, an ACK, or (with ``error``) a NACK.

    The reply keeps the request's message type, echoes ``regarding`` and uses the request's
    checksum type, so a host that checksums its requests gets checksummed replies.
    """
    flags = Flag.RESPONSE
    if error:
        flags |= Flag.NACK
    elif request.wants_ack:
        flags |= Flag.ACK
    checksum = request.checksum_type if request.checksum_type in (Checksum.NONE, Checksum.MD5) else 0
    return Message(request.message_type, b"" if error else data, flags, error, request.regarding, checksum)


# -- payload values ---------------------------------------------------------------------------------
def pack_u8(value: int) -> bytes:
    return struct.pack("<B", value)


def pack_u16(value: int) -> bytes:
    return struct.pack("<H", value)


def pack_u32(value: int) -> bytes:
    return struct.pack("<I", value)


def pack_f32(value: float) -> bytes:
    return struct.pack("<f", value)


def _unpack(fmt: str, data: bytes, what: str) -> int | float:
    size = struct.calcsize(fmt)
    if len(data) != size:
        raise FrameError(
            f"{what}: expected {size} byte(s) of data, got {len(data)}", ErrorCode.PAYLOAD_LENGTH_MISMATCH
        )
    return struct.unpack(fmt, data)[0]


def unpack_u8(data: bytes, what: str = "u8") -> int:
    return int(_unpack("<B", data, what))


def unpack_u16(data: bytes, what: str = "u16") -> int:
    return int(_unpack("<H", data, what))


def unpack_u32(data: bytes, what: str = "u32") -> int:
    return int(_unpack("<I", data, what))


def unpack_f32(data: bytes, what: str = "f32") -> float:
    return float(_unpack("<f", data, what))


def pack_spectrum(counts: np.ndarray) -> bytes:
    """Pixel counts as the HDX sends them: one unsigned 16-bit little-endian value per pixel."""
    return np.asarray(counts, dtype="<u2").tobytes()


def unpack_spectrum(data: bytes, pixels: int) -> np.ndarray:
    if len(data) != 2 * pixels:
        raise FrameError(
            f"spectrum: expected {2 * pixels} bytes for {pixels} pixels, got {len(data)}",
            ErrorCode.PAYLOAD_LENGTH_MISMATCH,
        )
    return np.frombuffer(data, dtype="<u2").astype(np.float64)
