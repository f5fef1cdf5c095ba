"""One RS-232 line to a network of New Era pumps (addresses 0–99 daisy-chained on one port).

The line frames requests, reads one reply per request, checks the reply's address, and turns
alarms and command errors into typed exceptions. Link trouble (a dropped connection, a garbled,
partial or missing reply, a reply whose value does not parse) raises a specific error too; for
commands that are safe to repeat the line recovers by itself (reconnect, resend) under the
shared :class:`drivers.retry.RetryPolicy`, reporting each retry as a fault event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from drivers.errors import ConnectionLost, InstrumentTimeout, ReplyCutShort
from drivers.newera import codec
from drivers.newera.errors import (
    ALARMS,
    COMMAND_ERRORS,
    GarbledReply,
    NoReply,
    PartialReply,
)
from drivers.retry import FaultEvents, RetryPolicy
from drivers.transport import Transport

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Factory setting of the pump's serial port (NE-1000 manual, quick-start instructions: 19,200 8N1).
DEFAULT_BAUDRATE = 19200
#: A pump answers within a few ms at 19200 baud; half a second tells a silent link from a slow one.
DEFAULT_REPLY_TIMEOUT = 0.5
#: Replies from other pumps read past (late answers to earlier requests) before one is taken for garbled.
LATE_REPLIES = 4


class NE1000Line:
    """Requests and replies on one serial line; safe to share between threads (one exchange at a time)."""

    def __init__(
        self,
        transport: Transport,
        *,
        retries: int = 2,
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
        retry: RetryPolicy | None = None,
        events: FaultEvents | None = None,
    ):
        self.transport = transport
        transport.reply_timeout = reply_timeout  # the ceiling: the transport learns the line's round trip
        self.retry = retry or RetryPolicy(attempts=1 + retries, deadline_s=max(5.0, 4 * reply_timeout))
        self.events = events or FaultEvents(transport.url)
        self._safe: dict[int, bool] = {}
        self._closed = False
        #: Requests written to the wire, for logs and tests.
        self.requests_sent = 0

    @property
    def reply_timeout(self) -> float:
        """The longest wait for a reply, s (the transport waits less once it knows the line)."""
        return self.transport.reply_timeout

    @property
    def retries(self) -> int:
        """Resends of a repeatable command after a link fault."""
        return self.retry.attempts - 1

    @retries.setter
    def retries(self, retries: int) -> None:
        self.retry = self.retry.with_(attempts=1 + int(retries))

    @classmethod
    def connect(cls, url: str, *, baudrate: int = DEFAULT_BAUDRATE, **options: Any) -> NE1000Line:
        """Open the line at a pyserial URL (``/dev/ttyUSB0``, ``socket://host:port``, ``/dev/pts/N``)."""
        transport_options = {k: options.pop(k) for k in ("timeout",) if k in options}
        return cls(Transport(url, baudrate=baudrate, **transport_options).open(), **options)

    def open(self) -> None:
        """Open the port (again, after ``close()``)."""
        self._closed = False
        with self.transport.locked():
            self.transport.open()

    def close(self) -> None:
        """Close the port; the line stays closed until ``open()`` or ``reconnect()``."""
        self._closed = True
        self.transport.close()

    @property
    def closed(self) -> bool:
        """True after ``close()`` until the line is opened again."""
        return self._closed

    def reconnect(self) -> None:
        log.info("%s: reconnecting", self.transport.url)
        self._closed = False
        self.transport.reconnect()

    def __enter__(self) -> NE1000Line:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- framing mode per pump ---------------------------------------------------------------------
    def is_safe(self, address: int) -> bool:
        return self._safe.get(address, False)

    def set_safe(self, address: int, safe: bool) -> None:
        self._safe[address] = safe

    # -- exchanges -----------------------------------------------------------------------------------
    def command(
        self,
        address: int,
        command: str = "",
        argument: str = "",
        *,
        repeatable: bool = True,
        send_safe: bool | None = None,
        reply_safe: bool | None = None,
    ) -> codec.Reply:
        """Send one command to the pump at ``address`` and return its reply.

        Raises the typed alarm (``MotorStall``...) or command error (``OutOfRange``...) the reply
        carries. With ``repeatable`` (queries and settings: sending them twice does no harm) link
        errors are retried under the line's policy; otherwise they propagate for the caller to
        resolve. ``send_safe``/``reply_safe`` override the framing (switching modes with ``SAF``).
        """
        return self.query(address, command, argument, lambda reply: reply, repeatable=repeatable,
                          send_safe=send_safe, reply_safe=reply_safe)  # fmt: skip

    def query(
        self,
        address: int,
        command: str,
        argument: str,
        parse: Callable[[codec.Reply], T],
        *,
        repeatable: bool = True,
        send_safe: bool | None = None,
        reply_safe: bool | None = None,
    ) -> T:
        """Like ``command``, then ``parse(reply)``; a value that does not parse is garbled (retried)."""
        label = f"pump {address:02d} {command or '(status)'}{argument}"

        def once() -> T:
            reply = self._exchange(address, command, argument, send_safe, reply_safe)
            checked = self._check(reply, address, command + argument)
            try:
                return parse(checked)
            except (codec.CodecError, ValueError) as exc:
                raise GarbledReply(
                    f"{label}: unusable reply {reply.body()!r}: {exc}", address=address
                ) from None

        if not repeatable:
            return once()
        return self.retry.run(once, transport=self._link(), events=self.events, what=label)

    def _link(self) -> Transport | None:
        # A closed line is not reopened behind its owner's back.
        return None if self._closed else self.transport

    def _exchange(
        self, address: int, command: str, argument: str, send_safe: bool | None, reply_safe: bool | None
    ) -> codec.Reply:
        safe_out = self.is_safe(address) if send_safe is None else send_safe
        safe_in = safe_out if reply_safe is None else reply_safe
        encode = codec.encode_safe if safe_out else codec.encode_basic
        request = encode(address, command, argument)
        label = f"pump {address:02d} {command or '(status)'}{argument}"
        with self.transport.locked():  # two pollers must not both reopen the port
            if not self.transport.is_open:
                if self._closed:
                    raise ConnectionLost(f"{self.transport.url}: the line was closed")
                self.transport.open()  # after a dropped connection, or on first use

        def read_reply(transport: Transport) -> codec.Reply:
            # On a shared line, a reply from another pump is a late answer to an earlier request that gave
            # up waiting (the stale input was discarded before this request, but it was still on its way):
            # skip it and read on, within this request's deadline.
            reply, skipped = read_one(transport), 0
            while reply.address != address:
                if skipped == LATE_REPLIES:
                    raise GarbledReply(
                        f"{label}: reply came from address {reply.address:02d} "
                        f"(after {skipped} others from other pumps)",
                        address=address,
                    )
                log.info("%s: skipped a late reply from pump %02d: %s", label, reply.address, reply.body())
                reply, skipped = read_one(transport), skipped + 1
            return reply

        def read_one(transport: Transport) -> codec.Reply:
            try:
                if safe_in:
                    head = transport.read_exactly(2)
                    if head[0] != codec.STX or head[1] < 5:
                        raise GarbledReply(
                            f"{label}: reply does not start with STX and a length: {head!r}", address=address
                        )
                    frame = head + transport.read_exactly(head[1] - 1)
                    reply = codec.decode_safe_reply(frame)
                else:
                    frame = transport.read_until(bytes([codec.ETX]))
                    start = frame.rfind(bytes([codec.STX]))
                    reply = codec.decode_basic_reply(frame[max(start, 0) :])
            except ReplyCutShort as exc:
                raise PartialReply(f"{label}: {exc}", address=address) from exc
            except InstrumentTimeout as exc:
                waited = transport.replies.timeout
                raise NoReply(f"{label}: no reply within {waited:.3g} s", address=address) from exc
            except codec.CodecError as exc:
                raise GarbledReply(f"{label}: {exc}", address=address) from exc
            return reply

        self.requests_sent += 1
        log.debug("%s -> %r", label, request)
        reply = self.transport.exchange(request, read_reply)
        log.debug("%s <- %s", label, reply.body())
        return reply

    def _check(self, reply: codec.Reply, address: int, sent: str) -> codec.Reply:
        label = f"pump {address:02d} {sent or '(status)'}"
        if reply.alarm is not None:
            cls = ALARMS.get(reply.alarm)
            if cls is None:
                raise GarbledReply(f"{label}: unknown alarm A?{reply.alarm}", address=address)
            # Whoever handles the alarm decides how loud it is: a power-up reset at connect is expected.
            log.info(
                "%s: alarm %s (%s), now acknowledged", label, reply.alarm, codec.ALARM_NAMES[reply.alarm]
            )
            raise cls(
                f"{label}: alarm A?{reply.alarm}: {codec.ALARM_NAMES[reply.alarm]}",
                address=address,
                command=sent,
            )
        if reply.error is not None:
            cls = COMMAND_ERRORS[reply.error]
            text = f"?{reply.error}" if reply.error else "?"
            raise cls(
                f"{label}: pump answered {text}: {codec.ERROR_NAMES[reply.error]}",
                address=address,
                command=sent,
            )
        return reply
