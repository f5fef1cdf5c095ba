"""The simulated UR controller: power and brakes, programs in simulated time, protective stops.

Nothing runs in the background. A program is a timeline fixed when it starts (segments of
``movej`` and ``sleep``); the pose, ``running`` and the safety status are computed from
``clock.now()`` whenever someone asks. A protective stop is a time on that timeline: the program
ends there, the arm stays where it was, and unlocking is refused until ``unlock_rule_s`` later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.ur.codec import RobotMode, SafetyStatus
from drivers.ur.urscript import (
    MoveJ,
    Program,
    SetDigitalOut,
    Sleep,
    TextMsg,
    interpolate,
    motion_time,
    progress,
)

log = logging.getLogger(__name__)

Joints = tuple[float, ...]


@dataclass
class Segment:
    start: float
    end: float
    origin: Joints
    move: MoveJ


@dataclass
class Run:
    """One program on the controller's timeline."""

    name: str
    start: float
    end: float
    segments: list[Segment] = field(default_factory=list)
    final_pose: Joints = ()

    def pose_at(self, now: float, rest: Joints) -> Joints:
        moment = min(now, self.end)
        pose = rest
        for segment in self.segments:
            if moment >= segment.end:
                pose = segment.move.q
            elif moment >= segment.start:
                fraction = progress(segment.origin, segment.move, moment - segment.start)
                return interpolate(segment.origin, segment.move.q, fraction)
            else:
                break
        return pose


class Controller:
    """A UR controller's state machine; every method takes the current simulated time."""

    def __init__(
        self,
        pose: Joints,
        *,
        powered: str = "POWER_OFF",
        power_on_s: float = 1.0,
        brake_release_s: float = 2.0,
        unlock_rule_s: float = 5.0,
        stop_fraction: float = 0.5,
        max_joint_speed: float = 3.14,
    ):
        self.power_on_s = power_on_s
        self.brake_release_s = brake_release_s
        self.unlock_rule_s = unlock_rule_s
        self.stop_fraction = stop_fraction
        self.max_joint_speed = max_joint_speed
        self.rest_pose: Joints = tuple(pose)
        # Power: "off" → "on" (IDLE once booted) → "released" (RUNNING once the brakes are off).
        self.power = {"POWER_OFF": "off", "IDLE": "on", "RUNNING": "released"}[powered]
        self._ready_at = 0.0
        self.protective_stop_at: float | None = None
        self.run: Run | None = None
        self.last_program = "<unnamed>"
        self.loaded_program: str | None = None
        self.paused = False
        self.digital_out: dict[int, bool] = {}

    # -- state -----------------------------------------------------------------------------
    def robot_mode(self, now: float) -> RobotMode:
        if self.power == "off":
            return RobotMode.POWER_OFF
        if self.power == "on":
            return RobotMode.IDLE if now >= self._ready_at else RobotMode.POWER_ON
        return RobotMode.RUNNING if now >= self._ready_at else RobotMode.IDLE

    def safety(self, now: float) -> SafetyStatus:
        if self.protective_stop_at is not None and now >= self.protective_stop_at:
            return SafetyStatus.PROTECTIVE_STOP
        return SafetyStatus.NORMAL

    def running(self, now: float) -> bool:
        return self.run is not None and now < self.run.end

    def pose(self, now: float) -> Joints:
        return self.rest_pose if self.run is None else self.run.pose_at(now, self.rest_pose)

    def program_state(self, now: float) -> str:
        if self.running(now):
            return f"PLAYING {self.run.name}"
        return f"{'PAUSED' if self.paused else 'STOPPED'} {self.last_program}"

    # -- power -----------------------------------------------------------------------------
    def power_on(self, now: float) -> None:
        if self.power == "off":
            self.power = "on"
            self._ready_at = now + self.power_on_s

    def power_off(self, now: float) -> None:
        self.halt(now)
        self.power = "off"

    def brake_release(self, now: float) -> None:
        # Releasing the brakes of an unpowered arm does nothing; the controller says so only on the pendant.
        if self.robot_mode(now) == RobotMode.IDLE:
            self.power = "released"
            self._ready_at = now + self.brake_release_s

    def unlock(self, now: float) -> bool:
        """False while the 5 s rule forbids unlocking."""
        if self.safety(now) != SafetyStatus.PROTECTIVE_STOP:
            return True
        if now - self.protective_stop_at < self.unlock_rule_s:
            return False
        self.protective_stop_at = None
        return True

    def restart_safety(self, now: float) -> None:
        self.halt(now)
        self.protective_stop_at = None
        self.power = "off"

    # -- programs --------------------------------------------------------------------------
    def why_not_runnable(self, now: float) -> str | None:
        if self.robot_mode(now) != RobotMode.RUNNING:
            return f"robot mode is {self.robot_mode(now).value}, not RUNNING"
        if self.safety(now) != SafetyStatus.NORMAL:
            return f"safety status is {self.safety(now).value}"
        return None

    def start(self, program: Program, now: float, *, protective_stop: bool = False) -> Run:
        """Start ``program`` now, replacing any running one (as the secondary interface does)."""
        self.halt(now)
        self.paused = False
        pose, moment = self.rest_pose, now
        run = Run(program.name, now, now)
        for statement in program.statements:
            if isinstance(statement, MoveJ):
                move = statement
                if move.v > self.max_joint_speed:
                    move = MoveJ(move.q, move.a, self.max_joint_speed, move.t)
                duration = motion_time(pose, move)
                run.segments.append(Segment(moment, moment + duration, pose, move))
                pose, moment = move.q, moment + duration
            elif isinstance(statement, Sleep):
                moment += max(0.0, statement.seconds)
            elif isinstance(statement, TextMsg):
                log.info("textmsg: %s", statement.text)
            elif isinstance(statement, SetDigitalOut):
                self.digital_out[statement.pin] = statement.value
        run.end, run.final_pose = moment, pose
        moving = [s for s in run.segments if s.end > s.start]
        if protective_stop and moving:
            stop_at = moving[0].start + self.stop_fraction * (moving[0].end - moving[0].start)
            run.end = stop_at
            self.protective_stop_at = stop_at
            log.info("protective stop scheduled at t=%.3f during %s", stop_at, program.name)
        self.run = run
        self.last_program = program.name
        return run

    def halt(self, now: float) -> None:
        """Stop any program where the arm is now (a dashboard 'stop', a new program, power off)."""
        if self.run is not None:
            self.rest_pose = self.run.pose_at(now, self.rest_pose)
            self.run.end = min(self.run.end, now)
            self.run = None

    def pause(self, now: float) -> bool:
        if not self.running(now):
            return False
        self.halt(now)
        self.paused = True
        return True

    def settle(self, now: float) -> None:
        """Fold a finished program into the resting pose, so later programs start from it."""
        if self.run is not None and now >= self.run.end:
            self.rest_pose = self.run.pose_at(now, self.rest_pose)
            self.run = None


def joints(values: Sequence[float]) -> Joints:
    return tuple(float(v) for v in values)
