"""Transport: buffered framing over any pyserial URL, timeouts, lost links, one exchange at a time."""

from __future__ import annotations

import select
import socket
import threading

import pytest

from drivers.errors import ConnectionLost, InstrumentTimeout, ProtocolError
from drivers.transport import Transport, tcp_url


@pytest.fixture
def peer():
    """A raw TCP peer the test scripts byte by byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept():
        accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept)
    thread.start()
    url = tcp_url("127.0.0.1", listener.getsockname()[1])
    transport = Transport(url, timeout=1.0).open()
    thread.join(timeout=5)
    yield transport, accepted[0]
    transport.close()
    accepted[0].close()
    listener.close()


def test_read_until_joins_chunks_and_keeps_the_rest(peer):
    transport, remote = peer
    remote.sendall(b"\x02ab")
    remote.sendall(b"c\x03\x02second\x03")
    assert transport.read_until(b"\x03") == b"\x02abc\x03"
    assert transport.read_until(b"\x03") == b"\x02second\x03"


def test_multi_byte_terminator_split_across_chunks(peer):
    transport, remote = peer
    remote.sendall(b"/0`42\x03\r")
    remote.sendall(b"\n")
    assert transport.read_until(b"\x03\r\n") == b"/0`42\x03\r\n"


def test_read_exactly(peer):
    transport, remote = peer
    remote.sendall(bytes(range(100)))
    assert transport.read_exactly(60) == bytes(range(60))
    assert transport.read_exactly(40) == bytes(range(60, 100))


def test_timeout_names_the_url(peer):
    transport, _ = peer
    with pytest.raises(InstrumentTimeout, match=r"socket://127\.0\.0\.1:\d+"):
        transport.read_until(b"\n", timeout=0.05)


def test_runaway_reply_is_a_protocol_error(peer):
    transport, remote = peer
    remote.sendall(b"x" * 300)
    with pytest.raises(ProtocolError):
        transport.read_until(b"\n", max_bytes=100)


def test_peer_hang_up_is_connection_lost(peer):
    transport, remote = peer
    remote.close()
    with pytest.raises(ConnectionLost):
        transport.read_until(b"\n")
    assert not transport.is_open


def test_exchange_discards_a_stale_reply(peer):
    transport, remote = peer
    remote.sendall(b"late reply\n")  # the answer to an earlier request that timed out
    select.select([transport._fd], [], [], 1.0)

    def answer_the_new_request():
        assert remote.recv(10) == b"?\n"
        remote.sendall(b"fresh\n")

    answering = threading.Thread(target=answer_the_new_request)
    answering.start()
    assert transport.exchange(b"?\n", lambda t: t.read_until(b"\n")) == b"fresh\n"
    answering.join(timeout=5)


def test_exchanges_from_two_threads_never_interleave(peer):
    transport, remote = peer
    errors: list[BaseException] = []

    def echo_server():
        buffer = b""
        try:
            while True:
                data = remote.recv(4096)
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    remote.sendall(line.upper() + b"\n")
        except OSError:
            return

    server = threading.Thread(target=echo_server, daemon=True)
    server.start()

    def client(tag: bytes):
        try:
            for i in range(200):
                request = tag + str(i).encode()
                reply = transport.exchange(request + b"\n", lambda t: t.read_until(b"\n"))
                assert reply == request.upper() + b"\n"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(tag,)) for tag in (b"a", b"b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert errors == []


def test_loop_url_without_a_descriptor():
    with Transport("loop://", timeout=0.5) as transport:
        assert transport.exchange(b"ping\r", lambda t: t.read_until(b"\r")) == b"ping\r"
        with pytest.raises(InstrumentTimeout):
            transport.read_until(b"\r", timeout=0.02)


def test_unreachable_port_is_connection_lost():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(ConnectionLost, match="cannot open"):
        Transport(tcp_url("127.0.0.1", port)).open()


def test_reconnecting_over_tcp_does_not_pause(peer, monkeypatch):
    # pyserial's socket:// handler sleeps 0.3 s in close(); every recovery from a dropped link
    # would pay it, so the transport opens socket:// itself.
    transport, _ = peer

    def no_sleeping(seconds):
        raise AssertionError(f"close() slept {seconds} s")

    monkeypatch.setattr("time.sleep", no_sleeping)
    transport.close()
    assert not transport.is_open


def test_a_closed_tcp_port_reports_a_lost_connection_not_a_bad_descriptor(peer):
    transport, _ = peer
    port = transport._require_open()
    port.close()
    with pytest.raises(ConnectionError):
        port.read(16)
    with pytest.raises(ConnectionError):
        port.reset_input_buffer()
    with pytest.raises(ConnectionError):
        port.write(b"x")


def test_closing_the_link_from_another_thread_ends_a_waiting_read_as_connection_lost(peer):
    """stop() and disconnect() close a link that a plan's thread may be reading from."""
    transport, _ = peer
    raised: list[BaseException] = []

    def wait_for_a_reply() -> None:
        try:
            transport.read_until(b"\r", timeout=30)
        except BaseException as exc:  # the test inspects whatever escaped
            raised.append(exc)

    reader = threading.Thread(target=wait_for_a_reply)
    reader.start()
    transport.close()
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], ConnectionLost), raised
