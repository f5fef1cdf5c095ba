"""Subscribers of the event and document sockets cannot make the service keep what they like.

libzmq keeps every subscription prefix a peer sends, about 80 bytes per byte of prefix, and walks them all
when a peer leaves: 200 subscriptions of 64 kB once took the service from 83 to 685 MB and stalled its event
publisher for minutes. A subscription longer than the limit closes the connection (0MQ's frame limit); a
connection that holds too many at once is cut; a well-behaved subscriber hears on, whatever the others do.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq
from test_daemon import lab_file, service_process
from zmq.utils.monitor import recv_monitor_message

from sdl.api import models as m
from sdl.api.client import Credentials
from sdl.daemon.documents import DocumentProxy
from sdl.testing import wait_for


@contextmanager
def subscriber(
    context: zmq.Context[zmq.Socket[bytes]],
    address: str,
    events: int = 0,
    credentials: Credentials | None = None,
) -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes] | None]]:
    """A SUB socket connected to ``address`` (with a monitor of ``events`` opened before it connects), with
    ``credentials`` for a CurveZMQ publisher."""
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    if credentials is not None:
        credentials.apply(socket)
    monitor = socket.get_monitor_socket(events) if events else None
    socket.connect(address)
    try:
        yield socket, monitor
    finally:
        if monitor is not None:
            socket.disable_monitor()
            monitor.close(linger=0)
        socket.close(linger=0)


def dropped(
    context: zmq.Context[zmq.Socket[bytes]],
    address: str,
    prefixes: list[bytes],
    credentials: Credentials | None = None,
) -> bool:
    """Whether the publisher at ``address`` drops a connection that subscribes to ``prefixes``."""
    events = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED
    with subscriber(context, address, events, credentials) as (socket, monitor):
        assert monitor is not None
        events = []

        def seen(kind: int) -> bool:
            while monitor.poll(50):
                events.append(recv_monitor_message(monitor)["event"])
            return kind in events

        wait_for(lambda: seen(zmq.EVENT_CONNECTED), 30, "the subscriber to connect")
        for prefix in prefixes:
            socket.setsockopt(zmq.SUBSCRIBE, prefix)
        try:
            wait_for(lambda: seen(zmq.EVENT_DISCONNECTED), 20, "the publisher to drop the subscriber")
        except AssertionError:
            return False
        return True


def abuse(
    context: zmq.Context[zmq.Socket[bytes]], address: str, credentials: Credentials | None = None
) -> None:
    rng = random.Random(7)
    assert dropped(context, address, [rng.randbytes(64 << 10)], credentials), "a 64 kB prefix was kept"
    assert dropped(context, address, [rng.randbytes(200)], credentials), "a 200-byte prefix was kept"
    many = [rng.randbytes(48) for _ in range(100)]
    assert dropped(context, address, many, credentials), "100 prefixes were kept"


def test_the_document_proxy_drops_subscribers_that_would_make_it_keep_too_much() -> None:
    proxy = DocumentProxy("tcp://127.0.0.1:0").start()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    publisher = context.socket(zmq.PUB)
    publisher.setsockopt(zmq.LINGER, 0)
    publisher.connect(f"tcp://{proxy.in_address}")
    try:
        abuse(context, proxy.out_address)
        with subscriber(context, proxy.out_address) as (listener, _):
            for prefix in (b"", b"start", b"stop"):
                listener.setsockopt(zmq.SUBSCRIBE, prefix)

            def heard() -> list[bytes] | None:
                publisher.send_multipart([b"start", b"{}"])  # again until the subscription has arrived
                return listener.recv_multipart() if listener.poll(200) else None

            assert wait_for(heard, 30, "a document through the proxy")[0] == b"start"
    finally:
        publisher.close(linger=0)
        context.term()
        proxy.stop()


def test_the_event_socket_drops_subscribers_that_would_make_it_keep_too_much(tmp_path: Path) -> None:
    service = service_process(lab_file(tmp_path, workcells=1), tmp_path / "data").start()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        address = service.call(m.Status()).events_address
        # The owner's key: past the handshake, so what cuts the connection is what it subscribes to.
        credentials = Credentials.load(data_dir=service.data_dir)
        assert credentials is not None
        abuse(context, address, credentials)
        with service.client() as client:  # events still reach a fair subscriber, live
            since = client.call(m.EventsSince(seq=0, limit=1)).last
            with subscriber(context, address, 0, credentials) as (listener, _):
                for prefix in (b"lab.estop", b"experiment.", b"campaign.progress"):
                    listener.setsockopt(zmq.SUBSCRIBE, prefix)

                def heard() -> list[bytes] | None:
                    client.call(m.EStop(reason="drill"))
                    client.call(m.ClearEStop())
                    return listener.recv_multipart() if listener.poll(500) else None

                assert wait_for(heard, 60, "an event on a fair subscription")[0] == b"lab.estop"
            assert client.call(m.EventsSince(seq=since, limit=10)).events
    finally:
        context.term()
        assert service.stop() == 0, service.log_text()
        service.assert_nothing_left()
