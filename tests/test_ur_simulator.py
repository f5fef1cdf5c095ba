"""The UR simulator through raw bytes: power, programs in time, faults, the gripper and the world.

Time is a VirtualClock, advanced by the tests, so every duration below is exact.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from drivers.transport import Transport
from drivers.ur import codec
from drivers.ur.urscript import MoveJ, build_program, motion_time
from simulators.base import ConfigError, simulator_class
from simulators.clock import VirtualClock
from simulators.testing import BackgroundLab, run_simulator
from simulators.ur import DEFAULT_POSITIONS

HOME = tuple(DEFAULT_POSITIONS["home"])
FEEDER = tuple(DEFAULT_POSITIONS["feeder"])


@contextmanager
def simulator(**options) -> Iterator[BackgroundLab]:
    """The simulator, shut down only after its sessions have seen their clients leave."""
    with run_simulator("ur", **options) as sim:
        yield sim
        sim.wait_until_clients_leave()


@contextmanager
def dashboard(sim) -> Iterator[Transport]:
    """A dashboard connection with its greeting read, so the greeting is never taken for a reply."""
    with Transport(sim.url("dashboard")) as transport:
        assert transport.read_until(b"\n", timeout=1) == b"Connected: Universal Robots Dashboard Server\n"
        yield transport


def ask(transport: Transport, line: str) -> str:
    return (
        transport.exchange(line.encode() + b"\n", lambda t: t.read_until(b"\n", timeout=1)).decode().strip()
    )


def ask_gripper(transport: Transport, line: str) -> bytes:
    if line.startswith("SET"):
        return transport.exchange(line.encode() + b"\n", lambda t: t.read_exactly(3, timeout=1))
    return transport.exchange(line.encode() + b"\n", lambda t: t.read_until(b"\n", timeout=1))


def send_program(sim, text: str) -> None:
    """Send a program and wait until the simulator has taken it (polling, no sleeping on a guess)."""
    ur = sim.lab.simulators["ur"]
    before = sim.call(lambda: ur.requests["script"])
    with Transport(sim.url("script")) as script:
        script.write(text.encode())
        deadline = time.monotonic() + 2
        while sim.call(lambda: ur.requests["script"]) == before:
            assert time.monotonic() < deadline, "the simulator never received the program"
            time.sleep(0.001)


def movej(target, v=1.0, a=1.4, name="p") -> str:
    return build_program(name, [MoveJ(tuple(target), a, v)])


@pytest.fixture
def clock():
    return VirtualClock()


def test_greeting_power_and_brakes(clock):
    with simulator(clock=clock) as sim, dashboard(sim) as dash:
        assert ask(dash, "robotmode") == "Robotmode: POWER_OFF"
        assert ask(dash, "brake release") == "Brake releasing"  # an unpowered arm ignores it
        assert ask(dash, "robotmode") == "Robotmode: POWER_OFF"
        assert ask(dash, "power on") == "Powering on"
        assert ask(dash, "robotmode") == "Robotmode: POWER_ON"
        clock.advance(1.0)
        assert ask(dash, "robotmode") == "Robotmode: IDLE"
        assert ask(dash, "BRAKE RELEASE") == "Brake releasing"  # commands are case-insensitive
        clock.advance(1.9)
        assert ask(dash, "robotmode") == "Robotmode: IDLE"
        clock.advance(0.1)
        assert ask(dash, "robotmode") == "Robotmode: RUNNING"
        assert ask(dash, "safetystatus") == "Safetystatus: NORMAL"
        assert ask(dash, "safetymode") == "Safetymode: NORMAL"
        assert ask(dash, "is in remote control") == "true"
        assert ask(dash, "running") == "Program running: false"
        assert ask(dash, "PolyscopeVersion").startswith("URSoftware 5.")
        assert ask(dash, "get loaded program") == "No program loaded"
        assert ask(dash, "load /programs/x.urp") == "File not found: /programs/x.urp"
        assert ask(dash, "dance") == "Could not understand: 'dance'"
        assert ask(dash, "power off") == "Powering off"
        assert ask(dash, "robotmode") == "Robotmode: POWER_OFF"
        assert ask(dash, "quit") == "Disconnected"


def test_a_program_runs_for_its_motion_time_and_moves_the_arm(clock):
    with simulator(clock=clock, config={"initial_mode": "RUNNING"}) as sim, dashboard(sim) as dash:
        ur = sim.lab.simulators["ur"]
        duration = motion_time(HOME, MoveJ(FEEDER, 1.4, 0.5))
        send_program(sim, movej(FEEDER, v=0.5, name="to_feeder"))
        assert ask(dash, "running") == "Program running: true"
        assert ask(dash, "programState") == "PLAYING to_feeder"
        clock.advance(duration / 2)
        assert sim.call(ur.position_name) is None  # in between
        clock.advance(duration / 2 + 1e-6)
        assert ask(dash, "running") == "Program running: false"
        assert ask(dash, "programState") == "STOPPED to_feeder"
        assert sim.call(ur.position_name) == "feeder"
        assert sim.call(lambda: ur.station_of_arm(clock.now())) == "feeder"


def test_programs_are_refused_unless_running_normal_and_compilable(clock):
    with simulator(clock=clock) as sim, dashboard(sim) as dash:
        ur = sim.lab.simulators["ur"]
        send_program(sim, movej(FEEDER))
        assert ask(dash, "running") == "Program running: false"
        assert "robot mode is POWER_OFF" in sim.call(lambda: ur.programs_refused[-1])
        ask(dash, "power on")
        clock.advance(1)
        ask(dash, "brake release")
        clock.advance(2)
        send_program(sim, "def p():\n  dance(1)\nend\n")
        assert "compile error: p: undefined function(s) dance" in sim.call(lambda: ur.programs_refused[-1])
        send_program(sim, "def p():\n  movej([0, 0, 0, 0, 0, 0], a=1\nend\n")
        assert "compile error" in sim.call(lambda: ur.programs_refused[-1])
        # It compiles, but the pose is out of reach: a runtime error ends the program, the arm stays.
        send_program(sim, "def q():\n  movel(p[2.0, 0, 0, 0, 0, 0], a=1, v=0.1)\nend\n")
        assert ask(dash, "running") == "Program running: false"
        assert "no joint solution" in sim.call(lambda: ur.controller.program_ends[-1])
        assert sim.call(ur.position_name) == "home"


def test_protective_stop_halts_midway_and_the_5s_unlock_rule(clock):
    with simulator(clock=clock, faults="protective-stop@1", config={"initial_mode": "RUNNING"}) as sim:
        ur = sim.lab.simulators["ur"]
        with dashboard(sim) as dash:
            duration = motion_time(HOME, MoveJ(FEEDER, 1.4, 1.0))
            send_program(sim, movej(FEEDER))
            assert ask(dash, "unlock protective stop") == "Protective stop releasing"  # nothing to unlock yet
            clock.advance(duration / 2)
            assert ask(dash, "safetystatus") == "Safetystatus: PROTECTIVE_STOP"
            assert ask(dash, "running") == "Program running: false"
            clock.advance(duration)
            assert sim.call(ur.position_name) is None  # the arm stayed where it stopped
            assert ask(dash, "unlock protective stop") == codec.UNLOCK_TOO_SOON
            send_program(sim, movej(HOME, name="refused"))
            assert "PROTECTIVE_STOP" in sim.call(lambda: ur.programs_refused[-1])
            clock.advance(5.0 - duration)
            assert ask(dash, "unlock protective stop") == "Protective stop releasing"
            assert ask(dash, "safetystatus") == "Safetystatus: NORMAL"
            send_program(sim, movej(FEEDER, name="again"))  # the fault fired once: this one completes
            clock.advance(10)
            assert sim.call(ur.position_name) == "feeder"


def test_local_control_refuses_remote_commands(clock):
    config = {"remote_control": False, "initial_mode": "RUNNING"}
    with simulator(clock=clock, config=config) as sim, dashboard(sim) as dash:
        assert ask(dash, "is in remote control") == "false"
        for command in ("power on", "brake release", "unlock protective stop", "play", "stop", "load a.urp"):
            assert ask(dash, command) == codec.NOT_IN_REMOTE_CONTROL
        assert ask(dash, "robotmode") == "Robotmode: RUNNING"  # queries still work
        send_program(sim, movej(FEEDER))
        assert "local control" in sim.call(lambda: sim.lab.simulators["ur"].programs_refused[-1])


def test_cb3_lacks_the_e_series_commands(clock):
    with simulator(clock=clock, config={"series": "cb3"}) as sim, dashboard(sim) as dash:
        assert ask(dash, "safetystatus") == "Could not understand: 'safetystatus'"
        assert ask(dash, "is in remote control") == "Could not understand: 'is in remote control'"
        assert ask(dash, "safetymode") == "Safetymode: NORMAL"
        assert ask(dash, "PolyscopeVersion").startswith("URSoftware 3.")


def test_gripper_activation_grip_and_world(clock):
    config = {"initial_mode": "RUNNING"}
    with simulator(clock=clock, config=config) as sim, Transport(sim.url("gripper")) as grip:
        world = sim.lab.world
        assert ask_gripper(grip, "GET STA") == b"STA 0\n"
        assert ask_gripper(grip, "SET POS 255 GTO 1") == b"ack"
        assert ask_gripper(grip, "GET FLT") == b"FLT 7\n"  # must activate first
        assert ask_gripper(grip, "SET ACT 1") == b"ack"
        assert ask_gripper(grip, "GET STA") == b"STA 1\n"
        clock.advance(1.0)
        assert ask_gripper(grip, "GET STA") == b"STA 3\n"
        assert ask_gripper(grip, "GET FLT") == b"FLT 0\n"
        # Closing in the air: nothing to catch, the fingers run to the end.
        assert ask_gripper(grip, "SET POS 255 SPE 255 FOR 100 GTO 1") == b"ack"
        assert ask_gripper(grip, "GET PRE") == b"PRE 255\n"
        assert ask_gripper(grip, "GET OBJ") == b"OBJ 0\n"
        clock.advance(1.0)
        assert ask_gripper(grip, "GET OBJ") == b"OBJ 3\n"
        assert ask_gripper(grip, "GET POS") == b"POS 255\n"
        assert ask_gripper(grip, "SET POS 0") == b"ack"  # GTO is still 1: a new position moves at once
        clock.advance(1.0)
        # At the feeder: the close stops on the vial and lifts it; the feeder presents a fresh one.
        feeder_vial = sim.call(lambda: world.vessel_at("feeder"))
        send_program(sim, movej(FEEDER, v=3))
        clock.advance(5)
        assert ask_gripper(grip, "SET POS 255 GTO 1") == b"ack"
        clock.advance(1.0)
        assert ask_gripper(grip, "GET OBJ") == b"OBJ 2\n"
        assert ask_gripper(grip, "GET POS") == b"POS 130\n"
        ur = sim.lab.simulators["ur"]
        assert sim.call(lambda: ur.gripper.held) is feeder_vial
        assert sim.call(lambda: world.vessel_at("feeder")) not in (None, feeder_vial)
        # Carried to the spectrometer and set down there.
        send_program(sim, movej(DEFAULT_POSITIONS["spectrometer"], v=3))
        clock.advance(5)
        assert ask_gripper(grip, "SET POS 0 GTO 1") == b"ack"
        clock.advance(1.0)
        assert sim.call(lambda: world.vessel_at("spectrometer")) is feeder_vial
        grip.write(b"HELLO\n")  # not a request: no reply, and the next request is answered normally
        assert ask_gripper(grip, "GET STA") == b"STA 3\n"


def test_miss_fault_closes_past_the_vessel(clock):
    config = {"initial_mode": "RUNNING", "initial_position": "feeder", "gripper": {"active": True}}
    with (
        simulator(clock=clock, faults="miss@1", config=config) as sim,
        Transport(sim.url("gripper")) as grip,
    ):
        vial = sim.call(lambda: sim.lab.world.vessel_at("feeder"))
        assert ask_gripper(grip, "SET POS 255 GTO 1") == b"ack"
        clock.advance(1.0)
        assert ask_gripper(grip, "GET OBJ") == b"OBJ 3\n"
        assert sim.call(lambda: sim.lab.world.vessel_at("feeder")) is vial  # still there
        ask_gripper(grip, "SET POS 0 GTO 1")
        clock.advance(1.0)
        ask_gripper(grip, "SET POS 255 GTO 1")
        clock.advance(1.0)
        assert ask_gripper(grip, "GET OBJ") == b"OBJ 2\n"  # the second close catches it


def test_dropping_a_vessel_in_the_air_loses_it(clock):
    config = {"initial_mode": "RUNNING", "initial_position": "feeder", "gripper": {"active": True}}
    with simulator(clock=clock, config=config) as sim, Transport(sim.url("gripper")) as grip:
        ask_gripper(grip, "SET POS 255 GTO 1")
        clock.advance(1)
        send_program(sim, movej(HOME, v=3))
        clock.advance(5)
        ask_gripper(grip, "SET POS 0 GTO 1")
        clock.advance(1)
        sim.call(sim.lab.world.settle)  # observers settle the world first; the fingers opened 1 s ago
        assert len(sim.call(lambda: sim.lab.simulators["ur"].gripper.dropped)) == 1


def test_config_errors_name_the_field():
    cls = simulator_class("ur")
    assert set(cls.default_config()["positions"]) >= {"home", "feeder", "dispense", "spectrometer", "waste"}
    assert set(cls.supported_faults()) >= {"protective-stop", "miss", "drop", "garble", "partial", "silent"}
    cases = [
        ({"series": "cb2"}, "series: must be 'e-series' or 'cb3'"),
        ({"colour": 1}, r"unknown key\(s\) colour"),
        ({"positions": {"home": [0, 0]}}, "positions.home: expected a list of 6"),
        ({"stations": {"nowhere": "feeder"}}, "stations.nowhere: not a position"),
        ({"stations": {"feeder": "moon"}}, "stations.feeder: no world station 'moon'"),
        ({"initial_mode": "ON"}, "initial_mode: must be POWER_OFF, IDLE or RUNNING"),
        ({"power_on_s": -1}, "power_on_s: must be >= 0"),
        ({"gripper": {"colour": 1}}, r"gripper: unknown key\(s\)"),
    ]
    for config, message in cases:
        with pytest.raises(ConfigError, match=message):
            run_simulator("ur", config={**cls.default_config(), **config})  # fails while building
