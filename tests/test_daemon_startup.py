"""`sdl daemon` refuses what it cannot do before it starts anything: an address to listen on that is taken
(naming the port and the flag that sets it), with exit code 2 and nothing written."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

FLAGS = ("--api", "--events", "--documents", "--http")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port a 0MQ socket listens on (as another lab service's would)."""
    context = zmq.Context()
    socket_ = context.socket(zmq.ROUTER)
    port = socket_.bind_to_random_port("tcp://127.0.0.1")
    yield port
    socket_.close(linger=0)
    context.term()


def lab_file(tmp_path: Path) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text("name: compute\nworkcells:\n  w1: {}\n")
    return path


def daemon(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    addresses = {flag: "tcp://127.0.0.1:0" for flag in FLAGS[:3]}
    given = dict(zip(flags[::2], flags[1::2], strict=True))
    command = [sys.executable, "-m", "sdl", "daemon", "--lab", str(lab_file(tmp_path))]
    command += ["--data-dir", str(tmp_path / "data")]
    for flag, value in {**addresses, **given}.items():
        command += [flag, value]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("flag", FLAGS)
def test_a_port_in_use_is_named_with_its_flag_before_anything_starts(
    tmp_path: Path, taken_port: int, flag: str
) -> None:
    value = f"127.0.0.1:{taken_port}" if flag == "--http" else f"tcp://127.0.0.1:{taken_port}"
    done = daemon(tmp_path, flag, value)
    assert done.returncode == 2, done.stderr
    assert f"{flag} " in done.stderr and f"port {taken_port} is already in use" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "ZMQError" not in done.stderr
    assert not (tmp_path / "data").exists()  # no store claimed, nothing written


def test_a_plain_listening_socket_is_seen_too(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = daemon(tmp_path, "--api", f"tcp://127.0.0.1:{port}")
    assert done.returncode == 2, done.stderr
    assert f"--api tcp://127.0.0.1:{port}: port {port} is already in use" in done.stderr


def test_one_port_for_two_flags_is_refused(tmp_path: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    done = daemon(tmp_path, "--api", f"tcp://127.0.0.1:{port}", "--events", f"tcp://127.0.0.1:{port}")
    assert done.returncode == 2 and f"port {port} is also given to --api" in done.stderr, done.stderr


def test_the_dashboard_names_its_port_in_use_too(
    tmp_path: Path, taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    from sdl.cli import main

    assert main(["dashboard", "--http", f"127.0.0.1:{taken_port}", "--data-dir", str(tmp_path)]) == 2
    assert f"--http 127.0.0.1:{taken_port}: port {taken_port} is already in use" in capsys.readouterr().err
