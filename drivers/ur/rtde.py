"""Universal Robots Real-Time Data Exchange (RTDE, TCP 30004): framing, recipes, data packages. No I/O.

Sources: Universal Robots' *Real-Time Data Exchange (RTDE) Guide* (package types, the field table,
the status bit layouts), UR's own RTDE Python client (``rtde/rtde.py``, ``rtde/serialize.py``: the byte
layout of every package) and ``ur_rtde`` (``src/rtde.cpp``: what its clients send).

Every package is ``uint16 size`` (header included, big-endian), ``uint8 type``, payload. Protocol
version 2 (the one clients negotiate) adds a recipe id in front of every data package and a frequency
in front of the output setup; version 1 has neither. Both the driver and the simulator frame bytes
here, so the two cannot disagree.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

DEFAULT_PORT = 30004
HEADER = struct.Struct(">HB")
MAX_PACKAGE = 0xFFFF


class PackageType(IntEnum):
    REQUEST_PROTOCOL_VERSION = ord("V")
    GET_URCONTROL_VERSION = ord("v")
    TEXT_MESSAGE = ord("M")
    DATA_PACKAGE = ord("U")
    CONTROL_PACKAGE_SETUP_OUTPUTS = ord("O")
    CONTROL_PACKAGE_SETUP_INPUTS = ord("I")
    CONTROL_PACKAGE_START = ord("S")
    CONTROL_PACKAGE_PAUSE = ord("P")


class MessageLevel(IntEnum):
    EXCEPTION = 0
    ERROR = 1
    WARNING = 2
    INFO = 3


class RTDEError(ValueError):
    """A package that does not follow the RTDE guide."""


# -- data types ---------------------------------------------------------------------------------

#: RTDE type name -> struct format of one value (big-endian is applied by the package).
TYPE_FORMATS: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT32": "I",
    "UINT64": "Q",
    "INT32": "i",
    "DOUBLE": "d",
    "VECTOR3D": "3d",
    "VECTOR6D": "6d",
    "VECTOR6INT32": "6i",
    "VECTOR6UINT32": "6I",
}
VECTOR_SIZES = {"VECTOR3D": 3, "VECTOR6D": 6, "VECTOR6INT32": 6, "VECTOR6UINT32": 6}
NOT_FOUND = "NOT_FOUND"
IN_USE = "IN_USE"

Value = bool | int | float | tuple[float, ...] | tuple[int, ...]


def _registers(prefix: str, kind: str, numbers: Iterable[int]) -> dict[str, str]:
    return {f"{prefix}_{n}": kind for n in numbers}


#: Fields the controller sends (the guide's "Controller outputs"), name -> type.
OUTPUTS: dict[str, str] = {
    "timestamp": "DOUBLE",
    **{name: "VECTOR6D" for name in (
        "target_q", "target_qd", "target_qdd", "target_current", "target_moment", "actual_q", "actual_qd",
        "actual_current", "actual_current_window", "joint_control_output", "actual_TCP_pose",
        "actual_TCP_speed", "actual_TCP_force", "target_TCP_pose", "target_TCP_speed", "joint_temperatures",
        "actual_joint_voltage", "ft_raw_wrench", "payload_inertia", "tcp_offset")},
    "actual_digital_input_bits": "UINT64",
    "actual_execution_time": "DOUBLE",
    "robot_mode": "INT32",
    "joint_mode": "VECTOR6INT32",
    "safety_mode": "INT32",
    "safety_status": "INT32",
    "actual_tool_accelerometer": "VECTOR3D",
    "speed_scaling": "DOUBLE",
    "target_speed_fraction": "DOUBLE",
    "actual_momentum": "DOUBLE",
    "actual_main_voltage": "DOUBLE",
    "actual_robot_voltage": "DOUBLE",
    "actual_robot_current": "DOUBLE",
    "actual_digital_output_bits": "UINT64",
    "runtime_state": "UINT32",
    "elbow_position": "VECTOR3D",
    "elbow_velocity": "VECTOR3D",
    "robot_status_bits": "UINT32",
    "safety_status_bits": "UINT32",
    "analog_io_types": "UINT32",
    "standard_analog_input0": "DOUBLE",
    "standard_analog_input1": "DOUBLE",
    "standard_analog_output0": "DOUBLE",
    "standard_analog_output1": "DOUBLE",
    "io_current": "DOUBLE",
    "euromap67_input_bits": "UINT32",
    "euromap67_output_bits": "UINT32",
    "euromap67_24V_voltage": "DOUBLE",
    "euromap67_24V_current": "DOUBLE",
    "tool_mode": "UINT32",
    "tool_analog_input_types": "UINT32",
    "tool_analog_input0": "DOUBLE",
    "tool_analog_input1": "DOUBLE",
    "tool_output_voltage": "INT32",
    "tool_output_current": "DOUBLE",
    "tool_temperature": "DOUBLE",
    "tcp_force_scalar": "DOUBLE",
    "output_bit_registers0_to_31": "UINT32",
    "output_bit_registers32_to_63": "UINT32",
    **_registers("output_bit_register", "BOOL", range(64, 128)),
    **_registers("output_int_register", "INT32", range(48)),
    **_registers("output_double_register", "DOUBLE", range(48)),
    "input_bit_registers0_to_31": "UINT32",
    "input_bit_registers32_to_63": "UINT32",
    **_registers("input_bit_register", "BOOL", range(64, 128)),
    **_registers("input_int_register", "INT32", range(48)),
    **_registers("input_double_register", "DOUBLE", range(48)),
    "tool_output_mode": "UINT8",
    "tool_digital_output0_mode": "UINT8",
    "tool_digital_output1_mode": "UINT8",
    "payload": "DOUBLE",
    "payload_cog": "VECTOR3D",
    "script_control_line": "UINT32",
    "joint_position_deviation_ratio": "DOUBLE",
    "collision_detection_ratio": "DOUBLE",
    "time_scale_source": "INT32",
}  # fmt: skip

#: Outputs an e-Series controller has and a CB3 does not.
E_SERIES_OUTPUTS = frozenset({
    "ft_raw_wrench", "actual_current_window", "joint_position_deviation_ratio", "collision_detection_ratio",
    "time_scale_source", "tcp_offset", "safety_status",
})  # fmt: skip

#: Fields a client may write (the guide's "Controller inputs"), name -> type.
INPUTS: dict[str, str] = {
    "speed_slider_mask": "UINT32",
    "speed_slider_fraction": "DOUBLE",
    "standard_digital_output_mask": "UINT8",
    "standard_digital_output": "UINT8",
    "configurable_digital_output_mask": "UINT8",
    "configurable_digital_output": "UINT8",
    "tool_digital_output_mask": "UINT8",
    "tool_digital_output": "UINT8",
    "standard_analog_output_mask": "UINT8",
    "standard_analog_output_type": "UINT8",
    "standard_analog_output_0": "DOUBLE",
    "standard_analog_output_1": "DOUBLE",
    "input_bit_registers0_to_31": "UINT32",
    "input_bit_registers32_to_63": "UINT32",
    **_registers("input_bit_register", "BOOL", range(64, 128)),
    **_registers("input_int_register", "INT32", range(48)),
    **_registers("input_double_register", "DOUBLE", range(48)),
    "external_force_torque": "VECTOR6D",
}


# -- robot state encodings ----------------------------------------------------------------------

#: ``robot_mode`` (RTDE guide; the Dashboard Server's names).
ROBOT_MODES = {
    "NO_CONTROLLER": -1, "DISCONNECTED": 0, "CONFIRM_SAFETY": 1, "BOOTING": 2, "POWER_OFF": 3, "POWER_ON": 4,
    "IDLE": 5, "BACKDRIVE": 6, "RUNNING": 7, "UPDATING_FIRMWARE": 8,
}  # fmt: skip
#: ``safety_mode`` and ``safety_status``.
SAFETY_MODES = {
    "NORMAL": 1, "REDUCED": 2, "PROTECTIVE_STOP": 3, "RECOVERY": 4, "SAFEGUARD_STOP": 5,
    "SYSTEM_EMERGENCY_STOP": 6, "ROBOT_EMERGENCY_STOP": 7, "VIOLATION": 8, "FAULT": 9,
    "VALIDATE_JOINT_ID": 10, "UNDEFINED_SAFETY_MODE": 11, "AUTOMATIC_MODE_SAFEGUARD_STOP": 12,
    "SYSTEM_THREE_POSITION_ENABLING_STOP": 13,
}  # fmt: skip
ROBOT_MODE_NAMES = {v: k for k, v in ROBOT_MODES.items()}
SAFETY_MODE_NAMES = {v: k for k, v in SAFETY_MODES.items()}


class RuntimeState(IntEnum):
    STOPPING = 0
    STOPPED = 1
    PLAYING = 2
    PAUSING = 3
    PAUSED = 4
    RESUMING = 5


class JointMode(IntEnum):
    POWER_OFF = 239
    BOOTING = 247
    RUNNING = 253
    IDLE = 255


# robot_status_bits
ROBOT_POWER_ON = 1 << 0
ROBOT_PROGRAM_RUNNING = 1 << 1
ROBOT_TEACH_BUTTON = 1 << 2
ROBOT_POWER_BUTTON = 1 << 3
# safety_status_bits, bit by bit as the guide lists them
SAFETY_BITS = {
    "NORMAL": 0, "REDUCED": 1, "PROTECTIVE_STOP": 2, "RECOVERY": 3, "SAFEGUARD_STOP": 4,
    "SYSTEM_EMERGENCY_STOP": 5, "ROBOT_EMERGENCY_STOP": 6, "VIOLATION": 8, "FAULT": 9,
}  # fmt: skip
SAFETY_EMERGENCY_STOPPED = 1 << 7
SAFETY_STOPPED_DUE_TO_SAFETY = 1 << 10


def safety_status_bits(status: str) -> int:
    """The ``safety_status_bits`` word for a safety status name (Dashboard Server spelling)."""
    bits = 1 << SAFETY_BITS[status] if status in SAFETY_BITS else 0
    if status in ("SYSTEM_EMERGENCY_STOP", "ROBOT_EMERGENCY_STOP"):
        bits |= SAFETY_EMERGENCY_STOPPED
    if status not in ("NORMAL", "REDUCED"):
        bits |= SAFETY_STOPPED_DUE_TO_SAFETY
    return bits


def safety_from_bits(bits: int) -> str:
    """The safety status a ``safety_status_bits`` word shows (the most severe bit set)."""
    for name in ("FAULT", "VIOLATION", "ROBOT_EMERGENCY_STOP", "SYSTEM_EMERGENCY_STOP", "SAFEGUARD_STOP",
                 "RECOVERY", "PROTECTIVE_STOP", "REDUCED", "NORMAL"):  # fmt: skip
        if bits & (1 << SAFETY_BITS[name]):
            return name
    return "UNDEFINED_SAFETY_MODE"


# -- framing ------------------------------------------------------------------------------------


def package(kind: PackageType | int, payload: bytes = b"") -> bytes:
    size = HEADER.size + len(payload)
    if size > MAX_PACKAGE:
        raise RTDEError(f"package of {size} bytes is over the 65535-byte limit")
    return HEADER.pack(size, int(kind)) + payload


def split_header(header: bytes) -> tuple[int, int]:
    """``(size, type)`` of a package from its first three bytes; RTDEError if the size is impossible."""
    size, kind = HEADER.unpack(header)
    if size < HEADER.size:
        raise RTDEError(f"package size {size} is smaller than its header")
    return size, kind


def take_package(buffer: bytearray) -> tuple[int, bytes] | None:
    """Remove one complete package from ``buffer``: ``(type, payload)``, or None if it is not all there."""
    if len(buffer) < HEADER.size:
        return None
    size, kind = split_header(bytes(buffer[: HEADER.size]))
    if len(buffer) < size:
        return None
    payload = bytes(buffer[HEADER.size : size])
    del buffer[:size]
    return kind, payload


# -- recipes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Named fields with their types, in order; packs and unpacks a data package's values."""

    id: int
    names: tuple[str, ...]
    types: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return self.id != 0 and all(t in TYPE_FORMATS for t in self.types)

    @property
    def structure(self) -> struct.Struct:
        return struct.Struct(">" + "".join(TYPE_FORMATS[t] for t in self.types))

    def pack(self, values: Sequence[Value], *, with_id: bool = True) -> bytes:
        flat: list[bool | int | float] = []
        for kind, value in zip(self.types, values, strict=True):
            if kind in VECTOR_SIZES:
                assert isinstance(value, tuple)
                if len(value) != VECTOR_SIZES[kind]:
                    raise RTDEError(f"{kind} needs {VECTOR_SIZES[kind]} values, got {len(value)}")
                flat.extend(value)
            else:
                assert not isinstance(value, tuple)
                flat.append(value)
        body = self.structure.pack(*flat)
        return (bytes([self.id]) + body) if with_id else body

    def unpack(self, body: bytes) -> dict[str, Value]:
        """Values of a data package's body (after the recipe id); RTDEError if the size is wrong."""
        structure = self.structure
        if len(body) != structure.size:
            raise RTDEError(f"recipe {self.id}: expected {structure.size} bytes of data, got {len(body)}")
        flat = structure.unpack(body)
        values: dict[str, Value] = {}
        index = 0
        for name, kind in zip(self.names, self.types, strict=True):
            size = VECTOR_SIZES.get(kind, 1)
            values[name] = tuple(flat[index : index + size]) if kind in VECTOR_SIZES else flat[index]
            index += size
        return values


def split_names(text: str) -> tuple[str, ...]:
    """Comma-separated field names; a trailing comma (``ur_rtde`` sends one) and blanks are ignored."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


# -- requests (client -> controller) ------------------------------------------------------------


def request_protocol_version(version: int = 2) -> bytes:
    return package(PackageType.REQUEST_PROTOCOL_VERSION, struct.pack(">H", version))


def request_controller_version() -> bytes:
    return package(PackageType.GET_URCONTROL_VERSION)


def request_output_setup(names: Sequence[str], frequency: float, *, protocol: int = 2) -> bytes:
    text = ",".join(names).encode("ascii")
    return package(
        PackageType.CONTROL_PACKAGE_SETUP_OUTPUTS,
        (struct.pack(">d", frequency) if protocol >= 2 else b"") + text,
    )


def request_input_setup(names: Sequence[str]) -> bytes:
    return package(PackageType.CONTROL_PACKAGE_SETUP_INPUTS, ",".join(names).encode("ascii"))


def request_start() -> bytes:
    return package(PackageType.CONTROL_PACKAGE_START)


def request_pause() -> bytes:
    return package(PackageType.CONTROL_PACKAGE_PAUSE)


def parse_output_setup(payload: bytes, protocol: int) -> tuple[float, tuple[str, ...]]:
    """``(frequency, names)`` of a setup-outputs request (version 1 has no frequency: 125 Hz)."""
    if protocol >= 2:
        if len(payload) < 8:
            raise RTDEError("setup outputs: the payload is shorter than its frequency")
        (frequency,) = struct.unpack(">d", payload[:8])
        payload = payload[8:]
    else:
        frequency = 125.0
    return frequency, split_names(_ascii(payload))


def parse_input_setup(payload: bytes) -> tuple[str, ...]:
    return split_names(_ascii(payload))


# -- replies (controller -> client) -------------------------------------------------------------


def reply_success(kind: PackageType, success: bool) -> bytes:
    return package(kind, bytes([1 if success else 0]))


def reply_controller_version(major: int, minor: int, bugfix: int, build: int) -> bytes:
    return package(PackageType.GET_URCONTROL_VERSION, struct.pack(">IIII", major, minor, bugfix, build))


def reply_setup(kind: PackageType, recipe: Recipe, *, protocol: int = 2) -> bytes:
    text = ",".join(recipe.types).encode("ascii")
    return package(kind, (bytes([recipe.id]) if protocol >= 2 else b"") + text)


def text_message(message: str, source: str, level: MessageLevel, *, protocol: int = 2) -> bytes:
    body = message.encode("utf-8", "replace")[:255]
    if protocol < 2:
        return package(PackageType.TEXT_MESSAGE, bytes([int(level)]) + body)
    origin = source.encode("utf-8", "replace")[:255]
    return package(PackageType.TEXT_MESSAGE, bytes([len(body)]) + body + bytes([len(origin)]) + origin
                   + bytes([int(level)]))  # fmt: skip


def parse_text_message(payload: bytes, protocol: int = 2) -> tuple[str, str, MessageLevel]:
    """``(message, source, level)`` of a text message package."""
    if not payload:
        raise RTDEError("text message without a payload")
    if protocol < 2:
        return payload[1:].decode("utf-8", "replace"), "", MessageLevel(min(payload[0], 3))
    length = payload[0]
    message = payload[1 : 1 + length]
    rest = payload[1 + length :]
    if not rest:
        raise RTDEError("text message: no source")
    source = rest[1 : 1 + rest[0]]
    level_byte = rest[1 + rest[0] : 2 + rest[0]]
    if len(message) != length or not level_byte:
        raise RTDEError("text message: truncated")
    return (
        message.decode("utf-8", "replace"),
        source.decode("utf-8", "replace"),
        MessageLevel(min(level_byte[0], 3)),
    )


def parse_controller_version(payload: bytes) -> tuple[int, int, int, int]:
    if len(payload) != 16:
        raise RTDEError(f"controller version: expected 16 bytes, got {len(payload)}")
    major, minor, bugfix, build = struct.unpack(">IIII", payload)
    return major, minor, bugfix, build


def parse_setup_reply(payload: bytes, names: Sequence[str], *, protocol: int = 2) -> Recipe:
    if protocol >= 2:
        if not payload:
            raise RTDEError("setup reply without a recipe id")
        recipe_id, text = payload[0], payload[1:]
    else:
        recipe_id, text = 1, payload
    types = tuple(_ascii(text).split(","))
    return Recipe(recipe_id, tuple(names), types)


def parse_success(payload: bytes) -> bool:
    if len(payload) != 1:
        raise RTDEError(f"expected a one-byte success flag, got {len(payload)} bytes")
    return payload[0] != 0


def valid_frequency(frequency: float, maximum: float) -> bool:
    return math.isfinite(frequency) and 0 < frequency <= maximum


def recipe_for(recipe_id: int, names: Sequence[str], table: Mapping[str, str],
               in_use: Iterable[str] = ()) -> Recipe:  # fmt: skip
    """The recipe the controller answers a setup with: each name's type, ``NOT_FOUND`` or ``IN_USE``.

    A recipe with any name it cannot serve gets id 0 (the guide: "0 = failed")."""
    taken = set(in_use)
    types = tuple(IN_USE if name in taken else table.get(name, NOT_FOUND) for name in names)
    ok = bool(names) and all(t in TYPE_FORMATS for t in types)
    return Recipe(recipe_id if ok else 0, tuple(names), types)


def _ascii(data: bytes) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise RTDEError("field names must be ASCII") from None
