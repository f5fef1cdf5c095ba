"""A typed Python client of the lab service, used by the CLI, the tests and the web dashboard.

    from sdl.api.client import Client
    with Client() as lab:                          # the local service (see `address_for`)
        campaign_id = lab.submit(Path("campaign.yaml")).campaign_id
        lab.call(PauseCampaign(campaign_id=campaign_id))
        for event in lab.events():                 # live, gap-free: catches up from the record
            ...

Every method of `sdl.api.models` is ``client.call(Model(...))``, returning that method's reply model or
raising :class:`ApiError` with the service's typed error.
"""

from __future__ import annotations

import getpass
import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import zmq
from pydantic import BaseModel
from pydantic_core import from_json
from zmq.utils.monitor import recv_monitor_message

from sdl.access.keys import KEY_ENV, SERVER_KEY_ENV, KeyFileError, read_pair, read_public
from sdl.api.models import (
    ApiError,
    Error,
    EventRecord,
    EventsSince,
    Request,
    Status,
    SubmitCampaign,
    SubmitReply,
)
from sdl.api.wire import MAX_REQUEST_BYTES, MAX_USER_CHARS, encode_request

R = TypeVar("R", bound=BaseModel)

HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)

DEFAULT_API = "tcp://127.0.0.1:60715"
INFO_FILE = "daemon.json"
#: How long an event stream waits on the publisher before it asks the record what it may have missed.
CATCH_UP_S = 1.0


class ServiceUnavailable(ConnectionError):
    """Nothing answered at the address (the lab service is not running there)."""


def service_info(data_dir: Path | str | None = None) -> dict[str, Any]:
    """What the local lab service wrote to the data directory's daemon.json (empty if it is not running)."""
    directory = Path(data_dir or os.environ.get("SDL_DATA_DIR") or "sdl-data")
    try:
        info: object = json.loads((directory / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return cast(dict[str, Any], info) if isinstance(info, dict) else {}


def address_for(data_dir: Path | str | None = None) -> str:
    """Where the local lab service listens: from the data directory's daemon.json, else the default."""
    return str(service_info(data_dir).get("api") or DEFAULT_API)


class Credentials:
    """A client's CurveZMQ key pair and the lab service's public key (all Z85 bytes)."""

    def __init__(self, public: bytes, secret: bytes, server: bytes, name: str = "") -> None:
        self.public, self.secret, self.server, self.name = public, secret, server, name

    @classmethod
    def load(
        cls,
        key: Path | str | None = None,
        server_key: Path | str | bytes | None = None,
        *,
        data_dir: Path | str | None = None,
    ) -> Credentials | None:
        """From ``--key`` (else $SDL_KEY) and ``--server-key`` (else $SDL_SERVER_KEY, else the local service's
        daemon.json); None when no client key is given. Raises :class:`ApiError` for a missing half."""
        key = key or os.environ.get(KEY_ENV)
        if not key:
            return None
        server_key = server_key or os.environ.get(SERVER_KEY_ENV) or service_info(data_dir).get("server_key")
        if not server_key:
            raise ApiError(
                "unauthenticated",
                "a client key needs the lab service's public key: give --server-key FILE "
                f"(its keys/server.key) or set ${SERVER_KEY_ENV}",
            )
        try:
            public, secret = read_pair(key)
            server = server_key if isinstance(server_key, bytes) else read_public(server_key).encode()
        except KeyFileError as exc:
            raise ApiError("unauthenticated", str(exc)) from None
        return cls(public, secret, server, Path(key).name.removesuffix(".key_secret"))

    def apply(self, socket: zmq.Socket[Any]) -> None:
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret
        socket.curve_serverkey = self.server


class Client:
    """``credentials``: a CurveZMQ key pair and the service's public key (:meth:`Credentials.load`); without,
    the client speaks plain 0MQ, which only a loopback service without keys accepts."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = 10.0,
        user: str | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.address = address or address_for()
        self.timeout = timeout
        self.user = (user or login_name())[:MAX_USER_CHARS]
        self.credentials = credentials
        self._context = zmq.Context()
        self._socket: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self._ids = itertools.count(1)
        self._events_address: str | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._drop()
        # destroy, not term: an event stream the caller never finished still holds a socket, and term()
        # would wait for it forever.
        self._context.destroy(linger=0)

    def _drop(self) -> None:
        if self._socket is not None:
            self._socket.disable_monitor()
            self._socket.close(linger=0)
            self._socket = None
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None

    def _connect(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            if self.credentials is not None:
                self.credentials.apply(socket)
            self._monitor = socket.get_monitor_socket(HANDSHAKE_FAILED)
            socket.connect(self.address)
            self._socket = socket
        return self._socket

    def _handshake_failure(self) -> ApiError | None:
        """The service refused this connection's handshake: say why, as a typed error."""
        assert self._monitor is not None
        if not self._monitor.poll(0):
            return None
        event = recv_monitor_message(self._monitor)["event"]
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            name = self.credentials.name if self.credentials else ""
            return ApiError(
                "unauthenticated",
                f"the lab service at {self.address} refused key {name!r}: it is not on its allow-list",
            )
        if self.credentials is None:
            return ApiError(
                "unauthenticated",
                f"no key: the lab service at {self.address} requires a CurveZMQ key "
                "(give --key FILE or set $SDL_KEY, and --server-key FILE)",
            )
        return ApiError(
            "unauthenticated",
            f"the CurveZMQ handshake with {self.address} failed: is --server-key the service's public key?",
        )

    def call(self, request: Request, *, timeout: float | None = None) -> Any:
        """Send one request and return its typed reply; raises :class:`ApiError` or
        :class:`ServiceUnavailable`."""
        request_id = next(self._ids)
        payload = encode_request(request, request_id, self.user)
        if len(payload) > MAX_REQUEST_BYTES:  # the service would refuse it (or drop the connection)
            raise ApiError("too_large", f"request of {len(payload)} bytes; the limit is {MAX_REQUEST_BYTES}")
        socket = self._connect()
        socket.send_multipart([b"", payload])
        seconds = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        assert self._monitor is not None
        poller.register(self._monitor, zmq.POLLIN)
        while True:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            ready = dict(poller.poll(left_ms))
            if self._monitor in ready:
                refused = self._handshake_failure()
                if refused is not None:
                    self._drop()  # a refused client must not keep knocking
                    raise refused
                continue
            if socket not in ready:
                # A DEALER would deliver the late reply to the next call: start afresh instead.
                self._drop()
                raise ServiceUnavailable(
                    f"no answer from the lab service at {self.address} within {seconds:g} s "
                    "(is `sdl daemon` running? give --connect URL)"
                )
            reply = from_json(socket.recv_multipart()[-1])  # pydantic's parser: 2-3x json.loads on pages
            if reply.get("id") == request_id:
                break
        if not reply.get("ok"):
            error = Error.model_validate(reply.get("error"))
            raise ApiError(error.type, error.message, error.details)
        return request.reply.model_validate(reply["result"])

    def submit(self, path: Path, *, seed: int | None = None, budget: int | None = None) -> SubmitReply:
        """Submit a campaign file (read here; its procedures must be importable where the service runs)."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        result: SubmitReply = self.call(
            SubmitCampaign(text=text, path=str(path.resolve()), seed=seed, budget=budget), timeout=60
        )
        return result

    # -- events --------------------------------------------------------------------------------------------

    def events_address(self) -> str:
        address = self._events_address
        if address is None:
            address = self._events_address = self.call(Status()).events_address
        return address

    def events(
        self, since: int | None = None, *, campaign_id: str | None = None, idle_timeout: float | None = None
    ) -> Iterator[EventRecord]:
        """Every event after ``since`` (default: from now), in order and without gaps: live from the
        publisher, and from the record whenever a sequence number is skipped or the publisher is quiet for
        a second (an event sent while the subscription was reconnecting is caught up either way).
        Stops after ``idle_timeout`` seconds without an event, if given."""
        subscriber = self._context.socket(zmq.SUB)
        subscriber.setsockopt(zmq.LINGER, 0)
        subscriber.setsockopt(zmq.SUBSCRIBE, b"")
        if self.credentials is not None:
            self.credentials.apply(subscriber)
        subscriber.connect(self.events_address())
        try:
            last = since if since is not None else self.call(EventsSince(seq=0, limit=1)).last
            while True:
                caught = self.call(EventsSince(seq=last, limit=1000, campaign_id=campaign_id))
                for event in caught.events:
                    last = event.seq
                    yield event
                if len(caught.events) < 1000:
                    break
            slice_s = min(CATCH_UP_S, idle_timeout) if idle_timeout is not None else CATCH_UP_S
            heard_at = time.monotonic()
            while True:
                if not subscriber.poll(int(slice_s * 1000)):
                    # Quiet: an event published while the subscription was (re)connecting exists only in
                    # the record, and no later event may come to reveal the gap. Ask the record.
                    caught = self.call(EventsSince(seq=last, limit=10000, campaign_id=campaign_id))
                    for missed in caught.events:
                        last = missed.seq
                        heard_at = time.monotonic()
                        yield missed
                    if idle_timeout is not None and time.monotonic() - heard_at >= idle_timeout:
                        return
                    continue
                heard_at = time.monotonic()
                _topic, body = subscriber.recv_multipart()
                event = EventRecord.model_validate_json(body)
                if event.seq <= last:
                    continue
                if event.seq > last + 1:  # missed some: read them from the record, in order
                    caught = self.call(EventsSince(seq=last, limit=10000, campaign_id=campaign_id))
                    for missed in caught.events:
                        if missed.seq < event.seq:
                            last = missed.seq
                            yield missed
                last = event.seq
                if campaign_id is None or event.campaign_id == campaign_id:
                    yield event
        finally:
            subscriber.close(linger=0)


def login_name() -> str:
    """Who runs this process, for the audit log of a loopback service (which trusts it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


__all__ = [
    "DEFAULT_API",
    "ApiError",
    "Client",
    "Credentials",
    "ServiceUnavailable",
    "address_for",
    "login_name",
    "service_info",
]
