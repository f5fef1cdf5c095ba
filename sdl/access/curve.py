"""CurveZMQ on the lab service's sockets: pyzmq's ZAP authenticators checking the allow-list, and the
per-request check that turns a connection's key into a :class:`~sdl.access.roles.Caller`.

Two checks, on purpose:

- at the handshake, the ZAP handler admits only keys on the allow-list and the data directory owner's key
  (``zmq.auth``; an unknown key never gets a connection, and the refusal goes to the audit log with the
  peer's address);
- on every request, the key libzmq authenticated (the frame's ``User-Id``, which our ZAP handler sets to the
  Z85 public key) is looked up again, so a key removed while its connection is open is refused from its
  next request, and the role is always the allow-list's current one.

A client without a key cannot complete a CURVE handshake at all; the server sees it on a socket monitor
(``HANDSHAKE_FAILED_*``) and audits it. Refusals are throttled per source address (``sdl.access.refusals``),
so a client that keeps reconnecting, or makes a fresh key for every attempt, cannot flood the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.auth.thread import ThreadAuthenticator

from sdl.access.keys import KeyRing
from sdl.access.roles import Caller, Refused, Role

log = logging.getLogger(__name__)

#: ZAP domains: one per socket, so the audit log says which socket refused a connection.
API, EVENTS, DOCUMENTS, ESTOP, AGENTS = "api", "events", "documents", "estop", "agents"
#: Domains whose handshake admits only keys of at least this role (the e-stop's socket takes nothing but
#: e-stops, which an operator may send; the agents' socket nothing but agents).
LEAST_ROLE = {ESTOP: Role.OPERATOR, AGENTS: Role.AGENT}
#: Called with (domain, who, why, origin) for every refused connection.
OnRefused = Callable[[str, str, str, str | None], None]


def short(public_key: str) -> str:
    return f"{public_key[:8]}…"


class KeyringCheck:
    """pyzmq's credentials provider for CURVE: admit allow-listed keys, report the others. ``address`` is the
    peer of the handshake being checked (its authenticator sets it from the ZAP request)."""

    def __init__(self, keyring: KeyRing, on_refused: OnRefused | None) -> None:
        self.keyring = keyring
        self.on_refused = on_refused
        self.address: str | None = None

    def callback(self, domain: str, key: bytes) -> bool:
        """``key`` is the client's public key in Z85."""
        public_key = key.decode("ascii")
        entry = self.keyring.by_public_key(public_key)
        least = LEAST_ROLE.get(domain, Role.VIEWER)
        if entry is not None and entry.role.allows(least):
            return True
        who, why = f"key {short(public_key)}", "refused: unknown key"
        if entry is not None:
            who, why = entry.name, f"refused: {entry.role.value}; this socket needs {least.value}"
        if self.on_refused is not None:
            try:
                self.on_refused(domain, who, why, self.address)
            except Exception:
                log.exception("could not audit a refused connection")
        return False


def _peer(msg: list[bytes]) -> str | None:
    """The client's address in a ZAP request (its fourth frame)."""
    return msg[3].decode("utf-8", "replace") if len(msg) > 3 else None


class ServiceAuthenticator(AsyncioAuthenticator):
    """ZAP on the lab service's asyncio loop (API and events sockets)."""

    def __init__(self, context: zmq.Context[Any], keyring: KeyRing, on_refused: OnRefused | None) -> None:
        super().__init__(context, log=log)
        self.check = KeyringCheck(keyring, on_refused)
        for domain in (API, EVENTS, DOCUMENTS, ESTOP, AGENTS):
            self.configure_curve_callback(domain, self.check)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self.check.address = _peer(msg)
        await super().handle_zap_message(msg)


class ThreadedAuthenticator(ThreadAuthenticator):
    """ZAP on a thread of its own, for a context that has no asyncio loop (the documents proxy)."""

    def __init__(self, context: zmq.Context[Any], keyring: KeyRing, on_refused: OnRefused | None) -> None:
        super().__init__(context, log=log)
        self.check = KeyringCheck(keyring, on_refused)
        for domain in (API, EVENTS, DOCUMENTS, ESTOP, AGENTS):
            self.configure_curve_callback(domain, self.check)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self.check.address = _peer(msg)
        await super().handle_zap_message(msg)


def make_server(socket: zmq.Socket[Any], public: bytes, secret: bytes, domain: str) -> None:
    """Make ``socket`` a CURVE server in ZAP ``domain`` (before it binds)."""
    socket.curve_publickey = public
    socket.curve_secretkey = secret
    socket.curve_server = True
    socket.zap_domain = domain.encode()


class CurveCallers:
    """The API server's ``authenticate`` hook under CurveZMQ: the connection's key -> its name and role."""

    def __init__(self, keyring: KeyRing) -> None:
        self.keyring = keyring
        self.seen: dict[
            str, str
        ] = {}  # public key -> the name it had, to say "removed" rather than "unknown"

    def __call__(self, frame: zmq.Frame, envelope: object) -> Caller:
        # Frame properties are strings (pyzmq types them as str | int: some frame options are numbers).
        try:
            public_key, origin = str(frame.get("User-Id")), str(frame.get("Peer-Address"))
        except zmq.ZMQError:
            public_key, origin = "", None
        if not public_key:
            raise Refused("no key: this lab service requires a CurveZMQ client key", "no key", origin)
        entry = self.keyring.by_public_key(public_key)
        if entry is None:
            name = self.seen.get(public_key)
            if name is not None:
                raise Refused(
                    f"key {name!r} was removed from the allow-list; this connection may do nothing more",
                    name,
                    origin,
                )
            raise Refused(f"unknown key {short(public_key)}", f"key {short(public_key)}", origin)
        self.seen[public_key] = entry.name
        return Caller(name=entry.name, role=entry.role, origin=origin)


HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


def handshake_refusal(event: int, value: int) -> str | None:
    """What a handshake failure on a CURVE server socket means, or None for failures ZAP already audited."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return None  # the ZAP handler refused the key and has said so
    return "refused: no CurveZMQ key (the client did not complete a CURVE handshake)"
