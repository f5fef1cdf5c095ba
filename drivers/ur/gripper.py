"""A Robotiq 2F gripper through the Robotiq URCap's socket on the UR controller (TCP 63352).

Variables (Robotiq 2F-85/140 manual, register names without their r/g prefix): ``ACT`` activate,
``GTO`` go to the requested position, ``POS`` requested position when set / actual position when
read, ``PRE`` echo of the requested position, ``SPE`` speed and ``FOR`` force (0–255), ``STA``
activation state (3 = active), ``OBJ`` what stopped the fingers (2 = an object while closing,
3 = reached the position), ``FLT`` fault code. 0 is fully open, 255 fully closed.

Link methods are ``open_link``/``close_link`` so that nobody confuses them with the fingers:
the fingers move with ``grip``, ``release`` and ``move``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from drivers.errors import ProtocolError, SafetyLimitError
from drivers.retry import FaultEvents, RetryPolicy
from drivers.transport import Transport
from drivers.ur import codec
from drivers.ur.codec import GripperStatus, ObjectStatus
from drivers.ur.errors import GripperFault, GripperNotActive, MotionTimeout

log = logging.getLogger(__name__)

DEFAULT_PORT = 63352


class RobotiqGripper:
    def __init__(
        self,
        transport: Transport,
        *,
        speed: int = 255,
        force: int = 100,
        max_force: int = 255,
        reply_timeout: float | None = 0.5,
        motion_timeout: float = 10.0,
        poll_interval: float = 0.002,
        retries: int = 4,
        events: FaultEvents | None = None,
    ):
        for name, value in (("speed", speed), ("force", force), ("max_force", max_force)):
            if not 0 <= value <= 255:
                raise SafetyLimitError(f"gripper {name} must be 0–255, got {value}")
        if force > max_force:
            raise SafetyLimitError(f"gripper force {force} exceeds max_force {max_force}")
        self.transport = transport
        self.speed = speed
        self.force = force
        self.max_force = max_force
        if reply_timeout is not None:
            transport.reply_timeout = reply_timeout  # the ceiling: the transport learns the round trip
        self.motion_timeout = motion_timeout
        self.poll_interval = poll_interval
        #: Every GET and SET is safe to repeat, so each one is retried on its own: a long sequence
        #: (activation, a grip) is never repeated from the start because one reply was lost.
        self.retry = RetryPolicy(attempts=1 + retries, deadline_s=10.0)
        self.events = events or FaultEvents("gripper")

    @classmethod
    def connect(cls, url: str, **options: Any) -> RobotiqGripper:
        gripper = cls(Transport(url), **options)
        gripper.open_link()
        return gripper

    # -- link ------------------------------------------------------------------------------
    def open_link(self) -> RobotiqGripper:
        self.transport.open()
        return self

    def close_link(self) -> None:
        self.transport.close()

    def reconnect(self) -> None:
        log.info("gripper: reconnecting to %s", self.transport.url)
        self.transport.reconnect()

    # -- variables -------------------------------------------------------------------------
    def get(self, name: str) -> int:
        def once() -> int:
            self._reopen()
            raw = self.transport.exchange(codec.encode_get(name), lambda t: t.read_until(b"\n"))
            return codec.parse_get_reply(raw, name)

        return self.retry.run(once, transport=self.transport, events=self.events, what=f"gripper GET {name}")

    def set(self, **values: int) -> None:
        request = codec.encode_set(**values)

        def once() -> None:
            self._reopen()
            raw = self.transport.exchange(request, lambda t: t.read_exactly(len(codec.ACK)))
            codec.check_ack(raw)

        self.retry.run(
            once, transport=self.transport, events=self.events, what=f"gripper SET {sorted(values)}"
        )

    def _reopen(self) -> None:
        if not self.transport.is_open:
            self.transport.open()

    # -- state -----------------------------------------------------------------------------
    def status(self) -> GripperStatus:
        return _enum(GripperStatus, self.get("STA"), "STA")

    def is_active(self) -> bool:
        return self.status() == GripperStatus.ACTIVE

    def position(self) -> int:
        return self.get("POS")

    def object_status(self) -> ObjectStatus:
        return _enum(ObjectStatus, self.get("OBJ"), "OBJ")

    def object_detected(self) -> bool:
        """True while the fingers were stopped by something between them."""
        return self.object_status().holds_object

    def fault(self) -> int:
        return self.get("FLT")

    # -- actions ---------------------------------------------------------------------------
    def activate(self, timeout: float | None = None) -> None:
        """Reset and activate, as Robotiq's URCap does; a no-op when already active (idempotent)."""
        if self.is_active() and self.get("ACT") == 1:
            return
        log.info("gripper: activating")
        self.set(ACT=0)
        self.set(ATR=0)
        self._wait(lambda: self.get("ACT") == 0 and self.status() == GripperStatus.RESET, timeout, "reset")
        self.set(ACT=1)
        self._wait(lambda: self.status() == GripperStatus.ACTIVE, timeout, "activation")

    def move(self, position: int, *, speed: int | None = None, force: int | None = None) -> ObjectStatus:
        """Go to ``position`` (0 open … 255 closed), wait until the fingers stop; returns why they stopped."""
        speed = self.speed if speed is None else speed
        force = self.force if force is None else force
        if not 0 <= position <= 255:
            raise SafetyLimitError(f"gripper position must be 0–255, got {position}")
        if not 0 <= speed <= 255:
            raise SafetyLimitError(f"gripper speed must be 0–255, got {speed}")
        if not 0 <= force <= self.max_force:
            raise SafetyLimitError(f"gripper force must be 0–{self.max_force} (max_force), got {force}")
        if not self.is_active():
            raise GripperNotActive("the gripper is not active: call activate() first")
        self.set(POS=position, SPE=speed, FOR=force, GTO=1)
        self._wait(lambda: self.get("PRE") == position, None, "the requested position to be taken")
        result: list[ObjectStatus] = []

        def stopped() -> bool:
            status = self.object_status()
            result.append(status)
            return status != ObjectStatus.MOVING

        self._wait(stopped, None, f"the fingers to reach {position}")
        log.info("gripper: moved to %d (%s)", position, result[-1].name)
        return result[-1]

    def grip(self, **options: int) -> bool:
        """Close; True if the fingers stopped on an object."""
        return self.move(codec.POSITION_CLOSED, **options).holds_object

    def release(self, **options: int) -> bool:
        """Open; True if something blocked the fingers while opening."""
        return self.move(codec.POSITION_OPEN, **options).holds_object

    def _wait(self, done: Any, timeout: float | None, what: str) -> None:
        deadline = time.monotonic() + (self.motion_timeout if timeout is None else timeout)
        while not done():
            if time.monotonic() > deadline:
                code = self.fault()
                if code:
                    raise GripperFault(f"gripper fault {code} while waiting for {what}", code)
                raise MotionTimeout(f"gripper: timed out waiting for {what}")
            time.sleep(self.poll_interval)


def _enum(kind: Any, value: int, name: str) -> Any:
    """``kind(value)``; a value the gripper does not define is a garbled reply."""
    try:
        return kind(value)
    except ValueError:
        raise ProtocolError(f"gripper: {name} {value} is not a {kind.__name__}") from None
