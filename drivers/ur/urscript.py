"""URScript programs for the secondary interface (TCP 30002): building them, timing their moves.

The driver only ever sends programs it builds here: ``def NAME():``, a ``textmsg`` saying what
the program is for, one or more ``movej`` and ``end``. The simulator runs them (and any other
program) in its URScript interpreter (``simulators.ur.script``), timing each ``movej`` with
``motion_time`` below, so the driver and the simulator agree how long a move takes.

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


@dataclass(frozen=True)
class MoveJ:
    q: tuple[float, ...]
    a: float = DEFAULT_JOINT_ACCELERATION
    v: float = DEFAULT_JOINT_SPEED
    t: float = 0.0


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
