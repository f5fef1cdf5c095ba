"""The 0MQ proxy the workers' RunEngines publish event-model documents to, the bluesky way.

Each worker's RunEngine is subscribed to bluesky's own ``bluesky.callbacks.zmq.Publisher``; any bluesky
consumer (``RemoteDispatcher``, live plots, a Tiled writer) subscribes to the proxy's output without
knowing sdl. The frames pass through unchanged. Unlike bluesky's ``Proxy``, this one can be stopped
cleanly from the lab service's own thread (a control socket), and it bounds what its subscribers may make it
keep (``sdl.daemon.subscribers``: the prefix's length, subscriptions per connection, connections).

Under CurveZMQ the output is a CURVE server checked by a ZAP handler of its own (this context has no asyncio
loop), and :meth:`DocumentProxy.reopen_output` drops every subscriber so that a removed key cannot stay
subscribed: the others reconnect and pass the handshake again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import zmq

from sdl.access.curve import DOCUMENTS, OnRefused, ThreadedAuthenticator, make_server
from sdl.access.keys import KeyRing
from sdl.daemon.subscribers import Guard, publisher


@dataclass(frozen=True)
class CurveServer:
    public: bytes
    secret: bytes
    keyring: KeyRing
    on_refused: OnRefused | None = None


class DocumentProxy:
    def __init__(self, out_address: str, curve: CurveServer | None = None) -> None:
        self._context = zmq.Context()
        self._curve = curve
        self._authenticator: ThreadedAuthenticator | None = None
        if curve is not None:
            self._authenticator = ThreadedAuthenticator(self._context, curve.keyring, curve.on_refused)
            self._authenticator.start()
        self._frontend = self._context.socket(zmq.SUB)
        self._frontend.setsockopt(zmq.SUBSCRIBE, b"")
        self._frontend.setsockopt(zmq.LINGER, 0)
        port = self._frontend.bind_to_random_port("tcp://127.0.0.1")
        self.in_address = f"127.0.0.1:{port}"  # what bluesky's Publisher is given
        host, _, out_port = out_address.removeprefix("tcp://").rpartition(":")
        self._backend = self._output_socket()
        if out_port == "0":
            out_port = str(self._backend.bind_to_random_port(f"tcp://{host}"))
        else:
            self._backend.bind(f"tcp://{host}:{out_port}")
        self.out_address = f"tcp://{host}:{out_port}"
        self._guard = Guard(self._backend)
        self._generation = 0
        self._control, self._thread = self._proxy_thread()

    def _output_socket(self) -> zmq.Socket[Any]:
        socket = self._context.socket(zmq.XPUB)
        socket.setsockopt(zmq.LINGER, 0)
        publisher(socket)
        if self._curve is not None:
            make_server(socket, self._curve.public, self._curve.secret, DOCUMENTS)
        return socket

    def _proxy_thread(self) -> tuple[zmq.Socket[Any], threading.Thread]:
        """A proxy thread and the control socket that stops it. Each thread gets a control pair of its own:
        a PAIR socket takes one peer, and a thread that stopped leaves its peer's pipe behind."""
        self._generation += 1
        address = f"inproc://documents-proxy-{id(self)}-{self._generation}"
        control = self._context.socket(zmq.PAIR)
        control.setsockopt(zmq.LINGER, 0)
        control.bind(address)
        thread = threading.Thread(target=self._run, args=(address,), name="sdl-documents-proxy", daemon=True)
        return control, thread

    def start(self) -> DocumentProxy:
        self._thread.start()
        return self

    def _run(self, control_address: str) -> None:
        control = self._context.socket(zmq.PAIR)
        control.connect(control_address)
        poller = zmq.Poller()
        for socket in (control, self._frontend, self._backend, self._guard.monitor):
            poller.register(socket, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if control in ready:
                    return  # TERMINATE
                if self._frontend in ready:
                    self._forward()
                if self._backend in ready or self._guard.monitor in ready:
                    self._guard.turn()
        finally:
            control.close(linger=0)

    def _forward(self, most: int = 256) -> None:
        """Pass on what the workers published (a subscriber with no room for it loses it, as with PUB)."""
        for _ in range(most):
            try:
                frames = self._frontend.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._backend.send_multipart(frames, zmq.NOBLOCK)

    def _halt(self) -> None:
        if self._thread.is_alive():
            self._control.send(b"TERMINATE")
            self._thread.join(timeout=5)

    def reopen_output(self) -> None:
        """Close the output (dropping every subscriber) and bind it again at the same address."""
        self._halt()
        self._guard.close()
        self._backend.close(linger=0)
        self._backend = self._output_socket()
        bind_again(self._backend, self.out_address)
        self._guard = Guard(self._backend)
        self._control.close(linger=0)
        self._control, self._thread = self._proxy_thread()
        self._thread.start()

    def stop(self) -> None:
        self._halt()
        self._guard.close()
        for socket in (self._control, self._frontend, self._backend):
            socket.close(linger=0)
        if self._authenticator is not None:
            self._authenticator.stop()
        self._context.term()


def bind_again(socket: zmq.Socket[Any], address: str, attempts: int = 50) -> None:
    """Bind to an address a closed socket held a moment ago (libzmq frees the port asynchronously)."""
    for attempt in range(attempts):
        try:
            socket.bind(address)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or attempt == attempts - 1:
                raise
            time.sleep(0.02)
