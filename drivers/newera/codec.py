"""The New Era NE-1000 family's RS-232 protocol as pure functions: framing, numbers, replies.

References are to the NE-1000 User Manual (Publication #1200-01), section 10 "RS-232
communications"; the NE-300/500/4000 manuals and the NE-9000 peristaltic manual share the syntax.

- Basic mode (10.2.2): request ``[address]COMMAND[data] CR``; reply ``STX address status [data] ETX``.
  The pump strips spaces and control characters and upper-cases what it receives.
- Safe mode (10.2.3): ``STX length data CRC-high CRC-low ETX`` both ways; ``length`` counts the bytes
  after itself plus one (``len(data) + 4``); the CRC is the 16-bit CCITT CRC (XMODEM variant, initial
  value 0) of ``data``: ``binascii.crc_hqx(data, 0)``. The manual's own example is ``SAF0`` framed as
  ``02 08 53 41 46 30 55 43 03``.
- Numbers (10.2.1): at most four digits and one decimal point, at most three decimals.

Nothing here does I/O, so the simulator frames and parses bytes with the same code as the driver.
"""

from __future__ import annotations

import binascii
import math
import re
from dataclasses import dataclass
from typing import Literal

STX = 0x02
ETX = 0x03
CR = 0x0D

MAX_DIGITS = 4
MAX_DECIMALS = 3

#: Status characters (10.2.4 "prompt").
STATUS_NAMES = {
    "I": "infusing",
    "W": "withdrawing",
    "S": "stopped",
    "P": "paused",
    "T": "timed pause",
    "U": "waiting for trigger",
    "X": "purging",
}
#: Alarm types after ``A?`` (10.2.4 "alarm").
ALARM_NAMES = {
    "R": "pump was reset (power was interrupted)",
    "S": "pump motor stalled",
    "T": "safe mode communications time out",
    "E": "pumping program error",
    "O": "pumping program phase out of range",
}
#: Command errors after ``?`` (10.2.4 "command error"); the bare ``?`` is an unrecognised command.
ERROR_NAMES = {
    "": "command not recognised",
    "NA": "command not currently applicable",
    "OOR": "command data out of range",
    "COM": "invalid communications packet received",
    "IGN": "command ignored due to a simultaneous new phase start",
}

RateUnits = Literal["UM", "MM", "UH", "MH"]
VolumeUnits = Literal["UL", "ML"]
#: µL/min in one unit of each rate unit.
RATE_UNITS_UL_MIN: dict[str, float] = {"UM": 1.0, "MM": 1000.0, "UH": 1.0 / 60.0, "MH": 1000.0 / 60.0}
#: µL in one unit of each volume unit.
VOLUME_UNITS_UL: dict[str, float] = {"UL": 1.0, "ML": 1000.0}
#: At or below this syringe diameter the pump's volume units default to µL, above it to mL
#: ("At or below 14.00 mm syringe diameter, volume units are µL", quick-start instructions).
UL_DIAMETER_LIMIT_MM = 14.0

Address = int | Literal["*"] | None


@dataclass(frozen=True)
class PumpModel:
    """What bounds a model's settings: syringe diameters and plunger speeds.

    The pump derives its rate limits from the syringe diameter (the manual tabulates them per
    diameter); they are the plunger's slowest and fastest linear speeds times the syringe's
    cross-section, ``pi * d**2 / 4`` (mm² = µL per mm of travel).
    """

    name: str
    min_diameter_mm: float
    max_diameter_mm: float
    min_speed_mm_min: float
    max_speed_mm_min: float
    firmware: str = "3.928"

    def rate_limits_ul_min(self, diameter_mm: float) -> tuple[float, float]:
        area = math.pi * diameter_mm**2 / 4.0
        return area * self.min_speed_mm_min, area * self.max_speed_mm_min

    def version_string(self) -> str:
        return f"{self.name}V{self.firmware}"


# Speeds derived from New Era's published NE-1000 figures: 1699 mL/h at most with a 60 mL syringe
# (26.59 mm), 0.73 µL/h at least with a 1 mL syringe (4.699 mm). The per-diameter table in the
# manual could not be checked here (docs/instruments/ne1000.md says so); the other models are
# given the same mechanics until checked.
_NE1000_MIN_SPEED = (0.73 / 60.0) / (math.pi * 4.699**2 / 4.0)
_NE1000_MAX_SPEED = (1699e3 / 60.0) / (math.pi * 26.59**2 / 4.0)
MODELS: dict[str, PumpModel] = {
    name: PumpModel(name, 0.1, 50.0, _NE1000_MIN_SPEED, _NE1000_MAX_SPEED)
    for name in ("NE1000", "NE300", "NE500", "NE4000", "NE9000")
}


def pump_model(name: str) -> PumpModel:
    key = name.upper().replace("-", "")
    if key not in MODELS:
        raise ValueError(f"unknown pump model {name!r}; allowed: {', '.join(MODELS)}")
    return MODELS[key]


class CodecError(ValueError):
    """Bytes or text that do not follow the protocol."""


# -- numbers ---------------------------------------------------------------------------------------


def format_number(value: float, *, trailing_point: bool = False) -> str:
    """The pump's text for ``value``: most decimals that fit four digits, never more than three.

    Rounds half-even like Python's formatting. Raises CodecError for negative, non-finite or
    too-large values (9999.5 and up need a fifth digit). With ``trailing_point`` the text always
    has a decimal point and keeps trailing zeros (how the pump answers queries, e.g. ``14.57``,
    ``0.974``, ``10.00``, ``1000.``); without it, trailing zeros go (``120``, ``0.5``).
    """
    if not math.isfinite(value) or value < 0:
        raise CodecError(f"{value!r} is not a number the pump accepts (0 to 9999, four digits)")
    for decimals in range(MAX_DECIMALS, -1, -1):
        text = f"{value:.{decimals}f}"
        whole = text.split(".")[0]
        if len(whole) + decimals <= MAX_DIGITS:
            if trailing_point:
                return text if decimals else text + "."
            if decimals:
                text = text.rstrip("0").rstrip(".")
            return text
    raise CodecError(f"{value!r} needs more than {MAX_DIGITS} digits")


def quantize(value: float) -> float:
    """The value the pump will actually hold after receiving ``format_number(value)``."""
    return float(format_number(value))


_NUMBER = re.compile(r"^(\d*)\.?(\d*)$")


def parse_number(text: str) -> float:
    """A number as the pump reads it; CodecError if it breaks the four-digit/three-decimal rule."""
    match = _NUMBER.match(text)
    if not text or match is None or text == ".":
        raise CodecError(f"{text!r} is not a number")
    whole, decimals = match.groups()
    if len(whole.lstrip("0")) + len(decimals) > MAX_DIGITS:
        raise CodecError(f"{text!r} has more than {MAX_DIGITS} digits")
    if len(decimals) > MAX_DECIMALS:
        raise CodecError(f"{text!r} has more than {MAX_DECIMALS} decimals")
    return float(text)


def best_units(value_base: float, units: dict[str, float]) -> tuple[str, str, float]:
    """Pick the units in which ``value_base`` (µL or µL/min) survives the four-digit rule best.

    Returns (units, text, value the pump will hold in base units). Ties go to the first units in
    ``units`` (µL before mL), so the wire stays readable.
    """
    best: tuple[float, str, str, float] | None = None
    for name, scale in units.items():
        try:
            text = format_number(value_base / scale)
        except CodecError:
            continue
        held = float(text) * scale
        error = abs(held - value_base) / value_base if value_base else abs(held)
        if best is None or error < best[0] - 1e-12:
            best = (error, name, text, held)
    if best is None:
        raise CodecError(f"{value_base!r} cannot be written in any of {', '.join(units)}")
    return best[1], best[2], best[3]


def default_volume_units(diameter_mm: float) -> str:
    return "UL" if diameter_mm <= UL_DIAMETER_LIMIT_MM else "ML"


# -- requests --------------------------------------------------------------------------------------


def request_text(address: Address, command: str = "", argument: str = "") -> str:
    if address is None:
        prefix = ""
    elif address == "*":
        prefix = "*"
    else:
        if not 0 <= int(address) <= 99:
            raise CodecError(f"address {address!r} is outside 0–99")
        prefix = str(int(address))
    return f"{prefix}{command}{argument}"


def encode_basic(address: Address, command: str = "", argument: str = "") -> bytes:
    """A basic-mode request: ``[address]COMMAND[data]`` and a carriage return."""
    return request_text(address, command, argument).encode("ascii") + b"\r"


def crc16(data: bytes) -> int:
    """The 16-bit CCITT CRC the pump puts on safe-mode packets (initial value 0)."""
    return binascii.crc_hqx(data, 0)


def frame_safe(data: bytes) -> bytes:
    """Wrap ``data`` in a safe-mode packet (used both ways)."""
    if len(data) + 4 > 0xFF:
        raise CodecError(f"safe-mode packet too long ({len(data)} bytes of data)")
    return bytes([STX, len(data) + 4]) + data + crc16(data).to_bytes(2, "big") + bytes([ETX])


def encode_safe(address: Address, command: str = "", argument: str = "") -> bytes:
    return frame_safe(request_text(address, command, argument).encode("ascii"))


def unframe_safe(packet: bytes) -> bytes:
    """The data inside a complete safe-mode packet; CodecError if the framing or CRC is wrong."""
    if len(packet) < 5 or packet[0] != STX or packet[-1] != ETX:
        raise CodecError(f"not a safe-mode packet: {packet!r}")
    if packet[1] != len(packet) - 1:
        raise CodecError(f"safe-mode length byte {packet[1]} does not match {len(packet) - 1} bytes")
    data, crc = packet[2:-3], int.from_bytes(packet[-3:-1], "big")
    if crc16(data) != crc:
        raise CodecError(f"safe-mode CRC mismatch: got {crc:04X}, computed {crc16(data):04X}")
    return data


@dataclass(frozen=True)
class Request:
    """A request as the pump understands it, after stripping and upper-casing."""

    address: Address
    command: str  # three letters, or "" for a status query
    argument: str


_REQUEST = re.compile(r"^(?P<address>\d{1,2}|\*)?(?P<command>[A-Z]{3})?(?P<argument>.*)$")


def parse_request(text: str | bytes) -> Request:
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    cleaned = "".join(ch for ch in text if " " < ch < "\x7f").upper()
    match = _REQUEST.match(cleaned)
    assert match is not None  # every string matches: all parts are optional
    raw = match["address"]
    address: Address = None if raw is None else ("*" if raw == "*" else int(raw))
    command = match["command"] or ""
    argument = match["argument"]
    if not command and argument:
        # Not a three-letter command: let the pump answer "?" rather than guess.
        command, argument = argument, ""
    return Request(address, command, argument)


# -- replies ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    address: int
    status: str | None  # one of STATUS_NAMES, or None when an alarm replaces it
    alarm: str | None = None  # one of ALARM_NAMES
    error: str | None = None  # one of ERROR_NAMES ("" = unrecognised command)
    data: str = ""

    def body(self) -> str:
        head = f"{self.address:02d}" + (f"A?{self.alarm}" if self.alarm else str(self.status))
        return head + (f"?{self.error}" if self.error is not None else self.data)


_REPLY = re.compile(
    r"^(?P<address>\d{2})(?:A\?(?P<alarm>[RSTEO])|(?P<status>[IWSPTUX]))(?P<rest>[0-9A-Z.?]*)$"
)


def parse_reply_body(body: str) -> Reply:
    match = _REPLY.match(body)
    if match is None:
        raise CodecError(f"malformed reply {body!r}")
    rest = match["rest"]
    error = None
    if rest.startswith("?"):
        error = rest[1:]
        if error not in ERROR_NAMES:
            raise CodecError(f"unknown command error {rest!r} in reply {body!r}")
        rest = ""
    elif "?" in rest:
        raise CodecError(f"malformed reply {body!r}")
    return Reply(int(match["address"]), match["status"], match["alarm"], error, rest)


def encode_reply(reply: Reply, *, safe: bool = False) -> bytes:
    data = reply.body().encode("ascii")
    return frame_safe(data) if safe else bytes([STX]) + data + bytes([ETX])


def decode_basic_reply(frame: bytes) -> Reply:
    if len(frame) < 2 or frame[0] != STX or frame[-1] != ETX:
        raise CodecError(f"not a basic-mode reply: {frame!r}")
    try:
        body = frame[1:-1].decode("ascii")
    except UnicodeDecodeError as exc:
        raise CodecError(f"non-ASCII bytes in reply {frame!r}") from exc
    return parse_reply_body(body)


def decode_safe_reply(packet: bytes) -> Reply:
    try:
        body = unframe_safe(packet).decode("ascii")
    except UnicodeDecodeError as exc:
        raise CodecError(f"non-ASCII bytes in reply {packet!r}") from exc
    return parse_reply_body(body)


# -- reply data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dispensed:
    """Volumes pumped since the counters were last cleared (``DIS``), in µL."""

    infused_ul: float
    withdrawn_ul: float


_QUANTITY = re.compile(r"^(?P<value>\d*\.?\d*)(?P<units>[A-Z]{2})$")
_DISPENSED = re.compile(r"^I(?P<infused>\d*\.?\d*)W(?P<withdrawn>\d*\.?\d*)(?P<units>UL|ML)$")
_VERSION = re.compile(r"^NE(?P<model>\d+)(?P<upgrade>X\d*)?V(?P<version>\d+\.\d+)$")


def parse_quantity(data: str, units: dict[str, float]) -> float:
    """``10.00MM`` or ``1.000ML`` in base units (µL/min or µL)."""
    match = _QUANTITY.match(data)
    if match is None or match["units"] not in units:
        raise CodecError(f"expected a number and one of {', '.join(units)}, got {data!r}")
    return float(match["value"]) * units[match["units"]]


def parse_dispensed(data: str) -> Dispensed:
    """``I0.974W0.959ML`` (infused, withdrawn, units)."""
    match = _DISPENSED.match(data)
    if match is None:
        raise CodecError(f"expected I<float>W<float><UL|ML>, got {data!r}")
    scale = VOLUME_UNITS_UL[match["units"]]
    return Dispensed(float(match["infused"]) * scale, float(match["withdrawn"]) * scale)


def format_dispensed(infused: float, withdrawn: float, units: str) -> str:
    infused_text = format_number(infused, trailing_point=True)
    return f"I{infused_text}W{format_number(withdrawn, trailing_point=True)}{units}"


@dataclass(frozen=True)
class Firmware:
    model: str  # e.g. "NE1000"
    version: str  # e.g. "3.928"
    upgrade: str = ""  # e.g. "X2" on pumps with a firmware upgrade


def parse_version(data: str) -> Firmware:
    match = _VERSION.match(data)
    if match is None:
        raise CodecError(f"expected NE<model>V<version>, got {data!r}")
    return Firmware(f"NE{match['model']}", match["version"], match["upgrade"] or "")
