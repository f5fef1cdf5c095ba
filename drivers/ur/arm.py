"""A UR arm with a Robotiq gripper: named positions only, speed caps, protective-stop recovery.

Every motion goes to a position taught in the configuration, at a speed and acceleration under
the configured caps; anything else raises before a byte is sent. A move sends a URScript program
to the secondary interface and follows it through the Dashboard Server (``running`` true, then
false, then the safety status), or, given an RTDE state stream (``drivers.ur.state``), through
the state packages the controller pushes: no polling, and the end of a move seen within a package.

A station the arm takes vials from may be a feeder whose vials the driver counts (``set_feeder(station,
count, lot=...)``): a pick there takes the vial of the next rack slot (1, 2, … from the rack last
loaded), counts it off when the gripper reports an object between its fingers, and is refused with
``FeederEmpty`` before the arm moves when the count is at zero. ``last_pick`` says which vial it was.

The 5 s protective-stop rule is counted from the moment this driver observed the stop, which is
never earlier than the stop itself, and the controller enforces the rule on its own anyway: a
shorter ``unlock_delay`` (a sped-up simulation) only means the first unlock attempts are refused
and retried, never that a real robot is unlocked early.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from drivers.errors import ConnectionLost, InstrumentTimeout, ProtocolError, SafetyLimitError
from drivers.halt import Halt
from drivers.retry import Backoff, FaultEvents, RetryPolicy
from drivers.stock import Contents, check_amount, check_lot
from drivers.transport import Transport
from drivers.ur.codec import ProgramState, RobotMode, SafetyStatus
from drivers.ur.dashboard import URDashboard
from drivers.ur.errors import (
    FeederEmpty,
    GripperMissedObject,
    MotionStopped,
    MotionTimeout,
    ProgramNotStarted,
    ProtectiveStop,
    RemoteControlRequired,
    RobotBusy,
    RobotNotReady,
    SafetyStop,
    UnknownPosition,
    UnlockRefused,
)
from drivers.ur.gripper import RobotiqGripper
from drivers.ur.positions import (
    DEFAULT_JOINT_LIMITS,
    Joints,
    check_within_limits,
    load_positions_file,
    validate_positions,
)
from drivers.ur.script import URScriptClient
from drivers.ur.state import RobotState, URStateStream
from drivers.ur.urscript import MoveJ, build_program

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Protective stops one move recovers from by itself when ``auto_unlock`` is on.
PROTECTIVE_STOP_RETRIES = 3


@dataclass
class Feeder:
    """The vials the driver counts at one station: left, their lot, and the slot the next one stands in."""

    count: int | None = None
    lot: str | None = None
    next_slot: int = 1


@dataclass(frozen=True)
class Pick:
    """The vial (or vessel) the gripper last took: where from, and for a counted feeder its rack slot,
    its lot and the vials left after it."""

    station: str
    slot: int | None = None
    lot: str | None = None
    remaining: int | None = None


@dataclass(frozen=True)
class ArmStatus:
    robot_mode: RobotMode
    safety: SafetyStatus
    running: bool
    remote_control: bool


class URArm:
    def __init__(
        self,
        dashboard: URDashboard,
        script: URScriptClient,
        gripper: RobotiqGripper,
        *,
        positions: Mapping[str, Sequence[float]],
        speed: float = 0.5,
        acceleration: float = 1.0,
        max_joint_speed: float = 1.05,
        max_joint_accel: float = 1.4,
        joint_limits: Sequence[tuple[float, float]] = DEFAULT_JOINT_LIMITS,
        approach_suffix: str = "_above",
        unlock_delay: float = 5.0,
        unlock_retry_interval: float = 0.5,
        unlock_timeout: float = 30.0,
        start_timeout: float = 2.0,
        motion_timeout: float = 60.0,
        ready_timeout: float = 30.0,
        poll_interval: float = 0.005,
        query_retries: int = 2,
        auto_unlock: bool = False,
        events: FaultEvents | None = None,
        state: URStateStream | None = None,
    ):
        self.dashboard = dashboard
        self.script = script
        self.gripper = gripper
        #: The RTDE state stream, if any: status and the end of moves come from it, not from polling.
        self.state = state
        self.joint_limits = tuple(joint_limits)
        self.positions: dict[str, Joints] = validate_positions(positions, joint_limits=self.joint_limits)
        if not 0 < max_joint_speed <= 3.2:
            raise SafetyLimitError(f"max_joint_speed must be in (0, 3.2] rad/s, got {max_joint_speed}")
        if not 0 < max_joint_accel <= 40:
            raise SafetyLimitError(f"max_joint_accel must be in (0, 40] rad/s², got {max_joint_accel}")
        if unlock_delay < 0:
            raise SafetyLimitError(f"unlock_delay must be >= 0 s, got {unlock_delay}")
        self.max_joint_speed = max_joint_speed
        self.max_joint_accel = max_joint_accel
        self.speed, self.acceleration = self.check_limits(speed, acceleration)
        self.approach_suffix = approach_suffix
        self.unlock_delay = unlock_delay
        self.unlock_retry_interval = unlock_retry_interval
        self.unlock_timeout = unlock_timeout
        self.start_timeout = start_timeout
        self.motion_timeout = motion_timeout
        self.ready_timeout = ready_timeout
        self.poll_interval = poll_interval
        self.retry = RetryPolicy(attempts=1 + int(query_retries), deadline_s=10.0, final=(MotionTimeout,))
        self.events = events or FaultEvents("arm")
        gripper.events = self.events  # one stream of fault events for the arm and its gripper
        #: Unattended recovery: after a protective stop, wait out the rule, unlock and repeat the move
        #: once. Off by default: UR asks that the cause be inspected before unlocking.
        self.auto_unlock = auto_unlock
        #: The named position the arm last reached; None after an interrupted move.
        self.position: str | None = None
        self._stop_observed_at: float | None = None
        #: A stop (stop(), or the ophyd face's action stopped) ends the operation in progress (a
        #: transfer, a move, a recovery) and no later one.
        self.halt = Halt()
        # Sending a program and stop() take turns, so a program never starts after a stop.
        self._gate = threading.Lock()
        self._programs = 0
        self._feeders: dict[str, Feeder] = {}
        self._counting = threading.Lock()
        #: The vial the gripper last took (None before the first pick).
        self.last_pick: Pick | None = None

    @classmethod
    def connect(
        cls, addresses: Mapping[str, str], *, reply_timeout: float | None = None, **options: Any
    ) -> URArm:
        """Open the links from ``{"dashboard": url, "script": url, "gripper": url}`` (and ``"rtde": url``
        to follow state over RTDE).

        ``gripper_speed``, ``gripper_force`` and ``gripper_max_force`` go to the gripper; the rest to URArm,
        whose ``positions`` may instead come from a YAML ``positions_file``.
        """
        if "positions_file" in options:
            limits = options.get("joint_limits", DEFAULT_JOINT_LIMITS)
            options["positions"] = load_positions_file(options.pop("positions_file"), joint_limits=limits)
        prefix = "gripper_"
        gripper_options = {k[len(prefix) :]: options.pop(k) for k in list(options) if k.startswith(prefix)}
        missing = {"dashboard", "script", "gripper"} - set(addresses)
        if missing:
            raise ValueError(
                f"UR arm address needs dashboard, script and gripper URLs; missing {sorted(missing)}"
            )
        timeouts = {} if reply_timeout is None else {"reply_timeout": reply_timeout}
        dashboard = URDashboard(Transport(addresses["dashboard"]), **timeouts)
        script = URScriptClient(Transport(addresses["script"]))
        gripper = RobotiqGripper(Transport(addresses["gripper"]), **timeouts, **gripper_options)
        state = URStateStream(Transport(addresses["rtde"])) if "rtde" in addresses else None
        arm = cls(dashboard, script, gripper, state=state, **options)
        try:
            arm.open()
        except BaseException:
            arm.close()
            raise
        return arm

    def open(self) -> None:
        """Open the three links (each retried under the policy); cheap for the ones already open."""
        for link, what in ((self.dashboard.transport, "dashboard"), (self.script.transport, "script"),
                           (self.gripper.transport, "gripper")):  # fmt: skip
            if not link.is_open:
                self.retry.run(link.open, events=self.events, what=f"opening the {what} link")
        if self.state is not None and not self.state.is_open:
            # Not fatal here: open() also comes before a stop (make_safe), which must go out on the
            # dashboard whatever RTDE does. Whoever needs the state next reopens it, or fails then.
            try:
                self.retry.run(self.state.open, events=self.events, what="opening the RTDE state stream")
            except (ConnectionLost, InstrumentTimeout, ProtocolError) as exc:
                log.warning("arm: no RTDE state stream (%s); it is tried again when state is needed", exc)

    def close(self) -> None:
        self.dashboard.close()
        self.script.close()
        self.gripper.close_link()
        if self.state is not None:
            self.state.close()

    @property
    def links(self) -> list[Transport]:
        return [self.dashboard.transport, self.script.transport, self.gripper.transport]

    # -- state -----------------------------------------------------------------------------
    def status(self) -> ArmStatus:
        if self.state is not None:
            state = self._state()
            remote = self.query(self.dashboard.is_in_remote_control)  # the dashboard alone knows
            return ArmStatus(state.robot_mode, state.safety, state.running, remote)
        return ArmStatus(
            self.query(self.dashboard.robot_mode),
            self.query(self.dashboard.safety_status),
            self.query(self.dashboard.is_running),
            self.query(self.dashboard.is_in_remote_control),
        )

    def program_state(self) -> ProgramState:
        return self.query(self.dashboard.program_state)

    # -- power -----------------------------------------------------------------------------
    def power_on(self) -> None:
        """Power the arm (robot mode IDLE, brakes still on); idempotent."""
        mode = self.query(self.dashboard.robot_mode)
        if mode in (RobotMode.IDLE, RobotMode.RUNNING):
            return
        self._retrying(self.dashboard.power_on, self.dashboard.transport)
        self._wait_for_mode({RobotMode.IDLE, RobotMode.RUNNING}, "power on")

    def release_brakes(self) -> None:
        """Release the brakes (robot mode RUNNING); idempotent."""
        if self.query(self.dashboard.robot_mode) == RobotMode.RUNNING:
            return
        self._retrying(self.dashboard.brake_release, self.dashboard.transport)
        self._wait_for_mode({RobotMode.RUNNING}, "brake release")

    def ensure_ready(self, *, power: bool = True) -> None:
        """Remote control, no safety stop, and RUNNING; powers on and releases brakes if ``power``."""
        if not self.query(self.dashboard.is_in_remote_control):
            raise RemoteControlRequired(
                "the robot is in local control; switch to Remote Control on the pendant"
            )
        self._raise_if_safety_stopped(fresh=True)
        if self.query(self.dashboard.robot_mode) == RobotMode.RUNNING:
            return
        if not power:
            raise RobotNotReady("the arm is not powered with brakes released; call ensure_ready() first")
        self.power_on()
        self.release_brakes()

    def prepare(self) -> None:
        """Everything a plan needs before the first move: arm ready, gripper active."""
        self.ensure_ready(power=True)
        self.activate_gripper()

    def activate_gripper(self) -> None:
        """Activate the gripper unless it is active already (activation cycles the fingers)."""
        self.gripper.activate()  # each of its exchanges is retried by the gripper itself

    # -- motion ----------------------------------------------------------------------------
    def move_to(self, name: str, speed: float | None = None, acceleration: float | None = None) -> None:
        """Move to a named position; refuses unknown names and over-cap speeds before sending anything."""
        target = self.target(name)
        speed = self.speed if speed is None else speed
        acceleration = self.acceleration if acceleration is None else acceleration
        speed, acceleration = self.check_limits(speed, acceleration)
        with self.operation():
            self._move_to(name, target, speed, acceleration)

    def _move_to(self, name: str, target: Any, speed: float, acceleration: float) -> None:
        move = MoveJ(target, acceleration, speed)
        for attempt in range(1, PROTECTIVE_STOP_RETRIES + 2):
            try:
                self.ensure_ready(power=False)  # a stop left over from an earlier move shows here
                if self.query(self.dashboard.is_running):
                    raise RobotBusy("another program is running on the controller")
                log.info("arm: moving to %s at %.2f rad/s", name, speed)
                self.position = None
                self._run(move, f"move to {name}")
                break
            except ProtectiveStop as stop:
                if not self.auto_unlock or attempt > PROTECTIVE_STOP_RETRIES or self.stopped():
                    if self.auto_unlock:
                        self.events.emit("gave_up", stop.fault, f"move to {name}: {stop}", attempt)
                    raise
                # UR's recovery: wait out the 5 s rule, unlock, and make the move again.
                log.warning("arm: protective stop during the move to %s; unlocking and moving again", name)
                self.events.emit("retry", stop.fault, f"move to {name}: protective stop; unlocking", attempt)
                self.recover_from_protective_stop()
                self.events.emit("recovered", stop.fault, f"move to {name}: protective stop released")
        self.position = name

    def stop(self) -> None:
        """Halt the running motion, from any thread; the operation in progress raises MotionStopped
        and sends no further motion command."""
        self.halt.request()
        with self._gate:
            self._retrying(self.dashboard.stop, self.dashboard.transport)

    def stopped(self) -> bool:
        """A stop was asked for during the operation in progress."""
        return self.halt.requested

    def _check_stop(self, what: str) -> None:
        if self.stopped():
            self.position = None
            self.halt.check(what, MotionStopped)

    def operation(self, halt: threading.Event | None = None) -> AbstractContextManager[threading.Event]:
        """One public operation at a time; a stop ends it (and ``halt``, if given, is its stop event)."""
        return self.halt.operation(halt)

    def recover_from_protective_stop(self) -> None:
        """Wait out the 5 s rule, unlock (retrying while the controller refuses), wait for NORMAL."""
        with self.operation():
            self._unlock_protective_stop()

    def _unlock_protective_stop(self) -> None:
        status = self.query(self.dashboard.safety_status)
        if status != SafetyStatus.PROTECTIVE_STOP:
            if not status.allows_motion:
                raise SafetyStop(f"safety status {status.value} cannot be cleared by unlocking", status)
            self._stop_observed_at = None
            return
        observed = self._stop_observed_at or time.monotonic()
        wait = observed + self.unlock_delay - time.monotonic()
        if wait > 0:
            log.info("arm: protective stop; waiting %.2f s before unlocking", wait)
            time.sleep(wait)
        deadline = time.monotonic() + self.unlock_timeout
        while True:
            try:
                self._retrying(self.dashboard.unlock_protective_stop, self.dashboard.transport)
                break
            except UnlockRefused:
                if time.monotonic() > deadline:
                    raise
                log.info("arm: unlock refused; retrying in %.2f s", self.unlock_retry_interval)
                time.sleep(self.unlock_retry_interval)
        deadline = time.monotonic() + self.ready_timeout
        while self.query(self.dashboard.safety_status) != SafetyStatus.NORMAL:
            if time.monotonic() > deadline:
                raise InstrumentTimeout("the safety status did not return to NORMAL after unlocking")
            time.sleep(self.poll_interval)
        self._stop_observed_at = None
        log.info("arm: protective stop released")

    # -- feeders ---------------------------------------------------------------------------
    def set_feeder(self, station: str, count: float | None, lot: str | None = None) -> None:
        """``count`` vials of ``lot`` stand at ``station`` now, in rack slots 1…count (a fresh rack); None
        stops counting them. No I/O."""
        self.target(station)
        amount = check_amount(f"feeder {station}", count, unit="vials")
        checked_lot = check_lot(f"feeder {station}", lot)
        with self._counting:
            self._feeders[station] = Feeder(None if amount is None else int(amount), checked_lot)
        log.info("arm: feeder %s holds %s vials%s", station, "an unknown number of" if amount is None
                 else int(amount), f" of lot {checked_lot}" if checked_lot else "")  # fmt: skip

    def feeder(self, station: str) -> Contents:
        with self._counting:
            held = self._feeders.get(station, Feeder())
            return Contents("feeder", "vials", held.count, held.lot)

    def feeders(self) -> list[str]:
        """The stations whose vials the driver was told about."""
        with self._counting:
            return sorted(self._feeders)

    def check_feeder(self, station: str) -> None:
        """``FeederEmpty`` if ``station`` is a feeder counted down to zero (no I/O)."""
        with self._counting:
            held = self._feeders.get(station)
        if held is not None and held.count is not None and held.count < 1:
            raise FeederEmpty(f"the feeder at {station!r} has no vial left by the count: load it "
                              "(then set_feeder)", station, 0.0)  # fmt: skip

    def _took(self, station: str) -> Pick:
        """The gripper holds what stood at ``station``: count a feeder's vial off."""
        with self._counting:
            held = self._feeders.get(station)
            if held is None or held.count is None:
                pick = Pick(station)
            else:
                held.count = max(held.count - 1, 0)
                pick = Pick(station, held.next_slot, held.lot, held.count)
                held.next_slot += 1
            self.last_pick = pick
        return pick

    # -- gripper ---------------------------------------------------------------------------
    def grip(self) -> bool:
        """Close the gripper; True if it caught an object."""
        with self.operation():
            self._check_stop("grip")
            return self.gripper.grip()

    def release(self) -> bool:
        with self.operation():
            self._check_stop("release")
            return self.gripper.release()

    def pick(self, station: str, *, retries: int = 0) -> Pick:
        """Take the vessel at ``station`` (via ``<station>_above`` if taught); GripperMissedObject if none,
        FeederEmpty (before moving) if the station is a feeder counted down to zero. What was taken."""
        approach = self._approach(station)
        self.target(station)
        self.check_feeder(station)
        with self.operation():
            self.release()
            if approach:
                self.move_to(approach)
            self.move_to(station)
            caught = False
            attempt = 0
            pick: Pick | None = None
            for attempt in range(retries + 1):
                caught = self.grip()
                if caught:
                    pick = self._took(station)
                    break
                # The documented recovery from a missed grip: open again and close once more.
                log.warning("arm: gripper missed the object at %s (attempt %d)", station, attempt + 1)
                self.events.emit("retry", "alarm", f"gripper missed the object at {station}", attempt + 1)
                self.release()
            if approach:
                self.move_to(approach)
            if not caught:
                self.events.emit("gave_up", "alarm", f"gripper missed the object at {station}", retries + 1)
                raise GripperMissedObject(f"the gripper found nothing to hold at {station!r}", station)
            if retries and attempt:
                self.events.emit("recovered", "alarm", f"gripped at {station} on attempt {attempt + 1}")
            assert pick is not None
            return pick

    def place(self, station: str) -> None:
        approach = self._approach(station)
        self.target(station)
        with self.operation():
            if approach:
                self.move_to(approach)
            self.move_to(station)
            self.release()
            if approach:
                self.move_to(approach)

    def transfer(self, source: str, destination: str, *, retries: int = 0) -> Pick:
        """Carry the vessel at ``source`` to ``destination``; what was taken (``Pick``)."""
        self.target(source)
        self.target(destination)
        self.check_feeder(source)
        with self.operation():
            pick = self.pick(source, retries=retries)
            self.place(destination)
            return pick

    # -- internals -------------------------------------------------------------------------
    def target(self, name: str) -> Joints:
        try:
            target = self.positions[name]
        except KeyError:
            raise UnknownPosition(
                f"{name!r} is not a configured position; configured: {', '.join(sorted(self.positions))}"
            ) from None
        check_within_limits(target, self.joint_limits, f"position {name!r}")
        return target

    def _approach(self, station: str) -> str | None:
        name = f"{station}{self.approach_suffix}"
        return name if self.approach_suffix and name in self.positions else None

    def check_limits(self, speed: float, acceleration: float) -> tuple[float, float]:
        if not 0 < speed <= self.max_joint_speed:
            raise SafetyLimitError(
                f"joint speed {speed} rad/s is outside (0, {self.max_joint_speed}] (max_joint_speed)"
            )
        if not 0 < acceleration <= self.max_joint_accel:
            raise SafetyLimitError(
                f"joint acceleration {acceleration} rad/s² is outside (0, {self.max_joint_accel}] "
                "(max_joint_accel)"
            )
        return float(speed), float(acceleration)

    def _run(self, move: MoveJ, what: str) -> None:
        # A unique name per program lets programState tell this program from the previous one.
        self._programs += 1
        program_name = f"sdl_move_{self._programs}"
        before = self._state().sequence if self.state is not None else -1
        with self._gate:
            self._check_stop(what)
            self.script.send_program(build_program(program_name, [move], f"sdl: {what}"))
        if self.state is not None:
            self._follow(self.state, before, program_name, what)
            return
        # No pause between polls while waiting for the start: a short move in a sped-up simulation
        # may run for only a few milliseconds, and each poll is a network round trip anyway. A
        # program that already finished shows by its (unique) name in programState.
        deadline = time.monotonic() + self.start_timeout
        while not self.query(self.dashboard.is_running):
            if self.query(self.dashboard.program_state).program == program_name:
                break
            if self.stopped():
                raise MotionStopped(f"{what}: stopped on request")
            if time.monotonic() > deadline:
                self._raise_if_safety_stopped()
                raise ProgramNotStarted(f"{what}: the controller did not run the program")
        deadline = time.monotonic() + self.motion_timeout
        # A move takes seconds: poll fast at first (a short move in a sped-up simulation ends in
        # ms), then back off, so a slow link is not flooded with status requests.
        intervals = Backoff(self.poll_interval, max_s=max(self.poll_interval, 0.05))
        while self.query(self.dashboard.is_running):
            if time.monotonic() > deadline:
                self._retrying(self.dashboard.stop, self.dashboard.transport)
                raise MotionTimeout(f"{what}: still running after {self.motion_timeout} s; stopped it")
            time.sleep(intervals.next())
        self._raise_if_safety_stopped()
        self._check_stop(what)

    def _follow(self, stream: URStateStream, before: int, program_name: str, what: str) -> None:
        """Wait for the program to start and end on the RTDE state stream (no polling)."""
        window = 3.0 / stream.frequency  # a few packages
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                playing = stream.wait_for(lambda s: s.running or self.stopped(), timeout=window, after=before)
                break
            except InstrumentTimeout:
                # A program shorter than a package period may have run between two: the dashboard names it.
                state = self.query(self.dashboard.program_state)
                if state.program == program_name and not self.query(self.dashboard.is_running):
                    self._raise_if_safety_stopped(fresh=True)  # no package saw it: ask the dashboard
                    self._check_stop(what)
                    return
                if time.monotonic() > deadline:
                    self._raise_if_safety_stopped(fresh=True)
                    raise ProgramNotStarted(f"{what}: the controller did not run the program") from None
        try:
            stream.wait_for(lambda s: not s.running or self.stopped(), timeout=self.motion_timeout,
                            after=playing.sequence - 1)  # fmt: skip
        except InstrumentTimeout:
            self._retrying(self.dashboard.stop, self.dashboard.transport)
            raise MotionTimeout(f"{what}: still running after {self.motion_timeout} s; stopped it") from None
        if self.stopped():
            self.position = None
            raise MotionStopped(f"{what}: stopped on request")
        self._raise_if_safety_stopped()

    def _state(self) -> RobotState:
        """The newest RTDE state; a stalled stream is reopened (under the retry policy)."""
        stream = self.state
        assert stream is not None

        def newest() -> RobotState:
            if not stream.is_open:
                stream.open()
            return stream.latest()

        return self.retry.run(newest, events=self.events, what="arm rtde state")

    def _safety(self, *, fresh: bool = False) -> SafetyStatus:
        """The safety status: the newest RTDE package's, or the dashboard's when ``fresh`` matters (a
        dashboard command, such as an unlock, may have changed it since that package was sent)."""
        if self.state is None or fresh:
            return self.query(self.dashboard.safety_status)
        return self._state().safety

    def _raise_if_safety_stopped(self, *, fresh: bool = False) -> None:
        status = self._safety(fresh=fresh)
        if status == SafetyStatus.PROTECTIVE_STOP:
            if self._stop_observed_at is None:
                self._stop_observed_at = time.monotonic()
            self.position = None
            raise ProtectiveStop(
                "the arm is in a protective stop; inspect the cause, then recover_from_protective_stop()",
                self._stop_observed_at,
            )
        if not status.allows_motion:
            raise SafetyStop(f"the arm is stopped by its safety system ({status.value})", status)

    def _wait_for_mode(self, modes: set[RobotMode], what: str) -> None:
        if self.state is not None:
            self._state()
            try:
                self.state.wait_for(lambda s: s.robot_mode in modes, timeout=self.ready_timeout)
            except InstrumentTimeout:
                raise RobotNotReady(f"{what}: robot mode stayed {self._state().robot_mode.value}") from None
            return
        deadline = time.monotonic() + self.ready_timeout
        while (mode := self.query(self.dashboard.robot_mode)) not in modes:
            if time.monotonic() > deadline:
                raise RobotNotReady(f"{what}: robot mode stayed {mode.value}")
            time.sleep(self.poll_interval)

    def query(self, query: Callable[[], T]) -> T:
        return self._retrying(query, self.dashboard.transport)

    def _retrying(self, action: Callable[[], T], link: Transport) -> T:
        """Repeat an idempotent exchange after a link fault, under the shared policy."""
        what = getattr(action, "__name__", "exchange")

        def once() -> T:
            if not link.is_open:
                link.open()  # dropped by an earlier call that gave up: the next call reconnects
            return action()

        return self.retry.run(once, transport=link, events=self.events, what=f"arm {what}")
