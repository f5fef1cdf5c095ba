"""Reply timeouts that learn the link (RFC 6298): the estimator by its numbers, then the transport using it.

The estimator is fed round trips directly (its clock is whoever measures), so its tests are exact and
never sleep. The transport's tests check what it feeds the estimator, not how fast anything is.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from drivers.errors import InstrumentTimeout
from drivers.reply_timer import MIN_REPLY_TIMEOUT_S, ReplyTimer
from drivers.transport import Transport, tcp_url


def test_the_ceiling_until_the_first_round_trip_then_srtt_plus_four_rttvar():
    timer = ReplyTimer(2.0, floor_s=0.001)
    assert timer.timeout == 2.0 and timer.srtt is None
    timer.observe(0.100)  # first sample: srtt = R, rttvar = R/2
    assert (timer.srtt, timer.rttvar) == pytest.approx((0.100, 0.050))
    assert timer.timeout == pytest.approx(0.100 + 4 * 0.050)
    timer.observe(0.200)  # rttvar = 3/4 * 0.05 + 1/4 * |0.1 - 0.2|, then srtt = 7/8 * 0.1 + 1/8 * 0.2
    assert timer.rttvar == pytest.approx(0.0625)
    assert timer.srtt == pytest.approx(0.1125)
    assert timer.timeout == pytest.approx(0.1125 + 4 * 0.0625)


def test_a_steady_fast_link_settles_on_the_floor_and_a_slow_one_is_capped_at_the_ceiling():
    fast = ReplyTimer(0.5)
    for _ in range(50):
        fast.observe(0.001)
    assert fast.timeout == MIN_REPLY_TIMEOUT_S
    slow = ReplyTimer(0.5)
    slow.observe(0.4)  # 0.4 + 4 * 0.2 > 0.5
    assert slow.timeout == 0.5


def test_an_expiry_doubles_the_timeout_and_karn_skips_the_next_round_trip():
    timer = ReplyTimer(1.0, floor_s=0.01)
    for _ in range(20):
        timer.observe(0.02)
    learned = timer.timeout
    timer.expired()
    assert timer.timeout == pytest.approx(2 * learned)
    timer.observe(0.001)  # may answer the request that timed out: not taken
    assert timer.timeout == pytest.approx(2 * learned)
    for _ in range(10):
        timer.expired()
    assert timer.timeout == 1.0  # never past the ceiling
    timer.observe(0.02)  # skipped (Karn), then the next one counts again
    timer.observe(0.02)
    assert timer.timeout < 1.0


def test_a_floor_at_the_ceiling_keeps_the_timeout_fixed_and_the_ceiling_can_move():
    fixed = ReplyTimer(0.5, floor_s=0.5)
    fixed.observe(0.001)
    assert fixed.timeout == 0.5
    fixed.ceiling_s = 0.2  # a floor above the ceiling yields to it
    assert fixed.timeout == 0.2 and fixed.floor_s == 0.2
    with pytest.raises(ValueError):
        ReplyTimer(0.0)


# -- the transport ----------------------------------------------------------------------------------------
@pytest.fixture
def echo() -> Iterator[str]:
    """A TCP peer answering each line: echoes it, stays silent on b"quiet\\n", dribbles b"slow\\n"."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            buffer = b""
            while not stop.is_set():
                data = connection.recv(4096)
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line == b"quiet":
                        continue
                    if line == b"slow":
                        for piece in range(40):  # a long reply that keeps coming, byte by byte
                            connection.sendall(bytes([65 + piece % 26]))
                            stop.wait(0.02)
                        connection.sendall(b"\n")
                        continue
                    connection.sendall(line + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield tcp_url("127.0.0.1", listener.getsockname()[1])
    stop.set()
    listener.close()
    thread.join(timeout=5)


def ask(transport: Transport, line: bytes, **options: float) -> bytes:
    return transport.exchange(line + b"\n", lambda t: t.read_until(b"\n"), **options)


def test_exchanges_teach_the_transport_its_round_trip(echo):
    url = echo
    with Transport(url, timeout=2.0) as transport:
        assert transport.replies.timeout == 2.0  # nothing measured yet: the configured value
        for n in range(10):
            assert ask(transport, b"ping%d" % n) == b"ping%d\n" % n
        assert transport.replies.srtt is not None
        assert transport.replies.timeout < 2.0  # a loopback round trip is far shorter
        learned = transport.replies.timeout
        transport.exchange(b"note\n", lambda t: None)  # no reply read: no round trip to learn from
        assert transport.replies.timeout == learned and transport.work.srtt is None


def test_a_silent_reply_times_out_at_the_learned_timeout_and_backs_off(echo):
    url = echo
    with Transport(url, timeout=2.0) as transport:
        for _ in range(10):
            ask(transport, b"ping")
        learned = transport.replies.timeout
        with pytest.raises(InstrumentTimeout):
            ask(transport, b"quiet")
        assert transport.replies.timeout == pytest.approx(min(2.0, 2 * learned))
        ask(transport, b"ping")  # Karn: not taken
        assert transport.replies.timeout == pytest.approx(min(2.0, 2 * learned))


def test_a_long_reply_that_keeps_coming_is_not_cut_short(echo):
    url = echo
    # Fixed at 0.5 s: the reply takes about 0.8 s in all, but never falls silent for long.
    with Transport(url, timeout=0.5, min_reply_timeout=0.5) as transport:
        assert ask(transport, b"slow") == bytes(65 + n % 26 for n in range(40)) + b"\n"


def test_declared_work_is_waited_for_and_learned_apart(echo):
    url = echo
    with Transport(url, timeout=0.5) as transport:
        for _ in range(10):
            ask(transport, b"ping")
        plain = transport.replies.timeout
        assert ask(transport, b"scan", processing_s=5.0) == b"scan\n"
        assert transport.work.srtt == 0.0  # answered before its declared work: nothing beyond it
        assert transport.replies.timeout == plain  # the acquisition did not teach the round trip
