"""A byte stream to one instrument, opened from a pyserial URL.

Every driver talks through a ``Transport`` so that the same driver class runs against a serial
port (``/dev/ttyUSB0``), a pseudo-terminal, a terminal server (``socket://host:port``), a remote
serial port (``rfc2217://host:port``) or a simulator. Tests hand a driver a transport to a
simulator; nothing is patched.

Reads are buffered here rather than in pyserial: pyserial's ``read_until`` takes one byte per
call, which on ``socket://`` costs a ``select`` and a ``recv`` per byte and would double the
round trip of a short reply. ``socket://`` itself is opened by :class:`TcpPort` rather than by
pyserial's handler, which sleeps 0.3 s in every ``close()`` — a pause that every reconnect after
a dropped link would pay. Every other URL goes through ``serial.serial_for_url``.

How long a reply may take is learned here, for every driver: each exchange measures its round
trip (request out to the reply's first byte) into a :class:`drivers.reply_timer.ReplyTimer`, and a
reply is late once nothing of it has arrived for the learned timeout (the configured
``reply_timeout`` is its ceiling). A reply that is slow to arrive in full (a spectrum over a serial
line) is not cut short: every byte that arrives extends the wait. An exchange whose instrument
works before it answers (an acquisition) says how long (``processing_s``); that time is added to
the wait and learned apart from plain round trips.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit

import serial

from drivers.errors import ConnectionLost, InstrumentTimeout, ProtocolError, ReplyCutShort
from drivers.reply_timer import MIN_REPLY_TIMEOUT_S, ReplyTimer

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0
_CHUNK = 65536


class Port(Protocol):
    """What the transport needs of an open port: pyserial's ports and :class:`TcpPort` alike."""

    def fileno(self) -> int: ...

    def write(self, data: bytes, /) -> int | None: ...

    def read(self, size: int, /) -> bytes: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


def tcp_url(host: str, port: int) -> str:
    """The pyserial URL of a raw TCP connection (an instrument's own socket or a terminal server)."""
    return f"socket://{host}:{port}"


class TcpPort:
    """The part of pyserial's port interface the transport uses, over a plain TCP socket."""

    def __init__(self, url: str, *, connect_timeout: float = DEFAULT_TIMEOUT):
        parts = urlsplit(url)
        if parts.scheme != "socket" or not parts.hostname or parts.port is None or parts.query:
            raise ValueError(f"expected socket://HOST:PORT, got {url!r}")
        self._socket = socket.create_connection((parts.hostname, parts.port), timeout=connect_timeout)
        # Requests are small and latency-bound: do not let Nagle hold them back.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def fileno(self) -> int:
        return self._socket.fileno()

    def _open_socket(self) -> socket.socket:
        # Another thread may close the link (stop(), disconnect()) while this one is reading:
        # say so as a lost connection, not as select's ValueError on descriptor -1.
        if self._socket.fileno() < 0:
            raise ConnectionError("connection closed")
        return self._socket

    def write(self, data: bytes) -> None:
        self._open_socket().sendall(data)

    def read(self, size: int) -> bytes:
        """What has arrived, without waiting; b"" when the peer has closed (the caller saw it readable)."""
        # The socket keeps its connect timeout (for sendall), and Python then waits that long in a
        # MSG_DONTWAIT recv with nothing pending before raising: ask select first instead.
        if not select.select([self._open_socket()], [], [], 0)[0]:
            return b""
        try:
            return self._socket.recv(size, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return b""

    def reset_input_buffer(self) -> None:
        while select.select([self._open_socket()], [], [], 0)[0]:
            if not self._socket.recv(_CHUNK, socket.MSG_DONTWAIT):
                raise ConnectionError("connection closed by the instrument")

    def close(self) -> None:
        with suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()


@dataclass
class _Awaited:
    """The reply an exchange is waiting for."""

    timer: ReplyTimer
    deadline: float  # late when nothing has arrived by then (each arrival moves it on)
    first_byte_at: float | None = None
    expired: bool = False


class Transport:
    """One open link to an instrument; ``exchange`` is the only safe way to talk through it.

    ``exchange`` holds a lock for a whole request/reply, so two threads (a plan and a status
    poller, say) never interleave bytes on the wire. ``timeout`` bounds opening the link;
    ``reply_timeout`` (default: ``timeout``) is the longest wait for a reply, which the link's
    measured round trips shorten down to ``min_reply_timeout`` (equal to ``reply_timeout``: fixed).
    """

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 9600,
        timeout: float = DEFAULT_TIMEOUT,
        reply_timeout: float | None = None,
        min_reply_timeout: float = MIN_REPLY_TIMEOUT_S,
        **options: Any,
    ):
        self.url = url
        self.timeout = timeout
        ceiling = timeout if reply_timeout is None else reply_timeout
        #: Round trips of plain requests, and the time beyond the declared work of requests that do work.
        self.replies = ReplyTimer(ceiling, floor_s=min_reply_timeout)
        self.work = ReplyTimer(ceiling, floor_s=min_reply_timeout)
        self._serial_options: dict[str, Any] = {"baudrate": baudrate, **options}
        self._lock = threading.RLock()
        self._buffer = bytearray()
        self._port: Port | None = None
        self._fd: int | None = None
        self._awaited: _Awaited | None = None

    @property
    def reply_timeout(self) -> float:
        """The longest wait for a reply (the ceiling of the learned timeout), s."""
        return self.replies.ceiling_s

    @reply_timeout.setter
    def reply_timeout(self, seconds: float) -> None:
        with self._lock:
            self.replies.ceiling_s = self.work.ceiling_s = seconds

    # -- lifetime ---------------------------------------------------------------------------
    def open(self) -> Transport:
        with self._lock:  # two threads opening at once must not both connect (one socket would leak)
            return self._open()

    def _open(self) -> Transport:
        if self._port is not None:
            return self
        try:
            port: Port
            if self.url.startswith("socket://"):
                port = TcpPort(self.url, connect_timeout=self.timeout)
            else:
                # serial_for_url returns one of pyserial's Serial classes, whose input buffer can be reset.
                # (Its stub leaves the keyword arguments it forwards untyped.)
                opened = serial.serial_for_url(self.url, timeout=0, **self._serial_options)  # pyright: ignore[reportUnknownMemberType]
                port = cast(Port, opened)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ConnectionLost(f"cannot open {self.url}: {exc}") from exc
        self._port = port
        try:
            self._fd = port.fileno()
        except (AttributeError, NotImplementedError, OSError, serial.SerialException):
            # rfc2217:// and loop:// have no descriptor to wait on; poll in short slices instead.
            self._fd = None
        self._buffer.clear()
        return self

    def close(self) -> None:
        # Not under the lock: stop() and disconnect() must be able to close a link another thread
        # is waiting on; that thread then sees the link gone.
        port, self._port = self._port, None
        self._buffer.clear()
        if port is not None:
            with suppress(serial.SerialException, OSError):
                port.close()

    def reconnect(self) -> None:
        """Drop the link and open it again (after a dropped connection or a garbled stream)."""
        with self._lock:
            self.close()
            self.open()

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def __enter__(self) -> Transport:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Transport({self.url!r})"

    # -- request / reply --------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Generator[Transport, None, None]:
        """Hold the link for several exchanges that must not be interleaved with others."""
        with self._lock:
            yield self

    def exchange(
        self,
        request: bytes,
        read_reply: Callable[[Transport], T],
        *,
        discard_stale: bool = True,
        processing_s: float = 0.0,
    ) -> T:
        """Send ``request`` and parse the reply with ``read_reply(self)``, holding the link throughout.

        Stale bytes (a late reply to an earlier, timed-out request) are discarded first so they
        cannot be mistaken for this request's reply. Reads without a ``timeout`` wait for the
        learned reply timeout, plus ``processing_s`` before the first byte (an instrument that
        works, an acquisition say, before it answers).
        """
        with self._lock:
            if discard_stale:
                self.discard_input()
            timer = self.work if processing_s > 0 else self.replies
            self.write(request)
            sent = time.monotonic()
            awaited = self._awaited = _Awaited(timer, sent + processing_s + timer.timeout)
            try:
                return read_reply(self)
            finally:
                self._awaited = None
                if awaited.expired:
                    timer.expired()
                elif awaited.first_byte_at is not None:
                    timer.observe(awaited.first_byte_at - sent - processing_s)

    def write(self, data: bytes) -> None:
        port = self._require_open()
        try:
            port.write(data)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise ConnectionLost(f"{self.url}: write failed: {exc}") from exc

    def discard_input(self) -> None:
        self._buffer.clear()
        port = self._require_open()
        try:
            port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise ConnectionLost(f"{self.url}: {exc}") from exc

    def read_until(
        self, terminator: bytes, *, timeout: float | None = None, max_bytes: int = _CHUNK
    ) -> bytes:
        """Bytes up to and including ``terminator``; InstrumentTimeout if nothing arrives in time,
        ReplyCutShort if the reply began but its terminator never came.

        Without ``timeout``, the learned reply timeout (inside ``exchange``: until nothing has
        arrived for that long); with it, at most ``timeout`` s in all.
        """
        deadline = self._deadline(timeout)
        start = 0
        while True:
            index = self._buffer.find(terminator, start)
            if index >= 0:
                end = index + len(terminator)
                reply = bytes(self._buffer[:end])
                del self._buffer[:end]
                return reply
            if len(self._buffer) > max_bytes:
                raise ProtocolError(f"{self.url}: no {terminator!r} within {max_bytes} bytes")
            start = max(0, len(self._buffer) - len(terminator) + 1)
            self._fill(deadline, f"waiting for {terminator!r}")

    def read_exactly(self, size: int, *, timeout: float | None = None) -> bytes:
        """Exactly ``size`` bytes; InstrumentTimeout if none arrive in time, ReplyCutShort if some do.

        The timeout is as for ``read_until``.
        """
        deadline = self._deadline(timeout)
        while len(self._buffer) < size:
            self._fill(deadline, f"waiting for {size} bytes, got {len(self._buffer)}")
        reply = bytes(self._buffer[:size])
        del self._buffer[:size]
        return reply

    def read_available(self) -> bytes:
        """Whatever has arrived so far, without waiting (greetings, unsolicited chatter)."""
        port = self._require_open()
        try:
            self._buffer += port.read(_CHUNK)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise ConnectionLost(f"{self.url}: {exc}") from exc
        reply = bytes(self._buffer)
        self._buffer.clear()
        return reply

    # -- internals --------------------------------------------------------------------------
    def _require_open(self) -> Port:
        if self._port is None:
            raise ConnectionLost(f"{self.url}: not connected")
        return self._port

    def _deadline(self, timeout: float | None) -> float | None:
        """A fixed deadline, or None for the exchange's own (which each arrival moves on)."""
        if timeout is not None:
            return time.monotonic() + timeout
        if self._awaited is not None:
            return None
        return time.monotonic() + self.replies.timeout

    def _fill(self, deadline: float | None, waiting_for: str) -> None:
        port = self._require_open()
        fd = self._fd
        awaited = self._awaited
        while True:
            if self._port is not port:
                # Closed by another thread (stop(), disconnect()) while this one waited.
                raise ConnectionLost(f"{self.url}: connection closed while {waiting_for}")
            now = time.monotonic()
            if deadline is not None:
                remaining = deadline - now
            else:
                assert awaited is not None
                remaining = awaited.deadline - now
            if remaining <= 0:
                if awaited is not None and deadline is None:
                    awaited.expired = True
                if self._buffer:
                    # Stale input is discarded before each request, so these bytes began this reply.
                    fragment = bytes(self._buffer)
                    self._buffer.clear()
                    raise ReplyCutShort(f"{self.url}: reply cut short ({waiting_for}): {fragment[:80]!r}")
                raise InstrumentTimeout(f"{self.url}: no reply ({waiting_for}) within the timeout")
            try:
                if fd is not None:
                    ready, _, _ = select.select([fd], [], [], remaining)
                    if not ready:
                        continue
                else:
                    time.sleep(min(remaining, 0.001))
                chunk = port.read(_CHUNK)
            except (serial.SerialException, OSError) as exc:
                self.close()
                raise ConnectionLost(f"{self.url}: connection lost ({exc})") from exc
            if chunk:
                self._buffer += chunk
                if awaited is not None:
                    arrived = time.monotonic()
                    if awaited.first_byte_at is None:
                        awaited.first_byte_at = arrived
                    # Late is silent for the learned timeout, not slow: a long reply keeps coming.
                    awaited.deadline = max(awaited.deadline, arrived + awaited.timer.timeout)
                return
            if fd is not None:
                # Readable but empty: the peer closed the connection.
                self.close()
                raise ConnectionLost(f"{self.url}: connection closed by the instrument")
