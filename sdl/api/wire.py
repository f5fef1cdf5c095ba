"""The API's frames: what is read of a request before it is parsed, how it is parsed, and the replies.

Every bound is checked before the work it bounds (the limits are listed in docs/api.md):

- libzmq itself closes a connection that sends a frame over :data:`MAX_FRAME_BYTES` (``ZMQ_MAXMSGSIZE``):
  nothing of it reaches the service, so no reply can; :class:`~sdl.api.client.Client` refuses to send a
  request over :data:`MAX_REQUEST_BYTES` in the first place;
- a message of more than :data:`MAX_ENVELOPE_FRAMES` envelope frames, or with an envelope frame over
  :data:`MAX_ENVELOPE_BYTES`, and a request over :data:`MAX_REQUEST_BYTES`, get ``too_large`` unparsed;
  the id for that reply is read from the request's first :data:`PEEK_BYTES` only (:func:`peek`);
- the parser is pydantic-core's, strict RFC 8259: no ``NaN`` or ``Infinity``, nesting at most 200 deep,
  integers of at most 4300 digits; an id must be null, a short string or a finite number;
- the models bound every number and string to what the store holds (``sdl.api.models``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import zmq
import zmq.asyncio
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from sdl.api.models import METHODS, ApiError, Error, Request

#: libzmq closes a connection that sends a larger frame (the service never sees it).
MAX_FRAME_BYTES = 16 << 20
#: Messages one connection may have waiting in libzmq for the service to read (its default is 1000, that is,
#: up to 16 GB of frames held for one client); past it libzmq stops reading that connection (TCP's own
#: backpressure), so a pipelining client waits instead of growing the service.
MAX_QUEUED = 16
#: Requests larger than this get a typed 'too_large' error, unparsed (a campaign file is a few kB).
MAX_REQUEST_BYTES = 1 << 20
#: Frames a request may carry between the connection's routing id and its payload (a DEALER's or REQ's empty
#: delimiter, a proxy's routing ids), and the size of each (0MQ routing ids are at most 255 bytes).
MAX_ENVELOPE_FRAMES = 4
MAX_ENVELOPE_BYTES = 256
#: What is read of a request that is not parsed whole: its id and method must come in these first bytes.
PEEK_BYTES = 4096
#: An e-stop request this small is taken ahead of everything else (a real one is under 1 kB).
PRIORITY_BYTES = 16 << 10
MAX_ID_CHARS = 256
MAX_USER_CHARS = 64
#: How many mistakes an invalid_params error lists.
MAX_DETAILS = 20
#: What a subscriber of the event or document socket may make the service keep (``sdl.daemon.subscribers``):
#: a prefix's bytes, subscriptions one connection holds at once and connections a socket takes (past them,
#: the connection is cut), and any frame it sends (0MQ closes the connection past it: room for a CurveZMQ
#: handshake's commands, a few hundred bytes).
MAX_PREFIX = 63
MAX_SUBSCRIBER_FRAME_BYTES = 1024
MAX_SUBSCRIPTIONS = 32
MAX_SUBSCRIBERS = 256

STRICT = (
    "strict JSON (RFC 8259): no NaN or Infinity, nesting at most 200 deep, integers of at most 4300 digits"
)


@dataclass(frozen=True)
class Envelope:
    """A decoded request: the method's model with its parameters, the caller's id, who says they are."""

    request: Request
    id: Any
    user: str | None


@dataclass(frozen=True)
class Glance:
    """What :func:`peek` read of a request's first bytes."""

    method: str | None
    id: Any


def parse(data: bytes) -> object:
    """Strict JSON; raises :class:`ApiError` ``bad_request`` saying what is wrong."""
    try:
        return from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        raise ApiError("bad_request", f"not a JSON object: {exc} ({STRICT})") from None


def valid_id(value: object) -> bool:
    """A request id is echoed in its reply: null, a string of at most 256 characters, or a finite number
    (JSON's, not Python's: no NaN, no infinity, integers within 64 bits)."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


def decode_request(frame: bytes) -> Envelope:
    """Parse and validate one request frame, or raise :class:`ApiError` saying what is wrong with it."""
    if len(frame) > MAX_REQUEST_BYTES:
        raise ApiError("too_large", f"request of {len(frame)} bytes; the limit is {MAX_REQUEST_BYTES}")
    parsed = parse(frame)
    if not isinstance(parsed, dict):
        raise ApiError("bad_request", f"a request is a JSON object, not {type(parsed).__name__}")
    data = cast(dict[str, Any], parsed)
    if not valid_id(data.get("id")):
        raise ApiError(
            "bad_request",
            f"'id' must be null, a string of at most {MAX_ID_CHARS} characters or a finite number",
        )
    method = data.get("method")
    if not isinstance(method, str):
        raise ApiError("bad_request", "a request needs a 'method' string")
    model = METHODS.get(method)
    if model is None:
        raise ApiError("unknown_method", f"no method {method[:80]!r}", sorted(METHODS))
    user = data.get("user")
    if user is not None and not (isinstance(user, str) and len(user) <= MAX_USER_CHARS):
        raise ApiError("bad_request", f"'user' must be a string of at most {MAX_USER_CHARS} characters")
    params: object = data.get("params", {})
    if not isinstance(params, dict):
        raise ApiError("invalid_params", "'params' must be a JSON object")
    named = cast(dict[str, Any], params)
    unknown = [name for name in named if name not in model.model_fields]
    if unknown:  # before pydantic, which would list every one of a hundred thousand
        listed = [f"{name[:80]!r}: not a parameter of {method}" for name in unknown[:MAX_DETAILS]]
        raise ApiError("invalid_params", f"invalid parameters for {method}", listed)
    try:
        request = model.model_validate(named)
    except ValidationError as exc:
        details = [
            f"{'.'.join(map(str, e['loc'])) or '(params)'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)[:MAX_DETAILS]
        ]
        raise ApiError("invalid_params", f"invalid parameters for {method}", details) from None
    return Envelope(request=request, id=data.get("id"), user=user)


def peek(frame: bytes | memoryview) -> Glance:
    """The method and id of a request, read from its first :data:`PEEK_BYTES` only (the rest may be huge
    or not JSON at all). A value cut off by the end of those bytes is not trusted: an id counts only if
    something follows it there, or the request ended."""
    head = bytes(frame[:PEEK_BYTES])
    whole = len(frame) <= PEEK_BYTES
    try:
        parsed = from_json(head, allow_inf_nan=False, allow_partial="off" if whole else "trailing-strings")
    except ValueError:
        return Glance(None, None)
    if not isinstance(parsed, dict):
        return Glance(None, None)
    data = cast(dict[str, Any], parsed)
    if not whole and data:
        data.pop(list(data)[-1])  # perhaps cut short: the first digits of a longer number
    method, id = data.get("method"), data.get("id")
    return Glance(method if isinstance(method, str) else None, id if valid_id(id) else None)


def encode_request(request: Request, id: Any = None, user: str | None = None) -> bytes:
    return json.dumps(
        {"method": request.method, "id": id, "user": user, "params": request.model_dump(mode="json")}
    ).encode()


def encode_result(id: Any, result: BaseModel) -> bytes:
    return b'{"id":%s,"ok":true,"result":%s}' % (_json_id(id), result.model_dump_json().encode())


def encode_error(id: Any, error: Error) -> bytes:
    return b'{"id":%s,"ok":false,"error":%s}' % (_json_id(id), error.model_dump_json().encode())


def _json_id(id: Any) -> bytes:
    if not valid_id(id):
        return b"null"
    return json.dumps(id, allow_nan=False).encode()


def limit_socket(socket: zmq.Socket[Any]) -> None:
    """The API socket's transport limits (before it binds): libzmq drops a connection that sends a frame over
    :data:`MAX_FRAME_BYTES` before any of it is kept, and queues at most :data:`MAX_QUEUED` messages of
    each connection."""
    socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    socket.setsockopt(zmq.RCVHWM, MAX_QUEUED)


def direct(socket: zmq.Socket[Any]) -> zmq.Socket[bytes]:
    """The same 0MQ socket without asyncio's futures (pyzmq's shadow), on the same thread: for reads and
    sends that never wait (the rest of a message already delivered, a reply a ROUTER drops if it must)."""
    return zmq.Socket[bytes].shadow(socket.underlying)  # pyright: ignore[reportUnknownMemberType]


def on_loop(socket: zmq.Socket[Any]) -> zmq.asyncio.Socket:
    """The same 0MQ socket for asyncio (pyzmq's shadow, typed): a socket made in a plain context of its own,
    read on the service's loop."""
    return zmq.asyncio.Socket.from_socket(socket)  # pyright: ignore[reportUnknownMemberType]


def send_frames(
    socket: zmq.asyncio.Socket, frames: Sequence[bytes | zmq.Frame], flags: int = 0
) -> Awaitable[object]:
    """``socket.send_multipart(frames, flags)``, typed (pyzmq types the asyncio socket's frames as a bare
    ``Sequence``). With ``zmq.NOBLOCK`` it is sent, or raises, before this returns."""
    return socket.send_multipart(frames, flags)  # pyright: ignore[reportUnknownMemberType]
