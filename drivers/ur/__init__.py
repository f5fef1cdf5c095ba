"""Universal Robots arm (CB3 / e-Series) with a Robotiq gripper on the URCap socket.

    arm = URArm.connect({"dashboard": "socket://ur:29999", "script": "socket://ur:30002",
                         "gripper": "socket://ur:63352"}, positions_file=...)  # or positions={...}
    arm.prepare()                        # remote control? power on, release brakes, activate gripper
    arm.transfer("feeder", "dispense")   # via feeder_above / dispense_above when taught

The campaign runner calls ``make_device`` (``driver: ur``); a plan then uses the ophyd face
(``drivers.ur.device``), which loads ophyd on demand: ``import drivers.ur.codec`` does not.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, model_validator

from drivers.options import STRICT, min_reply_timeout, validate_options
from drivers.transport import Transport
from drivers.ur.arm import ArmStatus, Pick, URArm
from drivers.ur.codec import GripperStatus, ObjectStatus, ProgramState, RobotMode, SafetyStatus
from drivers.ur.dashboard import URDashboard
from drivers.ur.errors import (
    FeederEmpty,
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
from drivers.ur.state import RobotState, URStateStream

if TYPE_CHECKING:
    from drivers.ur.device import URArmDevice


def __getattr__(name: str) -> Any:
    # The ophyd face on demand (PEP 562), so `import drivers.ur.codec` stays free of ophyd.
    if name == "URArmDevice":
        return importlib.import_module("drivers.ur.device").URArmDevice
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ArmStatus",
    "FeederEmpty",
    "GripperFault",
    "GripperMissedObject",
    "GripperNotActive",
    "GripperStatus",
    "MotionStopped",
    "MotionTimeout",
    "ObjectStatus",
    "Options",
    "Pick",
    "PositionConfigError",
    "ProgramNotStarted",
    "ProgramState",
    "ProtectiveStop",
    "RemoteControlRequired",
    "RobotBusy",
    "RobotMode",
    "RobotNotReady",
    "RobotState",
    "RobotiqGripper",
    "SafetyStatus",
    "SafetyStop",
    "URArm",
    "URArmDevice",
    "URDashboard",
    "URScriptClient",
    "URStateStream",
    "UnknownPosition",
    "UnlockRefused",
    "load_positions_file",
    "make_device",
]


_DEFAULT_PORTS = {"dashboard": 29999, "script": 30002, "gripper": 63352}
RTDE_PORT = 30004
Positive = Annotated[float, Field(gt=0)]
Byte = Annotated[int, Field(ge=0, le=255)]


class Options(BaseModel):
    """``make_device`` options of a UR arm with a Robotiq gripper."""

    model_config = STRICT

    positions: dict[str, Sequence[float]] | None = Field(None, description="name -> 6 joint angles (rad)")
    positions_file: str | None = Field(None, description="YAML file of positions (see drivers.ur.positions)")
    joint_limits: Sequence[Sequence[float]] | None = Field(None, description="6 [low, high] pairs in rad")
    speed: Positive = Field(0.5, description="joint speed of moves, rad/s")
    max_speed: Positive = Field(1.05, description="cap on any joint speed, rad/s")
    acceleration: Positive = Field(1.0, description="joint acceleration, rad/s²")
    max_acceleration: Positive = Field(1.4, description="cap on any joint acceleration, rad/s²")
    unlock_delay: float = Field(5.0, ge=0, description="s after a protective stop before unlocking")
    unlock_retry_interval: Positive = Field(0.5, description="s between refused unlock attempts")
    auto_unlock: bool = Field(False, description="unlock protective stops and repeat the move by itself")
    power_on: bool = Field(True, description="power on and release brakes before the first action")
    pick_retries: int = Field(1, ge=0, description="grips to retry when the gripper closes on nothing")
    approach_suffix: str = Field("_above", description="suffix of approach positions")
    gripper_speed: Byte = 255
    gripper_force: Byte = 100
    gripper_max_force: Byte = 255
    motion_timeout: Positive = Field(60.0, description="s a single move may take")
    start_timeout: Positive = Field(2.0, description="s for a program to start")
    reply_timeout: Positive = Field(
        0.5, description="s to wait for a dashboard or gripper reply at most (less once the link is known)"
    )
    min_reply_timeout: Positive = min_reply_timeout()
    retries: int = Field(4, ge=0, description="resends of a dashboard or gripper query after a link fault")
    rtde: bool | None = Field(
        None,
        description="follow state over RTDE, not by polling the dashboard (default: if the address has it)",
    )
    rtde_frequency: float = Field(125.0, gt=0, le=500, description="RTDE state packages per second")

    @model_validator(mode="after")
    def _one_source_of_positions(self) -> Options:
        if (self.positions is None) == (self.positions_file is None):
            raise ValueError("give exactly one of 'positions' or 'positions_file'")
        return self


def make_device(name: str, address: str | Mapping[str, str], **options: Any) -> URArmDevice:
    """The campaign runner's factory: an ophyd URArmDevice for the three endpoints; no I/O.

    ``address`` maps dashboard/script/gripper to URLs, or is the controller's host name (the
    standard ports 29999, 30002 and 63352 are used). ``connect()`` opens the three links and
    activates the gripper unless it is active; power and brakes are handled before the first move.
    """
    from drivers.ur.device import URArmDevice

    checked = validate_options(Options, options, instrument=name)
    if isinstance(address, str):
        host = address.removeprefix("socket://").split(":")[0]
        address = {endpoint: f"socket://{host}:{port}" for endpoint, port in _DEFAULT_PORTS.items()}
        address["rtde"] = f"socket://{host}:{RTDE_PORT}"
    if checked.rtde and "rtde" not in address:
        raise ValueError(f"UR arm {name}: rtde is on, but the address has no rtde URL")
    # RTDE pushes state; polling asks for it. Measured (benchmarks/drivers.py --ur-state): the end of a
    # move seen 7x sooner and status() 4x faster, for about 2 % of a core while the stream is open.
    follow = checked.rtde if checked.rtde is not None else "rtde" in address
    missing = {"dashboard", "script", "gripper"} - set(address)
    if missing:
        raise ValueError(
            f"UR arm {name}: address needs dashboard, script and gripper URLs; missing {sorted(missing)}"
        )
    limits = validate_joint_limits(checked.joint_limits)
    if checked.positions_file is not None:
        positions = load_positions_file(checked.positions_file, joint_limits=limits)
    else:
        positions = validate_positions(checked.positions, source=f"{name}: positions", joint_limits=limits)
    floor = checked.min_reply_timeout
    arm = URArm(
        URDashboard(
            Transport(address["dashboard"], min_reply_timeout=floor), reply_timeout=checked.reply_timeout
        ),
        URScriptClient(Transport(address["script"])),
        RobotiqGripper(
            Transport(address["gripper"], min_reply_timeout=floor),
            speed=checked.gripper_speed,
            force=checked.gripper_force,
            max_force=checked.gripper_max_force,
            reply_timeout=checked.reply_timeout,
            retries=checked.retries,  # the gripper's exchanges are retried by the gripper itself
        ),
        positions=positions,
        joint_limits=limits,
        speed=checked.speed,
        acceleration=checked.acceleration,
        max_joint_speed=checked.max_speed,
        max_joint_accel=checked.max_acceleration,
        approach_suffix=checked.approach_suffix,
        unlock_delay=checked.unlock_delay,
        unlock_retry_interval=checked.unlock_retry_interval,
        start_timeout=checked.start_timeout,
        motion_timeout=checked.motion_timeout,
        auto_unlock=checked.auto_unlock,
        query_retries=checked.retries,
        state=URStateStream(Transport(address["rtde"]), frequency=checked.rtde_frequency) if follow else None,
    )
    return URArmDevice(arm, name=name, power_on=checked.power_on, pick_retries=checked.pick_retries)
