"""Hostile clients for benchmarks/daemon.py's e-stop block: each a process of its own (this file run as a
script, which imports nothing but pyzmq) that floods the lab service's API socket, or its event socket, with
raw 0MQ until it is told to stop, and then says how many replies it got.

    with Flood(["oversized", "parse"], api_address, events_address) as flood:
        ...                      # measure something meanwhile
    flood.rate                   # replies per second the floods got

Kinds (what the probe of issue 21 sent, and what the limits of docs/api.md answer):

- ``oversized``: requests of 15 MB, 24 in flight at once (the probe's load; refused unparsed);
- ``multipart``: messages of 8 frames of 15 MB (refused for their frame count, not echoed), 2 in flight;
- ``frames``: messages of 20,000 empty frames, 4 in flight (each frame read and dropped);
- ``parse``: requests of almost 1 MiB of JSON numbers that must be parsed whole to be refused, 8 in flight
  on each of 8 connections (every request slot of the service);
- ``garbage``: small malformed and numeric-edge requests (NaN ids, 5000-digit integers, 10^19), 64 in
  flight;
- ``subscribers``: event subscribers that subscribe to 100 random prefixes, are cut, and come back.

Every socket is a CurveZMQ client with the key pair and server key given in $SDL_FLOOD_PUBLIC,
$SDL_FLOOD_SECRET and $SDL_FLOOD_SERVER (Z85): the lab service admits no client without a key, so a flood
worth measuring comes from a key it allows (one that leaked, or a client gone wrong).
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import zmq

MB = 1 << 20
GARBAGE = [
    b'{"method": "status", "id": NaN}',
    b'{"method": "status", "id": ' + b"9" * 5000 + b"}",
    b'{"method": "experiment.show", "id": 1, "params": {"experiment_id": 10000000000000000000}}',
    b'{"method": "events.since", "id": 2, "params": {"seq": 1e999}}',
    b"[" * 50_000,
    b"not json",
]
#: Processes per kind: one connection may have only 8 requests in flight.
PROCESSES = {"parse": 8}
stopping = False


def _stop(signum: int, frame: object) -> None:
    global stopping
    stopping = True


def _curve(socket: zmq.Socket[bytes]) -> None:
    socket.curve_publickey = os.environ["SDL_FLOOD_PUBLIC"].encode()
    socket.curve_secretkey = os.environ["SDL_FLOOD_SECRET"].encode()
    socket.curve_serverkey = os.environ["SDL_FLOOD_SERVER"].encode()


def _ready() -> None:
    print("ready", flush=True)


def pipelined(api: str, make: Callable[[int], list[bytes]], depth: int) -> int:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    _curve(socket)
    socket.connect(api)
    sent = answered = 0
    try:
        for _ in range(depth):
            socket.send_multipart(make(sent))
            sent += 1
        while not stopping:
            if socket.poll(100):
                socket.recv_multipart()
                answered += 1
                if answered == 1:
                    _ready()
                socket.send_multipart(make(sent))
                sent += 1
    finally:
        socket.close(linger=0)
        context.term()
    return answered


def subscribers(events: str) -> int:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    rng = random.Random(1)
    cut = 0
    try:
        while not stopping:
            socket = context.socket(zmq.SUB)
            socket.setsockopt(zmq.LINGER, 0)
            _curve(socket)
            monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            socket.connect(events)
            for _ in range(100):
                socket.setsockopt(zmq.SUBSCRIBE, rng.randbytes(60))
            if monitor.poll(1000):
                cut += 1
                if cut == 1:
                    _ready()
            socket.disable_monitor()
            monitor.close(linger=0)
            socket.close(linger=0)
    finally:
        context.term()
    return cut


def run(kind: str, api: str, events: str) -> int:
    if kind == "subscribers":
        return subscribers(events)
    big = b"x" * (15 * MB)
    numbers = b"[" + b"1," * ((MB - 100) // 2) + b"1]"
    makers: dict[str, tuple[Callable[[int], list[bytes]], int]] = {
        "oversized": (lambda i: [b"", b'{"method": "status", "id": %d, "pad": "' % i + big + b'"}'], 24),
        "multipart": (lambda i: [big] * 8 + [b'{"method": "status", "id": %d}' % i], 2),
        "frames": (lambda i: [b""] * 20_000 + [b'{"method": "status", "id": %d}' % i], 4),
        "parse": (
            lambda i: [b"", b'{"method": "status", "id": %d, "params": {"x": ' % i + numbers + b"}}"],
            8,
        ),
        "garbage": (lambda i: [b"", GARBAGE[i % len(GARBAGE)]], 64),
    }
    make, depth = makers[kind]
    return pipelined(api, make, depth)


class Flood:
    """The given kinds, each in processes of its own, under way (each has had a reply) on entering."""

    def __init__(
        self, kinds: list[str], api: str, events: str, keys: dict[str, str], start_timeout: float = 120.0
    ) -> None:
        """``keys``: the floods' CurveZMQ keys (Z85) by variable: $SDL_FLOOD_PUBLIC and the others."""
        self.env = {**os.environ, **keys}
        self.command = [[sys.executable, str(Path(__file__)), kind, api, events] for kind in kinds]
        self.command = [c for c in self.command for _ in range(PROCESSES.get(c[2], 1))]
        self.start_timeout = start_timeout
        self.processes: list[subprocess.Popen[str]] = []
        self.answered = 0
        self.seconds = 0.0
        self._started = time.perf_counter()

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def __enter__(self) -> Flood:
        self.processes = [
            subprocess.Popen(c, stdout=subprocess.PIPE, text=True, env=self.env) for c in self.command
        ]
        deadline = time.monotonic() + self.start_timeout
        for process in self.processes:  # each says "ready" after its first reply (or its first cut)
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = process.stdout.readline() if ready else ""
            if line.strip() != "ready":
                self.__exit__()
                raise RuntimeError(f"a flood did not get under way: {process.args!r}")
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._started
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            out, _ = process.communicate(timeout=60)
            self.answered += int(out.split()[-1]) if out.split() else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    print(run(sys.argv[1], sys.argv[2], sys.argv[3]), flush=True)
