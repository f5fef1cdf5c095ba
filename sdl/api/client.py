"""A typed Python client of the lab service, used by the CLI, the tests and the web dashboard.

    from sdl.api.client import Client
    with Client() as lab:                          # the local service (see `address_for`), as its owner
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
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import zmq
from pydantic import BaseModel
from pydantic_core import from_json
from zmq.utils.monitor import recv_monitor_message

from sdl.access.keys import (
    KEY_ENV,
    SERVER_KEY_DIR,
    SERVER_KEY_ENV,
    SERVER_KEY_NAME,
    KeyFileError,
    read_pair,
    read_public,
)
from sdl.access.owner import readable_owner_key
from sdl.api.local import (
    DEFAULT_API,
    INFO_FILE,
    ServiceUnavailable,
    address_for,
    data_directory,
    local_service,
    service_info,
)
from sdl.api.models import (
    ApiError,
    Error,
    EStop,
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

#: How long an event stream waits on the publisher before it asks the record what it may have missed.
CATCH_UP_S = 1.0


#: How long a request waits for a lab service to take its connection at all; once connected, a reply may
#: take up to the request's timeout (a submission is validated by the service, which can take a while).
CONNECT_S = 5.0


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
        """From ``--key`` (else $SDL_KEY, else the data directory owner's key if this account may read it:
        the owner needs no setup) and ``--server-key`` (else $SDL_SERVER_KEY, else the local service's
        daemon.json, else DATA_DIR/keys/server.key); None when there is no key to use. Raises
        :class:`ApiError` for a missing half."""
        directory = data_directory(data_dir)
        key = key or os.environ.get(KEY_ENV) or readable_owner_key(directory)
        if not key:
            return None
        server_key = (
            server_key
            or os.environ.get(SERVER_KEY_ENV)
            or service_info(directory).get("server_key")
            or _existing(directory / SERVER_KEY_DIR / f"{SERVER_KEY_NAME}.key")
        )
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


#: ``Client(credentials=LOCAL)``: the key the command line would use (see :meth:`Credentials.load`).
LOCAL = "local"


class Client:
    """``credentials``: a CurveZMQ key pair and the service's public key; by default (``LOCAL``) what the
    command line would use: $SDL_KEY, else the key of the data directory's owner (``data_dir``, else
    $SDL_DATA_DIR, else ./sdl-data) when this account may read it. ``None`` speaks plain 0MQ, which every
    lab service refuses."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = 10.0,
        user: str | None = None,
        credentials: Credentials | Literal["local"] | None = LOCAL,
        data_dir: Path | str | None = None,
        connect_timeout: float = CONNECT_S,
    ) -> None:
        self.address = address or address_for(data_dir)
        # The e-stop's own socket (``sdl.api.estop``), if the local service at this address has one.
        info = service_info(data_dir)
        self.estop_address: str | None = info.get("estop") if info.get("api") == self.address else None
        self._estop: Client | None = None
        self._data_dir = data_dir
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.user = (user or login_name())[:MAX_USER_CHARS]
        self.credentials = Credentials.load(data_dir=data_dir) if credentials == LOCAL else credentials
        self._context = zmq.Context()
        self._socket: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        #: Whether the service has taken this socket's connection (its handshake succeeded, not lost since).
        self._connected = False
        self._ids = itertools.count(1)
        self._events_address: str | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._estop is not None:
            self._estop.close()
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
        self._connected = False

    def _connect(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            if self.credentials is not None:
                self.credentials.apply(socket)
            events = HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
            self._monitor = socket.get_monitor_socket(events)
            socket.connect(self.address)
            self._socket = socket
        return self._socket

    def _watch_connection(self) -> None:
        """Read the connection's events: note it taken or lost; a refused handshake raises a typed error."""
        assert self._monitor is not None
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._connected = True
            elif event == zmq.EVENT_DISCONNECTED:
                self._connected = False
            else:
                refused = self._refusal(event)
                self._drop()  # a refused client must not keep knocking
                raise refused

    def _refusal(self, event: int) -> ApiError:
        """The service refused this connection's handshake: say why, as a typed error."""
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            name = self.credentials.name if self.credentials else ""
            return ApiError(
                "unauthenticated",
                f"the lab service at {self.address} refused key {name!r}: it is not on its allow-list",
            )
        if self.credentials is None:
            return ApiError(
                "unauthenticated",
                f"no key: the lab service at {self.address} requires a CurveZMQ key: run this as the "
                "account that owns its data directory (its key is found there), or give --key FILE (or set "
                "$SDL_KEY) and --server-key FILE",
            )
        return ApiError(
            "unauthenticated",
            f"the CurveZMQ handshake with {self.address} failed: is --server-key the service's public key?",
        )

    def call(self, request: Request, *, timeout: float | None = None) -> Any:
        """Send one request and return its typed reply; raises :class:`ApiError` or
        :class:`ServiceUnavailable`: within ``connect_timeout`` seconds if nothing takes the connection,
        else within ``timeout`` (the client's, unless given)."""
        if isinstance(request, EStop) and self.estop_address:
            return self._stopper().call(request, timeout=timeout)
        request_id = next(self._ids)
        payload = encode_request(request, request_id, self.user)
        if len(payload) > MAX_REQUEST_BYTES:  # the service would refuse it (or drop the connection)
            raise ApiError("too_large", f"request of {len(payload)} bytes; the limit is {MAX_REQUEST_BYTES}")
        socket = self._connect()
        socket.send_multipart([b"", payload])
        seconds = self.timeout if timeout is None else timeout
        now = time.monotonic()
        deadline = now + seconds
        connect_by = now + min(seconds, self.connect_timeout)
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        assert self._monitor is not None
        poller.register(self._monitor, zmq.POLLIN)
        while True:
            was_connected = self._connected
            until = deadline if self._connected else min(deadline, connect_by)
            ready = dict(poller.poll(max(0, int((until - time.monotonic()) * 1000))))
            if self._monitor in ready:
                self._watch_connection()
                if was_connected and not self._connected:  # lost: give it as long again to come back
                    connect_by = time.monotonic() + min(seconds, self.connect_timeout)
            if socket in ready:
                self._connected = True
                reply = from_json(socket.recv_multipart()[-1])  # pydantic's parser: 2-3x json.loads on pages
                if reply.get("id") == request_id:
                    break
                continue
            if ready:
                continue
            now = time.monotonic()
            if not self._connected and now >= connect_by:
                waited = min(seconds, self.connect_timeout)
                self._drop()
                raise ServiceUnavailable(
                    f"no lab service answered at {self.address} within {waited:g} s: nothing took the "
                    "connection (is `sdl daemon` running there? give --connect URL)"
                )
            if now >= deadline:
                # A DEALER would deliver the late reply to the next call: start afresh instead.
                self._drop()
                raise ServiceUnavailable(
                    f"the lab service at {self.address} took the connection but did not answer within "
                    f"{seconds:g} s"
                )
        if not reply.get("ok"):
            error = Error.model_validate(reply.get("error"))
            raise ApiError(error.type, error.message, error.details)
        return request.reply.model_validate(reply["result"])

    def _stopper(self) -> Client:
        """A client of the e-stop's socket: a connection (and a 0MQ context) of its own, so that an e-stop
        waits behind nothing this client has sent."""
        if self._estop is None:
            self._estop = Client(
                self.estop_address,
                timeout=self.timeout,
                user=self.user,
                credentials=self.credentials,
                data_dir=self._data_dir,
                connect_timeout=self.connect_timeout,
            )
            self._estop.estop_address = None
        return self._estop

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


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def login_name() -> str:
    """Who runs this process, for the audit log of a loopback service (which trusts it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


__all__ = [
    "CONNECT_S",
    "DEFAULT_API",
    "INFO_FILE",
    "LOCAL",
    "ApiError",
    "Client",
    "Credentials",
    "ServiceUnavailable",
    "address_for",
    "data_directory",
    "local_service",
    "login_name",
    "service_info",
]
