"""Where the dashboard gets its answers: the lab service it runs in, or a lab service it reaches as a client.

Both give the same two things, typed by `sdl.api.models`: ``call(request, session)`` and a live, gap-free
stream of events. The role check is the lab service's own (``ApiServer.execute`` in process, the service's
check of the session's CurveZMQ key remotely) plus the dashboard's check of the session's role, so a viewer
is refused even if the page were changed to show it a button.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from sdl.access.keys import KeyFileError
from sdl.access.owner import OWNER_KEY_NAME, same_token
from sdl.access.refusals import Refusal, RefusalThrottle
from sdl.access.roles import Caller, Role
from sdl.access.tokens import TokenFile, digest
from sdl.api import models as m
from sdl.api.client import Client, Credentials
from sdl.api.convert import event_record
from sdl.api.models import ApiError
from sdl.api.server import Execute
from sdl.daemon.state import LabState

log = logging.getLogger(__name__)

#: Events a browser may be behind before it is told to reload (it then catches up from the record).
QUEUE_LIMIT = 10000
#: How often `sdl dashboard` asks the service whether a signed-in browser's key is still allowed.
RECHECK_S = 1.0


@dataclass
class Session:
    """One signed-in browser (or the anonymous viewer): who the lab service takes it for."""

    name: str
    role: Role
    signed_in: bool
    token_name: str | None = None
    client: Any = field(default=None, repr=False)  # remote: the session's own client
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    token: str | None = field(default=None, repr=False)  # to check it again while its stream lasts
    checked_at: float = field(default=0.0, repr=False)


class Backend:
    """What the web app needs from a lab service."""

    tokens: TokenFile

    def __init__(self) -> None:
        self.refusals = RefusalThrottle(self._write_refusal)

    def refused(self, refusal: Refusal) -> None:
        """A web request refused before it reached the lab service (a Host or Origin that is not this
        dashboard's, an unknown token): audited, throttled per source address."""
        self.refusals.refused(refusal)

    def _write_refusal(self, refusal: Refusal) -> None:
        log.warning(
            "%s from %s: %s%s",
            refusal.action,
            refusal.origin or "?",
            refusal.result,
            f" ({refusal.target})" if refusal.target else "",
        )

    async def still_allowed(self, session: Session) -> bool:
        """Whether a session may still hear events (its token not revoked, its key still allowed)."""
        return True

    def session_for(self, token: str | None, origin: str | None) -> Session | None:
        """The session of a sign-in token (None: unknown token); without a token, the anonymous one (None:
        anonymous visitors see nothing)."""
        raise NotImplementedError

    async def call(self, request: m.Request, session: Session, origin: str | None) -> Any:
        raise NotImplementedError

    def events(self, since: int) -> AsyncGenerator[m.EventRecord, None]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend holds (clients, threads)."""


def _check(session: Session, request: m.Request) -> None:
    if not session.role.allows(request.role):
        raise ApiError(
            "forbidden",
            f"{session.role.value} {session.name!r} may not {request.method}; needs {request.role.value}",
        )


class ServiceBackend(Backend):
    """Inside the lab service (`sdl daemon --http`): requests go through the API server's own checks and audit
    log, events come straight from the service as it publishes them."""

    def __init__(
        self, state: LabState, execute: Execute, tokens: TokenFile, *, anonymous: bool, owner_token: str
    ) -> None:
        super().__init__()
        self.state = state
        self.execute = execute
        self.tokens = tokens
        self.anonymous = anonymous
        self.owner_token = owner_token

    def session_for(self, token: str | None, origin: str | None) -> Session | None:
        if not token:
            return Session("anonymous", Role.VIEWER, False) if self.anonymous else None
        owner = self.state.keyring.owner
        if owner is not None and same_token(token, self.owner_token):
            return Session(owner.name, owner.role, True, OWNER_KEY_NAME, token=token)
        try:
            entry = self.tokens.lookup(token)
        except KeyFileError as exc:
            log.error("%s", exc)
            return None
        if entry is None:
            return None
        key = self.state.keyring.by_public_key(entry.public_key)
        if key is None:  # the token's key is no longer (or never was) on the allow-list
            return None
        return Session(key.name, key.role, True, entry.name, token=token)

    def _write_refusal(self, refusal: Refusal) -> None:
        self.state.store.audit(
            refusal.who, refusal.action, refusal.result, origin=refusal.origin, target=refusal.target
        )

    async def still_allowed(self, session: Session) -> bool:
        return session.token is None or self.session_for(session.token, None) is not None

    async def call(self, request: m.Request, session: Session, origin: str | None) -> Any:
        caller = Caller(name=session.name, role=session.role, origin=f"web {origin or '?'}")
        return await self.execute(request, caller)

    async def events(self, since: int) -> AsyncGenerator[m.EventRecord, None]:
        queue: asyncio.Queue[m.EventRecord] = asyncio.Queue(QUEUE_LIMIT)

        def listener(record: m.EventRecord) -> None:
            with contextlib.suppress(asyncio.QueueFull):  # a gap: the reader catches up from the record
                queue.put_nowait(record)

        self.state.event_listeners.add(listener)
        try:
            store = self.state.store
            last = since
            while True:
                caught = store.events_since(last, 1000)
                for event in caught:
                    last = event.seq
                    yield event_record(event)
                if len(caught) < 1000:
                    break
            while True:
                record = await queue.get()
                if record.seq <= last:
                    continue
                if record.seq > last + 1:
                    for missed in store.events_since(last, record.seq - last - 1):
                        last = missed.seq
                        yield event_record(missed)
                last = record.seq
                yield record
        finally:
            self.state.event_listeners.discard(listener)


class RemoteBackend(Backend):
    """`sdl dashboard --connect URL`: a client of the lab service. Each signed-in token speaks to the service
    with its own key (the token's ``secret_key_file``), so the service checks and audits that key; the
    owner's sign-in token (the one it prints) acts with the dashboard's own key; anonymous visitors, if
    allowed, use the dashboard's own key too, capped at viewer."""

    def __init__(
        self,
        address: str,
        credentials: Credentials,
        tokens: TokenFile,
        *,
        anonymous: bool,
        owner_token: str,
        identity: m.Identity,
    ) -> None:
        super().__init__()
        self.address = address
        self.tokens = tokens
        self.server_key = credentials.server
        self.anonymous = anonymous
        self.owner_token = owner_token
        self._credentials = credentials
        self._anonymous = Session(
            "anonymous", Role.VIEWER, False, client=Client(address, credentials=credentials)
        )
        self._own = Session(
            identity.name,
            identity.role,
            True,
            OWNER_KEY_NAME,
            client=Client(address, credentials=credentials),
        )
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[m.EventRecord]]] = set()
        self._stream: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_seq = 0

    def session_for(self, token: str | None, origin: str | None) -> Session | None:
        if not token:
            return self._anonymous if self.anonymous else None
        if same_token(token, self.owner_token):
            return self._own
        try:
            entry = self.tokens.lookup(token)
        except KeyFileError as exc:
            log.error("%s", exc)
            return None
        if entry is None:
            return None
        with self._lock:
            session = self._sessions.get(entry.sha256)
            if session is not None:
                return session
        credentials = self._credentials
        if entry.secret_key_file:
            try:
                credentials = Credentials.load(entry.secret_key_file, self.server_key)
            except ApiError as exc:
                log.error("token %s: %s", entry.name, exc)
                return None
        client = Client(self.address, credentials=credentials)
        try:
            identity = client.call(m.WhoAmI())
        except Exception as exc:
            log.warning("token %s: the lab service refused its key: %s", entry.name, exc)
            client.close()
            return None
        session = Session(identity.name, identity.role, True, entry.name, client=client, token=token)
        session.checked_at = time.monotonic()
        with self._lock:
            self._sessions[entry.sha256] = session
        return session

    async def still_allowed(self, session: Session) -> bool:
        """The token must still be in the tokens file, and the service must still take its key (asked at
        most once a second: the events come through the dashboard's own subscription)."""
        if session.token is None:
            return True
        try:
            if self.tokens.lookup(session.token) is None:
                return False
        except KeyFileError:
            return False
        if time.monotonic() - session.checked_at < RECHECK_S:
            return True

        def ask() -> bool:
            with session.lock:
                try:
                    session.client.call(m.WhoAmI())
                except ApiError as exc:
                    return exc.error.type != "unauthenticated"
                return True

        allowed = await asyncio.to_thread(ask)
        session.checked_at = time.monotonic()
        if not allowed:
            with self._lock:
                self._sessions.pop(digest(session.token), None)
        return allowed

    async def call(self, request: m.Request, session: Session, origin: str | None) -> Any:
        if not session.signed_in:
            # Anonymous visitors use the dashboard's own key, capped at viewer here; the service never sees
            # what they were refused, so the refusal is logged here. A signed-in session's request goes to
            # the service with its own key: the service checks its role and audits a refusal by name.
            try:
                _check(session, request)
            except ApiError as exc:
                log.warning("refused an anonymous visitor from %s: %s", origin or "?", exc)
                raise

        def call() -> Any:
            with session.lock:  # one request at a time on a session's socket
                return session.client.call(
                    request, timeout=60 if isinstance(request, m.SubmitCampaign) else None
                )

        return await asyncio.to_thread(call)

    async def events(self, since: int) -> AsyncGenerator[m.EventRecord, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[m.EventRecord] = asyncio.Queue(QUEUE_LIMIT)
        self._ensure_stream()
        backlog = await self.call(m.EventsSince(seq=since, limit=10000), self._anonymous, None)
        last = since
        for event in backlog.events:
            last = event.seq
            yield event
        subscriber = (loop, queue)
        self._subscribers.add(subscriber)
        try:
            while True:
                record = await queue.get()
                if record.seq <= last:
                    continue
                if record.seq > last + 1:
                    caught = await self.call(
                        m.EventsSince(seq=last, limit=record.seq - last - 1), self._anonymous, None
                    )
                    for missed in caught.events:
                        last = missed.seq
                        yield missed
                last = record.seq
                yield record
        finally:
            self._subscribers.discard(subscriber)

    def _ensure_stream(self) -> None:
        """One subscriber to the service's events for every browser (a thread: the client is blocking)."""
        if self._stream is not None:
            return
        self._stream = threading.Thread(target=self._follow, name="sdl-dashboard-events", daemon=True)
        self._stream.start()

    def _follow(self) -> None:
        with Client(self.address, credentials=self._credentials) as client:
            while not self._stop.is_set():
                try:
                    for event in client.events(self._last_seq or None, idle_timeout=0.5):
                        self._last_seq = event.seq
                        self._fan_out(event)
                        if self._stop.is_set():
                            return
                except Exception as exc:  # the service restarted or is busy: try again
                    log.warning("event stream: %s", exc)
                    self._stop.wait(1.0)

    def _fan_out(self, event: m.EventRecord) -> None:
        for loop, queue in list(self._subscribers):
            loop.call_soon_threadsafe(_offer, queue, event)

    def close(self) -> None:
        self.refusals.flush(everything=True)
        self._stop.set()
        if self._stream is not None:
            self._stream.join(timeout=5)
        for session in [self._anonymous, self._own, *self._sessions.values()]:
            session.client.close()


def _offer(queue: asyncio.Queue[m.EventRecord], event: m.EventRecord) -> None:
    with contextlib.suppress(asyncio.QueueFull):
        queue.put_nowait(event)
