"""UR Dashboard Server and Robotiq URCap texts, URScript programs and motion timing, as pure functions.

Reply strings come from the UR Dashboard Server manual (e-Series), the URScript manual
(``socket_get_var``/``socket_set_var``, ``movej``) and Robotiq's URCap script (three-byte ``ack``).
"""

from __future__ import annotations

import math

import pytest

from drivers.errors import ProtocolError
from drivers.ur import codec
from drivers.ur.codec import GripperStatus, ObjectStatus, ProgramStateKind, RobotMode, SafetyStatus
from drivers.ur.errors import PositionConfigError
from drivers.ur.positions import (
    load_positions_file,
    match_position,
    validate_joint_limits,
    validate_positions,
)
from drivers.ur.urscript import MoveJ, build_program, motion_time, progress
from simulators.ur.script.syntax import Call, Evaluate, ListDisplay, Literal, parse


def test_dashboard_texts_match_the_manual():
    assert codec.GREETING == "Connected: Universal Robots Dashboard Server"
    assert codec.UNLOCK_TOO_SOON == (
        "Cannot unlock protective stop until 5s after occurrence. "
        "Always inspect cause of protective stop before unlocking"
    )
    assert codec.encode_command("power on") == b"power on\n"
    with pytest.raises(ValueError, match="one line"):
        codec.encode_command("stop\nplay")


def test_dashboard_replies_parse():
    assert codec.parse_robot_mode("Robotmode: IDLE") is RobotMode.IDLE
    assert codec.parse_robot_mode("Robotmode: POWER_OFF") is RobotMode.POWER_OFF
    assert codec.parse_safety("Safetystatus: PROTECTIVE_STOP") is SafetyStatus.PROTECTIVE_STOP
    assert codec.parse_safety("Safetymode: NORMAL") is SafetyStatus.NORMAL  # CB3's command
    assert not SafetyStatus.SAFEGUARD_STOP.allows_motion and SafetyStatus.REDUCED.allows_motion
    assert codec.parse_running("Program running: true") is True
    assert codec.parse_running("Program running: False") is False
    state = codec.parse_program_state("PLAYING sdl_move_3")
    assert state.state is ProgramStateKind.PLAYING and state.program == "sdl_move_3"
    assert codec.parse_program_state("STOPPED 3.urp").state is ProgramStateKind.STOPPED
    assert codec.parse_bool("true") and not codec.parse_bool("false")
    assert codec.is_unknown_command(codec.unknown_command_reply("safetystatus"))


@pytest.mark.parametrize(
    "parse, line",
    [
        (codec.parse_robot_mode, "Robot>ode: IDLE"),
        (codec.parse_robot_mode, "Robotmode: DANCING"),
        (codec.parse_safety, "Safetystatus: CALM"),
        (codec.parse_running, "Program run4ing: false"),
        (codec.parse_running, "Program running: maybe"),
        (codec.parse_program_state, "WAITING prog"),
        (codec.parse_bool, "tru"),
    ],
)
def test_garbled_dashboard_replies_are_protocol_errors(parse, line):
    with pytest.raises(ProtocolError):
        parse(line)


def test_gripper_requests_and_replies():
    assert codec.encode_set(ACT=1) == b"SET ACT 1\n"
    assert codec.encode_set(POS=255, SPE=255, FOR=100, GTO=1) == b"SET POS 255 SPE 255 FOR 100 GTO 1\n"
    assert codec.encode_get("OBJ") == b"GET OBJ\n"
    assert codec.parse_get_reply(b"STA 3\n", "STA") == GripperStatus.ACTIVE
    assert codec.parse_get_reply(b"OBJ 2\n", "OBJ") == ObjectStatus.STOPPED_CLOSING
    assert ObjectStatus(2).holds_object and not ObjectStatus(3).holds_object
    codec.check_ack(b"ack")
    for bad in (b"a9k", b"ack\n"):
        with pytest.raises(ProtocolError):
            codec.check_ack(bad)
    for bad, name in ((b"POS 12\n", "OBJ"), (b"OBJz2\n", "OBJ"), (b"OBJ x\n", "OBJ"), (b"\xff\n", "POS")):
        with pytest.raises(ProtocolError):
            codec.parse_get_reply(bad, name)
    with pytest.raises(ValueError, match="cannot be set"):
        codec.encode_set(OBJ=1)
    with pytest.raises(ValueError, match="unknown gripper variable"):
        codec.encode_get("XYZ")


def test_gripper_request_parsing_for_the_simulator():
    assert codec.parse_gripper_request(b"GET POS\n") == codec.GripperRequest("GET", name="POS")
    request = codec.parse_gripper_request(b"SET POS 255 SPE 10 GTO 1\n")
    assert request.verb == "SET" and request.variables == (("POS", 255), ("SPE", 10), ("GTO", 1))
    for bad in (b"GET\n", b"SET POS\n", b"SET OBJ 2\n", b"SET POS x\n", b"HELLO\n", b"\xff\n"):
        assert codec.parse_gripper_request(bad) is None


def test_program_round_trip():
    # What the driver builds is what the simulator's URScript parser reads back.
    move = MoveJ((0.0, -1.5708, 1.5708, -1.5708, -1.5708, 0.25), a=1.0, v=0.5)
    text = build_program("sdl_move_1", [move], 'sdl: move to "feeder"')
    assert text.startswith("def sdl_move_1():\n  textmsg(\"sdl: move to 'feeder'\")\n  movej([0, -1.5708")
    assert text.endswith("a=1, v=0.5)\nend\n")
    program = parse(text)
    assert program.name == "sdl_move_1" and program.calls == {"textmsg", "movej"}
    message, movej = program.body
    assert isinstance(message, Evaluate) and isinstance(movej, Evaluate)
    assert isinstance(message.expression, Call) and message.expression.args[0] == Literal(
        2, "sdl: move to 'feeder'"
    )
    call = movej.expression
    assert isinstance(call, Call) and isinstance(call.args[0], ListDisplay)
    joints = [item.value if isinstance(item, Literal) else -item.operand.value for item in call.args[0].items]  # type: ignore[union-attr]
    assert joints == list(move.q)
    assert dict(call.keywords) == {"a": Literal(3, 1), "v": Literal(3, 0.5)}
    with pytest.raises(ValueError, match="not a URScript identifier"):
        build_program("2fast", [move])


def test_motion_time_follows_the_leading_axis_trapezoid():
    start = (0.0,) * 6
    # 2 rad at v=1, a=1: 1 s ramp up + 1 s cruise + 1 s ramp down = 3 s.
    assert motion_time(start, MoveJ((0, 2, 0.5, 0, 0, 0), a=1.0, v=1.0)) == pytest.approx(3.0)
    # 0.25 rad at a=1 never reaches v=1: a triangle of 2·sqrt(0.25) = 1 s.
    assert motion_time(start, MoveJ((0.25, 0, 0, 0, 0, 0), a=1.0, v=1.0)) == pytest.approx(1.0)
    assert motion_time(start, MoveJ((1, 0, 0, 0, 0, 0), t=4.0)) == 4.0
    assert motion_time(start, MoveJ(start)) == 0.0
    move = MoveJ((0, 2, 0, 0, 0, 0), a=1.0, v=1.0)
    assert progress(start, move, 0.0) == 0.0 and progress(start, move, 3.0) == 1.0
    assert progress(start, move, 1.5) == pytest.approx(0.5)  # symmetric profile: halfway at half time
    assert progress(start, move, 1.0) == pytest.approx(0.25)


def test_positions_are_validated_with_field_names(tmp_path):
    good = {"home": [0, -1.57, 1.57, -1.57, -1.57, 0]}
    assert validate_positions(good)["home"][1] == -1.57
    cases = [
        ({"home": [0, 0, 0]}, "positions.home: expected a list of 6"),
        ({"home": [0, 0, 0, 0, 0, "x"]}, "positions.home: 'x' is not a finite number"),
        ({"home": [0, 0, 0, 0, 0, 7.0]}, "joint 6 at 7.0000 rad is outside"),
        ({"1st": [0] * 6}, "starting with a letter"),
        ([], "expected a mapping"),
    ]
    for raw, message in cases:
        with pytest.raises(PositionConfigError, match=message):
            validate_positions(raw)
    path = tmp_path / "positions.yaml"
    path.write_text("units: deg\npositions:\n  home: [0, -90, 90, -90, -90, 0]\n")
    assert load_positions_file(path)["home"][1] == pytest.approx(-math.pi / 2)
    path.write_text("units: grad\npositions:\n  home: [0, 0, 0, 0, 0, 0]\n")
    with pytest.raises(PositionConfigError, match="units must be 'rad' or 'deg'"):
        load_positions_file(path)
    path.write_text("positions: {}\nspeed: 3\n")
    with pytest.raises(PositionConfigError, match=r"positions.yaml: unknown key\(s\) speed"):
        load_positions_file(path)
    with pytest.raises(PositionConfigError, match="cannot read positions file"):
        load_positions_file(tmp_path / "missing.yaml")
    narrow = validate_joint_limits([[-1, 1]] * 6)
    with pytest.raises(PositionConfigError, match=r"joint 2 at -1\.5700 rad is outside"):
        validate_positions(good, joint_limits=narrow)
    with pytest.raises(PositionConfigError, match=r"joint_limits\[0\]: low 1.0 must be below high"):
        validate_joint_limits([[1, -1]] * 6)
    assert match_position((0, -1.571, 1.57, -1.57, -1.57, 0.0), good, 0.01) == "home"
    assert match_position((0.1, -1.57, 1.57, -1.57, -1.57, 0), good, 0.01) is None
