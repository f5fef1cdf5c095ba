"""Typed errors of a Universal Robots arm and its Robotiq gripper, each a generic driver error too."""

from __future__ import annotations

import time

from drivers.errors import (
    CommandRejected,
    Empty,
    FaultKind,
    InstrumentAlarm,
    InstrumentBusy,
    InstrumentError,
    InstrumentTimeout,
    SafetyLimitError,
    Stopped,
)

__all__ = [
    "FeederEmpty",
    "GripperFault",
    "GripperMissedObject",
    "GripperNotActive",
    "MotionStopped",
    "MotionTimeout",
    "PositionConfigError",
    "ProgramNotStarted",
    "ProtectiveStop",
    "RemoteControlRequired",
    "RobotBusy",
    "RobotNotReady",
    "SafetyStop",
    "UnknownPosition",
    "UnlockRefused",
]


class UnknownPosition(SafetyLimitError):
    """A move to a position that is not one of the configured, named ones. Nothing was sent."""


class PositionConfigError(InstrumentError, ValueError):
    """A positions file or mapping that cannot be used (names the file, the field and what is allowed)."""


class RemoteControlRequired(CommandRejected):
    """The e-Series controller is in local control: the pendant owns it, remote commands are refused."""


class RobotNotReady(CommandRejected):
    """The arm is not powered with brakes released (robot mode is not RUNNING)."""


class RobotBusy(InstrumentBusy):
    """Another program is running on the controller."""


class SafetyStop(InstrumentAlarm):
    """The safety system stopped the arm (safeguard or emergency stop, violation, fault...)."""

    def __init__(self, message: str, status: object = None):
        super().__init__(message)
        self.status = status


class ProtectiveStop(SafetyStop):
    """The arm is in a protective stop. It may be unlocked no sooner than 5 s after it happened.

    ``observed_at`` is the ``time.monotonic()`` at which this side first saw the stop; the
    unlock rule is counted from then, which is never earlier than the stop itself.
    """

    fault = FaultKind.PROTECTIVE_STOP

    def __init__(self, message: str, observed_at: float | None = None):
        super().__init__(message, "PROTECTIVE_STOP")
        self.observed_at = time.monotonic() if observed_at is None else observed_at


class UnlockRefused(CommandRejected):
    """The controller refused to unlock the protective stop (too soon, or the cause persists)."""


class ProgramNotStarted(CommandRejected):
    """A program was sent but the controller never ran it (it did not compile, or the arm was not ready)."""


class MotionStopped(Stopped):
    """A motion was stopped on request before it reached its target."""


class MotionTimeout(InstrumentTimeout):
    """A motion did not finish within its time allowance."""


class GripperNotActive(CommandRejected):
    """The gripper must be activated (``SET ACT 1``, ``STA 3``) before it moves."""


class GripperFault(InstrumentAlarm):
    """The gripper reports a fault code (``FLT`` non-zero)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class GripperMissedObject(InstrumentError):
    """The gripper closed all the way: there was nothing between its fingers (where the driver's count,
    if it keeps one for the station, says there should be a vial)."""

    fault = FaultKind.ALARM  # the arm is sound; the vessel was not where it should be

    def __init__(self, message: str, station: str = ""):
        super().__init__(message)
        self.station = station


class FeederEmpty(Empty):
    """The feeder has no vial left by the count the driver keeps (``set_feeder``): refused before the
    arm moved. (A grip that closes on nothing while the count says a vial is there is a
    ``GripperMissedObject``.)"""

    def __init__(self, message: str, station: str = "", remaining: float | None = 0.0):
        super().__init__(message, consumable=station, remaining=remaining, needed=1.0, unit="vials")
        self.station = station
