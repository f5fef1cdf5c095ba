"""Simulated Universal Robots arm (CB3 or e-Series) with a Robotiq gripper on the URCap socket.

Endpoints (the real controller's port in brackets): ``dashboard`` (the Dashboard Server, 29999),
``script`` (the secondary interface, 30002), ``gripper`` (the Robotiq URCap, 63352), ``primary``
(30001) and ``realtime`` (30003), which take URScript programs as ``script`` does, and ``rtde``
(Real-Time Data Exchange, 30004). Programs run in a URScript interpreter (``simulators.ur.script``)
against the same controller the dashboard and RTDE report on. The script ports stream no binary
state packets: our driver and ``ur_rtde`` ignore them, and a client that parses them (python-urx)
is not supported.

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

import dataclasses
import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

from drivers.ur import codec, rtde
from drivers.ur.errors import PositionConfigError
from drivers.ur.positions import match_position, validate_positions
from simulators.base import Simulator, register
from simulators.faults import FaultPlan
from simulators.stream import Stream
from simulators.ur.gripper import Gripper
from simulators.ur.kinematics import ARMS
from simulators.ur.robot import Controller
from simulators.ur.rtde_server import RTDESession, output_getters
from simulators.ur.script.library import make_library, undefined_calls
from simulators.ur.script.syntax import CompileError, parse
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
_CONTROLLER_VERSIONS = {"e-series": (5, 11, 1, 108318), "cb3": (3, 15, 7, 106331)}
_MODELS = {"e-series": "UR5e", "cb3": "UR5"}
#: The control loop: 500 Hz on e-Series, 125 Hz on CB3 (the RTDE output rate's ceiling too).
_CONTROL_RATES = {"e-series": 500.0, "cb3": 125.0}
_PROGRAM_END = re.compile(r"^end[ \t]*\r?$", re.MULTILINE)
#: A program text longer than this without its closing ``end`` is thrown away.
MAX_PROGRAM_TEXT = 1_000_000
SCRIPT_ENDPOINTS = ("script", "primary", "realtime")

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
    endpoints = ("dashboard", "script", "gripper", "primary", "realtime", "rtde")
    #: The ports a real controller listens on (``python -m simulators ur --standard-ports``).
    standard_ports: ClassVar[dict[str, int]] = {
        "dashboard": 29999, "script": 30002, "gripper": 63352,
        "primary": 30001, "realtime": 30003, "rtde": 30004,
    }  # fmt: skip
    instrument_faults: ClassVar[dict[str, str]] = {
        "protective-stop": "the arm stops halfway through a motion, safety status PROTECTIVE_STOP, the "
        "program "
        "ends, unlock refused for 5 simulated s (opportunity: each movej or movel a program makes)",
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
        self.control_rate = _CONTROL_RATES[self.series]
        self.controller_version = _CONTROLLER_VERSIONS[self.series]
        self.controller = Controller(
            self.positions[start],
            powered=mode,
            power_on_s=_positive(cfg, "power_on_s", 1.0, zero=True),
            brake_release_s=_positive(cfg, "brake_release_s", 2.0, zero=True),
            unlock_rule_s=_positive(cfg, "unlock_rule_s", 5.0, zero=True),
            stop_fraction=fraction,
            max_joint_speed=_positive(cfg, "max_joint_speed", 3.14),
            arm=ARMS[_MODELS[self.series]],
            step_s=1.0 / self.control_rate,
            protective_stop_fault=lambda: self.faults.fires("protective-stop"),
        )
        self.library = make_library(self.controller)
        outputs = rtde.OUTPUTS
        self.rtde_outputs = outputs if self.series == "e-series" else {
            k: v for k, v in outputs.items() if k not in rtde.E_SERIES_OUTPUTS}  # fmt: skip
        self.rtde_getters = output_getters(self)
        #: The speed slider an RTDE client set (reported as target_speed_fraction; motion is not rescaled).
        self.speed_slider = 1.0
        self.analog_out: dict[str, float] = {}
        self._rtde_claims: dict[str, RTDESession] = {}
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

    def bench_state(self) -> dict[str, Any]:
        self.settle(self.now())
        held = self.gripper.held
        return {
            "at": self.position_name(),
            "holding": None if held is None else held.describe(),
            "dropped": [vessel.describe() for vessel in self.gripper.dropped],
        }

    # -- sessions --------------------------------------------------------------------------
    async def serve(self, endpoint: str, stream: Stream) -> None:
        if endpoint == "dashboard":
            await self._serve_dashboard(stream)
        elif endpoint in SCRIPT_ENDPOINTS:
            await self._serve_script(endpoint, stream)
        elif endpoint == "rtde":
            await RTDESession(self, stream).run()
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

    async def _serve_script(self, endpoint: str, stream: Stream) -> None:
        buffer = ""
        while True:
            buffer += (await stream.read_some()).decode("ascii", "replace")
            while (program := _take_program(buffer)) is not None:
                text, buffer = program
                self.requests[endpoint] += 1
                self.record(endpoint, text.encode("ascii", "replace"))
                self.run_script(text)
            if len(buffer) > MAX_PROGRAM_TEXT:
                self.log.warning("%s: %d characters without a program end; discarded", endpoint, len(buffer))
                buffer = ""

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
            program = parse(text)
        except CompileError as exc:
            self._refuse(f"compile error: {exc}")
            return
        undefined = undefined_calls(program.calls, [*program.functions, *program.threads], self.library)
        if undefined:
            self._refuse(f"compile error: {program.name}: undefined function(s) {', '.join(undefined)}")
            return
        if self.series == "e-series" and not self.remote_control:
            self._refuse(f"{program.name}: the robot is in local control")
            return
        reason = self.controller.why_not_runnable(now)
        if reason:
            self._refuse(f"{program.name}: {reason}")
            return
        self.controller.start(program, now, self.library)
        self.programs_run.append(program.name)
        self.log.info("program %s started at t=%.3f", program.name, now)

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
        # A .urp is not simulated: it runs as a program that waits for urp_duration_s.
        program = parse(f"def urp():\n  sleep({self.urp_duration_s!r})\nend\n")
        name = arm.loaded_program.rsplit("/", 1)[-1]
        arm.start(dataclasses.replace(program, name=name), now, self.library)
        return "Starting program"

    # -- RTDE ------------------------------------------------------------------------------
    def rtde_inputs_in_use(self, session: RTDESession, names: tuple[str, ...]) -> list[str]:
        return [n for n in names if self._rtde_claims.get(n, session) is not session]

    def claim_rtde_inputs(self, session: RTDESession, names: tuple[str, ...]) -> None:
        for name in names:
            self._rtde_claims[name] = session

    def release_rtde_inputs(self, session: RTDESession) -> None:
        for name in [n for n, owner in self._rtde_claims.items() if owner is session]:
            del self._rtde_claims[name]

    def apply_rtde_inputs(self, values: Mapping[str, Any]) -> None:
        """An input package: registers, masked digital outputs, the speed slider, analog outputs."""
        registers = self.controller.registers
        outputs = self.controller.digital_out
        for name, value in values.items():
            if name.startswith("input_int_register_"):
                registers.input_int[int(name.rsplit("_", 1)[1])] = int(value)  # type: ignore[arg-type]
            elif name.startswith("input_double_register_"):
                registers.input_double[int(name.rsplit("_", 1)[1])] = float(value)  # type: ignore[arg-type]
            elif name.startswith("input_bit_register_"):
                registers.input_bits[int(name.rsplit("_", 1)[1])] = bool(value)
            elif name in ("input_bit_registers0_to_31", "input_bit_registers32_to_63"):
                base = 0 if name.endswith("0_to_31") else 32
                for i in range(32):
                    registers.input_bits[base + i] = bool(int(value) >> i & 1)  # type: ignore[arg-type]
            elif name.startswith("standard_analog_output_") and not name.endswith(("mask", "type")):
                self.analog_out[name] = float(value)  # type: ignore[arg-type]
        if values.get("speed_slider_mask", 0):
            self.speed_slider = min(
                1.0, max(0.0, float(values.get("speed_slider_fraction", self.speed_slider)))
            )  # type: ignore[arg-type]
        for prefix, offset in (("standard", 0), ("configurable", 8), ("tool", 16)):
            mask = int(values.get(f"{prefix}_digital_output_mask", 0))  # type: ignore[arg-type]
            bits = int(values.get(f"{prefix}_digital_output", 0))  # type: ignore[arg-type]
            for i in range(8):
                if mask >> i & 1:
                    outputs[offset + i] = bool(bits >> i & 1)


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


def _positive(cfg: Mapping[str, Any], key: str, default: float, *, zero: bool = False) -> float:
    try:
        value = float(cfg.get(key, default))
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a number, got {cfg.get(key)!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{key}: must be {'>= 0' if zero else '> 0'}, got {value}")
    return value
