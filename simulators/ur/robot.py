"""The simulated UR controller: power and brakes, a program interpreter, motion, protective stops, I/O.

Nothing runs in the background. The arm's motion is a trajectory fixed when a motion command
starts (``simulators.ur.motion``); a program is a URScript runtime (``simulators.ur.script``) that
every query first brings up to ``clock.now()`` (``settle``). A protective stop is a time: the
program ends there, the arm stays where it was, and unlocking is refused until ``unlock_rule_s``
later.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from drivers.ur.codec import RobotMode, SafetyStatus
from drivers.ur.rtde import RuntimeState
from simulators.ur import motion
from simulators.ur.kinematics import ARMS, IDENTITY_POSE, Arm, Pose, forward
from simulators.ur.motion import Motion
from simulators.ur.script.runtime import Builtin, Runtime
from simulators.ur.script.syntax import Program

log = logging.getLogger(__name__)

Joints = tuple[float, ...]
#: Deceleration (rad/s²) when the thread that commanded a motion is killed, or a program ends mid-motion.
ABORT_DECELERATION = 10.0
REGISTERS = 48
BIT_REGISTERS = 128


@dataclass
class Registers:
    """General-purpose RTDE registers: inputs written by RTDE clients, outputs by programs."""

    input_int: list[int]
    input_double: list[float]
    input_bits: list[bool]
    output_int: list[int]
    output_double: list[float]
    output_bits: list[bool]

    @classmethod
    def empty(cls) -> Registers:
        return cls([0] * REGISTERS, [0.0] * REGISTERS, [False] * BIT_REGISTERS, [0] * REGISTERS,
                   [0.0] * REGISTERS, [False] * BIT_REGISTERS)  # fmt: skip


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
        arm: Arm = ARMS["UR5e"],
        step_s: float = 0.002,
        protective_stop_fault: Callable[[], bool] = lambda: False,
    ):
        self.power_on_s = power_on_s
        self.brake_release_s = brake_release_s
        self.unlock_rule_s = unlock_rule_s
        self.stop_fraction = stop_fraction
        self.max_joint_speed = max_joint_speed
        self.arm = arm
        self.step_s = step_s
        self.protective_stop_fault = protective_stop_fault
        self.motion: Motion = motion.rest(tuple(pose))
        self.motion_owner: int | None = None  # the program thread that commanded the motion
        # Power: "off" → "on" (IDLE once booted) → "released" (RUNNING once the brakes are off).
        self.power = {"POWER_OFF": "off", "IDLE": "on", "RUNNING": "released"}[powered]
        self._ready_at = 0.0
        self.protective_stop_at: float | None = None
        self.program: Runtime | None = None
        self.last_program = "<unnamed>"
        self.loaded_program: str | None = None
        self.paused = False
        self.digital_out: dict[int, bool] = {}
        self.registers = Registers.empty()
        self.tcp_offset: Pose = IDENTITY_POSE
        self.payload = (0.0, (0.0, 0.0, 0.0))
        self.payload_inertia: Joints = (0.0,) * 6
        self._settling = False
        #: textmsg() lines of programs, newest last (the controller's log).
        self.messages: deque[str] = deque(maxlen=1000)
        #: Why programs ended ("finished", "stopped", "runtime error: …"), newest last.
        self.program_ends: deque[str] = deque(maxlen=1000)

    # -- state -----------------------------------------------------------------------------
    def settle(self, now: float) -> None:
        """Bring the program and the motion up to ``now``: run what is due, freeze a protective stop."""
        if self._settling:  # a program statement asking for state while the program is advanced
            return
        program = self.program
        if program is not None and program.running:
            self._settling = True
            try:
                program.advance(now, lambda: self.protective_stop_at)
            finally:
                self._settling = False
        stop = self.protective_stop_at
        if stop is not None and now >= stop and self.motion.end > stop:
            self.motion = motion.rest(self.motion.state(stop)[0], stop)
            self.motion_owner = None

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
        self.settle(now)
        return self.program is not None and self.program.running

    def runtime_state(self, now: float) -> RuntimeState:
        if self.running(now):
            return RuntimeState.PLAYING
        return RuntimeState.PAUSED if self.paused else RuntimeState.STOPPED

    def state(self, now: float) -> tuple[Joints, Joints]:
        """Joint positions and velocities."""
        self.settle(now)
        stop = self.protective_stop_at
        if stop is not None and now >= stop:
            return self.motion.state(stop)[0], motion.ZERO
        return self.motion.state(now)

    def pose(self, now: float) -> Joints:
        return self.state(now)[0]

    def tcp(self, q: Sequence[float]) -> Pose:
        return forward(q, self.arm, self.tcp_offset)

    def target(self) -> Joints:
        """Where the current motion ends (its target), or where it will come to rest."""
        goal = self.motion.target
        return goal if goal is not None else self.motion.state(self.motion.end)[0]

    def program_state(self, now: float) -> str:
        if self.running(now):
            assert self.program is not None
            return f"PLAYING {self.program.name}"
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
        assert self.protective_stop_at is not None
        if now - self.protective_stop_at < self.unlock_rule_s:
            return False
        self.settle(now)
        self.protective_stop_at = None
        return True

    def restart_safety(self, now: float) -> None:
        self.halt(now)
        self.protective_stop_at = None
        self.power = "off"

    def protective_stop(self, now: float) -> None:
        """Stop now, in a protective stop (URScript ``protective_stop()``)."""
        if self.protective_stop_at is None or self.protective_stop_at > now:
            self.protective_stop_at = now
        self.settle(now)

    # -- programs --------------------------------------------------------------------------
    def why_not_runnable(self, now: float) -> str | None:
        if self.robot_mode(now) != RobotMode.RUNNING:
            return f"robot mode is {self.robot_mode(now).value}, not RUNNING"
        if self.safety(now) != SafetyStatus.NORMAL:
            return f"safety status is {self.safety(now).value}"
        return None

    def start(self, program: Program, now: float, library: Mapping[str, Builtin]) -> Runtime:
        """Start ``program`` now, replacing any running one (as the script ports do)."""
        self.halt(now)
        self.paused = False
        runtime = Runtime(
            program, library, self.step_s, on_end=self._program_ended, on_kill=self._thread_killed
        )
        self.program = runtime
        self.last_program = program.name
        runtime.start(now)
        return runtime

    def _program_ended(self, time: float, reason: str) -> None:
        self.program_ends.append(reason)
        log.info("program %s ended at t=%.3f: %s", self.last_program, time, reason)
        if self.motion_owner is not None:  # a thread's motion outlives no program
            q, qd = self.motion.state(time)
            self.motion = motion.stop(time, q, qd, ABORT_DECELERATION)
            self.motion_owner = None

    def _thread_killed(self, time: float, thread: int) -> None:
        if self.motion_owner == thread:
            q, qd = self.motion.state(time)
            self.motion = motion.stop(time, q, qd, ABORT_DECELERATION)
            self.motion_owner = None

    def halt(self, now: float) -> None:
        """Stop any program where the arm is now (a dashboard 'stop', a new program, power off)."""
        self.settle(now)
        program = self.program
        if program is not None and program.running:
            program.end(now, "stopped")
        if self.motion.end > now:
            self.motion = motion.rest(self.pose(now), now)
        self.motion_owner = None
        self.program = None

    def pause(self, now: float) -> bool:
        if not self.running(now):
            return False
        self.halt(now)
        self.paused = True
        return True

    # -- motion commands (from programs) ---------------------------------------------------
    def move(self, trajectory: Motion, owner: int, *, faultable: bool = False) -> None:
        """Follow ``trajectory`` from its start; a protective-stop fault may cut a ``faultable`` one short."""
        self.motion = trajectory
        self.motion_owner = owner
        finite = trajectory.start < trajectory.end < float("inf")
        if faultable and finite and self.protective_stop_fault():
            stop_at = trajectory.start + self.stop_fraction * (trajectory.end - trajectory.start)
            self.protective_stop_at = stop_at
            log.info("protective stop scheduled at t=%.3f", stop_at)


def joints(values: Sequence[float]) -> Joints:
    return tuple(float(v) for v in values)
