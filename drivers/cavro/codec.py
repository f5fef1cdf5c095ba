"""Tecan Cavro DT protocol (XCalibur, XLP 6000, XP 3000): framing, status byte, commands, timing.

Pure functions and data only, no I/O: the driver and the simulator both frame bytes with them.

Request  ``/`` + address character + command string + ``\\r``; e.g. ``/1ZR\\r`` initialises the pump
         whose address switch is 0. Commands are buffered until ``R`` runs them; reports (``Q``, ``?``,
         ``?n``, ``&``, ``F``) answer at once.
Reply    ``/0`` + status byte + data + ETX CR LF; e.g. ``/0`\\x03\\r\\n`` (ready, no error) or
         ``/0`3000\\x03\\r\\n`` (the answer to ``?`` with the plunger at 3000).
Status   bits ``0 1 X 0 e3 e2 e1 e0``: X (0x20) set when ready, the low nibble is the error code, so
         ``@`` (0x40) is busy and `````` (0x60) ready, both without error (XP 3000 manual table 3-8).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import IntEnum

START = b"/"
MASTER = b"0"
ETX = b"\x03"
REQUEST_END = b"\r"
REPLY_END = b"\x03\r\n"
#: Every reply ends with the line feed; the driver reads up to it and then checks the ETX before it.
REPLY_TERMINATOR = b"\n"

READY_BIT = 0x20
STATUS_BASE = 0x40
ERROR_MASK = 0x0F

#: Single-pump DT addresses: switch 0 is ``1`` (0x31) up to switch 14 ``?`` (0x3F).
FIRST_ADDRESS = 0x31
LAST_ADDRESS = 0x3F
#: ``_`` (0x5F) talks to every pump on the line; dual (0x41–0x4F) and quad (0x51–0x5D) group codes exist too.
BROADCAST_ADDRESS = "_"

#: Plunger increments per full stroke: ``N0`` standard, ``N1`` fine positioning, ``N2`` microstep.
STROKE_INCREMENTS = {0: 3000, 1: 24000, 2: 24000}
RESOLUTIONS = {"standard": 0, "fine": 1, "microstep": 2}
#: A full stroke is 6000 motor half-steps; speeds (``V``, ``v``, ``c``) are half-steps per second.
STROKE_HALF_STEPS = 6000
#: Each slope code ``L n`` adds 2500 half-steps/s² of acceleration.
SLOPE_UNIT = 2500.0

TOP_SPEED_RANGE = (5, 6000)
START_SPEED_RANGE = (50, 1000)
CUTOFF_SPEED_RANGE = (50, 2700)
SLOPE_RANGE = (1, 20)
DELAY_MS_RANGE = (0, 30000)
LOOP_RANGE = (0, 30000)

#: Power-up settings of an XCalibur: start 900, top 1400 (speed code 11), cutoff 900, slope 14.
DEFAULT_START_SPEED = 900
DEFAULT_TOP_SPEED = 1400
DEFAULT_CUTOFF_SPEED = 900
DEFAULT_SLOPE = 14

#: ``S n`` selects a top speed (half-steps/s) from this table (XP 3000 / XCalibur speed codes 0–40).
SPEED_CODES: tuple[int, ...] = (
    6000, 5600, 5000, 4400, 3800, 3200, 2600, 2200, 2000, 1800,
    1600, 1400, 1200, 1000, 800, 600, 400, 200, 190, 180,
    170, 160, 150, 140, 130, 120, 110, 100, 90, 80,
    70, 60, 50, 40, 30, 20, 18, 16, 14, 12, 10,
)  # fmt: skip


class ErrorCode(IntEnum):
    """The low nibble of the status byte (XP 3000 / XLP 6000 manuals, "Error Codes")."""

    NONE = 0
    INIT_FAILURE = 1
    INVALID_COMMAND = 2
    INVALID_OPERAND = 3
    INVALID_SEQUENCE = 4
    FLUID_DETECTION = 5
    EEPROM_FAILURE = 6
    NOT_INITIALISED = 7
    PLUNGER_OVERLOAD = 9
    VALVE_OVERLOAD = 10
    PLUNGER_MOVE_NOT_ALLOWED = 11
    COMMAND_OVERFLOW = 15


ERROR_TEXT = {
    ErrorCode.NONE: "no error",
    ErrorCode.INIT_FAILURE: "initialisation failure",
    ErrorCode.INVALID_COMMAND: "invalid command",
    ErrorCode.INVALID_OPERAND: "invalid operand",
    ErrorCode.INVALID_SEQUENCE: "invalid command sequence",
    ErrorCode.FLUID_DETECTION: "fluid detection",
    ErrorCode.EEPROM_FAILURE: "EEPROM failure",
    ErrorCode.NOT_INITIALISED: "device not initialised",
    ErrorCode.PLUNGER_OVERLOAD: "plunger overload",
    ErrorCode.VALVE_OVERLOAD: "valve overload",
    ErrorCode.PLUNGER_MOVE_NOT_ALLOWED: "plunger move not allowed",
    ErrorCode.COMMAND_OVERFLOW: "command overflow",
}


def error_text(code: int) -> str:
    try:
        return ERROR_TEXT[ErrorCode(code)]
    except ValueError:
        return f"undocumented error {code}"


class FrameError(ValueError):
    """Bytes that are not a DT reply (or request): wrong start, master address, status or end."""


# -- addresses -------------------------------------------------------------------------------------


def address_char(address: int | str) -> str:
    """The DT address character: an int 1–15 or a character ``1``–``?`` (``1`` is address switch 0)."""
    if isinstance(address, str):
        if len(address) == 1 and FIRST_ADDRESS <= ord(address) <= LAST_ADDRESS:
            return address
    elif not isinstance(address, bool) and 1 <= address <= 15:
        return chr(0x30 + address)
    raise ValueError(
        f"pump address must be 1..15 or one of the characters '1'..'?' (switch 0..14), not {address!r}"
    )


def address_switch(char: str) -> int:
    """The address-switch setting a single-pump address character stands for (``1`` → 0)."""
    return ord(address_char(char)) - FIRST_ADDRESS


def addressed_switches(char: str) -> frozenset[int]:
    """Which address switches a request's address character reaches (single, dual, quad or all)."""
    code = ord(char)
    if FIRST_ADDRESS <= code <= LAST_ADDRESS:
        return frozenset({code - FIRST_ADDRESS})
    if 0x41 <= code <= 0x4F and code % 2 == 1:  # A, C, E, ... : switches 0-1, 2-3, ...
        first = code - 0x41
        return frozenset({first, first + 1})
    if code in (0x51, 0x55, 0x59, 0x5D):  # Q, U, Y, ] : switches 0-3, 4-7, 8-11, 12-15
        first = code - 0x51
        return frozenset(range(first, first + 4))
    if char == BROADCAST_ADDRESS:
        return frozenset(range(16))
    return frozenset()


# -- requests --------------------------------------------------------------------------------------


def encode_request(address: int | str, commands: str) -> bytes:
    """``/1ZR\\r`` from (1, "ZR"). Commands are ASCII and may not contain the frame characters."""
    if not commands or any(ch in commands for ch in "/\r\n") or not commands.isascii():
        raise ValueError(f"not a DT command string: {commands!r}")
    return START + address_char(address).encode() + commands.encode("ascii") + REQUEST_END


@dataclass(frozen=True)
class Request:
    address: str
    commands: str


def decode_request(frame: bytes) -> Request:
    """Parse one request line (up to and including CR); leading noise before ``/`` is skipped."""
    start = frame.rfind(START)
    if start < 0 or not frame.endswith(REQUEST_END) or len(frame) - start < 3:
        raise FrameError(f"not a DT request: {frame!r}")
    body = frame[start + 1 : -1]
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise FrameError(f"non-ASCII DT request: {frame!r}") from exc
    return Request(text[0], text[1:].strip(" "))


# -- replies ---------------------------------------------------------------------------------------


def status_byte(ready: bool, error: int = 0) -> int:
    if not 0 <= error <= ERROR_MASK:
        raise ValueError(f"error code must be 0..15, not {error}")
    return STATUS_BASE | (READY_BIT if ready else 0) | error


@dataclass(frozen=True)
class Status:
    ready: bool
    error: int

    @property
    def busy(self) -> bool:
        return not self.ready

    @property
    def error_text(self) -> str:
        return error_text(self.error)


def decode_status(byte: int) -> Status:
    if byte & 0xD0 != STATUS_BASE:
        raise FrameError(f"status byte {byte:#04x} does not match 0 1 X 0 e3 e2 e1 e0")
    return Status(bool(byte & READY_BIT), byte & ERROR_MASK)


def encode_reply(ready: bool, error: int = 0, data: str = "") -> bytes:
    return START + MASTER + bytes([status_byte(ready, error)]) + data.encode("ascii") + REPLY_END


@dataclass(frozen=True)
class Reply:
    status: Status
    data: str


def decode_reply(frame: bytes) -> Reply:
    """Parse ``/0<status><data>ETX CR LF``; anything before the last ``/0`` (a 0xFF line-turnaround byte,
    a stale fragment) is ignored, anything else out of place raises ``FrameError``."""
    start = frame.rfind(START + MASTER)
    if start < 0:
        raise FrameError(f"no '/0' in reply {frame!r}")
    if not frame.endswith(REPLY_END):
        raise FrameError(f"reply {frame!r} does not end with ETX CR LF")
    body = frame[start + 2 : -len(REPLY_END)]
    if not body:
        raise FrameError(f"reply {frame!r} has no status byte")
    status = decode_status(body[0])
    data = body[1:]
    if not all(0x20 <= b < 0x7F for b in data):
        raise FrameError(f"reply data {data!r} is not printable ASCII")
    return Reply(status, data.decode("ascii"))


# -- command strings -------------------------------------------------------------------------------

#: One command: a letter (or ``?``/``&``/``#``/``*``) and its comma-separated operands.
_TOKEN = re.compile(r"([A-Za-z?&#*])(\d+(?:,\d*)*)?")
#: Commands that report and never queue: they answer at once, even while the pump is busy.
REPORT_COMMANDS = frozenset("Q?&F#*")


@dataclass(frozen=True)
class Command:
    letter: str
    operands: tuple[int | None, ...] = ()

    @property
    def operand(self) -> int | None:
        return self.operands[0] if self.operands else None

    def __str__(self) -> str:
        return self.letter + ",".join("" if n is None else str(n) for n in self.operands)


class CommandSyntaxError(ValueError):
    """A command string the pump would answer with error 2 (invalid command)."""


def parse_commands(text: str) -> list[Command]:
    """Split ``IA3000OA0R`` into commands; raise CommandSyntaxError on characters that are no command."""
    commands: list[Command] = []
    position = 0
    text = text.replace(" ", "")
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise CommandSyntaxError(f"no command at {text[position:]!r}")
        letter, operands = match.groups()
        values: tuple[int | None, ...] = ()
        if operands:
            values = tuple(int(part) if part else None for part in operands.split(","))
        commands.append(Command(letter, values))
        position = match.end()
    return commands


def format_commands(*commands: str | Command) -> str:
    return "".join(str(c) for c in commands)


# -- units and timing ------------------------------------------------------------------------------


def increments_per_stroke(mode: int) -> int:
    try:
        return STROKE_INCREMENTS[mode]
    except KeyError:
        raise ValueError(f"resolution mode must be 0, 1 or 2 (N0/N1/N2), not {mode}") from None


def resolution_mode(resolution: str | int) -> int:
    if isinstance(resolution, int) and resolution in STROKE_INCREMENTS:
        return resolution
    if isinstance(resolution, str) and resolution in RESOLUTIONS:
        return RESOLUTIONS[resolution]
    raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)} (or 0, 1, 2), not {resolution!r}")


def volume_to_increments(volume_ul: float, syringe_volume_ul: float, mode: int = 0) -> int:
    return round(volume_ul / syringe_volume_ul * increments_per_stroke(mode))


def increments_to_volume(increments: int, syringe_volume_ul: float, mode: int = 0) -> float:
    return increments * syringe_volume_ul / increments_per_stroke(mode)


def flow_to_speed(flow_ul_s: float, syringe_volume_ul: float) -> int:
    """Top speed (half-steps/s) that moves ``flow_ul_s`` through a syringe of this volume."""
    return round(flow_ul_s / syringe_volume_ul * STROKE_HALF_STEPS)


def speed_to_flow(speed: float, syringe_volume_ul: float) -> float:
    return speed * syringe_volume_ul / STROKE_HALF_STEPS


@dataclass(frozen=True)
class SpeedProfile:
    """Start speed, top speed, cutoff speed (half-steps/s) and slope code of a plunger move."""

    start: float = DEFAULT_START_SPEED
    top: float = DEFAULT_TOP_SPEED
    cutoff: float = DEFAULT_CUTOFF_SPEED
    slope: int = DEFAULT_SLOPE

    @property
    def acceleration(self) -> float:
        return self.slope * SLOPE_UNIT

    def _speeds(self) -> tuple[float, float, float]:
        # Start and cutoff speeds above the top speed are held at it, as the pump does.
        top = float(self.top)
        return min(self.start, top), top, min(self.cutoff, top)

    def _phases(self, half_steps: float) -> tuple[float, float, float, float]:
        """(peak speed, ramp-up time, cruise time, ramp-down time) of a move of ``half_steps``."""
        start, top, cutoff = self._speeds()
        a = self.acceleration
        up = (top**2 - start**2) / (2 * a)
        down = (top**2 - cutoff**2) / (2 * a)
        if up + down <= half_steps:
            return top, (top - start) / a, (half_steps - up - down) / top, (top - cutoff) / a
        # Too short to reach the top speed: a triangle peaking where the two ramps meet.
        peak = math.sqrt(a * half_steps + (start**2 + cutoff**2) / 2)
        if peak <= max(start, cutoff):
            return max(start, cutoff), 0.0, half_steps / max(start, cutoff), 0.0
        return peak, (peak - start) / a, 0.0, (peak - cutoff) / a

    def move_time(self, half_steps: float) -> float:
        """Seconds for a plunger move of ``half_steps``: ramp up, cruise at top speed, ramp down."""
        if half_steps <= 0:
            return 0.0
        _, t_up, t_cruise, t_down = self._phases(half_steps)
        return t_up + t_cruise + t_down

    def distance_at(self, half_steps: float, elapsed: float) -> float:
        """Half-steps covered ``elapsed`` seconds into a move of ``half_steps`` (for a terminated move)."""
        if half_steps <= 0 or elapsed <= 0:
            return 0.0
        start = self._speeds()[0]
        peak, t_up, t_cruise, t_down = self._phases(half_steps)
        a = self.acceleration
        if t_up == t_down == 0.0:  # constant speed
            return min(half_steps, peak * elapsed)
        if elapsed <= t_up:
            return start * elapsed + a * elapsed**2 / 2
        covered = start * t_up + a * t_up**2 / 2
        if elapsed <= t_up + t_cruise:
            return covered + peak * (elapsed - t_up)
        covered += peak * t_cruise
        t = min(elapsed - t_up - t_cruise, t_down)
        return min(half_steps, covered + peak * t - a * t**2 / 2)


def top_speed_for_code(code: int) -> int:
    if not 0 <= code < len(SPEED_CODES):
        raise ValueError(f"speed code must be 0..{len(SPEED_CODES) - 1}, not {code}")
    return SPEED_CODES[code]
