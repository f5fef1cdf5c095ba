"""Trajectories of the simulated arm, as functions of simulated time.

Joint-space motions (``movej``, ``stopj``, ``speedj``, ``servoj``) are pieces of constant joint
acceleration: position and velocity at any time are closed-form. A linear tool motion (``movel``)
is solved for joints when it starts, at samples a few millimetres apart along the path (each from
the previous one, so the arm keeps its configuration); between samples joints are interpolated.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.ur.urscript import MoveJ, leading_distance, motion_time, progress
from simulators.ur.kinematics import Arm, Pose, interpolate_pose, inverse, pose_distance, rotation_angle

Joints = tuple[float, ...]
ZERO: Joints = (0.0,) * 6
#: Spacing of the joint solutions along a linear path (m, rad).
PATH_STEP_M = 0.005
PATH_STEP_RAD = 0.02


class Unreachable(ValueError):
    """A tool pose or path the arm cannot reach from where it is."""


@dataclass(frozen=True)
class Piece:
    """From ``start`` on: joints ``q`` moving at ``qd`` with constant acceleration ``qdd``."""

    start: float
    q: Joints
    qd: Joints
    qdd: Joints

    def at(self, t: float) -> tuple[Joints, Joints]:
        dt = t - self.start
        q = tuple(p + v * dt + 0.5 * a * dt * dt for p, v, a in zip(self.q, self.qd, self.qdd, strict=True))
        qd = tuple(v + a * dt for v, a in zip(self.qd, self.qdd, strict=True))
        return q, qd


@dataclass
class Trajectory:
    """Joint motion in pieces; at rest from ``end`` on (``math.inf``: it never ends by itself)."""

    pieces: list[Piece]
    end: float
    target: Joints | None = None
    _starts: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._starts = [p.start for p in self.pieces]

    @property
    def start(self) -> float:
        return self.pieces[0].start

    def state(self, t: float) -> tuple[Joints, Joints]:
        """Joint positions and velocities at ``t``."""
        if t >= self.end:
            q, _ = self._piece(self.end).at(self.end)
            return q, ZERO
        return self._piece(t).at(max(t, self.start))

    def q(self, t: float) -> Joints:
        return self.state(t)[0]

    def qd(self, t: float) -> Joints:
        return self.state(t)[1]

    def _piece(self, t: float) -> Piece:
        return self.pieces[max(0, bisect_right(self._starts, t) - 1)]


def rest(q: Sequence[float], at: float = 0.0) -> Trajectory:
    return Trajectory([Piece(at, tuple(q), ZERO, ZERO)], at, tuple(q))


def _scaled(vector: Sequence[float], factor: float) -> Joints:
    return tuple(x * factor for x in vector)


def joint_move(start: float, origin: Sequence[float], target: Sequence[float], a: float, v: float,
               duration: float = 0.0) -> Trajectory:  # fmt: skip
    """``movej``: the leading axis runs a trapezoid (or triangle) at ``a``, ``v``; the others keep pace.

    Its length is ``drivers.ur.urscript.motion_time``, the time our driver and the simulator's
    dashboard agree a move takes. ``duration`` (``t``) overrides ``a`` and ``v``: constant speed."""
    origin, target = tuple(origin), tuple(target)
    total = motion_time(origin, MoveJ(target, a, v, duration))
    distance = leading_distance(origin, target)
    if total <= 0 or distance <= 0:
        return Trajectory([Piece(start, origin, ZERO, ZERO)], start + max(total, 0.0), target)
    direction = tuple((b - x) / distance for x, b in zip(origin, target, strict=True))
    if duration > 0:
        return Trajectory(
            [Piece(start, origin, _scaled(direction, distance / total), ZERO)], start + total, target
        )
    peak = min(v, math.sqrt(distance * a))
    ramp = peak / a
    accelerate = Piece(start, origin, ZERO, _scaled(direction, a))
    pieces = [accelerate]
    q, qd = accelerate.at(start + ramp)
    if total - 2 * ramp > 1e-12:
        cruise = Piece(start + ramp, q, qd, ZERO)
        pieces.append(cruise)
        q, qd = cruise.at(start + total - ramp)
    pieces.append(Piece(start + total - ramp, q, qd, _scaled(direction, -a)))
    return Trajectory(pieces, start + total, target)


def stop(start: float, q: Sequence[float], qd: Sequence[float], deceleration: float) -> Trajectory:
    """``stopj``: all joints slow down to rest together, the fastest one at ``deceleration``."""
    fastest = max((abs(x) for x in qd), default=0.0)
    if fastest <= 0 or deceleration <= 0:
        return rest(q, start)
    duration = fastest / deceleration
    piece = Piece(start, tuple(q), tuple(qd), _scaled(qd, -1.0 / duration))
    return Trajectory([piece], start + duration, piece.at(start + duration)[0])


def speed(start: float, q: Sequence[float], qd: Sequence[float], target: Sequence[float], a: float,
          until: float) -> Trajectory:  # fmt: skip
    """``speedj``: ramp to the joint speeds ``target`` at ``a`` (leading axis), hold them until
    ``until``, then slow down at ``a`` to rest unless another command takes over first."""
    change = max((abs(t - v) for t, v in zip(target, qd, strict=True)), default=0.0)
    ramp = change / a if a > 0 else 0.0
    pieces: list[Piece] = []
    now_q, now_qd = tuple(q), tuple(qd)
    moment = start
    if ramp > 0:
        accel = tuple((t - v) / ramp for t, v in zip(target, qd, strict=True))
        first = Piece(moment, now_q, now_qd, accel)
        pieces.append(first)
        reach = min(start + ramp, until)
        now_q, now_qd = first.at(reach)
        moment = reach
    if moment < until:
        hold = Piece(moment, now_q, now_qd, ZERO)
        pieces.append(hold)
        now_q, now_qd = hold.at(until)
        moment = until
    tail = stop(moment, now_q, now_qd, a if a > 0 else math.inf)
    pieces.extend(tail.pieces)
    return Trajectory(pieces, tail.end, None)


@dataclass
class LinearMove:
    """``movel``: the tool on a straight line (and the shortest rotation) at ``v`` m/s, ``a`` m/s²."""

    begin: float
    end: float
    target: Joints
    _fractions: list[float]
    _joints: list[Joints]
    _length: float
    _a: float
    _v: float

    @property
    def start(self) -> float:
        return self.begin

    def _fraction(self, t: float) -> tuple[float, float]:
        """Path fraction and its rate of change at ``t``."""
        total = self.end - self.begin
        if total <= 0 or t >= self.end:
            return 1.0, 0.0
        elapsed = max(0.0, t - self.begin)
        line = MoveJ((self._length,), self._a, self._v)
        fraction = progress((0.0,), line, elapsed)
        peak = min(self._v, math.sqrt(self._length * self._a))
        ramp = peak / self._a
        if elapsed < ramp:
            rate = self._a * elapsed
        elif elapsed <= total - ramp:
            rate = peak
        else:
            rate = self._a * (total - elapsed)
        return fraction, max(0.0, rate) / self._length

    def state(self, t: float) -> tuple[Joints, Joints]:
        fraction, rate = self._fraction(t)
        i = min(len(self._fractions) - 2, max(0, bisect_right(self._fractions, fraction) - 1))
        f0, f1 = self._fractions[i], self._fractions[i + 1]
        q0, q1 = self._joints[i], self._joints[i + 1]
        w = 0.0 if f1 <= f0 else (fraction - f0) / (f1 - f0)
        q = tuple(x + (y - x) * w for x, y in zip(q0, q1, strict=True))
        slope = tuple((y - x) / (f1 - f0) if f1 > f0 else 0.0 for x, y in zip(q0, q1, strict=True))
        return q, tuple(s * rate for s in slope)

    def q(self, t: float) -> Joints:
        return self.state(t)[0]

    def qd(self, t: float) -> Joints:
        return self.state(t)[1]


def linear_move(start: float, q: Sequence[float], origin: Pose, goal: Pose, a: float, v: float, arm: Arm,
                tcp: Sequence[float]) -> LinearMove:  # fmt: skip
    """Plan a ``movel`` from the current joints ``q`` (tool at ``origin``) to ``goal``; Unreachable if
    some point of the line has no joint solution near its neighbour's."""
    distance = pose_distance(origin, goal)
    turn = rotation_angle(origin, goal)
    # A pure rotation is timed in rad/s and rad/s², as the controller does.
    length = distance if distance > 1e-6 else turn
    samples = max(1, math.ceil(max(distance / PATH_STEP_M, turn / PATH_STEP_RAD)))
    fractions = [i / samples for i in range(samples + 1)]
    joints: list[Joints] = [tuple(q)]
    for fraction in fractions[1:]:
        solution = inverse(interpolate_pose(origin, goal, fraction), joints[-1], arm, tcp)
        if solution is None or max(abs(x - y) for x, y in zip(solution, joints[-1], strict=True)) > 0.5:
            where = ", ".join(f"{c:.4f}" for c in interpolate_pose(origin, goal, fraction))
            raise Unreachable(f"movel: no joint solution along the line at p[{where}]")
        joints.append(solution)
    total = motion_time((0.0,), MoveJ((length,), a, v)) if length > 0 else 0.0
    return LinearMove(start, start + total, joints[-1], fractions, joints, max(length, 1e-12), a, v)


Motion = Trajectory | LinearMove
