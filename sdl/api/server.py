"""The API's 0MQ server: a ROUTER socket, typed errors for everything that goes wrong, the e-stop first.

The dispatch table is ``sdl.api.models.METHODS`` joined to the service's handlers; the server refuses to
start unless every method has exactly one handler. No frame a client sends can crash or wedge it: a
malformed, unknown, mistyped or oversized request gets a typed error; a handler's bug gets an ``internal``
error and a log line.

Two tasks share the socket's requests, so that what one client sends cannot hold up an e-stop:

- the reader takes each message off the socket and does only bounded work on it: it counts its frames
  (dropping, unread, those past the limit), checks sizes, and peeks at the method and id in the request's
  first bytes (``sdl.api.wire``). An e-stop goes straight to its handler. Anything else is admitted only
  while fewer than :data:`MAX_CONCURRENT` requests are in flight, and fewer than :data:`MAX_PER_PEER` of
  its connection's; otherwise it is answered ``busy`` at once, unparsed;
- the parser parses and validates admitted requests one per turn of the event loop (a request is at most
  1 MiB: milliseconds), taking the connections in turn, and starts a task for each that answers it.

Parsing holds the interpreter: a 1 MiB request of numbers takes tens of milliseconds, and no other thread
of the service runs meanwhile. Large requests (over :data:`SMALL_BYTES`) are therefore rationed per key
(:class:`ParseBudget`); past its ration a key's large requests get ``busy`` unparsed. Small ones never are.

So an e-stop waits for at most one parse and the handlers' steps already due, once it is read. What it
cannot pass on this socket is what libzmq has not handed over yet (received, decrypted and queued by the
I/O thread every socket of the context shares); the e-stop's own socket (``sdl.api.estop``) has none of
that in front of it, and is answered here too (:meth:`ApiServer.estop`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import zmq
from pydantic import BaseModel

from sdl.access.roles import Caller, Refused, Role
from sdl.api.models import METHODS, ApiError, Error, EStop, Request
from sdl.api.wire import (
    MAX_ENVELOPE_BYTES,
    MAX_ENVELOPE_FRAMES,
    MAX_REQUEST_BYTES,
    PRIORITY_BYTES,
    Envelope,
    decode_request,
    direct,
    encode_error,
    encode_result,
    peek,
)

log = logging.getLogger(__name__)

#: Requests in flight (read, not yet answered) at once; more get ``busy``. The e-stop is never counted.
MAX_CONCURRENT = 64
#: ... and of one connection.
MAX_PER_PEER = 8
#: Frames of one message read before the reader lets the loop run (a message may have millions).
FRAMES_PER_TURN = 2048
#: Messages the reader takes before it lets the loop run.
MESSAGES_PER_TURN = 64
#: Requests up to this size are never rationed; a campaign submission is rarely larger.
SMALL_BYTES = 64 << 10
#: Bytes of large requests one key may have parsed: per second, and at once.
PARSE_RATE = 2 << 20
PARSE_BURST = 4 << 20

Handler = Callable[[Request, Caller], Awaitable[BaseModel]]
#: :meth:`ApiServer.execute`: one request for a caller already authenticated, with the server's checks.
Execute = Callable[[Request, Caller], Awaitable[BaseModel]]
Authenticate = Callable[[zmq.Frame, Envelope], Caller]
#: Writes one audit entry: who, what, how it ended, and the reply when it succeeded (a submission's names the
#: campaign it created).
Audit = Callable[[Caller, Request, str, BaseModel | None], None]


def local_caller(frame: zmq.Frame, envelope: Envelope) -> Caller:
    """On a loopback address nobody authenticates: the local user may do everything."""
    return Caller(name=f"local:{envelope.user or 'unknown'}", role=Role.ADMIN, origin="loopback")


@dataclass
class Message:
    """One message off the socket, with only the frames kept that may be needed to answer it."""

    identity: zmq.Frame
    envelope: list[zmq.Frame]
    payload: zmq.Frame
    frames: int  # all of them, the dropped included
    envelope_bytes: int

    @property
    def peer(self) -> bytes:
        return self.identity.bytes


class Slots:
    """Requests in flight: counted from the moment they are read to their reply."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0

    def locked(self) -> bool:
        return self.taken >= self.size


class ParseBudget:
    """A token bucket of bytes per key: ``rate`` a second, at most ``burst`` saved up. Buckets refilled to
    the brim are forgotten, so connections without a key (each its own) cannot grow the table."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[bytes, tuple[float, float]] = {}  # key -> (bytes left, when)

    def __len__(self) -> int:
        """Keys with a bucket kept."""
        return len(self._buckets)

    def take(self, key: bytes, size: int) -> bool:
        """Whether ``key`` may have ``size`` more bytes parsed now (and if so, they are spent)."""
        now = self.clock()
        left, then = self._buckets.get(key, (self.burst, now))
        left = min(self.burst, left + (now - then) * self.rate)
        if len(self._buckets) > 1024:
            full = now - self.burst / self.rate
            self._buckets = {k: v for k, v in self._buckets.items() if v[1] > full}
        if left < size:
            self._buckets[key] = (left, now)
            return False
        self._buckets[key] = (left - size, now)
        return True


def _key(message: Message) -> bytes:
    """Whose request: the key the handshake authenticated, else (no CurveZMQ) the connection."""
    try:
        return str(message.payload.get("User-Id")).encode()
    except zmq.ZMQError:
        return message.peer


class ApiServer:
    def __init__(
        self,
        socket: zmq.Socket[Any],
        handlers: Mapping[str, Handler],
        *,
        authenticate: Authenticate = local_caller,
        audit: Audit | None = None,
        budget: ParseBudget | None = None,
        timed: Callable[[str, float], None] | None = None,
    ) -> None:
        """``timed`` is told how long each request took to answer (as "api")."""
        missing = sorted(set(METHODS) - set(handlers))
        extra = sorted(set(handlers) - set(METHODS))
        if missing or extra:
            raise RuntimeError(f"API handlers do not match the models: missing {missing}, unknown {extra}")
        self.socket = socket
        self.handlers = dict(handlers)
        self.authenticate = authenticate
        self.audit = audit
        self.timed = timed
        self._slots = Slots(MAX_CONCURRENT)
        self._per_peer: dict[bytes, int] = {}
        self._budget = budget or ParseBudget(PARSE_RATE, PARSE_BURST)
        # Admitted requests, waiting to be parsed: each connection's in order, the connections in turn.
        self._waiting: dict[bytes, deque[Message]] = {}
        self._turns: deque[bytes] = deque()
        self._stopping: set[bytes] = set()  # connections whose e-stop is being answered
        self._direct: zmq.Socket[bytes] | None = None
        self._wake = asyncio.Event()
        self._readable = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.handled = 0
        #: Bytes of messages refused unread since the service last returned freed memory to the system.
        self.discarded = 0

    async def serve(self) -> None:
        """Read, admit and answer requests until cancelled."""
        # Every operation on the socket is this server's, without asyncio's futures: nothing on it is ever
        # waited for (libzmq delivers a message whole; a ROUTER drops a reply its peer has no room for).
        self._direct = direct(self.socket)
        loop = asyncio.get_running_loop()
        descriptor = int(self._direct.get(zmq.FD))
        loop.add_reader(descriptor, self._look)
        self._look()
        tasks = [asyncio.create_task(self._read(), name="api-read"), asyncio.create_task(self._parse())]
        try:
            await asyncio.gather(*tasks)
        finally:
            loop.remove_reader(descriptor)
            for task in [*tasks, *self._tasks]:
                task.cancel()
            await asyncio.gather(*tasks, *self._tasks, return_exceptions=True)

    def _look(self) -> None:
        """Whether a message waits. 0MQ's descriptor is edge-triggered: any operation on the socket, a reply
        sent included, may take the signal that a message came, so every one is followed by a look."""
        assert self._direct is not None
        if int(self._direct.get(zmq.EVENTS)) & zmq.POLLIN:
            self._readable.set()

    # -- reading ---------------------------------------------------------------------------------------------

    async def _read(self) -> None:
        reader = self._direct
        assert reader is not None
        while True:
            await self._readable.wait()
            self._readable.clear()
            for _ in range(MESSAGES_PER_TURN):
                if not int(reader.get(zmq.EVENTS)) & zmq.POLLIN:
                    break
                message = await self._message(reader)
                try:
                    self._take(message)
                except Exception:  # a bug: the reader carries on, whatever one message did
                    log.exception("could not take a request")
            else:
                self._readable.set()  # more are waiting: after the loop's turn
            await asyncio.sleep(0)

    async def _message(self, reader: zmq.Socket[bytes]) -> Message:
        """One whole message (libzmq delivers them whole): the routing id, at most the allowed envelope
        frames, and the last frame; every other frame is dropped as it is read."""
        identity = reader.recv(zmq.NOBLOCK, copy=False)
        envelope: list[zmq.Frame] = []
        frames, envelope_bytes, part = 1, 0, identity
        payload: zmq.Frame | None = None
        while part.more:
            part = reader.recv(zmq.NOBLOCK, copy=False)
            frames += 1
            if payload is not None:
                envelope_bytes += len(payload)
                if len(envelope) < MAX_ENVELOPE_FRAMES:
                    envelope.append(payload)
            payload = part
            if frames % FRAMES_PER_TURN == 0:
                await asyncio.sleep(0)
        if payload is None:  # a ROUTER always gives a routing id and something after it
            payload = zmq.Frame(b"")
        return Message(identity, envelope, payload, frames, envelope_bytes)

    def _take(self, message: Message) -> None:
        """Bounded work only: answer what is refused unparsed, start an e-stop, admit the rest."""
        size = len(message.payload)
        if message.frames - 2 > MAX_ENVELOPE_FRAMES or any(
            len(frame) > MAX_ENVELOPE_BYTES for frame in message.envelope
        ):
            self.discarded += size + message.envelope_bytes
            message.envelope = [zmq.Frame(b"")]  # answered as a DEALER or REQ expects, not echoed
            self._send(message, encode_error(peek(message.payload.buffer).id, _too_many_frames(message)))
            return
        if size > MAX_REQUEST_BYTES:
            self.discarded += size
            limit = f"request of {size} bytes; the limit is {MAX_REQUEST_BYTES}"
            why = Error(type="too_large", message=limit)
            self._send(message, encode_error(peek(message.payload.buffer).id, why))
            return
        glance = peek(message.payload.buffer)
        peer = message.peer
        if glance.method == EStop.method and size <= PRIORITY_BYTES and peer not in self._stopping:
            self._stopping.add(peer)  # one at a time per connection: a flood of them waits its turn
            self._start(self._answer(message, admitted=False))
            return
        if self._slots.locked() or self._per_peer.get(peer, 0) >= MAX_PER_PEER:
            busy = Error(type="busy", message="too many requests at once; retry")
            self._send(message, encode_error(glance.id, busy))
            return
        if size > SMALL_BYTES and not self._budget.take(_key(message), size):
            self.discarded += size
            rate = self._budget.rate / (1 << 20)
            ration = f"this key's large requests are over {rate:g} MiB a second; retry"
            self._send(message, encode_error(glance.id, Error(type="busy", message=ration)))
            return
        self._slots.taken += 1
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        waiting = self._waiting.get(peer)
        if waiting is None:
            waiting = self._waiting[peer] = deque()
            self._turns.append(peer)
        waiting.append(message)
        self._wake.set()

    # -- parsing and answering -------------------------------------------------------------------------------

    async def _parse(self) -> None:
        while True:
            while not self._turns:
                self._wake.clear()
                await self._wake.wait()
            self._start(self._answer(self._next(), admitted=True))
            await asyncio.sleep(0)  # one parse per turn of the loop: an e-stop waits for one at most

    def _next(self) -> Message:
        """The next connection's oldest request: a client that sent one waits for one of each other's."""
        peer = self._turns.popleft()
        waiting = self._waiting[peer]
        message = waiting.popleft()
        if waiting:
            self._turns.append(peer)
        else:
            del self._waiting[peer]
        return message

    def _start(self, answer: Awaitable[None]) -> None:
        task = asyncio.ensure_future(answer)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: Message, *, admitted: bool) -> None:
        try:
            self._send(message, await self._reply(message.payload, admitted=admitted))
        finally:
            if not admitted:
                self._stopping.discard(message.peer)
            else:
                self._slots.taken -= 1
                left = self._per_peer.pop(message.peer) - 1
                if left:
                    self._per_peer[message.peer] = left

    async def _reply(self, frame: zmq.Frame, *, admitted: bool) -> bytes:
        try:
            envelope = decode_request(frame.bytes)
        except ApiError as exc:
            return encode_error(peek(frame.buffer).id, exc.error)
        try:
            caller = self.authenticate(frame, envelope)
        except Refused as exc:
            who = Caller(name=exc.who, role=Role.VIEWER, origin=exc.origin)
            self._audit(who, envelope.request, f"refused: {exc}")
            return encode_error(envelope.id, Error(type="unauthenticated", message=str(exc)))
        try:
            if not admitted and not isinstance(envelope.request, EStop):
                # looked like an e-stop in its first bytes, was not one: no way around the limits
                raise ApiError("bad_request", "a request names its method once")
            self._check_role(envelope.request, caller)
            result = await self._call(envelope.request, caller)
        except ApiError as exc:
            return encode_error(envelope.id, exc.error)
        return encode_result(envelope.id, result)

    async def estop(self, frame: zmq.Frame) -> bytes:
        """An e-stop read off the e-stop's own socket (``sdl.api.estop``), answered as one read here ahead of
        everything queued: the same authentication, role check, handler and audit."""
        return await self._reply(frame, admitted=False)

    def _send(self, message: Message, reply: bytes) -> None:
        assert self._direct is not None
        try:
            self._direct.send_multipart([message.identity, *message.envelope, reply], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("could not reply: %s", exc)
        self._look()
        self.handled += 1

    # -- executing -------------------------------------------------------------------------------------------

    async def execute(self, request: Request, caller: Caller) -> BaseModel:
        """Run one request for a caller already authenticated: the role check, the concurrency limit (never
        for an e-stop) and the audit log, as for a request off the socket. Raises :class:`ApiError`.

        The web dashboard served by the lab service itself calls this with the signed-in user's caller."""
        self._check_role(request, caller)
        if isinstance(request, EStop):  # never queued behind anything
            return await self._call(request, caller)
        if self._slots.locked():
            raise ApiError("busy", "too many requests at once; retry")
        self._slots.taken += 1
        try:
            return await self._call(request, caller)
        finally:
            self._slots.taken -= 1

    def _check_role(self, request: Request, caller: Caller) -> None:
        if not caller.role.allows(request.role):
            message = (
                f"{caller.role.value} {caller.name!r} may not {request.method}; needs {request.role.value}"
            )
            self._audit(caller, request, f"refused: {message}")
            raise ApiError("forbidden", message)

    async def _call(self, request: Request, caller: Caller) -> BaseModel:
        started = time.perf_counter()
        try:
            result = await self.handlers[request.method](request, caller)
        except ApiError as exc:
            self._audit(caller, request, f"{exc.error.type}: {exc}")
            raise
        except Exception as exc:
            log.exception("%s failed", request.method)
            self._audit(caller, request, f"internal: {type(exc).__name__}: {exc}")
            raise ApiError("internal", f"{type(exc).__name__}: {exc}") from None
        self._audit(caller, request, "ok", result)
        if self.timed is not None:
            self.timed("api", time.perf_counter() - started)
        return result

    def _audit(self, caller: Caller, request: Request, result: str, reply: BaseModel | None = None) -> None:
        if self.audit is not None and (request.role is not Role.VIEWER or result != "ok"):
            try:
                self.audit(caller, request, result, reply)
            except Exception:
                log.exception("could not write the audit log")


def _too_many_frames(message: Message) -> Error:
    return Error(
        type="too_large",
        message=f"a message of {message.frames} frames; a request is one frame after at most "
        f"{MAX_ENVELOPE_FRAMES} envelope frames of {MAX_ENVELOPE_BYTES} bytes",
    )
