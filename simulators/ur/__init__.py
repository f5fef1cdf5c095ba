"""Simulated Universal Robots arm (CB3 or e-Series) with a Robotiq gripper on the URCap socket.

Endpoints: ``dashboard`` (the Dashboard Server, port 29999 on a real robot), ``script`` (the
secondary interface, 30002: URScript programs in) and ``gripper`` (the Robotiq URCap, 63352).
The script endpoint streams no binary state packets: our driver and every dashboard-based
client ignore them, and a client that parses them (python-urx) is not supported.

Config keys (all optional; ``default_config()`` fits the default bench)::

    series: e-series            # or cb3: no 'safetystatus', no 'is in remote control', no local mode
    remote_control: true        # e-Series: false = local control, remote commands are refused
    initial_mode: POWER_OFF     # POWER_OFF | IDLE | RUNNING
    positions: {home: [j1..j6], feeder: [...], ...}   # taught positions, radians
    stations: {feeder: feeder, ...}                   # position name -> world station it is at
    initial_position: home
    position_tolerance: 0.01    # rad, per joint, for "the arm is at a taught position"
    power_on_s: 1.0, brake_release_s: 2.0, unlock_rule_s: 5.0, protective_stop_fraction: 0.5
    max_joint_speed: 3.14       # the controller clamps faster movej requests
    gripper: {active: false, activation_s: 1.0, object_position: 130}
    programs: []                # .urp files 'load' accepts; 'play' runs one for urp_duration_s
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

from drivers.ur import codec
from drivers.ur.errors import PositionConfigError
from drivers.ur.positions import match_position, validate_positions
from drivers.ur.urscript import MoveJ, Program, ScriptError, parse_program
from simulators.base import Simulator, register
from simulators.faults import FaultPlan
from simulators.stream import Stream
from simulators.ur.gripper import Gripper
from simulators.ur.robot import Controller
from simulators.world import World

_CONFIG_KEYS = {
    "series", "remote_control", "initial_mode", "positions", "stations", "initial_position",
    "position_tolerance", "power_on_s", "brake_release_s", "unlock_rule_s", "protective_stop_fraction",
    "max_joint_speed", "gripper", "programs", "urp_duration_s",
}  # fmt: skip
#: e-Series commands refused in local control (Dashboard Server manual: the "remote only" column).
_REMOTE_ONLY = ("power on", "power off", "brake release", "unlock protective stop", "play", "stop", "pause",
                "load ", "restart safety")  # fmt: skip
_VERSIONS = {
    "e-series": "URSoftware 5.11.1.108318 (Nov 25 2021)",
    "cb3": "URSoftware 3.15.7.106331 (Oct 20 2021)",
}
_PROGRAM_END = re.compile(r"^end[ \t]*\r?$", re.MULTILINE)

DEFAULT_POSITIONS: dict[str, list[float]] = {
    "home": [0.0, -1.5708, 1.5708, -1.5708, -1.5708, 0.0],
    "feeder_above": [0.9, -1.35, 1.55, -1.77, -1.5708, 0.0],
    "feeder": [0.9, -1.15, 1.75, -2.17, -1.5708, 0.0],
    "dispense_above": [0.3, -1.35, 1.55, -1.77, -1.5708, 0.0],
    "dispense": [0.3, -1.15, 1.75, -2.17, -1.5708, 0.0],
    "spectrometer_above": [-0.3, -1.35, 1.55, -1.77, -1.5708, 0.0],
    "spectrometer": [-0.3, -1.15, 1.75, -2.17, -1.5708, 0.0],
    "waste_above": [-0.9, -1.35, 1.55, -1.77, -1.5708, 0.0],
    "waste": [-0.9, -1.15, 1.75, -2.17, -1.5708, 0.0],
}


@register
class URSimulator(Simulator):
    kind = "ur"
    endpoints = ("dashboard", "script", "gripper")
    instrument_faults: ClassVar[dict[str, str]] = {
        "protective-stop": "the arm stops halfway through a motion program, safety status PROTECTIVE_STOP, "
        "unlock refused for 5 simulated s (opportunity: a program with a movej)",
        "miss": "the gripper closes past the vessel without catching it, OBJ 3 "
        "(opportunity: a close at a station holding a vessel)",
    }

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        stations = {name: name for name in ("feeder", "dispense", "spectrometer", "waste")}
        return {"positions": DEFAULT_POSITIONS, "stations": stations, "initial_position": "home"}

    def __init__(self, world: World, config: Mapping[str, Any] | None = None, faults: FaultPlan | None = None,
                 *, name: str | None = None):  # fmt: skip
        super().__init__(world, config, faults, name=name)
        cfg = self.config
        unknown = set(cfg) - _CONFIG_KEYS
        if unknown:
            allowed = ", ".join(sorted(_CONFIG_KEYS))
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}; allowed: {allowed}")
        self.series = str(cfg.get("series", "e-series"))
        if self.series not in ("e-series", "cb3"):
            raise ValueError(f"series: must be 'e-series' or 'cb3', not {self.series!r}")
        self.remote_control = bool(cfg.get("remote_control", True))
        try:
            self.positions = validate_positions(cfg.get("positions") or DEFAULT_POSITIONS, source="positions")
        except PositionConfigError as exc:
            raise ValueError(str(exc)) from None
        self.stations = self._stations(cfg)
        first = "home" if "home" in self.positions else next(iter(self.positions))
        start = str(cfg.get("initial_position", first))
        if start not in self.positions:
            raise ValueError(f"initial_position: {start!r} is not one of positions {sorted(self.positions)}")
        self.tolerance = _positive(cfg, "position_tolerance", 0.01)
        mode = str(cfg.get("initial_mode", "POWER_OFF"))
        if mode not in ("POWER_OFF", "IDLE", "RUNNING"):
            raise ValueError(f"initial_mode: must be POWER_OFF, IDLE or RUNNING, not {mode!r}")
        fraction = float(cfg.get("protective_stop_fraction", 0.5))
        if not 0 < fraction < 1:
            raise ValueError(f"protective_stop_fraction: must be between 0 and 1, not {fraction}")
        self.controller = Controller(
            self.positions[start],
            powered=mode,
            power_on_s=_positive(cfg, "power_on_s", 1.0, zero=True),
            brake_release_s=_positive(cfg, "brake_release_s", 2.0, zero=True),
            unlock_rule_s=_positive(cfg, "unlock_rule_s", 5.0, zero=True),
            stop_fraction=fraction,
            max_joint_speed=_positive(cfg, "max_joint_speed", 3.14),
        )
        gripper_cfg = dict(cfg.get("gripper") or {})
        unknown = set(gripper_cfg) - {"active", "activation_s", "object_position"}
        if unknown:
            raise ValueError(
                f"gripper: unknown key(s) {sorted(unknown)}; allowed: active, activation_s, object_position"
            )
        self.gripper = Gripper(
            world,
            self.station_of_arm,
            lambda: self.faults.fires("miss"),
            activation_s=_positive(gripper_cfg, "activation_s", 1.0, zero=True),
            object_position=int(gripper_cfg.get("object_position", 130)),
            active=bool(gripper_cfg.get("active", False)),
        )
        self.programs = [str(p) for p in cfg.get("programs") or []]
        self.urp_duration_s = _positive(cfg, "urp_duration_s", 1.0)
        #: Requests received per endpoint (lines on dashboard and gripper, programs on script).
        self.requests: Counter[str] = Counter()
        self.programs_run: list[str] = []
        self.programs_refused: list[str] = []
        #: Connections being served now (tests wait for zero before shutting a TCP simulator down).
        world.add_settler(self.settle)

    def _stations(self, cfg: Mapping[str, Any]) -> dict[str, str]:
        raw = cfg.get("stations")
        if raw is None:
            return {p: p for p in self.positions if p in self.world.stations}
        if not isinstance(raw, Mapping):
            raise ValueError("stations: expected a mapping of position name to world station")
        for position, station in raw.items():
            if position not in self.positions:
                raise ValueError(f"stations.{position}: not a position; positions: {sorted(self.positions)}")
            if station not in self.world.stations:
                known = sorted(self.world.stations)
                raise ValueError(f"stations.{position}: no world station {station!r}; stations: {known}")
        return {str(k): str(v) for k, v in raw.items()}

    # -- the model -------------------------------------------------------------------------
    def now(self) -> float:
        return self.world.clock.now()

    def settle(self, now: float) -> None:
        self.controller.settle(now)
        self.gripper.settle(now)

    def station_of_arm(self, now: float) -> str | None:
        """The world station the arm is at, or None while it moves or hangs in the air."""
        if self.controller.running(now):
            return None
        position = match_position(self.controller.pose(now), self.positions, self.tolerance)
        return self.stations.get(position) if position else None

    def position_name(self) -> str | None:
        return match_position(self.controller.pose(self.now()), self.positions, self.tolerance)

    # -- sessions --------------------------------------------------------------------------
    async def serve(self, endpoint: str, stream: Stream) -> None:
        if endpoint == "dashboard":
            await self._serve_dashboard(stream)
        elif endpoint == "script":
            await self._serve_script(stream)
        else:
            await self._serve_gripper(stream)

    async def _serve_dashboard(self, stream: Stream) -> None:
        await stream.send((codec.GREETING + "\n").encode(), faultable=False)
        while True:
            line = (await stream.read_until(b"\n")).decode("ascii", "replace").strip()
            if not line:
                continue
            self.requests["dashboard"] += 1
            self.record("dashboard", line.encode("ascii", "replace"))
            reply = self.dashboard(line)
            await stream.send((reply + "\n").encode("ascii", "replace"))
            if reply == codec.DISCONNECTED:
                return

    async def _serve_script(self, stream: Stream) -> None:
        buffer = ""
        while True:
            buffer += (await stream.read_some()).decode("ascii", "replace")
            while (program := _take_program(buffer)) is not None:
                text, buffer = program
                self.requests["script"] += 1
                self.record("script", text.encode("ascii", "replace"))
                self.run_script(text)

    async def _serve_gripper(self, stream: Stream) -> None:
        while True:
            line = await stream.read_until(b"\n")
            self.requests["gripper"] += 1
            self.record("gripper", line)
            request = codec.parse_gripper_request(line)
            if request is None:
                self.log.warning("gripper: ignoring %r", line)
                continue
            if request.verb == "GET":
                value = self.gripper.get(request.name, self.now())
                await stream.send(f"{request.name} {value}\n".encode())
            else:
                self.gripper.set(dict(request.variables), self.now())
                await stream.send(codec.ACK)

    # -- the secondary interface -----------------------------------------------------------
    def run_script(self, text: str) -> None:
        now = self.now()
        self.settle(now)
        try:
            program = parse_program(text)
        except ScriptError as exc:
            self._refuse(f"compile error: {exc}")
            return
        if self.series == "e-series" and not self.remote_control:
            self._refuse(f"{program.name}: the robot is in local control")
            return
        reason = self.controller.why_not_runnable(now)
        if reason:
            self._refuse(f"{program.name}: {reason}")
            return
        moves = _has_motion(program)
        stop = moves and self.faults.fires("protective-stop")
        run = self.controller.start(program, now, protective_stop=stop)
        self.programs_run.append(program.name)
        self.log.info("program %s runs until t=%.3f", program.name, run.end)

    def _refuse(self, reason: str) -> None:
        self.programs_refused.append(reason)
        self.log.warning("program refused: %s", reason)

    # -- the dashboard ---------------------------------------------------------------------
    def dashboard(self, line: str) -> str:
        now = self.now()
        self.settle(now)
        command = " ".join(line.split()).lower()
        arm = self.controller
        e_series = self.series == "e-series"
        if e_series and not self.remote_control and command.startswith(_REMOTE_ONLY):
            return codec.NOT_IN_REMOTE_CONTROL
        if command == "robotmode":
            return f"Robotmode: {arm.robot_mode(now).value}"
        if command == "safetystatus" and e_series:
            return f"Safetystatus: {arm.safety(now).value}"
        if command == "safetymode":
            return f"Safetymode: {arm.safety(now).value}"
        if command == "running":
            return f"Program running: {'true' if arm.running(now) else 'false'}"
        if command == "programstate":
            return arm.program_state(now)
        if command == "is in remote control" and e_series:
            return "true" if self.remote_control else "false"
        if command == "power on":
            arm.power_on(now)
            return codec.POWERING_ON
        if command == "power off":
            arm.power_off(now)
            return codec.POWERING_OFF
        if command == "brake release":
            arm.brake_release(now)
            return codec.BRAKE_RELEASING
        if command == "unlock protective stop":
            return codec.PROTECTIVE_STOP_RELEASING if arm.unlock(now) else codec.UNLOCK_TOO_SOON
        if command == "close safety popup":
            return codec.CLOSING_SAFETY_POPUP
        if command == "close popup":
            return codec.CLOSING_POPUP
        if command == "stop":
            arm.halt(now)
            return codec.STOPPED
        if command == "pause":
            return "Pausing program" if arm.pause(now) else "Failed to execute: pause"
        if command == "play":
            return self._play(now)
        if command.startswith("load "):
            path = line.split(None, 1)[1].strip()
            if path not in self.programs:
                return f"File not found: {path}"
            arm.loaded_program = path
            return f"Loading program: {path}"
        if command == "get loaded program":
            return f"Loaded program: {arm.loaded_program}" if arm.loaded_program else "No program loaded"
        if command == "restart safety":
            arm.restart_safety(now)
            return "Restarting safety"
        if command == "polyscopeversion":
            return _VERSIONS[self.series]
        if command == "get robot model":
            return "UR5"
        if command == "get serial number":
            return "20185500001"
        if command.startswith("addtolog"):
            return "Added log message"
        if command.startswith("popup"):
            return "showing popup"
        if command == "quit":
            return codec.DISCONNECTED
        return codec.unknown_command_reply(line)

    def _play(self, now: float) -> str:
        arm = self.controller
        if arm.loaded_program is None or arm.why_not_runnable(now):
            return "Failed to execute: play"
        name = arm.loaded_program.rsplit("/", 1)[-1]
        arm.start(Program(name, ()), now).end = now + self.urp_duration_s
        return "Starting program"


def _take_program(buffer: str) -> tuple[str, str] | None:
    """Split one complete program (``def … end``) or one bare statement line off the buffer."""
    stripped = buffer.lstrip()
    if not stripped:
        return None
    if stripped.startswith(("def ", "sec ")):
        end = _PROGRAM_END.search(stripped)
        if end is None:
            return None
        return stripped[: end.end()], stripped[end.end() :]
    newline = stripped.find("\n")
    if newline < 0:
        return None
    return stripped[: newline + 1], stripped[newline + 1 :]


def _has_motion(program: Program) -> bool:
    return any(isinstance(s, MoveJ) for s in program.statements)


def _positive(cfg: Mapping[str, Any], key: str, default: float, *, zero: bool = False) -> float:
    try:
        value = float(cfg.get(key, default))
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a number, got {cfg.get(key)!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{key}: must be {'>= 0' if zero else '> 0'}, got {value}")
    return value
