"""IKA hotplate stirrers over RS-232, NAMUR command set: pure framing and parsing, no I/O.

From the RCT digital operating instructions ("Interfaces and outputs"; the C-MAG HS and RET
control-visc pages say the same):

- 9600 baud, 7 data bits, even parity, 1 stop bit, no flow control; the device speaks only when
  asked, and never sends a fault on its own.
- Commands are capital letters; a command and its parameter are separated by at least one blank;
  every command and every reply ends with "Blank CR LF" (0x20 0x0D 0x0A) and is at most 80
  characters; the decimal separator is a dot.
- ``IN_NAME`` reads the device name; ``IN_PV_n`` reads an actual value and ``IN_SP_n`` a set value
  of channel n: 1 the external sensor (a PT1000 in the medium), 2 the hotplate sensor, 3 the safety
  temperature (``IN_SP_3``), 4 the stirring speed in 1/min, 5 the viscosity trend.
- ``OUT_SP_1 x`` sets the temperature (0…310 °C on the RCT digital), ``OUT_SP_4 x`` the speed
  (0…1500 1/min); ``START_1``/``STOP_1`` switch the heater, ``START_4``/``STOP_4`` the motor;
  ``RESET`` returns to normal operating mode; setting commands answer nothing.
- ``OUT_WD1@m`` starts watchdog mode 1 (m = 20…1500 s, "with watchdog time echo"): unless the
  command comes again within m seconds, heating and stirring switch off and the display shows Er 2.
  ``OUT_SP_12@n`` / ``OUT_SP_42@n`` set the watchdog-2 safety temperature and speed, with echo.

A reading comes back as the value and the channel number, ``"24.8 1"``. The manual does not give
the exact form of an echo; we read it as the echoed number alone (``"30"``), and say so in
docs/instruments/ika.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import IntEnum

BAUDRATE = 9600
BYTESIZE = 7
PARITY = "E"
STOPBITS = 1
#: What ends every command and every reply ("Blank CR LF" in the manual).
TERMINATOR = b" \r\n"
#: A reader waits for this: the blank before it is optional in practice.
LINE_END = b"\r\n"
MAX_LENGTH = 80

#: The RCT digital's documented set-point ranges.
MAX_TEMPERATURE_C = 310.0
MAX_SPEED_RPM = 1500.0
WATCHDOG_RANGE_S = (20, 1500)
DEVICE_NAME = "RCT digital"


class CodecError(ValueError):
    """Bytes that are not a NAMUR request or reply."""


class Channel(IntEnum):
    """The numbered quantities of ``IN_PV_n``, ``IN_SP_n`` and ``OUT_SP_n``."""

    EXTERNAL_TEMPERATURE = 1  # the PT1000 in the medium; what the plate regulates when it is plugged in
    PLATE_TEMPERATURE = 2
    SAFETY_TEMPERATURE = 3
    SPEED = 4
    VISCOSITY_TREND = 5


@dataclass(frozen=True)
class Request:
    """A parsed request: ``IN_PV_1`` -> ("IN_PV_1", ""); ``OUT_SP_1 60`` -> ("OUT_SP_1", "60");
    ``OUT_WD1@30`` -> ("OUT_WD1", "30")."""

    command: str
    argument: str = ""


_COMMAND = re.compile(r"^[A-Z][A-Z0-9_]*$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def format_number(value: float, decimals: int = 1) -> str:
    """A number as the device takes it: a dot as separator, no exponent, at most ``decimals`` places."""
    if not math.isfinite(value):
        raise CodecError(f"not a finite number: {value!r}")
    text = f"{value:.{decimals}f}"
    return f"{0:.{decimals}f}" if float(text) == 0 else text  # never "-0.0"


def encode(command: str, argument: str | float | None = None, *, at: bool = False) -> bytes:
    """The bytes of one request: ``encode("OUT_SP_1", 60)`` -> ``b"OUT_SP_1 60.0 \\r\\n"``.

    ``at`` joins the argument with '@' (the watchdog commands: ``OUT_WD1@30``).
    """
    if not _COMMAND.match(command):
        raise CodecError(f"not a NAMUR command: {command!r}")
    text = command
    if argument is not None:
        value = argument if isinstance(argument, str) else format_number(float(argument))
        text += f"@{value}" if at else f" {value}"
    data = text.encode("ascii") + TERMINATOR
    if len(data) > MAX_LENGTH:
        raise CodecError(f"request longer than {MAX_LENGTH} characters: {text!r}")
    return data


def read_pv(channel: Channel | int) -> bytes:
    return encode(f"IN_PV_{int(channel)}")


def read_sp(channel: Channel | int) -> bytes:
    return encode(f"IN_SP_{int(channel)}")


def set_point(channel: Channel | int, value: float) -> bytes:
    decimals = 0 if int(channel) == Channel.SPEED else 1
    return encode(f"OUT_SP_{int(channel)}", format_number(value, decimals))


def parse_request(line: bytes) -> Request:
    """A request line (with or without its terminator) as the device reads it."""
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise CodecError(f"not ASCII: {line!r}") from exc
    if not text:
        raise CodecError("empty request")
    command, _, argument = text.partition(" ")
    if "@" in command:
        command, _, argument = command.partition("@")
    command, argument = command.strip(), argument.strip()
    if not _COMMAND.match(command):
        raise CodecError(f"not a NAMUR command: {command!r}")
    return Request(command, argument)


def encode_reply(text: str) -> bytes:
    return text.encode("ascii") + TERMINATOR


def encode_reading(value: float, channel: Channel | int, decimals: int = 1) -> bytes:
    """The device's answer to ``IN_PV_n`` / ``IN_SP_n``: ``b"24.8 1 \\r\\n"``."""
    return encode_reply(f"{format_number(value, decimals)} {int(channel)}")


def reply_text(line: bytes) -> str:
    """The text of one reply line, without blanks and the line end."""
    try:
        return line.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise CodecError(f"not ASCII: {line!r}") from exc


def parse_reading(line: bytes, channel: Channel | int) -> float:
    """The value of a reading reply; the channel number it carries must be the one asked for."""
    text = reply_text(line)
    parts = text.split()
    if len(parts) != 2 or not _NUMBER.match(parts[0]) or not parts[1].isdigit():
        raise CodecError(f"not a reading 'VALUE CHANNEL': {text!r}")
    if int(parts[1]) != int(channel):
        raise CodecError(f"reading of channel {parts[1]}, asked for channel {int(channel)}: {text!r}")
    return float(parts[0])


def parse_echo(line: bytes) -> float:
    """The number a watchdog command echoes."""
    text = reply_text(line)
    number = text.split()[0] if text else ""
    if not _NUMBER.match(number):
        raise CodecError(f"not an echoed number: {text!r}")
    return float(number)


__all__ = [
    "BAUDRATE",
    "BYTESIZE",
    "DEVICE_NAME",
    "LINE_END",
    "MAX_LENGTH",
    "MAX_SPEED_RPM",
    "MAX_TEMPERATURE_C",
    "PARITY",
    "STOPBITS",
    "TERMINATOR",
    "WATCHDOG_RANGE_S",
    "Channel",
    "CodecError",
    "Request",
    "encode",
    "encode_reading",
    "encode_reply",
    "format_number",
    "parse_echo",
    "parse_reading",
    "parse_request",
    "read_pv",
    "read_sp",
    "reply_text",
    "set_point",
]
