"""The simulated controller's RTDE interface (TCP 30004): recipes, start/pause, data packages.

One ``RTDESession`` per connection, as on the controller: the client negotiates the protocol
version, asks for the controller version, sets up one output recipe (fields and frequency) and
any number of input recipes, then starts. From then on the session sends a data package every
``floor(controller rate / frequency)`` control steps of wall-clock time (the controller skips
packages it cannot send in time, and so do we), each computed from the same controller state the
dashboard and the script ports see, and applies each input package it receives to the registers
and outputs at once.

Input fields are owned by the connection whose recipe names them: another connection asking for
one gets ``IN_USE`` (so two clients cannot both drive ``input_int_register_0``); the claim ends
with the connection. Link faults do not apply here: at hundreds of packages a second they would
consume every fault schedule meant for the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from drivers.ur import rtde
from drivers.ur.rtde import MessageLevel, PackageType, Recipe, RTDEError
from simulators.stream import Stream
from simulators.ur.kinematics import elbow, jacobian

if TYPE_CHECKING:
    from simulators.ur import URSimulator

log = logging.getLogger(__name__)

SOURCE = "RTDE"
MAX_INPUT_RECIPES = 255


class Snapshot:
    """The controller's state at one moment, computed once per data package, each part on demand."""

    def __init__(self, sim: URSimulator, now: float):
        self.sim = sim
        self.now = now
        controller = sim.controller
        self.q, self.qd = controller.state(now)
        self.mode = controller.robot_mode(now)
        self.safety = controller.safety(now)
        self.runtime = controller.runtime_state(now)
        self._tcp: tuple[float, ...] | None = None
        self._speed: tuple[float, ...] | None = None

    @property
    def tcp(self) -> tuple[float, ...]:
        if self._tcp is None:
            self._tcp = self.sim.controller.tcp(self.q)
        return self._tcp

    @property
    def tcp_speed(self) -> tuple[float, ...]:
        if self._speed is None:
            controller = self.sim.controller
            speed = jacobian(self.q, controller.arm, controller.tcp_offset) @ self.qd
            self._speed = tuple(float(x) for x in speed)
        return self._speed


def _bits(values: list[bool], start: int) -> int:
    return sum(1 << i for i in range(32) if values[start + i])


def output_getters(sim: URSimulator) -> dict[str, Callable[[Snapshot], Any]]:
    """Output field name -> how to read it from a snapshot. Fields not listed read as zero."""
    c = sim.controller
    r = c.registers
    zero6 = (0.0,) * 6
    powered = ("POWER_ON", "IDLE", "RUNNING")

    def joint_mode(s: Snapshot) -> tuple[int, ...]:
        mode = {"RUNNING": rtde.JointMode.RUNNING, "IDLE": rtde.JointMode.IDLE,
                "POWER_ON": rtde.JointMode.BOOTING}.get(s.mode.value, rtde.JointMode.POWER_OFF)  # fmt: skip
        return (int(mode),) * 6

    def robot_status(s: Snapshot) -> int:
        bits = rtde.ROBOT_POWER_ON if s.mode.value in powered else 0
        return bits | (rtde.ROBOT_PROGRAM_RUNNING if s.runtime == rtde.RuntimeState.PLAYING else 0)

    def digital_outputs(s: Snapshot) -> int:
        return sum(1 << n for n, on in c.digital_out.items() if on)

    getters: dict[str, Callable[[Snapshot], Any]] = {
        "timestamp": lambda s: s.now,
        "target_q": lambda s: s.q,
        "actual_q": lambda s: s.q,
        "target_qd": lambda s: s.qd,
        "actual_qd": lambda s: s.qd,
        "actual_TCP_pose": lambda s: s.tcp,
        "target_TCP_pose": lambda s: s.tcp,
        "actual_TCP_speed": lambda s: s.tcp_speed,
        "target_TCP_speed": lambda s: s.tcp_speed,
        "joint_temperatures": lambda s: (32.0,) * 6,
        "actual_execution_time": lambda s: 0.1,
        "robot_mode": lambda s: rtde.ROBOT_MODES[s.mode.value],
        "joint_mode": joint_mode,
        "safety_mode": lambda s: rtde.SAFETY_MODES[s.safety.value],
        "safety_status": lambda s: rtde.SAFETY_MODES[s.safety.value],
        "speed_scaling": lambda s: (
            1.0 if s.runtime == rtde.RuntimeState.PLAYING and s.safety.allows_motion else 0.0
        ),
        "target_speed_fraction": lambda s: sim.speed_slider,
        "actual_main_voltage": lambda s: 48.0,
        "actual_robot_voltage": lambda s: 48.0 if s.mode.value in powered else 0.0,
        "actual_joint_voltage": lambda s: (48.0,) * 6 if s.mode.value in powered else zero6,
        "actual_digital_output_bits": digital_outputs,
        "runtime_state": lambda s: int(s.runtime),
        "elbow_position": lambda s: elbow(s.q, c.arm),
        "robot_status_bits": robot_status,
        "safety_status_bits": lambda s: rtde.safety_status_bits(s.safety.value),
        "tool_output_voltage": lambda s: 0,
        "tool_temperature": lambda s: 30.0,
        "tool_mode": lambda s: 253 if s.mode.value in powered else 239,
        "output_bit_registers0_to_31": lambda s: _bits(r.output_bits, 0),
        "output_bit_registers32_to_63": lambda s: _bits(r.output_bits, 32),
        "input_bit_registers0_to_31": lambda s: _bits(r.input_bits, 0),
        "input_bit_registers32_to_63": lambda s: _bits(r.input_bits, 32),
        "payload": lambda s: c.payload[0],
        "payload_cog": lambda s: c.payload[1],
        "payload_inertia": lambda s: c.payload_inertia,
        "tcp_offset": lambda s: c.tcp_offset,
    }
    for n in range(48):
        getters[f"output_int_register_{n}"] = lambda s, n=n: r.output_int[n]
        getters[f"output_double_register_{n}"] = lambda s, n=n: r.output_double[n]
        getters[f"input_int_register_{n}"] = lambda s, n=n: r.input_int[n]
        getters[f"input_double_register_{n}"] = lambda s, n=n: r.input_double[n]
    for n in range(64, 128):
        getters[f"output_bit_register_{n}"] = lambda s, n=n: r.output_bits[n]
        getters[f"input_bit_register_{n}"] = lambda s, n=n: r.input_bits[n]
    return getters


_ZEROS: dict[str, Any] = {
    "BOOL": False, "UINT8": 0, "UINT32": 0, "UINT64": 0, "INT32": 0, "DOUBLE": 0.0,
    "VECTOR3D": (0.0,) * 3, "VECTOR6D": (0.0,) * 6, "VECTOR6INT32": (0,) * 6, "VECTOR6UINT32": (0,) * 6,
}  # fmt: skip


class RTDESession:
    def __init__(self, sim: URSimulator, stream: Stream):
        self.sim = sim
        self.stream = stream
        self.protocol = 1
        self.outputs: Recipe | None = None
        self.frequency = 0.0
        self.inputs: dict[int, Recipe] = {}
        self.started = False
        self._sender: asyncio.Task[None] | None = None
        self._getters = sim.rtde_getters

    async def run(self) -> None:
        try:
            while True:
                header = await self.stream.read_exactly(rtde.HEADER.size)
                try:
                    size, kind = rtde.split_header(header)
                except RTDEError as exc:
                    log.warning("%s: %s; closing the connection", self.stream.label, exc)
                    return
                payload = await self.stream.read_exactly(size - rtde.HEADER.size)
                self.sim.record("rtde", header + payload)
                await self.handle(kind, payload)
        finally:
            await self.pause()
            self.sim.release_rtde_inputs(self)

    async def handle(self, kind: int, payload: bytes) -> None:
        if kind == PackageType.REQUEST_PROTOCOL_VERSION:
            accepted = len(payload) == 2 and int.from_bytes(payload, "big") in (1, 2)
            if accepted:
                self.protocol = int.from_bytes(payload, "big")
            await self.send(rtde.reply_success(PackageType.REQUEST_PROTOCOL_VERSION, accepted))
        elif kind == PackageType.GET_URCONTROL_VERSION:
            await self.send(rtde.reply_controller_version(*self.sim.controller_version))
        elif kind == PackageType.CONTROL_PACKAGE_SETUP_OUTPUTS:
            await self.setup_outputs(payload)
        elif kind == PackageType.CONTROL_PACKAGE_SETUP_INPUTS:
            await self.setup_inputs(payload)
        elif kind == PackageType.CONTROL_PACKAGE_START:
            await self.send(rtde.reply_success(PackageType.CONTROL_PACKAGE_START, self.start()))
        elif kind == PackageType.CONTROL_PACKAGE_PAUSE:
            await self.pause()
            await self.send(rtde.reply_success(PackageType.CONTROL_PACKAGE_PAUSE, True))
        elif kind == PackageType.DATA_PACKAGE:
            await self.receive_inputs(payload)
        elif kind == PackageType.TEXT_MESSAGE:
            with contextlib.suppress(RTDEError):
                message, source, level = rtde.parse_text_message(payload, self.protocol)
                self.sim.log.info("rtde message from %s (%s): %s", source or "client", level.name, message)
        else:
            await self.warn(f"unknown package type {kind}")

    async def send(self, data: bytes) -> None:
        await self.stream.send(data, faultable=False)

    async def warn(self, text: str) -> None:
        log.warning("%s: %s", self.stream.label, text)
        if self.started:  # before START a client reads replies only; a message would be taken for one
            await self.send(rtde.text_message(text, SOURCE, MessageLevel.WARNING, protocol=self.protocol))

    # -- setup -----------------------------------------------------------------------------
    async def setup_outputs(self, payload: bytes) -> None:
        kind = PackageType.CONTROL_PACKAGE_SETUP_OUTPUTS
        try:
            frequency, names = rtde.parse_output_setup(payload, self.protocol)
        except RTDEError as exc:
            log.warning("%s: %s", self.stream.label, exc)
            await self.send(rtde.reply_setup(kind, Recipe(0, (), ()), protocol=self.protocol))
            return
        recipe = rtde.recipe_for(1, names, self.sim.rtde_outputs)
        if self.started or not rtde.valid_frequency(frequency, self.sim.control_rate):
            recipe = Recipe(0, recipe.names, recipe.types)
        else:
            self.outputs, self.frequency = (recipe, frequency) if recipe.valid else (None, 0.0)
        await self.send(rtde.reply_setup(kind, recipe, protocol=self.protocol))

    async def setup_inputs(self, payload: bytes) -> None:
        kind = PackageType.CONTROL_PACKAGE_SETUP_INPUTS
        try:
            names = rtde.parse_input_setup(payload)
        except RTDEError:
            names = ()
        taken = self.sim.rtde_inputs_in_use(self, names)
        recipe = rtde.recipe_for(len(self.inputs) + 1, names, rtde.INPUTS, taken)
        if self.started or len(self.inputs) >= MAX_INPUT_RECIPES:
            recipe = Recipe(0, recipe.names, recipe.types)
        if recipe.valid:
            self.inputs[recipe.id] = recipe
            self.sim.claim_rtde_inputs(self, names)
        await self.send(rtde.reply_setup(kind, recipe, protocol=self.protocol))

    # -- synchronisation -------------------------------------------------------------------
    def start(self) -> bool:
        if self.outputs is None and not self.inputs:
            return False
        if not self.started:
            self.started = True
            if self.outputs is not None:
                self._sender = asyncio.get_running_loop().create_task(self.stream_outputs(self.outputs))
        return True

    async def pause(self) -> None:
        self.started = False
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def stream_outputs(self, recipe: Recipe) -> None:
        loop = asyncio.get_running_loop()
        rate = self.sim.control_rate
        interval = max(1, math.floor(rate / self.frequency)) / rate
        with_id = self.protocol >= 2
        deadline = loop.time()
        while True:
            package = rtde.package(
                PackageType.DATA_PACKAGE, recipe.pack(self.values(recipe), with_id=with_id)
            )
            await self.send(package)
            deadline += interval
            late = loop.time() - deadline
            if late > 0:  # skip the packages there was no time for, as the controller does
                deadline += math.ceil(late / interval) * interval
            await asyncio.sleep(deadline - loop.time())

    def values(self, recipe: Recipe) -> list[Any]:
        now = self.sim.now()
        self.sim.settle(now)
        snapshot = Snapshot(self.sim, now)
        values: list[Any] = []
        for name, kind in zip(recipe.names, recipe.types, strict=True):
            getter = self._getters.get(name)
            values.append(_ZEROS[kind] if getter is None else getter(snapshot))
        return values

    async def receive_inputs(self, payload: bytes) -> None:
        if not payload:
            await self.warn("data package without a recipe id")
            return
        recipe_id, body = (payload[0], payload[1:]) if self.protocol >= 2 else (1, payload)
        recipe = self.inputs.get(recipe_id)
        if recipe is None:
            await self.warn(f"data package for unknown input recipe {recipe_id}")
            return
        if not self.started:
            await self.warn("input package before START: ignored")
            return
        try:
            values = recipe.unpack(body)
        except RTDEError as exc:
            await self.warn(str(exc))
            return
        now = self.sim.now()
        self.sim.settle(now)  # what was due before these inputs ran with the old values
        self.sim.apply_rtde_inputs(values)
