"""Fuzzing each driver through a seeded, reply-mutating proxy in front of its simulator.

Every reply chunk the simulator sends may be corrupted on the way back (a flipped byte, a cut,
noise, a duplicate, silence, a dropped connection). Whatever happens, a driver call must end
with its result or a ``drivers.errors`` exception, within its deadline, and memory must stay flat.
``SDL_FUZZ_EXCHANGES`` sets the exchanges per driver (default 2,000; try 20,000 for a long run).
"""

from __future__ import annotations

import os
import random
import selectors
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import InstrumentError
from drivers.transport import Transport
from simulators.clock import ScaledClock
from simulators.testing import run_simulator

EXCHANGES = int(os.environ.get("SDL_FUZZ_EXCHANGES", "2000"))
#: Chance that a reply chunk is mutated; each mutation is equally likely.
MUTATION_RATE = 0.1
#: No call may take longer than this, whatever the proxy does (a hang would show as far more).
CALL_BOUND_S = 15.0


class MutatingProxy:
    """TCP proxy: requests pass unchanged, reply chunks are mutated with a seeded random generator."""

    def __init__(self, upstream: str, seed: int) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.rng = random.Random(seed)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.listener.getsockname()[1]}"
        self.exchanges = 0
        self.mutations: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mutating-proxy", daemon=True)

    def __enter__(self) -> MutatingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.listener.close()

    def _mutate(self, chunk: bytes) -> bytes | None:
        """The chunk as delivered; None closes the connection."""
        self.exchanges += 1
        if self.rng.random() >= MUTATION_RATE:
            return chunk
        kind = self.rng.choice(["flip", "cut", "noise", "duplicate", "silence", "drop"])
        self.mutations[kind] = self.mutations.get(kind, 0) + 1
        if kind == "flip":
            at = self.rng.randrange(len(chunk))
            return chunk[:at] + bytes([chunk[at] ^ (1 << self.rng.randrange(8))]) + chunk[at + 1 :]
        if kind == "cut":
            return chunk[: self.rng.randrange(len(chunk))]
        if kind == "noise":
            return chunk + self.rng.randbytes(self.rng.randrange(1, 64))
        if kind == "duplicate":
            return chunk + chunk
        if kind == "silence":
            return b""
        return None

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        self.listener.setblocking(False)
        selector.register(self.listener, selectors.EVENT_READ, None)
        peers: dict[socket.socket, socket.socket] = {}
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(0.05):
                    sock = key.fileobj
                    if sock is self.listener:
                        client, _ = self.listener.accept()
                        server = socket.create_connection(self.upstream)
                        peers[client], peers[server] = server, client
                        selector.register(client, selectors.EVENT_READ, "client")
                        selector.register(server, selectors.EVENT_READ, "server")
                        continue
                    other = peers.get(sock)
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if data and key.data == "server":
                        data = self._mutate(data)
                    if not data or other is None:
                        for end in (sock, other):
                            if end is not None and end in peers:
                                selector.unregister(end)
                                peers.pop(end)
                                end.close()
                        continue
                    with suppress(OSError):
                        other.sendall(data)
        finally:
            for sock in list(peers):
                sock.close()
            selector.close()


@contextmanager
def fuzzed(kind: str, endpoints: tuple[str, ...], seed: int) -> Iterator[tuple[dict[str, str], list]]:
    with run_simulator(kind, clock=ScaledClock(1000)) as sim:
        proxies = [MutatingProxy(sim.url(endpoint), seed + i) for i, endpoint in enumerate(endpoints)]
        for proxy in proxies:
            proxy.__enter__()
        try:
            yield {e: p.url for e, p in zip(endpoints, proxies, strict=True)}, proxies
        finally:
            for proxy in proxies:
                proxy.__exit__()


def ne1000_client(urls: dict[str, str]) -> tuple[list[Callable[[], object]], Callable[[], None]]:
    from drivers.newera import NE1000Line, NE1000Pump

    line = NE1000Line(Transport(urls["pump"]), retries=0, reply_timeout=0.05)
    pump = NE1000Pump(line, 0, diameter_mm=14.57, syringe_volume_ul=10000, max_rate_ul_min=5000)
    return [pump.status, pump.dispensed, pump.firmware, pump.recover], line.close


def cavro_client(urls: dict[str, str]) -> tuple[list[Callable[[], object]], Callable[[], None]]:
    from drivers.cavro import CavroPump

    pump = CavroPump(Transport(urls["pump"], timeout=0.05), syringe_volume_ul=1000, retries=0)
    return [pump.status, pump.position_ul, pump.valve_port, pump.firmware], pump.close


def ur_client(urls: dict[str, str]) -> tuple[list[Callable[[], object]], Callable[[], None]]:
    from drivers.ur import URArm, URDashboard, URScriptClient
    from drivers.ur.gripper import RobotiqGripper
    from simulators.ur import DEFAULT_POSITIONS

    gripper = RobotiqGripper(Transport(urls["gripper"]), reply_timeout=0.05)
    dashboard = URDashboard(Transport(urls["dashboard"]), reply_timeout=0.05)
    script = URScriptClient(Transport(urls["script"]))
    arm = URArm(dashboard, script, gripper, positions=DEFAULT_POSITIONS, query_retries=0)

    def gripper_state() -> object:
        status = arm._retrying(gripper.status, gripper.transport)
        return status, arm._retrying(gripper.object_status, gripper.transport)

    return [arm.status, arm.program_state, gripper_state], arm.close


def ocean_client(urls: dict[str, str]) -> tuple[list[Callable[[], object]], Callable[[], None]]:
    from drivers.ocean import OceanSpectrometer

    spectrometer = OceanSpectrometer(Transport(urls["obp"], timeout=0.1), retries=0, not_ready_wait_s=0.2)
    return [spectrometer.product_id, spectrometer.serial_number, spectrometer.wavelength_coefficients], (
        spectrometer.close
    )


DRIVERS = {
    "ne1000": (("pump",), ne1000_client),
    "cavro": (("pump",), cavro_client),
    "ur": (("dashboard", "script", "gripper"), ur_client),
    "ocean-hdx": (("obp",), ocean_client),
}


@pytest.mark.parametrize("kind", list(DRIVERS))
def test_a_driver_under_corrupted_replies_only_raises_its_own_errors_and_never_hangs(kind):
    endpoints, client = DRIVERS[kind]
    with fuzzed(kind, endpoints, seed=sum(map(ord, kind))) as (urls, proxies):
        calls, close = client(urls)
        rng = random.Random(1)
        outcomes: dict[str, int] = {}
        tracemalloc.start()
        baseline = None
        try:
            calls_made = 0
            while sum(p.exchanges for p in proxies) < EXCHANGES:
                calls_made += 1
                assert calls_made < 10 * EXCHANGES, f"{kind}: calls stopped reaching the instrument"
                call = rng.choice(calls)
                started = time.monotonic()
                try:
                    call()
                    outcome = "ok"
                except InstrumentError as exc:
                    outcome = type(exc).__name__
                except Exception as exc:  # anything else is a defect: report it with its call
                    pytest.fail(
                        f"{kind}: {getattr(call, '__name__', call)} raised {type(exc).__name__}: {exc}"
                    )
                elapsed = time.monotonic() - started
                assert elapsed < CALL_BOUND_S, (
                    f"{kind}: {getattr(call, '__name__', call)} took {elapsed:.1f} s"
                )
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if baseline is None and sum(p.exchanges for p in proxies) >= EXCHANGES // 4:
                    baseline = tracemalloc.take_snapshot()
            final = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
            close()
    assert baseline is not None
    growth = sum(stat.size_diff for stat in final.compare_to(baseline, "filename"))
    assert growth < 2_000_000, f"{kind}: memory grew by {growth} bytes over the fuzz run"
    assert outcomes.get("ok", 0) > sum(outcomes.values()) // 4, outcomes  # many calls still succeed
    mutated = sum(sum(p.mutations.values()) for p in proxies)
    assert mutated >= EXCHANGES * MUTATION_RATE / 2, (mutated, outcomes)
    print(f"{kind}: {sum(p.exchanges for p in proxies)} exchanges, {mutated} mutated, outcomes {outcomes}")


# -- the codecs on arbitrary bytes: only their own, typed errors -------------------------------------
CODEC_ERRORS = (ValueError, InstrumentError)  # CodecError and FrameError are ValueErrors / ProtocolErrors


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_codecs_parse_arbitrary_bytes_or_raise_their_own_errors(data):
    from drivers.cavro import codec as cavro
    from drivers.newera import codec as newera
    from drivers.ocean import codec as ocean
    from drivers.ur import codec as ur

    parsers = [
        newera.decode_basic_reply,
        newera.decode_safe_reply,
        cavro.decode_reply,
        ocean.decode,
        lambda raw: ur.parse_get_reply(raw, "POS"),
        lambda raw: ur.parse_robot_mode(ur.decode_line(raw)),
    ]
    for parse in parsers:
        with suppress(CODEC_ERRORS):
            parse(data)
