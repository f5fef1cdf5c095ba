"""The e-stop's own socket: a way to the lab's stop that no flood of the API socket stands in front of.

The API socket is shared. Whatever any client sends it is received and decrypted (CurveZMQ) by the same
libzmq I/O thread, queued in the same socket and read by the same server as an e-stop sent there; its
reader lets an e-stop pass everything it has read, but not what libzmq has not yet handed over
(benchmarks/README.md: a p50 of half a second with every flood at once). This socket takes nothing but
``lab.estop``: it lives in a 0MQ context of its own (its own I/O thread and ZAP handler, which admits only
keys whose role may e-stop), holds at most :data:`~sdl.api.wire.PRIORITY_BYTES` a frame, and is read on
the service's loop as soon as a message is there. An e-stop read here is answered by
:meth:`~sdl.api.server.ApiServer.estop`: the same checks, handler, audit and events as one sent on the
API socket. The client uses it when the service's daemon.json names it (``sdl.api.client``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import zmq

from sdl.api.models import Error, EStop
from sdl.api.wire import (
    MAX_ENVELOPE_FRAMES,
    MAX_QUEUED,
    PRIORITY_BYTES,
    encode_error,
    on_loop,
    peek,
    send_frames,
)

log = logging.getLogger(__name__)

#: Answers one e-stop frame (``ApiServer.estop``).
Answer = Callable[[zmq.Frame], Awaitable[bytes]]


def limit_estop_socket(socket: zmq.Socket[Any]) -> None:
    """Before it binds: libzmq drops a connection that sends a frame larger than any e-stop, and queues at
    most :data:`~sdl.api.wire.MAX_QUEUED` messages of each connection."""
    socket.setsockopt(zmq.MAXMSGSIZE, PRIORITY_BYTES)
    socket.setsockopt(zmq.RCVHWM, MAX_QUEUED)


class EStopServer:
    """Serves the e-stop socket (a ROUTER) on the service's loop: one e-stop at a time per connection, the
    connections' in parallel; anything else gets a typed error."""

    def __init__(self, socket: zmq.Socket[Any], answer: Answer) -> None:
        self.socket = on_loop(socket)
        self.answer = answer
        self._stopping: set[bytes] = set()  # connections whose e-stop is being answered
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        try:
            while True:
                identity, envelope, payload, frames = await self._message()
                peer = identity.bytes
                if frames - 2 > MAX_ENVELOPE_FRAMES:
                    limit = f"a message of {frames} frames; an e-stop is one frame after a short envelope"
                    self._send([identity, zmq.Frame(b"")], payload, Error(type="too_large", message=limit))
                elif peek(payload.buffer).method != EStop.method:
                    only = f"this socket takes only {EStop.method}; send other requests to the API socket"
                    self._send([identity, *envelope], payload, Error(type="bad_request", message=only))
                elif peer in self._stopping:
                    busy = "this connection's e-stop is being answered"
                    self._send([identity, *envelope], payload, Error(type="busy", message=busy))
                else:
                    self._stopping.add(peer)
                    task = asyncio.ensure_future(self._answer([identity, *envelope], payload))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _message(self) -> tuple[zmq.Frame, list[zmq.Frame], zmq.Frame, int]:
        """One whole message (libzmq delivers them whole): the routing id, at most the allowed envelope
        frames, the last frame, and how many frames it had."""
        identity: zmq.Frame = await self.socket.recv(copy=False)
        envelope: list[zmq.Frame] = []
        frames, part, payload = 1, identity, None
        while part.more:
            part = await self.socket.recv(copy=False)
            frames += 1
            if payload is not None and len(envelope) < MAX_ENVELOPE_FRAMES:
                envelope.append(payload)
            payload = part
        return identity, envelope, payload if payload is not None else zmq.Frame(b""), frames

    async def _answer(self, route: list[zmq.Frame], payload: zmq.Frame) -> None:
        try:
            reply = await self.answer(payload)
        finally:
            self._stopping.discard(route[0].bytes)
        await self._reply(route, reply)

    def _send(self, route: list[zmq.Frame], payload: zmq.Frame, error: Error) -> None:
        task = asyncio.ensure_future(self._reply(route, encode_error(peek(payload.buffer).id, error)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, route: list[zmq.Frame], reply: bytes) -> None:
        try:
            await send_frames(self.socket, [*route, reply])  # a ROUTER drops what it cannot deliver
        except zmq.ZMQError as exc:
            log.debug("could not reply: %s", exc)
