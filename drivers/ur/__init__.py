"""Universal Robots arm (CB3 / e-Series) with a Robotiq gripper on the URCap socket.

    arm = URArm.connect({"dashboard": "socket://ur:29999", "script": "socket://ur:30002",
                         "gripper": "socket://ur:63352"}, positions_file=...)  # or positions={...}
    arm.prepare()                        # remote control? power on, release brakes, activate gripper
    arm.transfer("feeder", "dispense")   # via feeder_above / dispense_above when taught

The campaign runner calls ``make_device`` (see ``drivers.ur.device``).
"""

from drivers.ur.arm import ArmStatus, URArm
from drivers.ur.codec import GripperStatus, ObjectStatus, ProgramState, RobotMode, SafetyStatus
from drivers.ur.dashboard import URDashboard
from drivers.ur.errors import (
    GripperFault,
    GripperMissedObject,
    GripperNotActive,
    MotionStopped,
    MotionTimeout,
    PositionConfigError,
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
from drivers.ur.positions import load_positions_file
from drivers.ur.script import URScriptClient

__all__ = [
    "ArmStatus",
    "GripperFault",
    "GripperMissedObject",
    "GripperNotActive",
    "GripperStatus",
    "MotionStopped",
    "MotionTimeout",
    "ObjectStatus",
    "PositionConfigError",
    "ProgramNotStarted",
    "ProgramState",
    "ProtectiveStop",
    "RemoteControlRequired",
    "RobotBusy",
    "RobotMode",
    "RobotNotReady",
    "RobotiqGripper",
    "SafetyStatus",
    "SafetyStop",
    "URArm",
    "URDashboard",
    "URScriptClient",
    "UnknownPosition",
    "UnlockRefused",
    "load_positions_file",
]
