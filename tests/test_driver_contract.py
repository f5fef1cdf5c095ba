"""The driver contract suite (drivers.testing.contract) run on the built-in drivers.

Each case names the driver, the simulator it is tested against, a long action to abort, and how
to tell its stop command and its motion commands apart in the simulator's wire log.
"""

from __future__ import annotations

import functools

import pytest
from bluesky.protocols import Movable, Readable, Stoppable, Triggerable

import drivers.cavro
import drivers.ika
import drivers.newera
import drivers.ocean
import drivers.ur
from drivers.cavro import codec as cavro_codec
from drivers.ika import codec as ika_codec
from drivers.newera import codec as newera_codec
from drivers.ocean import codec as ocean_codec
from drivers.ocean.codec import MessageType
from drivers.testing.contract import DriverCase, DriverContract
from simulators.testing import run_simulator
from simulators.ur import DEFAULT_POSITIONS


def single(endpoint: str):
    return lambda sim: sim.url(endpoint)


def ne1000_command(record) -> str:
    try:
        data = newera_codec.unframe_safe(record.data) if record.data[:1] == b"\x02" else record.data
        return newera_codec.parse_request(data).command
    except (newera_codec.CodecError, ValueError):
        return ""


def cavro_commands(record) -> str:
    try:
        return cavro_codec.decode_request(record.data).commands
    except cavro_codec.FrameError:
        return ""


def cavro_moves(record) -> bool:
    commands = cavro_commands(record)
    # An executed string with a plunger, valve or initialisation command moves something.
    return commands.endswith("R") and any(c in commands for c in "APDIOBEZYW")


def ur_moves(record) -> bool:
    if record.endpoint == "script":
        return True  # every program we send is a motion program
    return record.endpoint == "gripper" and b"GTO 1" in record.data.upper()


def ocean_type(record) -> int:
    try:
        return ocean_codec.decode_header(record.data).message_type
    except ocean_codec.FrameError:
        return -1


def ika_command(record) -> str:
    try:
        return ika_codec.parse_request(record.data).command
    except ika_codec.CodecError:
        return ""


def one_scan(device):
    # One scan of 50 ms instead of the long action's 50 of 300 ms (which also saturate the detector).
    device.averages.put(1)
    device.integration_time.put(50_000)
    device.mode.put("dark")  # a sample needs a dark and a reference first
    return device, None


CASES = [
    DriverCase(
        name="ne1000",
        make_device=drivers.newera.make_device,
        package="drivers.newera",
        options={"pumps": {"a": {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000,
                                 "max_rate_ul_min": 5000, "rate_ul_min": 1000}}},
        simulator=functools.partial(run_simulator, "ne1000"),
        address=single("pump"),
        long_action=lambda device: (device.a, 5000.0),  # five minutes of pumping
        short_action=lambda device: (device.a, 10.0),  # 0.6 s
        is_stop=lambda r: ne1000_command(r) == "STP",
        is_motion=lambda r: ne1000_command(r) in ("RUN", "PUR"),
        faces=[("a", (Movable, Readable, Stoppable))],
    ),
    DriverCase(
        name="cavro",
        make_device=drivers.cavro.make_device,
        package="drivers.cavro",
        options={"syringe_volume_ul": 1000, "ports": {"water": 1, "outlet": 2, "waste": 3}, "flow_ul_s": 20},
        simulator=functools.partial(run_simulator, "cavro", config={
            **{"address": 1, "syringe_volume_ul": 1000, "valve_ports": 6, "init_output_port": 3},
            "ports": {1: "stock:water", 2: "station:dispense", 3: "station:waste"},
            "init_duration_s": 0.05, "valve_switch_s": 0.01}),
        address=single("pump"),
        long_action=lambda device: (device, 900.0),  # 45 s at 20 µL/s
        short_action=lambda device: (device, 20.0),  # 1 s at 20 µL/s, after initialising
        is_stop=lambda r: cavro_commands(r).startswith("T"),
        is_motion=cavro_moves,
        faces=[("", (Movable, Readable, Stoppable))],
    ),
    DriverCase(
        name="ur",
        make_device=drivers.ur.make_device,
        package="drivers.ur",
        options={"positions": DEFAULT_POSITIONS, "reply_timeout": 0.5},
        simulator=functools.partial(run_simulator, "ur", config={
            "initial_mode": "RUNNING", "gripper": {"active": True, "activation_s": 0.05}}),
        address=lambda sim: {name: sim.url(name) for name in ("dashboard", "script", "gripper")},
        long_action=lambda device: (device.transfer, ("feeder", "waste")),
        short_action=lambda device: (device, "home"),
        is_stop=lambda r: r.endpoint == "dashboard" and r.data.strip().lower() == b"stop",
        is_motion=ur_moves,
        faces=[("", (Movable, Readable, Stoppable)), ("gripper", (Movable, Readable, Stoppable)),
               ("transfer", (Movable, Stoppable))],
    ),
    DriverCase(  # the same arm, its state followed over RTDE instead of polled
        name="ur-rtde",
        make_device=drivers.ur.make_device,
        package="drivers.ur",
        options={"positions": DEFAULT_POSITIONS, "reply_timeout": 0.5},
        simulator=functools.partial(run_simulator, "ur", config={
            "initial_mode": "RUNNING", "gripper": {"active": True, "activation_s": 0.05}}),
        address=lambda sim: {name: sim.url(name) for name in ("dashboard", "script", "gripper", "rtde")},
        long_action=lambda device: (device.transfer, ("feeder", "waste")),
        short_action=lambda device: (device, "home"),
        is_stop=lambda r: r.endpoint == "dashboard" and r.data.strip().lower() == b"stop",
        is_motion=ur_moves,
        faces=[("", (Movable, Readable, Stoppable)), ("gripper", (Movable, Readable, Stoppable)),
               ("transfer", (Movable, Stoppable))],
    ),
    DriverCase(
        name="ocean-hdx",
        make_device=drivers.ocean.make_device,
        package="drivers.ocean",
        options={"integration_time_us": 300_000, "averages": 50},  # 15 s of scans
        simulator=functools.partial(run_simulator, "ocean-hdx"),
        address=single("obp"),
        long_action=lambda device: (device, None),
        short_action=one_scan,
        is_stop=lambda r: ocean_type(r) == MessageType.ABORT_ACQUISITION,
        is_motion=lambda r: ocean_type(r) == MessageType.GET_SPECTRUM_NOW_HDX,
        faces=[("", (Triggerable, Readable, Stoppable))],
    ),
    DriverCase(
        name="ika-rct",
        make_device=drivers.ika.make_device,
        package="drivers.ika",
        options={"max_temperature_c": 200},
        simulator=functools.partial(run_simulator, "ika-rct"),
        address=single("serial"),
        long_action=lambda device: (device.temperature, 150.0),  # minutes of heating at real speed
        short_action=lambda device: (device.stirrer, 200.0),
        is_stop=lambda r: ika_command(r) in ("STOP_1", "STOP_4"),
        is_motion=lambda r: ika_command(r) in ("START_1", "START_4"),
        faces=[("", (Triggerable, Readable, Stoppable)), ("temperature", (Movable, Readable, Stoppable)),
               ("stirrer", (Movable, Readable, Stoppable))],
        # The stirrer's stop stops the motor, not the heater: its own long action is a spin-up.
        child_actions={"stirrer": lambda device: (device.stirrer, 1500.0)},  # 4 s at 400 rpm/s
    ),
]  # fmt: skip


class TestBuiltInDrivers(DriverContract):
    @pytest.fixture(params=CASES, ids=[case.name for case in CASES])
    def case(self, request: pytest.FixtureRequest) -> DriverCase:
        return request.param
