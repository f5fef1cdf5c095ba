"""URScript programs for the secondary interface (TCP 30002): building, parsing a subset, timing.

The driver only ever sends programs it builds here: ``def NAME():``, a ``textmsg`` saying what
the program is for, one or more ``movej`` and ``end``. The simulator parses the same subset
(``movej`` with a joint list, ``sleep``, ``textmsg``, ``set_digital_out``) and refuses anything
else, as the controller refuses a program that does not compile.

Timing follows the URScript manual's ``movej(q, a=1.4, v=1.05, t=0, r=0)``: ``a`` and ``v`` bind
the leading axis (the joint with the largest excursion), every other joint is scaled to arrive
at the same time, and ``t > 0`` overrides both. The leading axis runs a trapezoid (or triangle)
velocity profile.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

JOINTS = 6
DEFAULT_JOINT_ACCELERATION = 1.4  # rad/s², URScript's movej default
DEFAULT_JOINT_SPEED = 1.05  # rad/s


class ScriptError(ValueError):
    """A program outside the subset we build and simulate (the controller would not compile it)."""


@dataclass(frozen=True)
class MoveJ:
    q: tuple[float, ...]
    a: float = DEFAULT_JOINT_ACCELERATION
    v: float = DEFAULT_JOINT_SPEED
    t: float = 0.0


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class TextMsg:
    text: str


@dataclass(frozen=True)
class SetDigitalOut:
    pin: int
    value: bool


Statement = MoveJ | Sleep | TextMsg | SetDigitalOut


@dataclass(frozen=True)
class Program:
    name: str
    statements: tuple[Statement, ...]


# -- building ---------------------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if value != 0 else "0"


def movej_line(q: Sequence[float], a: float, v: float) -> str:
    if len(q) != JOINTS:
        raise ValueError(f"movej needs {JOINTS} joint angles, got {len(q)}")
    joints = ", ".join(_number(x) for x in q)
    return f"movej([{joints}], a={_number(a)}, v={_number(v)})"


def build_program(name: str, moves: Sequence[MoveJ], message: str = "") -> str:
    """A complete program: ``def name():`` … ``end``, ready for the secondary interface."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"program name {name!r} is not a URScript identifier")
    lines = [f"def {name}():"]
    if message:
        lines.append(f'  textmsg("{_quote(message)}")')
    lines += [f"  {movej_line(m.q, m.a, m.v)}" for m in moves]
    lines.append("end")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return text.replace("\\", "/").replace('"', "'").replace("\n", " ")


# -- parsing ----------------------------------------------------------------------------------

_CALL = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*\((?P<args>.*)\)\s*$")
_DEF = re.compile(r"^def\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*\(\s*\)\s*:\s*$")


def parse_program(text: str) -> Program:
    """Parse ``def NAME(): … end`` (or a bare statement line) into statements; ScriptError if unsupported."""
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ScriptError("empty program")
    header = _DEF.match(lines[0])
    if header is None:
        return Program("<unnamed>", tuple(parse_statement(line) for line in lines))
    if lines[-1] != "end":
        raise ScriptError(f"program {header['name']!r} does not end with 'end'")
    return Program(header["name"], tuple(parse_statement(line) for line in lines[1:-1]))


def parse_statement(line: str) -> Statement:
    call = _CALL.match(line)
    if call is None:
        raise ScriptError(f"not a supported statement: {line!r}")
    name = call["name"]
    positional, keywords = _split_arguments(call["args"])
    if name == "movej":
        return _movej(positional, keywords, line)
    if name == "sleep" and len(positional) == 1 and not keywords:
        return Sleep(_float(positional[0], line))
    if name == "textmsg" and 1 <= len(positional) <= 2 and not keywords:
        return TextMsg(" ".join(_string(p) for p in positional))
    if name == "set_digital_out" and len(positional) == 2 and not keywords:
        return SetDigitalOut(int(_float(positional[0], line)), _boolean(positional[1], line))
    supported = "movej, sleep, textmsg, set_digital_out"
    raise ScriptError(f"unsupported call {name!r} in {line!r} (supported: {supported})")


def _movej(positional: list[str], keywords: dict[str, str], line: str) -> MoveJ:
    names = ("q", "a", "v", "t", "r")
    values = dict(zip(names, positional, strict=False))
    for key, value in keywords.items():
        if key not in names or key in values:
            raise ScriptError(f"movej: unexpected argument {key!r} in {line!r}")
        values[key] = value
    if "q" not in values:
        raise ScriptError(f"movej without a target: {line!r}")
    target = values["q"].strip()
    if target.startswith("p["):
        raise ScriptError(f"movej to a pose needs inverse kinematics, which is not simulated: {line!r}")
    if not (target.startswith("[") and target.endswith("]")):
        raise ScriptError(f"movej target must be a joint list [j1, …, j6]: {line!r}")
    q = tuple(_float(x, line) for x in target[1:-1].split(","))
    if len(q) != JOINTS:
        raise ScriptError(f"movej needs {JOINTS} joint angles, got {len(q)}: {line!r}")
    a = _float(values.get("a", str(DEFAULT_JOINT_ACCELERATION)), line)
    v = _float(values.get("v", str(DEFAULT_JOINT_SPEED)), line)
    t = _float(values.get("t", "0"), line)
    if a <= 0 or v <= 0 or t < 0:
        raise ScriptError(f"movej needs a > 0, v > 0 and t >= 0: {line!r}")
    return MoveJ(q, a, v, t)


def _split_arguments(text: str) -> tuple[list[str], dict[str, str]]:
    parts: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "[":
            depth += 1
        elif not quoted and char == "]":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    positional: list[str] = []
    keywords: dict[str, str] = {}
    for part in parts:
        key = re.match(r"^([A-Za-z_]\w*)\s*=(?!=)\s*(.*)$", part)
        if key:
            keywords[key[1]] = key[2]
        elif keywords:
            raise ScriptError(f"positional argument after keyword: {text!r}")
        else:
            positional.append(part)
    return positional, keywords


def _float(text: str, line: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ScriptError(f"not a number: {text!r} in {line!r}") from None
    if not math.isfinite(value):
        raise ScriptError(f"not a finite number: {text!r} in {line!r}")
    return value


def _string(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _boolean(text: str, line: str) -> bool:
    value = text.strip()
    if value in ("True", "False"):
        return value == "True"
    raise ScriptError(f"expected True or False, got {text!r} in {line!r}")


# -- timing -----------------------------------------------------------------------------------


def leading_distance(start: Sequence[float], target: Sequence[float]) -> float:
    return max((abs(b - a) for a, b in zip(start, target, strict=True)), default=0.0)


def motion_time(start: Sequence[float], move: MoveJ) -> float:
    """Seconds a movej takes from ``start``: ``t`` if given, else the leading axis's trapezoid."""
    if move.t > 0:
        return move.t
    distance = leading_distance(start, move.q)
    if distance <= 0:
        return 0.0
    if distance >= move.v**2 / move.a:
        return distance / move.v + move.v / move.a
    return 2.0 * math.sqrt(distance / move.a)


def progress(start: Sequence[float], move: MoveJ, elapsed: float) -> float:
    """Fraction (0–1) of the path covered after ``elapsed`` s, along the same velocity profile."""
    total = motion_time(start, move)
    if total <= 0 or elapsed >= total:
        return 1.0
    if elapsed <= 0:
        return 0.0
    distance = leading_distance(start, move.q)
    if move.t > 0:
        return elapsed / total
    # Peak speed: v on a trapezoid, lower on a triangle; the ramps take peak/a each.
    peak = min(move.v, math.sqrt(distance * move.a))
    ramp = peak / move.a
    if elapsed < ramp:
        covered = 0.5 * move.a * elapsed**2
    elif elapsed <= total - ramp:
        covered = 0.5 * move.a * ramp**2 + peak * (elapsed - ramp)
    else:
        remaining = total - elapsed
        covered = distance - 0.5 * move.a * remaining**2
    return min(1.0, max(0.0, covered / distance))


def interpolate(start: Sequence[float], target: Sequence[float], fraction: float) -> tuple[float, ...]:
    return tuple(a + (b - a) * fraction for a, b in zip(start, target, strict=True))
