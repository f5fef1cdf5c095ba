"""The API's frames: one JSON object per request and per reply, with a size limit checked before parsing."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import zmq
import zmq.asyncio
from pydantic import BaseModel, ValidationError

from sdl.api.models import METHODS, ApiError, Error, Request

#: Requests larger than this get a typed 'too_large' error (a campaign file is a few kB).
MAX_REQUEST_BYTES = 1 << 20


@dataclass(frozen=True)
class Envelope:
    """A decoded request: the method's model with its parameters, the caller's id, who says they are."""

    request: Request
    id: Any
    user: str | None


def decode_request(frame: bytes) -> Envelope:
    """Parse and validate one request frame, or raise :class:`ApiError` saying what is wrong with it."""
    if len(frame) > MAX_REQUEST_BYTES:
        raise ApiError("too_large", f"request of {len(frame)} bytes; the limit is {MAX_REQUEST_BYTES}")
    try:
        parsed: object = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError("bad_request", f"not a JSON object: {exc}") from None
    if not isinstance(parsed, dict):
        raise ApiError("bad_request", f"a request is a JSON object, not {type(parsed).__name__}")
    data = cast(dict[str, Any], parsed)
    method = data.get("method")
    if not isinstance(method, str):
        raise ApiError("bad_request", "a request needs a 'method' string")
    model = METHODS.get(method)
    if model is None:
        raise ApiError("unknown_method", f"no method {method[:80]!r}", sorted(METHODS))
    params: object = data.get("params", {})
    if not isinstance(params, dict):
        raise ApiError("invalid_params", "'params' must be a JSON object")
    user = data.get("user")
    try:
        request = model.model_validate(params)
    except ValidationError as exc:
        details = [f"{'.'.join(map(str, e['loc'])) or '(params)'}: {e['msg']}" for e in exc.errors()]
        raise ApiError("invalid_params", f"invalid parameters for {method}", details) from None
    return Envelope(request=request, id=data.get("id"), user=user if isinstance(user, str) else None)


def encode_request(request: Request, id: Any = None, user: str | None = None) -> bytes:
    return json.dumps(
        {"method": request.method, "id": id, "user": user, "params": request.model_dump(mode="json")}
    ).encode()


def encode_result(id: Any, result: BaseModel) -> bytes:
    return b'{"id":%s,"ok":true,"result":%s}' % (_json_id(id), result.model_dump_json().encode())


def encode_error(id: Any, error: Error) -> bytes:
    return b'{"id":%s,"ok":false,"error":%s}' % (_json_id(id), error.model_dump_json().encode())


def _json_id(id: Any) -> bytes:
    try:
        return json.dumps(id).encode()
    except (TypeError, ValueError):
        return b"null"


def request_id(frame: bytes) -> Any:
    """The id of a request that failed to decode, if one can be read at all (for the error reply)."""
    try:
        data: object = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return cast(dict[str, Any], data).get("id") if isinstance(data, dict) else None


def send_frames(
    socket: zmq.asyncio.Socket, frames: Sequence[bytes | zmq.Frame], flags: int = 0
) -> Awaitable[object]:
    """``socket.send_multipart(frames, flags)``, typed (pyzmq types the asyncio socket's frames as a bare
    ``Sequence``). With ``zmq.NOBLOCK`` it is sent, or raises, before this returns."""
    return socket.send_multipart(frames, flags)  # pyright: ignore[reportUnknownMemberType]
