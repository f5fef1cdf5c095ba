"""The lab service's doors: the sockets clients reach, opened as CurveZMQ servers, and the record of who came.

Every socket a client reaches (the API, the e-stop's, the events, the documents, the agents') is a CURVE
server whose handshake the allow-list decides (`sdl.access.curve`). The gatekeeper holds what that takes: the
service's key pair, the ZAP authenticators (on the service's loop; on a thread of their own for the e-stop's
context and the documents proxy's), the monitors that notice clients that could not even start a handshake,
and the refusals, written to the audit log throttled per source (`sdl.access.refusals`). It keeps
the one path every key change takes, whatever noticed it: a key removed from the allow-list makes it reopen
the event publisher and the documents' output, so the removed key stops hearing anything. And it writes the
audit entry of every API request.

It is built by the service once the lab's state exists, on the service's loop, and knows nothing of the
service.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import zmq
import zmq.asyncio
from pydantic import BaseModel
from zmq.utils.monitor import parse_monitor_message

from sdl.access.curve import (
    AGENTS,
    API,
    ESTOP,
    EVENTS,
    HANDSHAKE_FAILED,
    ServiceAuthenticator,
    ThreadedAuthenticator,
    handshake_refusal,
    make_server,
)
from sdl.access.keys import KeyRing
from sdl.access.refusals import Refusal, RefusalThrottle
from sdl.access.roles import Caller
from sdl.api.estop import limit_estop_socket
from sdl.api.models import Request
from sdl.api.wire import limit_socket, on_loop
from sdl.daemon.documents import CurveServer, DocumentProxy, bind_again
from sdl.daemon.link import MAX_FRAME
from sdl.daemon.state import LabState
from sdl.daemon.subscribers import Guard, publisher

log = logging.getLogger("sdl.daemon")


class Gatekeeper:
    def __init__(
        self,
        context: zmq.asyncio.Context,
        state: LabState,
        keyring: KeyRing,
        public: bytes,
        secret: bytes,
    ) -> None:
        """On the service's loop: keys changed on another thread are handed to it."""
        self.context = context
        self.state = state
        self.keyring = keyring
        self.public, self.secret = public, secret
        self.refusals = RefusalThrottle(self._write_refusal)
        self.events_address = ""
        self.events_guard: Guard | None = None
        self.proxy: DocumentProxy | None = None
        self.estop_socket: zmq.Socket[bytes] | None = None
        self._monitors: dict[str, zmq.asyncio.Socket] = {}
        # The e-stop's socket gets a context of its own (see open_estop), and a ZAP handler in it.
        self._estop_context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._estop_authenticator: ThreadedAuthenticator | None = None
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._closed = False
        keyring.refresh()
        keyring.on_change(self._noticed_keys_change)
        self._authenticator = ServiceAuthenticator(context, keyring, self.refused)
        self._authenticator.start()

    # -- the doors -------------------------------------------------------------------------------------------

    def socket(self, kind: int, domain: str) -> zmq.asyncio.Socket:
        """A CURVE server socket in ZAP ``domain``, not yet bound."""
        socket = self.context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        make_server(socket, self.public, self.secret, domain)
        return socket

    def open_api(self, address: str) -> tuple[zmq.asyncio.Socket, str]:
        """The API socket, bound (and the address it got), with the monitor :meth:`watch_handshakes` reads
        opened now, before daemon.json tells clients where to connect."""
        socket = self.socket(zmq.ROUTER, API)
        limit_socket(socket)
        address = bind(socket, address)
        self._monitors[API] = socket.get_monitor_socket(HANDSHAKE_FAILED)
        return socket, address

    def open_agents(self, address: str) -> tuple[zmq.asyncio.Socket, str]:
        """The socket agents on instrument PCs connect to (its handshake admits only keys with the role
        agent), bound, and the address it got."""
        socket = self.socket(zmq.ROUTER, AGENTS)
        socket.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnected agent takes its place at once
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        return socket, bind(socket, address)

    def open_estop(self, address: str) -> tuple[zmq.Socket[bytes], str]:
        """The e-stop's socket, bound (and the address it got), in a 0MQ context of its own: its own I/O
        thread and ZAP handler, so that nothing sent to the other sockets is received, decrypted or checked
        ahead of an e-stop (``sdl.api.estop``). Its handshake admits only keys that may e-stop."""
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._estop_context = context
        self._estop_authenticator = ThreadedAuthenticator(context, self.keyring, self._refused_threadsafe)
        self._estop_authenticator.start()
        socket = context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        make_server(socket, self.public, self.secret, ESTOP)
        limit_estop_socket(socket)
        address = bind(socket, address)
        monitor = socket.get_monitor_socket(HANDSHAKE_FAILED)
        self._monitors[ESTOP] = on_loop(monitor)
        self.estop_socket = socket
        return socket, address

    def open_events(self, address: str, *, again: bool = False) -> zmq.asyncio.Socket:
        """The event publisher, bound (``again``: to the address its predecessor held), and the guard that
        bounds what its subscribers make it keep (whose ``watch()`` runs with the service's tasks)."""
        socket = self.socket(zmq.XPUB, EVENTS)
        publisher(socket)
        if again:
            bind_again(socket, address)
            self.events_address = address
        else:
            self.events_address = bind(socket, address)
        self.events_guard = Guard(socket, HANDSHAKE_FAILED, self._events_handshake)
        return socket

    def open_documents(self, address: str) -> DocumentProxy:
        """The proxy that relays the workers' documents to subscribers at ``address``, started."""
        curve = CurveServer(self.public, self.secret, self.keyring, self._refused_threadsafe)
        self.proxy = DocumentProxy(address, curve).start()
        return self.proxy

    def stop(self) -> None:
        """Stop the threads (before the service's context is destroyed)."""
        if self.proxy is not None:
            self.proxy.stop()
        self._authenticator.stop()
        if self._estop_authenticator is not None:
            self._estop_authenticator.stop()
        if self._estop_context is not None:
            self._estop_context.destroy(linger=0)

    def close(self) -> None:
        """Write the refusals counted but not yet written, and write no more (the store is closing)."""
        try:
            self.refusals.flush(everything=True)
        except Exception:
            log.exception("could not write the audit log")
        self._closed = True

    # -- refusals --------------------------------------------------------------------------------------------

    def refused(self, domain: str, who: str, why: str, origin: str | None) -> None:
        """A connection refused at the handshake: to the audit log (throttled per source address)."""
        self.refusals.refused(Refusal(who, f"connect.{domain}", why, origin))

    def _write_refusal(self, refusal: Refusal) -> None:
        if not self._closed:
            self.state.store.audit(
                refusal.who, refusal.action, refusal.result, origin=refusal.origin, target=refusal.target
            )

    def _refused_threadsafe(self, domain: str, who: str, why: str, origin: str | None) -> None:
        self._loop.call_soon_threadsafe(self.refused, domain, who, why, origin)

    def _events_handshake(self, event: int, value: int) -> None:
        why = handshake_refusal(event, value)
        if why is not None:
            self.refused(EVENTS, "no key", why, None)

    async def watch_handshakes(self, domain: str) -> None:
        """Audit clients that could not even start a CURVE handshake on the API's or the e-stop's socket (no
        key, or not CurveZMQ at all)."""
        monitor = self._monitors[domain]
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                why = handshake_refusal(event["event"], event["value"])
                if why is not None:
                    self.refused(domain, "no key", why, None)
        except zmq.ZMQError:
            pass  # the socket is gone
        finally:
            monitor.close(linger=0)

    # -- keys ------------------------------------------------------------------------------------------------

    def _noticed_keys_change(self, removed: frozenset[str]) -> None:
        """The allow-list changed, noticed by whatever looked first (a request, a handshake, the watcher,
        a change through the API; on this loop or on the documents proxy's thread)."""
        loop = self._loop
        if not removed or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self.keys_changed(removed)  # before anything else is published
        else:
            loop.call_soon_threadsafe(self.keys_changed, removed)

    def keys_changed(self, removed: frozenset[str]) -> None:
        """Keys were removed from the allow-list: drop every subscriber of the events and documents so a
        removed key cannot keep listening (the others reconnect, pass the handshake again and catch up on
        the events they missed through ``events.since``). Requests are checked one by one anyway."""
        if self._closed or self.state.stopping:
            return
        log.info(
            "%d key(s) removed from the allow-list: dropping event and document subscribers", len(removed)
        )
        old, self.state.events = self.state.events, None
        if self.events_guard is not None:
            self.events_guard.close()
        if old is not None:
            old.close(linger=0)
        self.state.events = self.open_events(self.events_address, again=True)
        assert self.events_guard is not None
        self.state.in_background(self.events_guard.watch())
        if self.proxy is not None:
            self.proxy.reopen_output()

    async def watch_keys(self) -> None:
        """The allow-list may be edited on disk (`sdl keys remove`): notice it within a second, should no
        request or handshake notice it first (the key ring tells :meth:`keys_changed` either way)."""
        while True:
            await asyncio.sleep(1.0)
            try:
                self.keyring.refresh()
            except Exception:
                log.exception("could not read the allow-list %s", self.keyring.path)

    # -- requests --------------------------------------------------------------------------------------------

    def audit(self, caller: Caller, request: Request, result: str, reply: BaseModel | None) -> None:
        """The API server's audit hook: every request, with its arguments and what became of it."""
        target = (
            getattr(request, "campaign_id", None)
            or getattr(request, "name", None)
            or getattr(reply, "campaign_id", None)  # a submission: the campaign it created
        )
        arguments = request.model_dump(mode="json", exclude={"text"})
        store = self.state.store
        self.state.write(
            f"the audit entry of {request.method} by {caller.name}",
            lambda: store.audit(
                caller.name, request.method, result, origin=caller.origin, target=target, arguments=arguments
            ),
        )


def bind(socket: zmq.Socket[Any], address: str) -> str:
    """Bind, choosing a free port for ':0'; return the address actually bound."""
    if address.endswith(":0"):
        port = socket.bind_to_random_port(address[: -len(":0")])
        return f"{address[: -len(':0')]}:{port}"
    socket.bind(address)
    return address
