"""RTDE and URScript on the UR simulator, byte by byte: the codec, the server, the interpreter, the driver.

The server is driven by a raw client written from the RTDE guide (our codec), so each check names
the package it is about; ``tests/test_ur_rtde.py`` runs ur_rtde itself. Programs go in on the
script ports as text, as any client sends them.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from drivers.errors import ConnectionLost
from drivers.transport import Transport
from drivers.ur import MotionStopped, ProtectiveStop, SafetyStatus, URArm, rtde
from drivers.ur.rtde import MessageLevel, PackageType, Recipe, RTDEError
from simulators.clock import ScaledClock, VirtualClock
from simulators.testing import BackgroundLab, run_simulator
from simulators.ur import DEFAULT_POSITIONS
from simulators.ur.kinematics import ARMS, forward, inverse, pose_inv, pose_trans
from simulators.ur.script.syntax import CompileError, parse

HOME = tuple(DEFAULT_POSITIONS["home"])
FEEDER = tuple(DEFAULT_POSITIONS["feeder"])
RUNNING = {"initial_mode": "RUNNING", "gripper": {"active": True}}


# -- the codec ----------------------------------------------------------------------------------


def test_packages_and_recipes_round_trip():
    assert rtde.request_protocol_version(2) == b"\x00\x05V\x00\x02"
    assert rtde.take_package(bytearray(b"\x00\x05V\x00")) is None  # not all there yet
    buffer = bytearray(rtde.request_start() + b"\x00\x04")
    assert rtde.take_package(buffer) == (PackageType.CONTROL_PACKAGE_START, b"") and buffer == b"\x00\x04"
    with pytest.raises(RTDEError, match="smaller than its header"):
        rtde.split_header(b"\x00\x02U")
    recipe = rtde.recipe_for(
        3, ("timestamp", "actual_q", "robot_mode", "output_bit_register_64"), rtde.OUTPUTS
    )
    assert recipe.types == ("DOUBLE", "VECTOR6D", "INT32", "BOOL") and recipe.valid
    body = recipe.pack([1.5, (0.0, 1.0, 2.0, 3.0, 4.0, 5.0), 7, True])
    assert body[0] == 3 and len(body) == 1 + 8 + 48 + 4 + 1
    assert recipe.unpack(body[1:])["actual_q"] == (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)
    with pytest.raises(RTDEError, match="expected 61 bytes"):
        recipe.unpack(body[2:])
    assert rtde.split_names("input_int_register_0,input_double_register_0,") == (
        "input_int_register_0", "input_double_register_0")  # fmt: skip
    failed = rtde.recipe_for(1, ("actual_q", "warp_drive"), rtde.OUTPUTS)
    assert failed.id == 0 and failed.types == ("VECTOR6D", "NOT_FOUND") and not failed.valid
    taken = rtde.recipe_for(1, ("input_int_register_0",), rtde.INPUTS, in_use=["input_int_register_0"])
    assert taken.types == ("IN_USE",) and taken.id == 0
    message = rtde.text_message("hello", "RTDE", MessageLevel.WARNING)
    assert rtde.parse_text_message(message[3:]) == ("hello", "RTDE", MessageLevel.WARNING)
    assert rtde.safety_status_bits("PROTECTIVE_STOP") == (1 << 2) | (1 << 10)
    assert rtde.safety_from_bits(rtde.safety_status_bits("ROBOT_EMERGENCY_STOP")) == "ROBOT_EMERGENCY_STOP"
    assert rtde.safety_from_bits(rtde.safety_status_bits("NORMAL")) == "NORMAL"


def test_kinematics_inverse_of_forward_and_pose_algebra():
    arm = ARMS["UR5e"]
    for q in (HOME, FEEDER, (0.3, -1.0, 1.2, -1.9, -1.2, 0.7)):
        pose = forward(q, arm)
        near = tuple(x + 0.05 for x in q)
        solution = inverse(pose, near, arm)
        assert solution is not None and max(abs(a - b) for a, b in zip(solution, q, strict=True)) < 1e-6
    pose = forward(FEEDER, arm)
    identity = pose_trans(pose, pose_inv(pose))
    assert max(abs(x) for x in identity) < 1e-12
    assert inverse((5.0, 0, 0, 0, 0, 0), HOME, arm) is None  # out of reach


# -- a raw RTDE client --------------------------------------------------------------------------


class Client:
    def __init__(self, url: str):
        self.link = Transport(url).open()

    def close(self) -> None:
        self.link.close()

    def ask(self, request: bytes, *, skip_data: bool = True) -> tuple[int, bytes]:
        self.link.write(request)
        return self.package(skip_data=skip_data)

    def package(self, *, skip_data: bool = False) -> tuple[int, bytes]:
        while True:
            size, kind = rtde.split_header(self.link.read_exactly(3, timeout=5))
            payload = self.link.read_exactly(size - 3, timeout=5)
            if not (skip_data and kind == PackageType.DATA_PACKAGE):
                return kind, payload

    def negotiate(self) -> None:
        assert self.ask(rtde.request_protocol_version(2)) == (PackageType.REQUEST_PROTOCOL_VERSION, b"\x01")

    def outputs(self, names: tuple[str, ...], frequency: float = 125.0) -> Recipe:
        kind, payload = self.ask(rtde.request_output_setup(names, frequency))
        assert kind == PackageType.CONTROL_PACKAGE_SETUP_OUTPUTS
        return rtde.parse_setup_reply(payload, names)

    def inputs(self, names: tuple[str, ...]) -> Recipe:
        kind, payload = self.ask(rtde.request_input_setup(names))
        assert kind == PackageType.CONTROL_PACKAGE_SETUP_INPUTS
        return rtde.parse_setup_reply(payload, names)

    def start(self) -> bool:
        kind, payload = self.ask(rtde.request_start())
        return kind == PackageType.CONTROL_PACKAGE_START and rtde.parse_success(payload)

    def data(self, recipe: Recipe) -> dict[str, Any]:
        kind, payload = self.package()
        while kind != PackageType.DATA_PACKAGE:
            kind, payload = self.package()
        assert payload[0] == recipe.id
        return recipe.unpack(payload[1:])

    def send(self, recipe: Recipe, values: list[Any]) -> None:
        self.link.write(rtde.package(PackageType.DATA_PACKAGE, recipe.pack(values)))


@contextmanager
def client(sim: BackgroundLab) -> Iterator[Client]:
    link = Client(sim.url("rtde"))
    try:
        yield link
    finally:
        link.close()


def until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.002)
    return value


def test_rtde_handshake_recipes_and_start_pause():
    with run_simulator("ur", clock=VirtualClock(), config={"series": "cb3"}) as sim, client(sim) as rt:
        assert rt.ask(rtde.request_protocol_version(3)) == (PackageType.REQUEST_PROTOCOL_VERSION, b"\x00")
        rt.negotiate()
        kind, payload = rt.ask(rtde.request_controller_version())
        assert kind == PackageType.GET_URCONTROL_VERSION and rtde.parse_controller_version(payload)[:2] == (
            3,
            15,
        )
        assert rt.outputs(("actual_q",), frequency=500.0).id == 0  # a CB3 steps at 125 Hz
        assert rt.outputs(("actual_q", "ft_raw_wrench")).types == ("VECTOR6D", "NOT_FOUND")  # e-Series only
        names = ("timestamp", "actual_q", "robot_mode", "safety_mode", "runtime_state", "safety_status_bits")
        recipe = rt.outputs(names)
        assert recipe.valid and recipe.types[2:] == ("INT32", "INT32", "UINT32", "UINT32")
        assert rt.start()
        state = rt.data(recipe)
        assert (
            state["actual_q"] == pytest.approx(HOME) and state["robot_mode"] == rtde.ROBOT_MODES["POWER_OFF"]
        )
        assert state["safety_mode"] == 1 and state["runtime_state"] == 1 and state["safety_status_bits"] == 1
        assert rt.outputs(("actual_q",)).id == 0  # no new recipe while started
        assert rt.ask(rtde.request_pause(), skip_data=True) == (PackageType.CONTROL_PACKAGE_PAUSE, b"\x01")
        assert rt.start()  # and again


def test_rtde_inputs_reach_the_registers_and_one_client_owns_each():
    with run_simulator("ur", clock=VirtualClock()) as sim, client(sim) as first, client(sim) as second:
        for rt in (first, second):
            rt.negotiate()
        names = ("input_int_register_3", "input_double_register_3", "standard_digital_output_mask",
                 "standard_digital_output", "speed_slider_mask", "speed_slider_fraction")  # fmt: skip
        recipe = first.inputs(names)
        assert recipe.id == 1 and recipe.types == ("INT32", "DOUBLE", "UINT8", "UINT8", "UINT32", "DOUBLE")
        assert second.inputs(("input_int_register_3",)).types == ("IN_USE",)
        assert second.inputs(("input_int_register_4", "no_such_input")).types == ("INT32", "NOT_FOUND")
        read_back = second.outputs(
            ("input_int_register_3", "actual_digital_output_bits", "target_speed_fraction")
        )
        assert first.start() and second.start()
        first.send(recipe, [-42, 2.5, 0b101, 0b100, 1, 0.4])
        ur = sim.lab.simulators["ur"]
        until(lambda: sim.call(lambda: ur.controller.registers.input_int[3]) == -42, "the register written")
        assert sim.call(lambda: ur.controller.registers.input_double[3]) == 2.5
        values = until(
            lambda: (v := second.data(read_back))["input_int_register_3"] == -42 and v, "read back"
        )
        assert values["actual_digital_output_bits"] == 0b100 and values["target_speed_fraction"] == 0.4
        first.close()  # the claim ends with the connection
        until(lambda: second.inputs(("input_int_register_3",)).types == ("INT32",), "the register released")


def test_rtde_rejects_what_the_guide_does_not_allow():
    with run_simulator("ur", clock=VirtualClock()) as sim, client(sim) as rt:
        rt.negotiate()
        assert rt.outputs(("actual_q",), frequency=float("nan")).id == 0
        assert rt.outputs(()).id == 0
        recipe = rt.outputs(("output_int_register_0",))
        inputs = rt.inputs(("input_int_register_0",))
        assert rt.start()
        rt.link.write(rtde.package(PackageType.DATA_PACKAGE, b"\x09" + b"\x00" * 4))  # no recipe 9
        rt.link.write(rtde.package(PackageType.DATA_PACKAGE, bytes([inputs.id]) + b"\x00"))  # too short
        warnings = []
        while len(warnings) < 2:
            kind, payload = rt.package()
            if kind == PackageType.TEXT_MESSAGE:
                warnings.append(rtde.parse_text_message(payload)[0])
        assert "unknown input recipe 9" in warnings[0] and "expected 4 bytes" in warnings[1]
        assert rt.data(recipe)["output_int_register_0"] == 0  # the stream goes on


# -- the interpreter ----------------------------------------------------------------------------


def send_program(sim: BackgroundLab, text: str, endpoint: str = "realtime") -> None:
    ur = sim.lab.simulators["ur"]
    before = sim.call(lambda: ur.requests[endpoint])
    with Transport(sim.url(endpoint)) as link:
        link.write(text.encode())
        until(lambda: sim.call(lambda: ur.requests[endpoint]) > before, "the program received")


def test_urscript_syntax_the_control_scripts_use():
    # ur_rtde injects its register offset just after a comment's line end: `x = # comment\n0`.
    program = parse("def main():\n  global a = # offset\n0  global b = # offset\n24  x = [1, 2]\nend\n")
    assert [s.target.id for s in program.body] == ["a", "b", "x"]  # type: ignore[union-attr]
    # `p[` indexes a parameter named p, and is a pose literal elsewhere.
    pose = parse("def main():\n  def f(p):\n    return p[0]\n  end\n  y = p[1, 2, 3, 0, 0, 0]\nend\n")
    assert set(pose.functions) == {"f"} and type(pose.body[-1].value).__name__ == "PoseDisplay"  # type: ignore[union-attr]
    for bad, message in (("def main():\n  if True:\n  end\n", "expected 'end'"), ("x = (1\n", "expected"),
                         ("def main():\n  y = p[1, 2]\nend\n", "a pose has 6 elements"),
                         ("def main():\n  end = 1\nend\n", "text after the end of program")):  # fmt: skip
        with pytest.raises(CompileError, match=message):
            parse(bad)


def test_a_program_with_threads_registers_and_globals():
    program = """def worker_test():
  global count = 0
  global done = False
  def bump(n):
    count = count + n   # a free variable that names a global assigns the global
    local shadow = n
  end
  thread worker():
    while not done:
      bump(1)
      sync()
    end
  end
  h = run worker()
  while read_input_integer_register(5) == 0:
    sync()
  end
  done = True
  join h
  write_output_integer_register(7, count)
  write_output_float_register(7, norm([3, 4]))
  textmsg("count ", count)
  movej([0.9, -1.15, 1.75, -2.17, -1.5708, 0.0], a=3, v=3)
end
"""
    clock = VirtualClock()
    with run_simulator("ur", clock=clock, config=RUNNING) as sim:
        ur = sim.lab.simulators["ur"]
        send_program(sim, program)
        for _ in range(3):
            clock.advance(0.002)
            sim.call(lambda: ur.settle(clock.now()))
        assert sim.call(lambda: ur.controller.running(clock.now()))
        sim.call(lambda: ur.controller.registers.input_int.__setitem__(5, 1))
        clock.advance(0.002)
        assert sim.call(lambda: ur.controller.running(clock.now()))  # the move is under way
        clock.advance(5)
        assert not sim.call(lambda: ur.controller.running(clock.now()))
        assert sim.call(lambda: ur.controller.program_ends[-1]) == "finished"
        count = sim.call(lambda: ur.controller.registers.output_int[7])
        assert count >= 3 and sim.call(lambda: ur.controller.messages[-1]) == f"count {count}"
        assert sim.call(lambda: ur.controller.registers.output_double[7]) == 5.0
        assert sim.call(ur.position_name) == "feeder"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("x = [1, 2]\n  y = x[2]", "index 2 is out of range 0..1"),
        ("x = undefined_thing + 1", "variable 'undefined_thing' is not defined"),
        ("while True:\n    x = 1\n  end", "without sync()"),
        ("force_mode(p[0,0,0,0,0,0], [0,0,1,0,0,0], [0,0,5,0,0,0], 2, [0.1,0.1,0.1,1,1,1])", "not simulated"),
        ("movej([0, 0, 0, 0, 0, 9])", "outside"),
    ],
)
def test_runtime_errors_stop_the_program(body, error):
    clock = VirtualClock()
    with run_simulator("ur", clock=clock, config=RUNNING) as sim:
        ur = sim.lab.simulators["ur"]
        send_program(sim, f'def faulty():\n  {body}\n  textmsg("unreached")\nend\n', "primary")
        assert not sim.call(lambda: ur.controller.running(clock.now()))
        assert error in sim.call(lambda: ur.controller.program_ends[-1])
        assert "unreached" not in sim.call(lambda: list(ur.controller.messages))


def test_a_killed_thread_stops_its_motion_and_stopj_decelerates():
    program = """def mover():
  thread go():
    movej([-0.9, -1.15, 1.75, -2.17, -1.5708, 0.0], a=1.4, v=1.0)
  end
  h = run go()
  sleep(0.6)
  kill h
  stopj(2)
  write_output_integer_register(0, 1)
  sleep(10)
end
"""
    clock = VirtualClock()
    with run_simulator("ur", clock=clock, config=RUNNING) as sim:
        ur = sim.lab.simulators["ur"]
        send_program(sim, program, "script")
        clock.advance(0.6)
        moving = sim.call(lambda: ur.controller.state(clock.now())[1])
        assert max(abs(v) for v in moving) > 0.3
        clock.advance(2)
        sim.call(lambda: ur.settle(clock.now()))  # observers bring the lazy model up to date first
        assert sim.call(lambda: ur.controller.registers.output_int[0]) == 1
        _, qd = sim.call(lambda: ur.controller.state(clock.now()))
        assert max(abs(v) for v in qd) == 0 and sim.call(ur.position_name) is None  # stopped on the way
        assert sim.call(lambda: ur.controller.running(clock.now()))


# -- the driver over RTDE -----------------------------------------------------------------------


@contextmanager
def arm_over_rtde(**options: Any) -> Iterator[tuple[BackgroundLab, URArm]]:
    faults = options.pop("faults", None)
    with run_simulator(
        "ur", clock=ScaledClock(options.pop("speed", 200.0)), faults=faults, config=RUNNING
    ) as sim:
        links = {k: sim.url(k) for k in ("dashboard", "script", "gripper", "rtde")}
        arm = URArm.connect(links, positions=DEFAULT_POSITIONS, unlock_delay=0.0, unlock_retry_interval=0.002,
                            reply_timeout=0.3, **options)  # fmt: skip
        try:
            yield sim, arm
        finally:
            arm.close()
        sim.wait_until_clients_leave()


def dashboard_lines(sim: BackgroundLab, word: bytes) -> int:
    return sum(1 for r in sim.wire_log() if r.endpoint == "dashboard" and r.data.strip().lower() == word)


def test_the_driver_follows_moves_on_rtde_instead_of_polling():
    # 20x: a move spans many packages (the polling driver asks `running` every 5 to 50 ms meanwhile).
    with arm_over_rtde(speed=20.0) as (sim, arm):
        assert arm.state is not None and arm.state.controller_version[0] == 5
        arm.prepare()
        polls = dashboard_lines(sim, b"running")
        arm.transfer("feeder", "dispense")
        assert arm.position == "dispense_above"
        moves = 6  # pick and place: each the approach, the station, the approach again
        # Each move asks the dashboard whether another program runs, and nothing while it moves (unless no
        # package showed the program running within three package periods: then it asks programState).
        assert dashboard_lines(sim, b"running") - polls <= 2 * moves
        status = arm.status()
        assert (
            status.robot_mode.value == "RUNNING"
            and not status.running
            and status.safety is SafetyStatus.NORMAL
        )
        assert arm.state.latest().q == pytest.approx(DEFAULT_POSITIONS["dispense_above"], abs=1e-9)


def test_over_rtde_a_protective_stop_raises_and_an_abort_stops_the_arm_on_the_wire():
    with arm_over_rtde(faults="protective-stop@1", speed=20.0) as (sim, arm):
        arm.prepare()
        with pytest.raises(ProtectiveStop):
            arm.move_to("feeder")
        assert arm.status().safety is SafetyStatus.PROTECTIVE_STOP
        arm.recover_from_protective_stop()
        arm.move_to("feeder")
        assert arm.position == "feeder"
    with arm_over_rtde(speed=1.0) as (sim, arm):
        arm.prepare()
        errors: list[BaseException] = []

        def move() -> None:
            try:
                arm.move_to("waste")
            except BaseException as exc:
                errors.append(exc)

        import threading

        mover = threading.Thread(target=move)
        mover.start()
        until(
            lambda: arm.state is not None and max(map(abs, arm.state.latest().qd)) > 0.3, "the arm under way"
        )
        arm.stop()
        mover.join(10)
        assert len(errors) == 1 and isinstance(errors[0], MotionStopped)
        assert dashboard_lines(sim, b"stop") == 1  # the abort went out on the wire
        assert until(lambda: not arm.state.latest().running if arm.state else False, "the program stopped")
        assert sim.call(sim.lab.simulators["ur"].position_name) is None  # stopped on the way


def test_a_lost_state_stream_is_reopened():
    with arm_over_rtde() as (sim, arm):
        assert arm.state is not None
        opened = sim.call(lambda: sim.lab.simulators["ur"].sessions_opened["rtde"])
        arm.state.transport.close()  # the link drops under the reader
        until(lambda: not arm.state.is_open if arm.state else False, "the reader noticing")
        with pytest.raises(ConnectionLost):
            arm.state.latest()
        assert arm.status().robot_mode.value == "RUNNING"  # the arm reopens it
        assert sim.call(lambda: sim.lab.simulators["ur"].sessions_opened["rtde"]) == opened + 1


def test_struct_layout_matches_the_guide():
    # A data package of one VECTOR6INT32 and one UINT64 is big-endian and unpadded.
    recipe = Recipe(1, ("joint_mode", "actual_digital_input_bits"), ("VECTOR6INT32", "UINT64"))
    packed = recipe.pack([(253,) * 6, 5])
    assert packed == b"\x01" + struct.pack(">6iQ", *(253,) * 6, 5)


def test_make_device_follows_rtde_when_the_address_offers_it():
    from drivers.ur import make_device

    by_host = make_device("arm", "192.0.2.7", positions=DEFAULT_POSITIONS)  # opens nothing
    assert by_host.arm.state is not None and by_host.arm.state.transport.url == "socket://192.0.2.7:30004"
    assert make_device("arm", "192.0.2.7", positions=DEFAULT_POSITIONS, rtde=False).arm.state is None
    three = {
        k: f"socket://192.0.2.7:{p}" for k, p in (("dashboard", 29999), ("script", 30002), ("gripper", 63352))
    }
    assert make_device("arm", three, positions=DEFAULT_POSITIONS).arm.state is None  # polling, as before
    with pytest.raises(ValueError, match="rtde is on, but the address has no rtde URL"):
        make_device("arm", three, positions=DEFAULT_POSITIONS, rtde=True)


def test_standard_ports_are_for_one_instrument_that_has_them(capsys):
    from simulators.__main__ import main

    assert main(["ne1000", "--standard-ports"]) == 2
    assert "--standard-ports: ne1000 has no standard TCP ports" in capsys.readouterr().err
    assert main(["lab", "experiments/color_matching/lab.yaml", "--standard-ports"]) == 2
    assert "one instrument per host; not with 'lab'" in capsys.readouterr().err


def test_a_defect_in_a_builtin_stops_the_program_not_the_server():
    from simulators.ur.script.runtime import Builtin, Runtime

    ends: list[str] = []
    library = {"boom": Builtin(lambda ctx: 1 / 0)}
    runtime = Runtime(
        parse("def p():\n  boom()\nend\n"), library, 0.002, on_end=lambda t, reason: ends.append(reason)
    )
    runtime.start(0.0)
    assert not runtime.running and "internal error of the simulator: ZeroDivisionError" in ends[0]


def test_without_rtde_the_arm_still_stops_on_the_dashboard():
    import socket

    with socket.socket() as placeholder:  # a port nobody listens on: the RTDE link cannot open
        placeholder.bind(("127.0.0.1", 0))
        dead = f"socket://127.0.0.1:{placeholder.getsockname()[1]}"
        with run_simulator("ur", clock=ScaledClock(200.0), config=RUNNING) as sim:
            links = {**{k: sim.url(k) for k in ("dashboard", "script", "gripper")}, "rtde": dead}
            arm = URArm.connect(links, positions=DEFAULT_POSITIONS, query_retries=0, reply_timeout=0.3)
            try:
                arm.stop()  # what make_safe sends: it must not wait on the state stream
                assert dashboard_lines(sim, b"stop") == 1
                with pytest.raises(ConnectionLost):
                    arm.status()
                with pytest.raises(ConnectionLost):
                    arm.move_to("feeder")  # nothing moves on a state it cannot follow
                assert sim.call(lambda: sim.lab.simulators["ur"].requests["script"]) == 0
            finally:
                arm.close()
            sim.wait_until_clients_leave()


def test_a_protective_stop_between_two_packages_is_not_missed():
    # At 10 packages a second and 200x speed a move ends, cut short, before any package shows it ran:
    # the driver learns that it ran from the dashboard's programState, and of the stop all the same.
    with arm_over_rtde(faults="protective-stop@2") as (_, arm):
        assert arm.state is not None
        arm.state.close()
        arm.state.frequency = 10.0
        arm.state.open()
        arm.prepare()
        arm.move_to("feeder_above")  # the first move: no fault
        with pytest.raises(ProtectiveStop):
            arm.move_to("dispense_above")
