"""Universal Robots Dashboard Server and Robotiq URCap socket texts: building and parsing, no I/O.

Dashboard Server (TCP 29999, UR "Dashboard Server e-Series/CB-Series" manuals): one ASCII line per
request and per reply, ending ``\\n``; commands are case-insensitive; the server greets every new
connection with ``Connected: Universal Robots Dashboard Server``.

Robotiq gripper URCap (TCP 63352 on the controller): ``SET <VAR> <int> [<VAR> <int> ...]\\n`` is
answered by the three bytes ``ack`` with no line end (Robotiq's own script reads exactly three
bytes), and ``GET <VAR>\\n`` by ``<VAR> <int>\\n`` (URScript manual, ``socket_get_var``).

Both the driver and the simulator use this module, so the two cannot disagree about a reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, IntEnum

from drivers.errors import ProtocolError

# -- Dashboard Server ---------------------------------------------------------------------------

GREETING = "Connected: Universal Robots Dashboard Server"
POWERING_ON = "Powering on"
POWERING_OFF = "Powering off"
BRAKE_RELEASING = "Brake releasing"
PROTECTIVE_STOP_RELEASING = "Protective stop releasing"
#: The controller's refusal within 5 s of a protective stop (Dashboard Server manual, "unlock
#: protective stop").
UNLOCK_TOO_SOON = (
    "Cannot unlock protective stop until 5s after occurrence. "
    "Always inspect cause of protective stop before unlocking"
)
#: e-Series in local control: every command that could start motion or change power is refused so.
NOT_IN_REMOTE_CONTROL = (
    "Command is not allowed due to safety reasons, "
    "please switch robot to Remote Control mode and reconnect to port 29999"
)
CLOSING_SAFETY_POPUP = "closing safety popup"
CLOSING_POPUP = "closing popup"
STOPPED = "Stopped"
DISCONNECTED = "Disconnected"


class RobotMode(Enum):
    NO_CONTROLLER = "NO_CONTROLLER"
    DISCONNECTED = "DISCONNECTED"
    CONFIRM_SAFETY = "CONFIRM_SAFETY"
    BOOTING = "BOOTING"
    POWER_OFF = "POWER_OFF"
    POWER_ON = "POWER_ON"
    IDLE = "IDLE"
    BACKDRIVE = "BACKDRIVE"
    RUNNING = "RUNNING"
    UPDATING_FIRMWARE = "UPDATING_FIRMWARE"


class SafetyStatus(Enum):
    NORMAL = "NORMAL"
    REDUCED = "REDUCED"
    PROTECTIVE_STOP = "PROTECTIVE_STOP"
    RECOVERY = "RECOVERY"
    SAFEGUARD_STOP = "SAFEGUARD_STOP"
    SYSTEM_EMERGENCY_STOP = "SYSTEM_EMERGENCY_STOP"
    ROBOT_EMERGENCY_STOP = "ROBOT_EMERGENCY_STOP"
    VIOLATION = "VIOLATION"
    FAULT = "FAULT"
    AUTOMATIC_MODE_SAFEGUARD_STOP = "AUTOMATIC_MODE_SAFEGUARD_STOP"
    SYSTEM_THREE_POSITION_ENABLING_STOP = "SYSTEM_THREE_POSITION_ENABLING_STOP"

    @property
    def allows_motion(self) -> bool:
        return self in (SafetyStatus.NORMAL, SafetyStatus.REDUCED)


class ProgramStateKind(Enum):
    STOPPED = "STOPPED"
    PLAYING = "PLAYING"
    PAUSED = "PAUSED"


@dataclass(frozen=True)
class ProgramState:
    state: ProgramStateKind
    program: str


def encode_command(command: str) -> bytes:
    """One request line; refuses embedded line ends, which would smuggle a second command."""
    if "\n" in command or "\r" in command:
        raise ValueError(f"a dashboard command is one line, got {command!r}")
    return command.encode("ascii") + b"\n"


def decode_line(raw: bytes) -> str:
    """A reply line without its line end; non-ASCII bytes mean a corrupted reply."""
    try:
        return raw.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"dashboard reply is not ASCII: {raw!r}") from exc


def _value_after(line: str, prefix: str) -> str:
    if not line.lower().startswith(prefix.lower()):
        raise ProtocolError(f"expected a reply starting {prefix!r}, got {line!r}")
    return line[len(prefix) :].strip()


def parse_robot_mode(line: str) -> RobotMode:
    value = _value_after(line, "Robotmode:")
    try:
        return RobotMode(value.upper())
    except ValueError:
        raise ProtocolError(f"unknown robot mode in {line!r}") from None


def parse_safety(line: str) -> SafetyStatus:
    """``Safetystatus: X`` (e-Series 5.4+) or ``Safetymode: X`` (CB3 and older e-Series)."""
    prefix = "Safetystatus:" if line.lower().startswith("safetystatus:") else "Safetymode:"
    value = _value_after(line, prefix)
    try:
        return SafetyStatus(value.upper())
    except ValueError:
        raise ProtocolError(f"unknown safety status in {line!r}") from None


def parse_running(line: str) -> bool:
    value = _value_after(line, "Program running:").lower()
    if value not in ("true", "false"):
        raise ProtocolError(f"expected 'Program running: true|false', got {line!r}")
    return value == "true"


def parse_program_state(line: str) -> ProgramState:
    state, _, program = line.strip().partition(" ")
    try:
        return ProgramState(ProgramStateKind(state.upper()), program.strip())
    except ValueError:
        raise ProtocolError(f"expected 'STOPPED|PLAYING|PAUSED <program>', got {line!r}") from None


def parse_bool(line: str) -> bool:
    value = line.strip().lower()
    if value not in ("true", "false"):
        raise ProtocolError(f"expected 'true' or 'false', got {line!r}")
    return value == "true"


def is_unknown_command(line: str) -> bool:
    """The reply of a controller that lacks a command (CB3 has no 'safetystatus')."""
    return line.lower().startswith("could not understand")


def unknown_command_reply(command: str) -> str:
    return f"Could not understand: '{command}'"


# -- Robotiq URCap socket ----------------------------------------------------------------------

ACK = b"ack"
GRIPPER_VARIABLES = ("ACT", "GTO", "ATR", "ARD", "FOR", "SPE", "POS", "PRE", "OBJ", "STA", "FLT", "SID")
SETTABLE = frozenset({"ACT", "GTO", "ATR", "ARD", "FOR", "SPE", "POS", "SID"})
POSITION_OPEN = 0
POSITION_CLOSED = 255


class GripperStatus(IntEnum):
    """``STA``: activation state."""

    RESET = 0
    ACTIVATING = 1
    UNUSED = 2
    ACTIVE = 3


class ObjectStatus(IntEnum):
    """``OBJ``: what stopped the fingers."""

    MOVING = 0
    STOPPED_OPENING = 1  # contact while opening: an object inside the fingers, pushed outwards
    STOPPED_CLOSING = 2  # contact while closing: an object caught between the fingers
    AT_POSITION = 3  # reached the requested position: nothing in the way

    @property
    def holds_object(self) -> bool:
        return self in (ObjectStatus.STOPPED_OPENING, ObjectStatus.STOPPED_CLOSING)


def encode_set(**values: int) -> bytes:
    """``SET POS 255 SPE 255 ...``: the URCap takes several variables in one line, answered by one ack."""
    if not values:
        raise ValueError("SET needs at least one variable")
    parts: list[str] = []
    for name, value in values.items():
        if name not in SETTABLE:
            settable = ", ".join(sorted(SETTABLE))
            raise ValueError(f"gripper variable {name!r} cannot be set; settable: {settable}")
        parts.append(f"{name} {int(value)}")
    return ("SET " + " ".join(parts) + "\n").encode("ascii")


def encode_get(name: str) -> bytes:
    if name not in GRIPPER_VARIABLES:
        raise ValueError(f"unknown gripper variable {name!r}; known: {', '.join(GRIPPER_VARIABLES)}")
    return f"GET {name}\n".encode("ascii")


def parse_get_reply(raw: bytes, name: str) -> int:
    """``POS 123\\n`` → 123, checking the echoed name so a stale or garbled reply is not taken."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"gripper reply is not ASCII: {raw!r}") from None
    parts = text.split()
    if len(parts) != 2 or parts[0] != name or not re.fullmatch(r"-?\d+", parts[1]):
        raise ProtocolError(f"expected '{name} <int>' from the gripper, got {raw!r}")
    return int(parts[1])


def check_ack(raw: bytes) -> None:
    if raw != ACK:
        raise ProtocolError(f"expected 'ack' from the gripper, got {raw!r}")


@dataclass(frozen=True)
class GripperRequest:
    verb: str  # "GET" | "SET"
    variables: tuple[tuple[str, int], ...] = ()
    name: str = ""


def parse_gripper_request(line: bytes) -> GripperRequest | None:
    """What a simulator reads: None for anything that is not a well-formed GET or SET."""
    try:
        words = line.decode("ascii").split()
    except UnicodeDecodeError:
        return None
    if len(words) == 2 and words[0].upper() == "GET" and words[1].upper() in GRIPPER_VARIABLES:
        return GripperRequest("GET", name=words[1].upper())
    if len(words) >= 3 and len(words) % 2 == 1 and words[0].upper() == "SET":
        pairs: list[tuple[str, int]] = []
        for name, value in zip(words[1::2], words[2::2], strict=True):
            if name.upper() not in SETTABLE or not re.fullmatch(r"-?\d+", value):
                return None
            pairs.append((name.upper(), int(value)))
        return GripperRequest("SET", tuple(pairs))
    return None
