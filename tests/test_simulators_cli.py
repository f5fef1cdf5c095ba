"""`python -m simulators`: the endpoint lines other tools parse, clean shutdown, and clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from drivers.ocean import OceanSpectrometer


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "simulators", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def read_endpoints(process: subprocess.Popen, count: int) -> dict[str, str]:
    endpoints = {}
    for _ in range(count):
        line = process.stdout.readline()
        assert line, process.stderr.read()
        name, url = line.split()
        endpoints[name] = url
    return endpoints


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> int:
    process.send_signal(signum)
    try:
        return process.wait(timeout=10)
    finally:
        process.stdout.close()
        process.stderr.close()


@pytest.mark.parametrize(
    ("link_args", "prefix", "signum"),
    [
        ((), "socket://127.0.0.1:", signal.SIGTERM),
        (("--pty",), "/dev/", signal.SIGINT),
    ],
)
def test_single_instrument_prints_its_endpoint_serves_and_stops(link_args, prefix, signum):
    process = start("ocean-hdx", *link_args, "--speed", "1000")
    endpoints = read_endpoints(process, 1)
    assert list(endpoints) == ["obp"] and endpoints["obp"].startswith(prefix)
    spectrometer = OceanSpectrometer.connect(endpoints["obp"])
    try:
        assert spectrometer.serial_number()
    finally:
        spectrometer.close()
    assert stop(process, signum) == 0


def test_lab_mode_names_endpoints_by_instrument(tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text(
        textwrap.dedent("""\
        speed: 500
        world:
          stations: {spectrometer: {}}
        instruments:
          left: {kind: ocean-hdx, holder: spectrometer}
          right: {kind: ocean-hdx, holder: spectrometer}
    """)
    )
    process = start("lab", str(lab))
    endpoints = read_endpoints(process, 2)
    assert sorted(endpoints) == ["left.obp", "right.obp"]
    assert len(set(endpoints.values())) == 2
    assert stop(process) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("plasma-cutter",), "unknown instrument kind 'plasma-cutter'; allowed: "),
        (("ocean-hdx", "--faults", "meltdown@2"), "unknown fault 'meltdown'; allowed: "),
        (("ocean-hdx", "--faults", "drop@0"), "N counts from 1"),
        (("lab",), "lab needs a lab file"),
        (("lab", "/nonexistent/lab.yaml"), "/nonexistent/lab.yaml: cannot read lab file"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "simulators", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_lab_file_mistakes_name_the_field(tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text("instruments:\n  spec: {kind: ocean-hdx, faults: 'saturate@x'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "simulators", "lab", str(lab)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert f"{lab}: instruments.spec.faults: fault entry 'saturate@x'" in result.stderr


def test_faults_lists_what_an_instrument_can_inject():
    result = subprocess.run(
        [sys.executable, "-m", "simulators", "faults", "ocean-hdx"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert {"drop", "garble", "partial", "silent", "not-ready", "saturate"} <= set(names)


def test_stopping_right_after_the_endpoint_lines_is_clean():
    # The lines announce readiness, so a stop that follows them at once must shut down cleanly
    # rather than meet SIGTERM's default action.
    for _ in range(5):
        process = start("ocean-hdx")
        read_endpoints(process, 1)
        assert stop(process) == 0


SUPERVISOR = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-m", "simulators", "ocean-hdx", *sys.argv[1:]],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state to tell.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


@pytest.mark.parametrize("exit_with_parent", [True, False])
def test_exit_with_parent_stops_the_simulator_when_its_supervisor_is_killed(exit_with_parent):
    flags = ["--exit-with-parent"] if exit_with_parent else []
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, *flags], stdout=subprocess.PIPE, text=True
    )
    simulator = int(supervisor.stdout.readline())
    try:
        supervisor.kill()  # kill -9: no chance to clean up its child
        supervisor.wait(timeout=10)
        # The simulator checks its parent every 0.5 s: 2 s is ample to see it still running.
        deadline = time.monotonic() + (10 if exit_with_parent else 2)
        while _alive(simulator) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(simulator) is not exit_with_parent
    finally:
        supervisor.stdout.close()
        if _alive(simulator):
            os.kill(simulator, signal.SIGKILL)
