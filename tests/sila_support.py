"""Test help for SiLA 2: a simulated instrument served over SiLA, behind a TCP relay that counts sessions.

``served_over_sila("ne1000", make_device, options)`` starts the simulator, connects our own driver to
it, serves that device with ``drivers.sila2.serve`` (TLS, a self-signed certificate in a
temporary directory) and puts a relay in front of the SiLA port. The handle is what the driver
contract suite asks of a simulator: sessions are the SiLA clients' TCP connections (through the
relay), the wire log is the instrument's own (so "the stop reached the instrument" means the
pump's STP, not a gRPC message).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from drivers.testing import wait_for
from simulators.testing import run_simulator


class Relay:
    """A TCP relay on an ephemeral loopback port that counts the connections through it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.opened = 0
        self.open = 0
        self._lock = threading.Lock()
        self._closing = False
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="sila-relay", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closing:
                    client.close()
                    upstream.close()
                    return
                self.opened += 1
                self.open += 1
                self._sockets += [client, upstream]
            finished = threading.Barrier(2, action=self._session_ended)
            for source, sink in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(source, sink, finished), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _session_ended(self) -> None:
        with self._lock:
            self.open -= 1

    def _pump(self, source: socket.socket, sink: socket.socket, finished: threading.Barrier) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (sink, source):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        with suppress(threading.BrokenBarrierError):
            finished.wait(timeout=30)
        source.close()

    def close(self) -> None:
        with self._lock:
            self._closing = True
        self.listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)
        self._accepter.join(5)


class SilaServed:
    """The contract suite's simulator handle for an instrument reached through SiLA."""

    def __init__(self, sim: Any, relay: Relay, server: Any, certificate: Path | None) -> None:
        self.sim = sim
        self.relay = relay
        self.server = server
        self.certificate = certificate

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.relay.port}"

    def sessions_opened(self) -> int:
        return self.relay.opened

    def sessions_open(self) -> int:
        return self.relay.open

    def wait_until_clients_leave(self, timeout: float = 5.0) -> None:
        wait_for(lambda: self.relay.open == 0, timeout, what="the SiLA clients leaving")

    def wire_log(self) -> list[Any]:
        return self.sim.wire_log()


@contextmanager
def served_over_sila(
    kind: str,
    make_device: Callable[..., Any],
    options: dict[str, Any],
    *,
    name: str = "instrument",
    endpoint: str = "pump",
    certs: Path | None = None,
    config: dict[str, Any] | None = None,
) -> Iterator[SilaServed]:
    from drivers.sila2.serve import serve_devices, stop_all

    own_certs = certs is None
    directory = Path(tempfile.mkdtemp(prefix="sdl-sila-")) if certs is None else certs
    with run_simulator(kind, **({"config": config} if config else {})) as sim:
        device = make_device(name, sim.url(endpoint), **options)
        device.connect()
        served = []
        relay = None
        try:
            served = serve_devices({name: device}, certs=directory, discovery=False, lab="tests")
            (server,) = served
            relay = Relay(("127.0.0.1", server.port))
            yield SilaServed(sim, relay, server, server.certificate)
        finally:
            if relay is not None:
                relay.close()
            stop_all(served)
            device.destroy()
            if own_certs:
                shutil.rmtree(directory, ignore_errors=True)
