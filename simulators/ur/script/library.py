"""The URScript functions the simulated controller knows, acting on its ``Controller``.

Signatures and defaults follow the *URScript Manual* (e-Series): ``movej(q, a=1.4, v=1.05, t=0,
r=0)``, ``movel(pose, a=1.2, v=0.25, t=0, r=0)``, ``stopj(a)``, ``speedj(qd, a, t)``, the RTDE
register functions, kinematics and pose arithmetic. Blending (``r``) is accepted and ignored: each
move comes to rest before the next. ``NOT_SIMULATED`` functions compile (a program may mention
them) but stop the program with a runtime error if called: there is no force or contact model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any

from simulators.ur import kinematics, motion
from simulators.ur.robot import Controller
from simulators.ur.script.runtime import Builtin, Context, Pose, ProgramStopped, ScriptRuntimeError, Wait

Blocking = Generator[Wait, None, Any]
JOINT_RANGE = 2 * math.pi + 0.06  # the controller's joint limits: ±363°

#: Mentioned by programs (ur_rtde's control script has them all), refused when called.
NOT_SIMULATED = frozenset({
    "force_mode", "speedl", "servoc", "servol", "movep", "movec", "freedrive_mode", "end_freedrive_mode",
    "enable_external_ft_sensor", "ft_rtde_input_enable", "direct_torque", "set_external_force_torque",
    "get_mass_matrix", "get_jacobian", "get_jacobian_time_derivative", "get_coriolis_and_centrifugal_torques",
    "get_target_joint_accelerations", "position_deviation_warning", "path_offset_enable", "path_offset_set",
    "path_offset_disable", "path_offset_set_alpha_filter", "path_offset_set_max_offset",
    "set_friction_compensation", "torque_command",
})  # fmt: skip


def _joints(value: Any, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != 6:
        raise ScriptRuntimeError(f"{what}: expected 6 joint values, got {value!r}")
    return tuple(_float(x, what) for x in value)


def _pose(value: Any, what: str) -> kinematics.Pose:
    if not isinstance(value, list) or len(value) != 6:
        raise ScriptRuntimeError(f"{what}: expected a pose p[x, y, z, rx, ry, rz], got {value!r}")
    x = [_float(v, what) for v in value]
    return (x[0], x[1], x[2], x[3], x[4], x[5])


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScriptRuntimeError(f"{what}: {value!r} is not a finite number")
    return float(value)


def _positive(value: Any, what: str) -> float:
    number = _float(value, what)
    if number <= 0:
        raise ScriptRuntimeError(f"{what} must be > 0, got {number}")
    return number


def _register(index: Any, what: str) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 48:
        raise ScriptRuntimeError(f"{what}: register {index!r} is not in 0..47")
    return index


def to_text(value: Any) -> str:
    """How ``textmsg`` prints a value."""
    if isinstance(value, Pose):
        return "p[" + ", ".join(to_text(v) for v in value) + "]"
    if isinstance(value, list):
        return "[" + ", ".join(to_text(v) for v in value) + "]"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def undefined_calls(
    calls: Iterable[str], defined: Iterable[str], library: Mapping[str, Builtin]
) -> list[str]:
    """Functions a program calls that neither it nor the controller defines (a compile error)."""
    known = set(defined) | set(library)
    return sorted(name for name in calls if name not in known)


def make_library(controller: Controller) -> dict[str, Builtin]:
    """The builtins of one controller (closures over it)."""
    c = controller
    functions: dict[str, Builtin] = {}

    def plain(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(function: Callable[..., Any]) -> Callable[..., Any]:
            functions[name] = Builtin(function)
            return function

        return register

    def blocking(name: str) -> Callable[[Callable[..., Blocking]], Callable[..., Blocking]]:
        def register(function: Callable[..., Blocking]) -> Callable[..., Blocking]:
            functions[name] = Builtin(function, blocking=True)
            return function

        return register

    def now_state(ctx: Context) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return c.motion.state(ctx.time)

    def check_limits(q: Sequence[float], what: str) -> None:
        for i, x in enumerate(q):
            if abs(x) > JOINT_RANGE:
                raise ScriptRuntimeError(
                    f"{what}: joint {i} target {x:.4f} rad is outside ±{JOINT_RANGE:.3f}"
                )

    def finish(ctx: Context, until: float) -> Blocking:
        yield Wait(until=max(until, ctx.time + c.step_s))

    # -- motion ----------------------------------------------------------------------------
    @blocking("movej")
    def movej(ctx: Context, q: Any, a: Any = 1.4, v: Any = 1.05, t: Any = 0, r: Any = 0) -> Blocking:
        origin, _ = now_state(ctx)
        target = inverse_or_fail(_pose(q, "movej"), origin) if isinstance(q, Pose) else _joints(q, "movej")
        check_limits(target, "movej")
        speed = min(_positive(v, "movej v"), c.max_joint_speed)
        trajectory = motion.joint_move(
            ctx.time, origin, target, _positive(a, "movej a"), speed, _float(t, "t")
        )
        c.move(trajectory, ctx.thread.id, faultable=True)
        yield from finish(ctx, trajectory.end)

    @blocking("movel")
    def movel(ctx: Context, pose: Any, a: Any = 1.2, v: Any = 0.25, t: Any = 0, r: Any = 0) -> Blocking:
        q, _ = now_state(ctx)
        goal = _pose(pose, "movel") if isinstance(pose, Pose) else c.tcp(_joints(pose, "movel"))
        acceleration, speed, duration = _positive(a, "movel a"), _positive(v, "movel v"), _float(t, "t")
        if duration > 0:  # t overrides a and v: a triangle profile of that length
            length = max(kinematics.pose_distance(c.tcp(q), goal), kinematics.rotation_angle(c.tcp(q), goal))
            speed, acceleration = max(2 * length / duration, 1e-9), max(4 * length / duration**2, 1e-9)
        try:
            trajectory = motion.linear_move(
                ctx.time, q, c.tcp(q), goal, acceleration, speed, c.arm, c.tcp_offset
            )
        except motion.Unreachable as exc:
            raise ScriptRuntimeError(str(exc)) from None
        check_limits(trajectory.target, "movel")
        c.move(trajectory, ctx.thread.id, faultable=True)
        yield from finish(ctx, trajectory.end)

    def stop_motion(ctx: Context, a: Any, what: str) -> Blocking:
        q, qd = now_state(ctx)
        trajectory = motion.stop(ctx.time, q, qd, _positive(a, what))
        c.move(trajectory, ctx.thread.id)
        yield from finish(ctx, trajectory.end)

    @blocking("stopj")
    def stopj(ctx: Context, a: Any) -> Blocking:
        yield from stop_motion(ctx, a, "stopj a")

    @blocking("stopl")
    def stopl(ctx: Context, a: Any, aRot: Any = None) -> Blocking:
        # Decelerates in joint space, at the tool deceleration over a 0.5 m lever (rad/s² = 2 × m/s²).
        yield from stop_motion(ctx, _positive(a, "stopl a") * 2.0, "stopl a")

    @blocking("speedj")
    def speedj(ctx: Context, qd: Any, a: Any, t: Any = 0) -> Blocking:
        q, velocity = now_state(ctx)
        target = _joints(qd, "speedj")
        for x in target:
            if abs(x) > c.max_joint_speed:
                raise ScriptRuntimeError(f"speedj: joint speed {x} is over {c.max_joint_speed} rad/s")
        duration = _float(t, "speedj t")
        until = ctx.time + (duration if duration > 0 else c.step_s)
        c.move(motion.speed(ctx.time, q, velocity, target, _positive(a, "speedj a"), until), ctx.thread.id)
        yield Wait(until=until)

    @blocking("servoj")
    def servoj(ctx: Context, q: Any, a: Any = 0, v: Any = 0, t: Any = 0.002, lookahead_time: Any = 0.1,
               gain: Any = 300) -> Blocking:  # fmt: skip
        # Follows the target as a first-order lag with the lookahead time as its time constant (the
        # controller's smoothing, roughly): a stream of targets gives a smooth motion, not a jump per step.
        origin, _ = now_state(ctx)
        target = _joints(q, "servoj")
        check_limits(target, "servoj")
        duration = max(_float(t, "servoj t"), c.step_s)
        lag = min(max(_float(lookahead_time, "lookahead_time"), 0.03), 0.2)
        velocity = tuple((b - x) / max(lag, duration) for x, b in zip(origin, target, strict=True))
        if max(abs(x) for x in velocity) > c.max_joint_speed:
            raise ScriptRuntimeError("servoj: the target is too far to follow (joint speed over the limit)")
        piece = motion.Piece(ctx.time, origin, velocity, motion.ZERO)
        end = ctx.time + duration
        c.move(motion.Trajectory([piece], end, piece.at(end)[0]), ctx.thread.id)
        yield Wait(until=end)

    @blocking("sleep")
    def sleep(ctx: Context, t: Any) -> Blocking:
        yield Wait(until=ctx.time + max(0.0, _float(t, "sleep")))

    @blocking("sync")
    def sync(ctx: Context) -> Blocking:
        yield Wait(step=True)

    @plain("protective_stop")
    def protective_stop(ctx: Context) -> None:
        c.protective_stop(ctx.time)
        raise ProgramStopped("protective stop")

    @plain("is_steady")
    def is_steady(ctx: Context) -> bool:
        return all(abs(x) < 1e-9 for x in now_state(ctx)[1])

    @plain("get_steptime")
    def get_steptime(ctx: Context) -> float:
        return c.step_s

    # -- state -----------------------------------------------------------------------------
    @plain("get_actual_joint_positions")
    def get_actual_joint_positions(ctx: Context) -> list[float]:
        return list(now_state(ctx)[0])

    functions["get_target_joint_positions"] = functions["get_actual_joint_positions"]

    @plain("get_actual_joint_speeds")
    def get_actual_joint_speeds(ctx: Context) -> list[float]:
        return list(now_state(ctx)[1])

    functions["get_target_joint_speeds"] = functions["get_actual_joint_speeds"]

    @plain("get_actual_joint_positions_history")
    def get_actual_joint_positions_history(ctx: Context, steps: Any = 0) -> list[float]:
        back = max(0, int(_float(steps, "steps")))
        return list(c.motion.state(ctx.time - back * c.step_s)[0])

    @plain("get_actual_tcp_pose")
    def get_actual_tcp_pose(ctx: Context) -> Pose:
        return Pose(c.tcp(now_state(ctx)[0]))

    functions["get_target_tcp_pose"] = functions["get_actual_tcp_pose"]

    @plain("get_actual_tool_flange_pose")
    def get_actual_tool_flange_pose(ctx: Context) -> Pose:
        return Pose(kinematics.forward(now_state(ctx)[0], c.arm))

    @plain("get_actual_tcp_speed")
    def get_actual_tcp_speed(ctx: Context) -> list[float]:
        q, qd = now_state(ctx)
        return [float(x) for x in kinematics.jacobian(q, c.arm, c.tcp_offset) @ qd]

    functions["get_target_tcp_speed"] = functions["get_actual_tcp_speed"]

    @plain("get_target_waypoint")
    def get_target_waypoint(ctx: Context) -> Pose:
        return Pose(c.tcp(c.target()))

    @plain("get_joint_torques")
    def get_joint_torques(ctx: Context) -> list[float]:
        return [0.0] * 6

    @plain("get_tcp_force")
    def get_tcp_force(ctx: Context) -> Pose:
        return Pose([0.0] * 6)

    @plain("tool_contact")
    def tool_contact(ctx: Context, direction: Any = None) -> int:
        return 0  # nothing to touch in the simulated cell

    @plain("get_freedrive_status")
    def get_freedrive_status(ctx: Context) -> int:
        return 0

    # -- kinematics ------------------------------------------------------------------------
    def inverse_or_fail(x: kinematics.Pose, qnear: Sequence[float], tcp: Sequence[float] | None = None,
                        tolerance: tuple[float, float] = (1e-9, 1e-9)) -> tuple[float, ...]:  # fmt: skip
        offset = c.tcp_offset if tcp is None else tcp
        solution = kinematics.inverse(x, qnear, c.arm, offset, position_tolerance=tolerance[0],
                                      orientation_tolerance=tolerance[1])  # fmt: skip
        if solution is None:
            raise ScriptRuntimeError(f"get_inverse_kin: no solution for p{list(x)} near {list(qnear)}")
        return solution

    def ik_arguments(
        ctx: Context, x: Any, qnear: Any, max_position_error: Any, max_orientation_error: Any, tcp: Any
    ) -> tuple[kinematics.Pose, tuple[float, ...], tuple[float, float], Any]:
        near = now_state(ctx)[0] if qnear is None else _joints(qnear, "qnear")
        offset = None if tcp is None or tcp == "active" else _pose(tcp, "tcp")
        tolerance = (max(_float(max_position_error, "maxPositionError"), 1e-9),
                     max(_float(max_orientation_error, "maxOrientationError"), 1e-9))  # fmt: skip
        return _pose(x, "get_inverse_kin"), near, tolerance, offset

    @plain("get_inverse_kin")
    def get_inverse_kin(
        ctx: Context,
        x: Any,
        qnear: Any = None,
        maxPositionError: Any = 1e-10,
        maxOrientationError: Any = 1e-10,
        tcp: Any = "active",
    ) -> list[float]:
        pose, near, tolerance, offset = ik_arguments(
            ctx, x, qnear, maxPositionError, maxOrientationError, tcp
        )
        return list(inverse_or_fail(pose, near, offset, tolerance))

    @plain("get_inverse_kin_has_solution")
    def get_inverse_kin_has_solution(
        ctx: Context,
        x: Any,
        qnear: Any = None,
        maxPositionError: Any = 1e-10,
        maxOrientationError: Any = 1e-10,
        tcp: Any = "active",
    ) -> bool:
        pose, near, tolerance, offset = ik_arguments(
            ctx, x, qnear, maxPositionError, maxOrientationError, tcp
        )
        tool = c.tcp_offset if offset is None else offset
        solution = kinematics.inverse(pose, near, c.arm, tool, position_tolerance=tolerance[0],
                                      orientation_tolerance=tolerance[1])  # fmt: skip
        return solution is not None

    @plain("get_forward_kin")
    def get_forward_kin(ctx: Context, q: Any = None, tcp: Any = "active") -> Pose:
        joints = now_state(ctx)[0] if q is None else _joints(q, "get_forward_kin")
        offset = c.tcp_offset if tcp is None or tcp == "active" else _pose(tcp, "tcp")
        return Pose(kinematics.forward(joints, c.arm, offset))

    @plain("is_within_safety_limits")
    def is_within_safety_limits(ctx: Context, x: Any, qnear: Any = None) -> bool:
        if isinstance(x, Pose):
            near = now_state(ctx)[0] if qnear is None else _joints(qnear, "qnear")
            solution = kinematics.inverse(_pose(x, "pose"), near, c.arm, c.tcp_offset)
            return solution is not None and all(abs(v) <= JOINT_RANGE for v in solution)
        return all(abs(v) <= JOINT_RANGE for v in _joints(x, "is_within_safety_limits"))

    @plain("pose_trans")
    def pose_trans(ctx: Context, p_from: Any, p_from_to: Any) -> Pose:
        return Pose(kinematics.pose_trans(_pose(p_from, "pose_trans"), _pose(p_from_to, "pose_trans")))

    @plain("pose_inv")
    def pose_inv(ctx: Context, p_from: Any) -> Pose:
        return Pose(kinematics.pose_inv(_pose(p_from, "pose_inv")))

    @plain("pose_add")
    def pose_add(ctx: Context, p_1: Any, p_2: Any) -> Pose:
        return Pose(kinematics.pose_add(_pose(p_1, "pose_add"), _pose(p_2, "pose_add")))

    @plain("pose_sub")
    def pose_sub(ctx: Context, p_to: Any, p_from: Any) -> Pose:
        return Pose(kinematics.pose_sub(_pose(p_to, "pose_sub"), _pose(p_from, "pose_sub")))

    @plain("pose_dist")
    def pose_dist(ctx: Context, p_from: Any, p_to: Any) -> float:
        return kinematics.pose_distance(_pose(p_from, "pose_dist"), _pose(p_to, "pose_dist"))

    @plain("interpolate_pose")
    def interpolate_pose(ctx: Context, p_from: Any, p_to: Any, alpha: Any) -> Pose:
        a, b = _pose(p_from, "interpolate_pose"), _pose(p_to, "interpolate_pose")
        return Pose(kinematics.interpolate_pose(a, b, _float(alpha, "alpha")))

    # -- registers and I/O -----------------------------------------------------------------
    r = c.registers

    @plain("read_input_integer_register")
    def read_input_integer_register(ctx: Context, address: Any) -> int:
        return r.input_int[_register(address, "read_input_integer_register")]

    @plain("read_input_float_register")
    def read_input_float_register(ctx: Context, address: Any) -> float:
        return r.input_double[_register(address, "read_input_float_register")]

    @plain("read_input_boolean_register")
    def read_input_boolean_register(ctx: Context, address: Any) -> bool:
        if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address < 128:
            raise ScriptRuntimeError(f"register {address!r} is not in 0..127")
        return r.input_bits[address]

    @plain("read_output_integer_register")
    def read_output_integer_register(ctx: Context, address: Any) -> int:
        return r.output_int[_register(address, "read_output_integer_register")]

    @plain("read_output_float_register")
    def read_output_float_register(ctx: Context, address: Any) -> float:
        return r.output_double[_register(address, "read_output_float_register")]

    @plain("write_output_integer_register")
    def write_output_integer_register(ctx: Context, address: Any, value: Any) -> None:
        index = _register(address, "write_output_integer_register")
        number = _float(value, "write_output_integer_register")
        if not -(2**31) <= number < 2**31:
            raise ScriptRuntimeError(f"write_output_integer_register: {value} is not a 32-bit integer")
        r.output_int[index] = int(number)

    @plain("write_output_float_register")
    def write_output_float_register(ctx: Context, address: Any, value: Any) -> None:
        r.output_double[_register(address, "write_output_float_register")] = _float(value, "value")

    @plain("write_output_boolean_register")
    def write_output_boolean_register(ctx: Context, address: Any, value: Any) -> None:
        if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address < 128:
            raise ScriptRuntimeError(f"register {address!r} is not in 0..127")
        r.output_bits[address] = bool(value)

    def digital_out(name: str, offset: int, count: int) -> None:
        def setter(ctx: Context, n: Any, b: Any) -> None:
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < count:
                raise ScriptRuntimeError(f"{name}: output {n!r} is not in 0..{count - 1}")
            c.digital_out[offset + n] = bool(b)

        functions[name] = Builtin(setter)

    digital_out("set_digital_out", 0, 8)
    digital_out("set_standard_digital_out", 0, 8)
    digital_out("set_configurable_digital_out", 8, 8)
    digital_out("set_tool_digital_out", 16, 2)

    @plain("get_digital_out")
    def get_digital_out(ctx: Context, n: Any) -> bool:
        return c.digital_out.get(int(_float(n, "n")), False)

    functions["get_standard_digital_out"] = functions["get_digital_out"]

    # -- settings --------------------------------------------------------------------------
    @plain("set_tcp")
    def set_tcp(ctx: Context, pose: Any, tcp_name: Any = "") -> None:
        c.tcp_offset = _pose(pose, "set_tcp")

    @plain("get_tcp_offset")
    def get_tcp_offset(ctx: Context) -> Pose:
        return Pose(c.tcp_offset)

    @plain("set_payload")
    def set_payload(ctx: Context, m: Any, cog: Any = None) -> None:
        centre = c.payload[1] if cog is None else tuple(_float(x, "cog") for x in cog)
        c.payload = (_float(m, "mass"), (centre[0], centre[1], centre[2]))

    @plain("set_target_payload")
    def set_target_payload(
        ctx: Context, m: Any, cog: Any, inertia: Any = None, transition_time: Any = 0
    ) -> None:
        set_payload(ctx, m, cog)
        if inertia is not None:
            c.payload_inertia = _joints(inertia, "inertia")

    @plain("get_target_payload_inertia")
    def get_target_payload_inertia(ctx: Context) -> list[float]:
        return list(c.payload_inertia)

    @plain("get_target_payload")
    def get_target_payload(ctx: Context) -> float:
        return c.payload[0]

    @plain("get_target_payload_cog")
    def get_target_payload_cog(ctx: Context) -> list[float]:
        return list(c.payload[1])

    @plain("textmsg")
    def textmsg(ctx: Context, s1: Any, s2: Any = "") -> None:
        line = to_text(s1) + to_text(s2)
        c.messages.append(line)

    functions["popup"] = Builtin(lambda ctx, s, title="", warning=False, error=False, blocking=False: None)

    # Settings that change nothing the simulation models: accepted, so programs run as they would.
    for name in ("force_mode_set_damping", "force_mode_set_gain_scaling", "zero_ftsensor", "end_force_mode",
                 "set_gravity", "teach_mode", "end_teach_mode", "rtde_set_watchdog", "set_tool_voltage",
                 "set_analog_out", "set_standard_analog_out", "set_safety_mode_transition_hardness",
                 "set_input_actions_to_default", "enable_feature", "disable_feature"):  # fmt: skip
        functions[name] = Builtin(lambda ctx, *args, **kwargs: None)

    # -- arithmetic ------------------------------------------------------------------------
    def unary(name: str, function: Callable[[float], float]) -> None:
        def call(ctx: Context, x: Any) -> float:
            try:
                return function(_float(x, name))
            except (ValueError, OverflowError) as exc:
                raise ScriptRuntimeError(f"{name}({x}): {exc}") from None

        functions[name] = Builtin(call)

    for name, function in (("sin", math.sin), ("cos", math.cos), ("tan", math.tan), ("asin", math.asin),
                           ("acos", math.acos), ("atan", math.atan), ("sqrt", math.sqrt), ("fabs", math.fabs),
                           ("d2r", math.radians), ("r2d", math.degrees), ("log", math.log)):  # fmt: skip
        unary(name, function)

    functions["floor"] = Builtin(lambda ctx, x: math.floor(_float(x, "floor")))
    functions["ceil"] = Builtin(lambda ctx, x: math.ceil(_float(x, "ceil")))
    functions["atan2"] = Builtin(lambda ctx, y, x: math.atan2(_float(y, "atan2"), _float(x, "atan2")))
    functions["pow"] = Builtin(lambda ctx, base, exponent: _float(base, "pow") ** _float(exponent, "pow"))
    functions["length"] = Builtin(lambda ctx, v: len(v) if isinstance(v, list | str) else 0)
    functions["to_str"] = Builtin(lambda ctx, v: to_text(v))
    functions["str_cat"] = Builtin(lambda ctx, a, b: to_text(a) + to_text(b))

    @plain("norm")
    def norm(ctx: Context, a: Any) -> float:
        if isinstance(a, list):
            return math.sqrt(sum(_float(x, "norm") ** 2 for x in a))
        return abs(_float(a, "norm"))

    def refuse(name: str) -> Builtin:
        def call(ctx: Context, *args: Any, **kwargs: Any) -> None:
            raise ScriptRuntimeError(f"{name}() is not simulated (no force or contact model)")

        return Builtin(call)

    for name in NOT_SIMULATED:
        functions.setdefault(name, refuse(name))
    return functions
