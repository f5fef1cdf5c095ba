"""Conformance: the UR driver against the UR simulator, over TCP and a pseudo-terminal.

The plain API, the ophyd face inside a RunEngine, the safety limits (checked on the wire: nothing
reaches the simulator), and each injected fault with the exception it raises and the recovery
that follows. Simulated time runs 200x faster than real time, so a move takes milliseconds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import pytest
from bluesky.utils import FailedStatus

from drivers.errors import ConnectionLost, InstrumentTimeout, ProtocolError, ReplyCutShort, SafetyLimitError
from drivers.ur import (
    GripperMissedObject,
    MotionStopped,
    ProtectiveStop,
    RemoteControlRequired,
    RobotMode,
    SafetyStatus,
    UnknownPosition,
    URArm,
    URDashboard,
    make_device,
)
from simulators.clock import ScaledClock
from simulators.testing import BackgroundLab, run_simulator
from simulators.ur import DEFAULT_POSITIONS

LINKS = ["tcp", "pty"]
SPEED = 200.0
FAST = {"unlock_delay": 5.0 / SPEED, "unlock_retry_interval": 0.002, "reply_timeout": 0.3}


@contextmanager
def simulator(link: str = "tcp", **options) -> Iterator[BackgroundLab]:
    """The UR simulator, shut down only after its TCP sessions have seen their clients leave."""
    with run_simulator("ur", link=link, **options) as sim:
        yield sim
        if link == "tcp":
            sim.wait_until_clients_leave()


@contextmanager
def bench(link: str = "tcp", *, faults: str | None = None, config=None, speed: float = SPEED, **options):
    """The arm, its state polled over the dashboard (tests/test_ur_rtde_protocol.py follows it over RTDE)."""
    with simulator(link, clock=ScaledClock(speed), faults=faults, config=config) as sim:
        links = {k: sim.urls[k] for k in ("dashboard", "script", "gripper")}
        arm = URArm.connect(links, positions=DEFAULT_POSITIONS, **{**FAST, **options})
        try:
            yield sim, arm
        finally:
            arm.close()


def requests(sim: BackgroundLab) -> dict[str, int]:
    ur = sim.lab.simulators["ur"]
    return sim.call(lambda: dict(ur.requests))


def vessel_at(sim: BackgroundLab, station: str):
    return sim.call(lambda: sim.lab.world.vessel_at(station))


@pytest.mark.parametrize("link", LINKS)
def test_plain_api_prepares_the_arm_and_carries_vials(link):
    with bench(link) as (sim, arm):
        assert arm.dashboard.robot_mode() is RobotMode.POWER_OFF
        arm.prepare()
        arm.prepare()  # idempotent
        status = arm.status()
        assert status.robot_mode is RobotMode.RUNNING and status.safety is SafetyStatus.NORMAL
        assert status.remote_control and not status.running
        sample = vessel_at(sim, "dispense")
        arm.transfer("dispense", "spectrometer")
        assert vessel_at(sim, "spectrometer") is sample and vessel_at(sim, "dispense") is None
        fresh = vessel_at(sim, "feeder")
        arm.transfer("feeder", "dispense")
        assert vessel_at(sim, "dispense") is fresh
        arm.transfer("spectrometer", "waste")
        assert sim.call(lambda: sim.lab.world.discarded) == [sample]
        assert arm.position == "waste_above"
        arm.move_to("home")
        arm.move_to("home")  # already there: a zero-length program still completes
        assert arm.program_state().program.startswith("sdl_move_")
        arm.move_to("feeder")
        assert arm.grip() is True  # the feeder always has a vial
        arm.move_to("waste")
        assert arm.release() is False  # nothing blocked the fingers while opening
        assert len(sim.call(lambda: sim.lab.world.discarded)) == 2


@pytest.mark.parametrize("link", LINKS)
def test_ophyd_face_in_a_bluesky_plan(link, engine):
    with simulator(link, clock=ScaledClock(SPEED)) as sim:
        arm = make_device("arm", sim.urls, positions=DEFAULT_POSITIONS, speed=0.8, **FAST)
        documents = []

        @bpp.run_decorator()
        def plan():
            yield from bps.mv(arm.gripper, "open")
            yield from bps.mv(arm, "dispense_above")
            yield from bps.mv(arm, "dispense")
            yield from bps.mv(arm.gripper, "closed")
            yield from bps.trigger_and_read([arm])
            yield from bps.mv(arm, "dispense_above")
            yield from bps.mv(arm, "spectrometer_above")
            yield from bps.mv(arm, "spectrometer")
            yield from bps.mv(arm.gripper, "open")
            yield from bps.mv(arm.transfer, ("feeder", "dispense"))
            yield from bps.trigger_and_read([arm])

        try:
            sample = vessel_at(sim, "dispense")
            fresh = vessel_at(sim, "feeder")
            engine(plan(), lambda name, doc: documents.append((name, doc)))
            events = [doc["data"] for name, doc in documents if name == "event"]
            assert (
                events[0]["arm_location"] == "dispense" and events[0]["arm_gripper_object_detected"] is True
            )
            assert events[0]["arm_robot_mode"] == "RUNNING" and events[0]["arm_safety_status"] == "NORMAL"
            assert events[1]["arm_location"] == "dispense_above"
            assert events[1]["arm_gripper_object_detected"] is False
            assert vessel_at(sim, "spectrometer") is sample and vessel_at(sim, "dispense") is fresh
            assert arm.read()["arm_transfer_last"]["value"] == "feeder->dispense"
            with pytest.raises(FailedStatus) as failed:
                engine(bps.mv(arm, "nowhere"))
            assert isinstance(failed.value.__cause__, UnknownPosition)
        finally:
            arm.destroy()


@pytest.mark.parametrize("link", LINKS)
def test_rejected_requests_leave_the_wire_silent(link):
    with bench(link) as (sim, arm):
        arm.prepare()
        before = requests(sim)
        with pytest.raises(
            UnknownPosition, match="'nowhere' is not a configured position; configured: dispense"
        ):
            arm.move_to("nowhere")
        with pytest.raises(SafetyLimitError, match=r"joint speed 2.0 rad/s is outside \(0, 1.05\]"):
            arm.move_to("feeder", speed=2.0)
        with pytest.raises(SafetyLimitError, match="max_joint_accel"):
            arm.move_to("feeder", acceleration=5.0)
        with pytest.raises(SafetyLimitError, match="speed"):
            arm.move_to("feeder", speed=0)
        with pytest.raises(UnknownPosition):
            arm.transfer("feeder", "moon")
        with pytest.raises(SafetyLimitError, match="max_force"):
            arm.gripper.move(255, force=300)
        with pytest.raises(SafetyLimitError, match="position must be 0–255"):
            arm.gripper.move(256)
        assert requests(sim) == before  # not one byte reached the robot


def test_rejected_requests_through_the_ophyd_face_send_nothing(engine):
    with simulator(clock=ScaledClock(SPEED)) as sim:
        arm = make_device("arm", sim.urls, positions=DEFAULT_POSITIONS, max_speed=0.6, speed=0.5, **FAST)
        try:
            before = requests(sim)
            with pytest.raises(SafetyLimitError, match="max_joint_speed"):
                arm.speed.put(0.9)
            for target, value in ((arm, "nowhere"), (arm.gripper, "half"), (arm.transfer, "feeder")):
                with pytest.raises(FailedStatus) as failed:
                    engine(bps.mv(target, value))
                assert isinstance(failed.value.__cause__, SafetyLimitError)
            assert requests(sim) == before
        finally:
            arm.destroy()


def test_the_retries_and_timeout_options_reach_the_dashboard_and_the_gripper():
    arm = make_device("arm", "localhost", positions=DEFAULT_POSITIONS, retries=0, reply_timeout=0.3)
    try:
        assert arm.arm.retry.attempts == 1 and arm.arm.gripper.retry.attempts == 1
        assert arm.arm.dashboard.transport.reply_timeout == 0.3
        assert arm.arm.gripper.transport.reply_timeout == 0.3
    finally:
        arm.destroy()


def test_make_device_checks_its_options(tmp_path):
    with pytest.raises(ValueError, match=r"unknown option 'colour'; allowed: .*positions, positions_file"):
        make_device("arm", "localhost", positions=DEFAULT_POSITIONS, colour="red")
    with pytest.raises(ValueError, match="exactly one of 'positions' or 'positions_file'"):
        make_device("arm", "localhost")
    bad = tmp_path / "positions.yaml"
    bad.write_text("positions:\n  home: [0, 0, 0]\n")
    with pytest.raises(ValueError, match=r"positions.yaml: positions.home: expected a list of 6"):
        make_device("arm", "localhost", positions_file=str(bad))
    good = tmp_path / "taught.yaml"
    good.write_text(
        "units: deg\npositions:\n  home: [0, -90, 90, -90, -90, 0]\n  feeder: [50, -65, 100, -125, -90, 0]\n"
    )
    with simulator(clock=ScaledClock(SPEED)) as sim:
        arm = make_device("arm", sim.urls, positions_file=str(good), **FAST)
        try:
            assert sorted(arm.arm.positions) == ["feeder", "home"]
        finally:
            arm.destroy()
        plain = URArm.connect(sim.urls, positions_file=good, **FAST)
        try:
            assert plain.positions["home"][1] == pytest.approx(-1.5708, abs=1e-4)
        finally:
            plain.close()


def test_a_dropped_connection_raises_connection_lost_and_reconnecting_recovers():
    # Faults count replies on all endpoints; with the arm idle only the dashboard replies.
    with bench("tcp", faults="drop@2") as (_, arm):
        assert arm.dashboard.robot_mode() is RobotMode.POWER_OFF
        with pytest.raises(ConnectionLost):
            arm.dashboard.robot_mode()
        arm.dashboard.reconnect()
        assert arm.dashboard.robot_mode() is RobotMode.POWER_OFF


@pytest.mark.parametrize("link", LINKS)
def test_garbled_and_partial_replies_raise_typed_errors(link):
    with bench(link, faults="garble@1,partial@2,silent@3") as (_, arm):
        with pytest.raises(ProtocolError):
            arm.dashboard.robot_mode()  # "Robot>ode: POWER_OFF"
        with pytest.raises(ReplyCutShort):
            arm.dashboard.robot_mode()  # half a line never ends: cut short, not silent
        with pytest.raises(InstrumentTimeout):
            arm.dashboard.is_running()  # no reply at all
        assert arm.dashboard.robot_mode() is RobotMode.POWER_OFF  # stale bytes are discarded


def test_a_garbled_gripper_ack_is_a_protocol_error():
    with bench("tcp", faults="garble@1,garble@2") as (_, arm):
        policy = arm.gripper.retry
        arm.gripper.retry = policy.with_(attempts=1)
        with pytest.raises(ProtocolError, match="expected 'ack'"):
            arm.gripper.set(ACT=1)
        arm.gripper.retry = policy
        arm.gripper.set(ACT=1)  # the second garbled ack is retried away


@pytest.mark.parametrize("link", LINKS)
def test_moves_ride_through_link_faults(link):
    # Four replies (of the 70-odd any prepare + transfer takes) are spoiled: the driver retries idempotent
    # queries, reconnecting after a drop, and the transfer completes all the same.
    spoiled = "drop@10,garble@25,partial@40,drop@55"
    with bench(link, faults=spoiled) as (sim, arm):
        events: list[dict] = []
        arm.events.subscribe(events.append)
        arm.prepare()
        sample = vessel_at(sim, "dispense")
        arm.transfer("dispense", "spectrometer")
        assert vessel_at(sim, "spectrometer") is sample
        assert sim.call(lambda: sum(sim.lab.simulators["ur"].faults.fired.values())) == 4
        retries = [event for event in events if event["event"] == "retry"]
        # A drop closes a TCP link; on a pty it only loses the reply (a timeout).
        assert len(retries) >= 4 and {event["fault"] for event in retries} >= {"garbled"}


@pytest.mark.parametrize("link", LINKS)
def test_protective_stop_raises_and_recovery_waits_out_the_rule(link, caplog):
    # A slower clock here: the 5 s rule lasts 0.25 s of real time, so a test thread delayed by a
    # loaded machine still meets it (at SPEED it passed in 25 ms, sometimes before the first unlock).
    with (
        bench(link, faults="protective-stop@1", unlock_delay=0.0, speed=20) as (sim, arm),
        caplog.at_level(logging.INFO, "drivers.ur.arm"),
    ):
        arm.prepare()
        with pytest.raises(ProtectiveStop) as stopped:
            arm.move_to("feeder")
        assert stopped.value.observed_at <= time.monotonic()
        assert arm.position is None and arm.status().safety is SafetyStatus.PROTECTIVE_STOP
        scripts = requests(sim).get("script", 0)
        with pytest.raises(ProtectiveStop):
            arm.move_to("feeder")  # refused before sending: the stop is still on
        assert requests(sim).get("script", 0) == scripts
        # With no delay of its own, the driver meets the controller's 5 s rule and retries until it passes.
        arm.recover_from_protective_stop()
        assert "unlock refused; retrying" in caplog.text
        assert arm.status().safety is SafetyStatus.NORMAL
        arm.move_to("feeder")
        assert arm.position == "feeder"
        arm.recover_from_protective_stop()  # nothing to recover: a no-op


def test_recovery_waits_its_own_delay_before_the_first_unlock(caplog):
    with (
        bench("tcp", faults="protective-stop@1", unlock_delay=10.0 / SPEED) as (_, arm),
        caplog.at_level(logging.INFO, "drivers.ur.arm"),
    ):
        arm.prepare()
        with pytest.raises(ProtectiveStop) as stopped:
            arm.move_to("feeder")
        arm.recover_from_protective_stop()
        assert time.monotonic() - stopped.value.observed_at >= 10.0 / SPEED
        assert "unlock refused" not in caplog.text  # it waited longer than the controller's rule


def test_auto_unlock_through_the_ophyd_face(engine):
    with simulator(clock=ScaledClock(SPEED), faults="protective-stop@2") as sim:
        arm = make_device("arm", sim.urls, positions=DEFAULT_POSITIONS, auto_unlock=True, **FAST)
        try:
            engine(bps.mv(arm, "feeder_above"))
            engine(bps.mv(arm, "feeder"))  # stopped halfway, unlocked after the rule, moved again
            assert arm.location.get() == "feeder"
            assert sim.call(lambda: sim.lab.simulators["ur"].faults.fired["protective-stop"]) == 1
        finally:
            arm.destroy()


@pytest.mark.parametrize("link", LINKS)
def test_a_missed_grip_raises_and_a_retry_recovers(link):
    with bench(link, faults="miss@1,miss@3") as (sim, arm):
        arm.prepare()
        vial = vessel_at(sim, "dispense")
        with pytest.raises(GripperMissedObject) as missed:
            arm.pick("dispense")
        assert missed.value.station == "dispense" and arm.position == "dispense_above"
        assert vessel_at(sim, "dispense") is vial  # still on the station
        arm.pick("dispense", retries=1)  # opportunity 2 catches it
        assert sim.call(lambda: sim.lab.simulators["ur"].gripper.held) is vial
        arm.place("dispense")
        arm.pick("dispense", retries=1)  # opportunity 3 misses, 4 catches
        assert sim.call(lambda: sim.lab.simulators["ur"].gripper.held) is vial


def test_a_missed_grip_fails_the_plan_when_no_retry_is_allowed(engine):
    with simulator(clock=ScaledClock(SPEED), faults="miss@1") as sim:
        arm = make_device("arm", sim.urls, positions=DEFAULT_POSITIONS, pick_retries=0, **FAST)
        try:
            arm.connect()
            with pytest.raises(FailedStatus) as failed:
                engine(bps.mv(arm.transfer, "dispense->spectrometer"))
            assert isinstance(failed.value.__cause__, GripperMissedObject)
        finally:
            arm.destroy()


def test_a_missed_grip_is_recovered_by_reopening_and_gripping_once_more(engine):
    # Robotiq's documented recovery: open, close again; the default allows that once.
    with simulator(clock=ScaledClock(SPEED), faults="miss@1") as sim:
        arm = make_device("arm", sim.urls, positions=DEFAULT_POSITIONS, **FAST)
        events: list[dict] = []
        arm.subscribe_faults(events.append)
        try:
            arm.connect()
            sample = vessel_at(sim, "dispense")
            engine(bps.mv(arm.transfer, "dispense->spectrometer"))
            assert vessel_at(sim, "spectrometer") is sample
            assert [e["event"] for e in events] == ["retry", "recovered"]
            assert all(e["instrument"] == "arm" and e["fault"] == "alarm" for e in events)
        finally:
            arm.destroy()


def test_local_control_is_refused_with_a_clear_error():
    with bench("tcp", config={"remote_control": False, "initial_mode": "RUNNING"}) as (sim, arm):
        with pytest.raises(RemoteControlRequired, match="Remote Control on the pendant"):
            arm.move_to("feeder")
        with pytest.raises(RemoteControlRequired):
            arm.dashboard.power_on()
        assert requests(sim).get("script", 0) == 0
        sim.call(lambda: setattr(sim.lab.simulators["ur"], "remote_control", True))  # the operator hands over
        arm.move_to("feeder")
        assert arm.position == "feeder"


def test_a_cb3_controller_works_without_the_e_series_commands():
    with bench("tcp", config={"series": "cb3"}) as (_, arm):
        arm.prepare()
        arm.transfer("dispense", "spectrometer")
        assert arm.status().safety is SafetyStatus.NORMAL and arm.position == "spectrometer_above"


def test_stop_halts_a_move(engine):
    # Real time here, so the move is still running when stop() arrives.
    config = {"initial_mode": "RUNNING", "gripper": {"active": True}}
    with simulator(clock=ScaledClock(1.0), config=config) as sim:
        arm = make_device("arm", sim.urls, positions=DEFAULT_POSITIONS, **FAST)
        try:
            arm.connect()
            status = arm.set("waste")
            deadline = time.monotonic() + 5
            while not arm.arm.dashboard.is_running():
                assert time.monotonic() < deadline, "the move never started"
            arm.stop()
            with pytest.raises(MotionStopped):
                status.wait(5)
            assert arm.location.get() == "" and not arm.arm.dashboard.is_running()
        finally:
            arm.destroy()


def test_pyrobotiqur_drives_the_simulated_gripper_unchanged():
    """Fidelity: a third-party URCap socket client (pyrobotiqur) against our gripper endpoint."""
    from pyrobotiqur import RobotiqGripper as ThirdPartyGripper
    from pyrobotiqur.enums import GripperStatus, ObjectStatus

    config = {"initial_mode": "RUNNING", "initial_position": "feeder"}
    with simulator(clock=ScaledClock(SPEED), config=config) as sim:
        url = urlsplit(sim.url("gripper").replace("socket://", "tcp://"))
        with ThirdPartyGripper(url.hostname, url.port, timeout=2.0) as gripper:
            gripper.activate(poll_interval=0.001)
            assert gripper.get_status() is GripperStatus.ACTIVE
            position, found = gripper.close(poll_interval=0.001)
            assert found is ObjectStatus.STOPPED_INNER_OBJECT and 0 < position < 255
            position, found = gripper.open(poll_interval=0.001)
            assert found is ObjectStatus.AT_DEST and position == 0
            assert gripper.get_fault() == 0


@pytest.mark.hardware
def test_hardware_robot_mode():
    """Harmless on a real robot: one 'robotmode' query. Set SDL_UR_HOST to the controller's address."""
    host = os.environ.get("SDL_UR_HOST")
    if not host:
        pytest.fail("set SDL_UR_HOST to the UR controller's address to run the hardware test")
    dashboard = URDashboard.connect(f"socket://{host}:29999")
    try:
        assert isinstance(dashboard.robot_mode(), RobotMode)
    finally:
        dashboard.close()
