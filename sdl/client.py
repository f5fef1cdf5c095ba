"""A typed Python client of the lab service, used by the CLI, the tests and the web dashboard.

    from sdl.client import Client
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import zmq
from pydantic import BaseModel

from sdl.api.models import ApiError, Error, EventRecord, EventsSince, Request, SubmitCampaign, SubmitReply
from sdl.api.wire import encode_request

R = TypeVar("R", bound=BaseModel)

DEFAULT_API = "tcp://127.0.0.1:60715"
INFO_FILE = "daemon.json"


class ServiceUnavailable(ConnectionError):
    """Nothing answered at the address (the lab service is not running there)."""


def address_for(data_dir: Path | str | None = None) -> str:
    """Where the local lab service listens: from the data directory's daemon.json, else the default."""
    directory = Path(data_dir or os.environ.get("SDL_DATA_DIR") or "sdl-data")
    try:
        return str(json.loads((directory / INFO_FILE).read_text())["api"])
    except (OSError, ValueError, KeyError):
        return DEFAULT_API


class Client:
    def __init__(self, address: str | None = None, *, timeout: float = 10.0, user: str | None = None) -> None:
        self.address = address or address_for()
        self.timeout = timeout
        self.user = user or _login()
        self._context = zmq.Context()
        self._socket: zmq.Socket[bytes] | None = None
        self._ids = itertools.count(1)
        self._events_address: str | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        self._context.term()

    def _connect(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(self.address)
            self._socket = socket
        return self._socket

    def call(self, request: Request, *, timeout: float | None = None) -> Any:
        """Send one request and return its typed reply; raises :class:`ApiError` or
        :class:`ServiceUnavailable`."""
        socket = self._connect()
        request_id = next(self._ids)
        socket.send_multipart([b"", encode_request(request, request_id, self.user)])
        deadline_ms = int((self.timeout if timeout is None else timeout) * 1000)
        while True:
            if not socket.poll(deadline_ms):
                # A DEALER would deliver the late reply to the next call: start afresh instead.
                socket.close(linger=0)
                self._socket = None
                raise ServiceUnavailable(
                    f"no answer from the lab service at {self.address} within {deadline_ms / 1000:g} s "
                    "(is `sdl daemon` running? give --connect URL)"
                )
            reply = json.loads(socket.recv_multipart()[-1])
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
        if self._events_address is None:
            from sdl.api.models import Status

            self._events_address = self.call(Status()).events_address
        return self._events_address

    def events(
        self, since: int | None = None, *, campaign_id: str | None = None, idle_timeout: float | None = None
    ) -> Iterator[EventRecord]:
        """Every event after ``since`` (default: from now), in order and without gaps: live from the
        publisher, and from the record whenever a sequence number is skipped (or after a reconnect).
        Stops after ``idle_timeout`` seconds without an event, if given."""
        subscriber = self._context.socket(zmq.SUB)
        subscriber.setsockopt(zmq.LINGER, 0)
        subscriber.setsockopt(zmq.SUBSCRIBE, b"")
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
            while True:
                if not subscriber.poll(int(idle_timeout * 1000) if idle_timeout is not None else -1):
                    return
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


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


__all__ = ["DEFAULT_API", "ApiError", "Client", "ServiceUnavailable", "address_for"]
