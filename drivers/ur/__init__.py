"""Universal Robots arm (CB3 / e-Series) with a Robotiq gripper on the URCap socket.

    arm = URArm.connect({"dashboard": "socket://ur:29999", "script": "socket://ur:30002",
                         "gripper": "socket://ur:63352"}, positions_file=...)  # or positions={...}
    arm.prepare()                        # remote control? power on, release brakes, activate gripper
    arm.transfer("feeder", "dispense")   # via feeder_above / dispense_above when taught

The campaign runner calls ``make_device``; a plan then uses the ophyd face (``drivers.ur.device``).
"""

from typing import Any

from drivers.ur.arm import ArmStatus, URArm
from drivers.ur.codec import GripperStatus, ObjectStatus, ProgramState, RobotMode, SafetyStatus
from drivers.ur.dashboard import URDashboard
from drivers.ur.device import URArmDevice
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
from drivers.ur.positions import load_positions_file, validate_joint_limits, validate_positions
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
    "URArmDevice",
    "URDashboard",
    "URScriptClient",
    "UnknownPosition",
    "UnlockRefused",
    "load_positions_file",
    "make_device",
]


_DEFAULT_PORTS = {"dashboard": 29999, "script": 30002, "gripper": 63352}
_OPTIONS = {
    "positions": "mapping of position name -> 6 joint angles (rad)",
    "positions_file": "YAML file of positions (see drivers.ur.positions)",
    "joint_limits": "6 [low, high] pairs in rad",
    "speed": "joint speed of moves, rad/s",
    "max_speed": "cap on any joint speed, rad/s (default 1.05)",
    "acceleration": "joint acceleration, rad/s²",
    "max_acceleration": "cap on any joint acceleration, rad/s² (default 1.4)",
    "unlock_delay": "s to wait after observing a protective stop before unlocking (default 5)",
    "unlock_retry_interval": "s between unlock attempts the controller refuses (default 0.5)",
    "auto_unlock": "unlock protective stops and repeat the move by itself (default false)",
    "power_on": "power on, release brakes and activate the gripper before the first action (default true)",
    "pick_retries": "grips to retry when the gripper closes on nothing (default 0)",
    "approach_suffix": "suffix of approach positions (default _above)",
    "gripper_speed": "0-255",
    "gripper_force": "0-255",
    "gripper_max_force": "0-255",
    "motion_timeout": "s a single move may take (default 60)",
    "start_timeout": "s for a program to start (default 2)",
    "reply_timeout": "s to wait for a dashboard or gripper reply (default 2)",
}


def make_device(name: str, address: str | dict[str, str], **options: Any) -> URArmDevice:
    """The campaign runner's factory: an ophyd URArmDevice connected to the three endpoints.

    ``address`` maps dashboard/script/gripper to URLs, or is the controller's host name (the
    standard ports 29999, 30002 and 63352 are used).
    """
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        allowed = "; ".join(f"{key} ({meaning})" for key, meaning in _OPTIONS.items())
        raise ValueError(f"UR arm {name}: unknown option(s) {', '.join(sorted(unknown))}; allowed: {allowed}")
    if isinstance(address, str):
        host = address.removeprefix("socket://").split(":")[0]
        address = {endpoint: f"socket://{host}:{port}" for endpoint, port in _DEFAULT_PORTS.items()}
    limits = validate_joint_limits(options.get("joint_limits"))
    if ("positions" in options) == ("positions_file" in options):
        raise ValueError(f"UR arm {name}: give exactly one of 'positions' or 'positions_file'")
    if "positions_file" in options:
        positions = load_positions_file(options["positions_file"], joint_limits=limits)
    else:
        positions = validate_positions(options["positions"], source=f"{name}: positions", joint_limits=limits)
    arm_options: dict[str, Any] = {"positions": positions, "joint_limits": limits}
    renamed = {"max_speed": "max_joint_speed", "max_acceleration": "max_joint_accel"}
    for key in _OPTIONS.keys() - {"positions", "positions_file", "joint_limits", "power_on", "pick_retries"}:
        if key in options:
            arm_options[renamed.get(key, key)] = options[key]
    arm = URArm.connect(address, **arm_options)
    try:
        return URArmDevice(
            arm,
            name=name,
            power_on=bool(options.get("power_on", True)),
            pick_retries=int(options.get("pick_retries", 0)),
        )
    except Exception:
        arm.close()
        raise
