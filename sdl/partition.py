"""A TCP proxy that cuts the network on command: between an agent and its lab service in tests and
benchmarks, so partitions come at chosen moments and on any machine, with nothing but loopback.

    proxy = Partition(("127.0.0.1", service_port)).start()   # agents connect to proxy.address
    proxy.hold()      # bytes stop both ways; connections stay open (a switch that drops everything)
    proxy.sever()     # every connection is cut, and new ones refused (a cable pulled)
    proxy.restore()   # traffic flows again; held bytes are delivered
"""

from __future__ import annotations

import selectors
import socket
import threading
from contextlib import suppress
from typing import Literal

Mode = Literal["pass", "hold", "sever"]


class Partition:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.mode: Mode = "pass"
        self.peers: dict[socket.socket, socket.socket] = {}
        self.cuts = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="partition", daemon=True)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> Partition:
        self._thread.start()
        return self

    def hold(self) -> None:
        with self._lock:
            self.mode = "hold"
            self.cuts += 1

    def sever(self) -> None:
        with self._lock:
            self.mode = "sever"
            self.cuts += 1
            for sock in list(self.peers):
                self._drop(sock)

    def restore(self) -> None:
        with self._lock:
            self.mode = "pass"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for sock in list(self.peers):
                self._drop(sock)
        self.listener.close()

    def _drop(self, sock: socket.socket) -> None:
        peer = self.peers.pop(sock, None)
        for s in (sock, peer):
            if s is not None:
                self.peers.pop(s, None)
                with suppress(OSError):
                    s.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                mode = self.mode
                watched = [self.listener] if mode == "hold" else [self.listener, *self.peers]
            selector = selectors.DefaultSelector()
            for sock in watched:
                with suppress(ValueError, OSError):
                    selector.register(sock, selectors.EVENT_READ)
            ready = selector.select(timeout=0.05)
            selector.close()
            with self._lock:
                if self.mode != mode:
                    continue
                for key, _ in ready:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self.listener:
                        self._accept()
                    elif sock in self.peers:
                        self._pump(sock)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        if self.mode != "pass":
            client.close()  # severed: refused; held: the connection attempt goes nowhere
            return
        try:
            server = socket.create_connection(self.upstream, timeout=2)
        except OSError:
            client.close()
            return
        for s in (client, server):
            s.setblocking(True)
            s.settimeout(5)
        self.peers[client], self.peers[server] = server, client

    def _pump(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
            if data:
                self.peers[sock].sendall(data)
                return
        except OSError:
            pass
        self._drop(sock)
