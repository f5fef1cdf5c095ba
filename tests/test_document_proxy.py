"""The documents proxy of the lab service: frames pass through unchanged, and its output can be reopened
(what removing a key does) any number of times and still be stopped."""

from __future__ import annotations

import zmq

from sdl.daemon.documents import DocumentProxy
from sdl.testing import wait_for


def test_the_output_reopens_and_still_forwards_and_stops() -> None:
    proxy = DocumentProxy("tcp://127.0.0.1:0").start()
    context = zmq.Context()
    publisher = context.socket(zmq.PUB)
    publisher.connect(f"tcp://{proxy.in_address}")
    try:
        for round_ in range(3):
            subscriber = context.socket(zmq.SUB)
            subscriber.setsockopt(zmq.SUBSCRIBE, b"")
            subscriber.connect(proxy.out_address)

            def heard(subscriber: zmq.Socket[bytes] = subscriber) -> list[bytes] | None:
                publisher.send_multipart([b"start", b"{}"])  # again until the subscription has arrived
                return subscriber.recv_multipart() if subscriber.poll(200) else None

            assert wait_for(heard, 30, f"a document through the proxy (round {round_})")[0] == b"start"
            subscriber.close(linger=0)
            proxy.reopen_output()
    finally:
        publisher.close(linger=0)
        context.term()
        proxy.stop()  # hung here after a reopen: the old control pair had kept its stopped peer
    assert not proxy._thread.is_alive()
