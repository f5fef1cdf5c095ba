"""The API's 0MQ server: a ROUTER socket, one task per request, typed errors for everything that goes wrong.

The dispatch table is ``sdl.api.models.METHODS`` joined to the service's handlers; the server refuses to
start unless every method has exactly one handler. No frame a client sends can crash or wedge it: a
malformed, unknown, mistyped or oversized request gets a typed error; a handler's bug gets an
``internal`` error and a log line; too many requests at once get ``busy`` — except the e-stop, which is
always taken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import zmq
import zmq.asyncio
from pydantic import BaseModel

from sdl.access.roles import Caller, Refused, Role
from sdl.api.models import METHODS, ApiError, Error, EStop, Request
from sdl.api.wire import Envelope, decode_request, encode_error, encode_result, request_id, send_frames

log = logging.getLogger(__name__)

MAX_CONCURRENT = 64


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


class ApiServer:
    def __init__(
        self,
        socket: zmq.asyncio.Socket,
        handlers: Mapping[str, Handler],
        *,
        authenticate: Authenticate = local_caller,
        audit: Audit | None = None,
    ) -> None:
        missing = sorted(set(METHODS) - set(handlers))
        extra = sorted(set(handlers) - set(METHODS))
        if missing or extra:
            raise RuntimeError(f"API handlers do not match the models: missing {missing}, unknown {extra}")
        self.socket = socket
        self.handlers = dict(handlers)
        self.authenticate = authenticate
        self.audit = audit
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._tasks: set[asyncio.Task[None]] = set()
        self.handled = 0

    async def serve(self) -> None:
        """Receive requests until cancelled; each runs in a task of its own."""
        try:
            while True:
                frames = await self.socket.recv_multipart(copy=False)
                task = asyncio.create_task(self._handle(frames))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            return  # a ROUTER always gives an identity frame; nothing to answer without a payload
        identity, envelope_frames, payload = frames[0], frames[1:-1], frames[-1]
        reply = await self._reply(payload)
        try:
            await send_frames(self.socket, [identity, *envelope_frames, reply])
        except zmq.ZMQError as exc:
            log.debug("could not reply: %s", exc)
        self.handled += 1

    async def _reply(self, frame: zmq.Frame) -> bytes:
        raw = frame.bytes
        try:
            envelope = decode_request(raw)
        except ApiError as exc:
            return encode_error(request_id(raw), exc.error)
        except RecursionError:
            return encode_error(None, Error(type="bad_request", message="request nested too deeply"))
        try:
            caller = self.authenticate(frame, envelope)
        except Refused as exc:
            who = Caller(name=exc.who, role=Role.VIEWER, origin=exc.origin)
            self._audit(who, envelope.request, f"refused: {exc}")
            return encode_error(envelope.id, Error(type="unauthenticated", message=str(exc)))
        try:
            result = await self.execute(envelope.request, caller)
        except ApiError as exc:
            return encode_error(envelope.id, exc.error)
        return encode_result(envelope.id, result)

    async def execute(self, request: Request, caller: Caller) -> BaseModel:
        """Run one request for a caller already authenticated: the role check, the concurrency limit (never
        for an e-stop) and the audit log, as for a request off the socket. Raises :class:`ApiError`.

        The web dashboard served by the lab service itself calls this with the signed-in user's caller."""
        if not caller.role.allows(request.role):
            message = (
                f"{caller.role.value} {caller.name!r} may not {request.method}; needs {request.role.value}"
            )
            self._audit(caller, request, f"refused: {message}")
            raise ApiError("forbidden", message)
        if isinstance(request, EStop):  # never queued behind anything
            return await self._call(request, caller)
        if self._slots.locked():
            raise ApiError("busy", "too many requests at once; retry")
        async with self._slots:
            return await self._call(request, caller)

    async def _call(self, request: Request, caller: Caller) -> BaseModel:
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
        return result

    def _audit(self, caller: Caller, request: Request, result: str, reply: BaseModel | None = None) -> None:
        if self.audit is not None and (request.role is not Role.VIEWER or result != "ok"):
            try:
                self.audit(caller, request, result, reply)
            except Exception:
                log.exception("could not write the audit log")
