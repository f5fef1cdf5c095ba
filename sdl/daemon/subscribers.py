"""What a subscriber of the event or document socket may make the service keep.

libzmq keeps every subscription a peer sends in a trie, about 80 bytes for each byte of its prefix, and walks
the whole trie when a peer leaves (the publisher's next send waits for it): 200 subscriptions of 64 kB took
the service from 83 to 685 MB and stalled the event publisher for minutes once they were dropped. Its only
bound of its own is the frame size. So, on each publishing socket:

- ``ZMQ_MAXMSGSIZE`` bounds any frame a subscriber sends (libzmq closes a connection that sends a longer
  one, before keeping any of it) to what a CurveZMQ handshake needs, a few hundred bytes;
- the socket is an XPUB that hands every subscription and unsubscription up (``XPUB_VERBOSE`` and
  ``XPUB_VERBOSER``) with its connection's descriptor (``ZMQ_SRCFD``), and a connection that subscribes to
  a prefix over :data:`MAX_PREFIX` bytes (topics are under 32), or holds more than
  :data:`MAX_SUBSCRIPTIONS` at once, is cut: ``shutdown(2)`` on that descriptor, after checking that it is
  still a TCP connection to this socket's port. libzmq then drops the peer and what it subscribed, as if
  it had left; a well-behaved subscriber reconnects and catches up (``events.since``);
- a monitor counts the connections: past :data:`MAX_SUBSCRIBERS`, a new one is cut at once.

Cutting a peer is the only way to bound it: a bound 0MQ socket cannot disconnect one peer by itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket as sockets
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from sdl.api.wire import (
    MAX_PREFIX,
    MAX_SUBSCRIBER_FRAME_BYTES,
    MAX_SUBSCRIBERS,
    MAX_SUBSCRIPTIONS,
    direct,
)

log = logging.getLogger(__name__)

#: Subscription messages read before the watcher lets the loop run.
PER_TURN = 256
LOOK_MS = 100

WATCHED = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
#: Monitor events that are not the watcher's own (a CURVE handshake that failed): (event, value).
OnEvent = Callable[[int, int], None]


class Subscribers:
    """The bookkeeping, without sockets: who holds what, and whom to cut."""

    def __init__(self) -> None:
        self.held: dict[int, set[bytes]] = {}  # descriptor -> prefixes subscribed
        self.cut: set[int] = set()  # cut, not yet gone

    def connected(self, fd: int) -> bool:
        """A new connection: False if it is one too many."""
        self.held[fd] = set()
        self.cut.discard(fd)
        return len(self.held) <= MAX_SUBSCRIBERS

    def left(self, fd: int) -> None:
        self.held.pop(fd, None)
        self.cut.discard(fd)

    def subscription(self, fd: int, message: bytes) -> bool:
        """A (un)subscription from the connection ``fd``: False if it is too long or the connection now
        holds too many."""
        prefixes = self.held.setdefault(fd, set())
        if len(message) > MAX_PREFIX + 1:
            return False
        if message[:1] == b"\x01":
            prefixes.add(message[1:])
        elif message[:1] == b"\x00":
            prefixes.discard(message[1:])
        return len(prefixes) <= MAX_SUBSCRIPTIONS


def publisher(socket: zmq.Socket[Any]) -> None:
    """Make an XPUB socket (before it binds) a bounded publisher: the frame limit, every subscription
    handed up, and few queued at a time (the rest wait in the kernel: the watcher reads as they come)."""
    socket.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIBER_FRAME_BYTES)
    socket.setsockopt(zmq.XPUB_VERBOSE, 1)
    socket.setsockopt(zmq.XPUB_VERBOSER, 1)
    socket.setsockopt(zmq.RCVHWM, 100)


def port_of(socket: zmq.Socket[Any]) -> int | None:
    endpoint = socket.getsockopt(zmq.LAST_ENDPOINT)
    text = endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)
    if not text.startswith("tcp://"):
        return None
    return int(text.rpartition(":")[2])


def cut(fd: int, port: int | None) -> bool:
    """Shut down the connection on descriptor ``fd`` if it is still a TCP connection to ``port``."""
    if port is None:
        return False
    try:
        duplicate = os.dup(fd)
    except OSError:
        return False
    try:
        connection = sockets.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        return False
    try:
        if connection.type != sockets.SOCK_STREAM or connection.getsockname()[1] != port:
            return False
        connection.shutdown(sockets.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        connection.close()  # the duplicate only


class Guard:
    """Watches an XPUB made by :func:`publisher`: reads what its subscribers send and cuts those that hold
    too much. Owns the socket's monitor (libzmq allows one per socket): monitor events that are not its own
    go to ``on_event``. On the service's loop (:meth:`watch`) or in a thread's poll loop (:meth:`turn`)."""

    def __init__(self, socket: zmq.Socket[Any], also: int = 0, on_event: OnEvent | None = None) -> None:
        self.socket = socket
        self.monitor: zmq.Socket[Any] = socket.get_monitor_socket(WATCHED | also)
        self.on_event = on_event
        self.book = Subscribers()
        self.port = port_of(socket)
        self.cuts = 0
        # Read without waiting, whether the sockets are asyncio's or not.
        self._direct = direct(socket)
        self._events = direct(self.monitor)

    async def watch(self) -> None:
        """On the service's loop, for an asyncio socket, until it is closed or the task cancelled."""
        poller = zmq.asyncio.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        try:
            while True:
                # At least every LOOK_MS: 0MQ's descriptor is edge-triggered, and the service's own sends on
                # the socket (the events) may take the signal that a subscription came.
                await poller.poll(LOOK_MS)
                self.turn()
                await asyncio.sleep(0)
        except zmq.ZMQError:
            pass  # the socket was closed (the allow-list changed: its successor has a guard of its own)
        finally:
            self.monitor.close(linger=0)

    def turn(self) -> None:
        """Handle what is waiting, up to :data:`PER_TURN` subscription messages."""
        for _ in range(PER_TURN):
            # The monitor first: a connection's ACCEPTED is queued before anything it sends.
            self._monitor_events()
            try:
                frame = self._direct.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._subscription(frame)

    def _monitor_events(self) -> None:
        while True:
            try:
                event = parse_monitor_message(self._events.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            kind, fd = event["event"], int(event["value"])
            if kind == zmq.EVENT_ACCEPTED:
                if not self.book.connected(fd):
                    self._cut(fd, "one subscriber too many")
            elif kind == zmq.EVENT_DISCONNECTED:
                self.book.left(fd)
            elif self.on_event is not None:
                self.on_event(kind, fd)

    def _subscription(self, frame: zmq.Frame) -> None:
        try:
            fd = int(frame.get(zmq.SRCFD))
        except (zmq.ZMQError, ValueError):
            return  # an unsubscription libzmq made itself, for a peer that left
        if fd < 0 or fd in self.book.cut:
            return
        if not self.book.subscription(fd, frame.bytes):
            self._cut(fd, f"a prefix over {MAX_PREFIX} bytes, or more than {MAX_SUBSCRIPTIONS} of them")

    def _cut(self, fd: int, why: str) -> None:
        if cut(fd, self.port):
            self.book.cut.add(fd)
            self.cuts += 1
            log.warning("cut a subscriber of port %s: %s", self.port, why)
        else:
            self.book.left(fd)  # gone already

    def close(self) -> None:
        """Stop monitoring (before the socket closes)."""
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
