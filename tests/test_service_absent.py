"""A client and the lab-service commands when no service is there: no record in the data directory fails at
once, saying how to start one; a record whose service does not answer fails after a bounded wait for the
connection, however long the request itself may take, and says so."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from sdl.api import models as m
from sdl.api.client import CONNECT_S, Client, ServiceUnavailable
from sdl.api.wire import decode_request, encode_result
from sdl.cli import main

CAMPAIGN = Path(__file__).resolve().parents[1] / "experiments" / "branin" / "campaign.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record(data_dir: Path, pid: int, api: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "daemon.json").write_text(json.dumps({"pid": pid, "api": api, "lab": "gone"}))


def a_dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


@pytest.mark.parametrize("command", [["status"], ["submit", str(CAMPAIGN)], ["pause", "c1"], ["instruments"]])
def test_no_service_record_fails_at_once_naming_the_data_dir_and_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    data_dir = tmp_path / "data"
    assert main([*command, "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert f"no lab service runs with data directory {data_dir}" in err
    assert f"sdl daemon --lab LAB.yaml --data-dir {data_dir}" in err


def test_a_record_of_a_process_that_is_gone_fails_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    pid = a_dead_pid()
    record(data_dir, pid, f"tcp://127.0.0.1:{free_port()}")
    assert main(["status", "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert f"(process {pid}) is not running" in err and "sdl daemon --lab" in err


def test_a_record_whose_service_does_not_answer_gives_up_after_the_connection_wait(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    record(data_dir, os.getpid(), f"tcp://127.0.0.1:{free_port()}")  # a live process that serves nothing
    assert main(["status", "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert f"within {CONNECT_S:g} s: nothing took the connection" in err
    assert f"names process {os.getpid()}, which is running" in err


def test_a_long_request_to_nothing_waits_only_for_the_connection() -> None:
    """A submission may take a minute to be validated by the service; to nothing, it fails like a status."""
    address = f"tcp://127.0.0.1:{free_port()}"
    with Client(address, timeout=60) as client, pytest.raises(ServiceUnavailable) as exc:
        client.call(m.Status())
    assert f"within {CONNECT_S:g} s: nothing took the connection" in str(exc.value)


def test_a_service_that_took_the_connection_may_answer_after_the_connection_wait() -> None:
    """The bound is on connecting: a reply that comes later than it (a long validation) still arrives."""
    context = zmq.Context()
    server = context.socket(zmq.ROUTER)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    answered: list[bytes] = []

    def serve() -> None:
        if not server.poll(60_000):  # the client never asked: nothing to answer
            return
        identity, empty, raw = server.recv_multipart()
        envelope = decode_request(raw)
        later = time.monotonic() + 0.5  # ten times the client's connection wait below: a slow answer
        while time.monotonic() < later:
            server.poll(50)
        answer = encode_result(envelope.id, m.Ok(message="slow but here"))
        server.send_multipart([identity, empty, answer])
        answered.append(answer)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout=30, connect_timeout=0.05) as client:
            reply = client.call(m.Shutdown())
    finally:
        thread.join()
        server.close(linger=0)
        context.term()
    assert answered and reply.message == "slow but here"
