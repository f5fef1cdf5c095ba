"""ur_rtde, unchanged, against the simulated arm: its receive, control and dashboard clients.

ur_rtde takes no port numbers (29999, 30003, 30004 are built in), so each simulator runs as its
own process with ``--standard-ports`` on a loopback address of its own (127.x.y.z), as a lab
with several arms would run them. Its control interface uploads ur_rtde's own URScript control
loop, which the simulator's interpreter runs; every command below goes through that script.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dashboard_client
import pytest
import rtde_control
import rtde_receive

from simulators.ur import DEFAULT_POSITIONS

HOME = DEFAULT_POSITIONS["home"]
FEEDER = DEFAULT_POSITIONS["feeder"]
WASTE = DEFAULT_POSITIONS["waste"]
SPEED = 4.0  # simulated time runs this much faster: a 1 rad move takes about 0.3 s
PROTECTIVE_STOP_BIT = 1 << 2


@contextmanager
def simulated_arm(*args: str) -> Iterator[str]:
    """``python -m simulators ur --standard-ports`` on a free loopback address; yields the address."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(20):
        host = f"127.{rng.randrange(1, 255)}.{rng.randrange(0, 256)}.{rng.randrange(2, 255)}"
        command = [sys.executable, "-m", "simulators", "ur", "--host", host, "--standard-ports",
                   "--speed", str(SPEED), "--exit-with-parent", *args]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(6)]
        if all(lines):
            break
        _, stderr = process.communicate(timeout=10)  # it could not bind (another run of this test has the
        if "address already in use" not in stderr:  # address, try another) or it failed: say why
            pytest.fail(f"the simulated arm did not start: {stderr.strip()[-500:]}")
    else:
        pytest.fail("no free loopback address for the simulated arm")
    try:
        assert {line.split()[0] for line in lines} >= {"dashboard", "realtime", "rtde"}
        assert all(line.split()[1].startswith(f"socket://{host}:") for line in lines)
        yield host
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr


def eventually(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``condition`` until it is truthy (RTDE state arrives as packages); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.005)


def close_to(values: list[float], expected: list[float], tolerance: float = 1e-6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(values, expected, strict=True))


@contextmanager
def clients(host: str) -> Iterator[tuple[Any, Any]]:
    dashboard = dashboard_client.DashboardClient(host)
    dashboard.connect()
    receive = rtde_receive.RTDEReceiveInterface(host)
    try:
        yield dashboard, receive
    finally:
        receive.disconnect()
        dashboard.disconnect()


def power_up(dashboard: Any, receive: Any) -> None:
    """What an operator's script does first: power on, wait for IDLE, release the brakes."""
    assert receive.getRobotMode() == 3  # POWER_OFF
    dashboard.powerOn()
    eventually(lambda: receive.getRobotMode() == 5, "robot mode IDLE")
    dashboard.brakeRelease()
    eventually(lambda: receive.getRobotMode() == 7, "robot mode RUNNING")


def test_receive_and_control_move_the_arm_and_a_stop_stops_it() -> None:
    with simulated_arm() as host, clients(host) as (dashboard, receive):
        assert close_to(receive.getActualQ(), HOME)
        x, y, z = receive.getActualTCPPose()[:3]
        assert abs(x + 0.4919) < 1e-3 and abs(y + 0.1333) < 1e-3 and abs(z - 0.4879) < 1e-3  # UR5e DH
        power_up(dashboard, receive)
        control = rtde_control.RTDEControlInterface(host)
        try:
            assert control.isProgramRunning()  # the uploaded control script runs
            assert control.moveJ(FEEDER, 1.0, 1.4)
            eventually(lambda: close_to(receive.getActualQ(), FEEDER), "moveJ reaching its target")
            assert receive.getRuntimeState() == 2  # PLAYING: the control loop waits for the next command

            start = receive.getActualTCPPose()
            above = [*start[:2], start[2] + 0.05, *start[3:]]
            assert control.moveL(above, 0.1, 0.5)
            eventually(lambda: close_to(receive.getActualTCPPose(), above, 1e-5), "moveL reaching its target")
            assert control.getInverseKinematics(above) == pytest.approx(receive.getActualQ(), abs=1e-5)

            # A long move, started asynchronously, stopped while the arm is under way.
            assert control.moveJ(WASTE, 0.5, 1.4, True)
            eventually(lambda: max(abs(v) for v in receive.getActualQd()) > 0.2, "the arm under way")
            control.stopJ(4.0)  # returns once the script has stopped the arm
            eventually(lambda: max(abs(v) for v in receive.getActualQd()) == 0, "the arm at rest")
            stopped_at = receive.getActualQ()
            assert not close_to(stopped_at, WASTE, 0.1) and not close_to(stopped_at, FEEDER, 0.01)
            assert control.isProgramRunning() and receive.getSafetyMode() == 1  # NORMAL: a stop is no fault

            # Speed mode: the base turns at a constant 0.2 rad/s until speedStop.
            assert control.speedJ([0.2, 0, 0, 0, 0, 0], 0.5, 0.008)
            eventually(
                lambda: close_to(receive.getActualQd(), [0.2, 0, 0, 0, 0, 0], 1e-9), "turning at 0.2 rad/s"
            )
            control.speedStop(2.0)
            eventually(lambda: max(abs(v) for v in receive.getActualQd()) == 0, "the arm at rest again")
            assert receive.getActualQ()[0] > stopped_at[0] + 0.05  # it turned
        finally:
            control.stopScript()
            control.disconnect()


def test_a_protective_stop_shows_in_the_safety_status() -> None:
    # The second motion command the controller runs is cut short by a protective stop.
    with simulated_arm("--faults", "protective-stop@2") as host, clients(host) as (dashboard, receive):
        power_up(dashboard, receive)
        control = rtde_control.RTDEControlInterface(host)
        try:
            assert control.moveJ(FEEDER, 1.0, 1.4)
            assert receive.getSafetyStatusBits() & PROTECTIVE_STOP_BIT == 0
            assert not control.moveJ(HOME, 1.0, 1.4)  # ur_rtde gives up on a protective stop
            eventually(receive.isProtectiveStopped, "the protective stop in safety_status_bits")
            assert receive.getSafetyMode() == 3  # PROTECTIVE_STOP
            eventually(lambda: not control.isProgramRunning(), "the control script stopping")
            assert not close_to(receive.getActualQ(), HOME, 0.01)  # it stopped on the way
            # The controller's 5 s rule, then the recovery an operator's script makes.
            with pytest.raises(RuntimeError, match="Unlock protective stop failure"):
                dashboard.unlockProtectiveStop()
            eventually(lambda: _unlocked(dashboard), "unlocking after 5 simulated s")
            eventually(lambda: receive.getSafetyMode() == 1, "safety mode NORMAL again")
            assert control.reuploadScript()
            eventually(control.isProgramRunning, "the control script running again")
            assert control.moveJ(HOME, 1.0, 1.4)
            eventually(lambda: close_to(receive.getActualQ(), HOME), "the arm home")
        finally:
            control.stopScript()
            control.disconnect()


def _unlocked(dashboard: Any) -> bool:
    try:
        dashboard.unlockProtectiveStop()
    except RuntimeError:
        return False
    return True
