"""Put a simulator's endpoints behind TCP ports or pseudo-terminals.

Over a pty the simulator holds the slave side open itself, so a client may close and reopen
``/dev/pts/N`` (as pyserial does between sessions) without the master seeing a hang-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from dataclasses import dataclass, field
from typing import Literal

from simulators.base import Simulator
from simulators.stream import SessionClosed, Stream

log = logging.getLogger(__name__)

Link = Literal["tcp", "pty"]


@dataclass
class Endpoint:
    name: str
    url: str
    _closers: list = field(default_factory=list, repr=False)

    async def aclose(self) -> None:
        for closer in reversed(self._closers):
            result = closer()
            if asyncio.iscoroutine(result):
                await result


async def _run_session(simulator: Simulator, endpoint: str, stream: Stream) -> None:
    simulator.sessions_opened[endpoint] += 1
    simulator.sessions_open[endpoint] += 1
    try:
        await simulator.serve(endpoint, stream)
    except (SessionClosed, ConnectionError):
        pass
    except Exception:
        log.exception("%s %s: session failed", simulator.name, endpoint)
    finally:
        simulator.sessions_open[endpoint] -= 1
        with contextlib.suppress(Exception):
            await stream.close()


class _TrackedProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol that registers its transport the moment a client connects.

    asyncio (3.11) does not close accepted connections when the server closes, and a connection
    whose handler task had not started yet would be left to the garbage collector, which warns
    ``unclosed <socket>``. Tracking the transports lets the server close every one itself.
    """

    def __init__(self, transports: set[asyncio.BaseTransport], *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._transports = transports
        self._tracked: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tracked = transport
        self._transports.add(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transports.discard(self._tracked)  # type: ignore[arg-type]
        super().connection_lost(exc)


async def serve_tcp(simulator: Simulator, endpoint: str, host: str = "127.0.0.1", port: int = 0) -> Endpoint:
    loop = asyncio.get_running_loop()
    sessions: set[asyncio.Task] = set()
    transports: set[asyncio.BaseTransport] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        label = f"{simulator.name}.{endpoint}@{peer}"
        log.debug("%s: connected", label)
        task = asyncio.current_task()
        sessions.add(task)
        try:
            await _run_session(simulator, endpoint, Stream(reader, writer, simulator.faults, label=label))
        except asyncio.CancelledError:
            # Shutting down with the client still connected. asyncio's start_server callback logs
            # a cancelled handler as an error (Python 3.11), so end the session as a normal return.
            pass
        finally:
            writer.close()  # on every path, including a cancel before the session's own close
            sessions.discard(task)

    def protocol() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=2**16, loop=loop)
        return _TrackedProtocol(transports, reader, on_connect, loop=loop)

    server = await loop.create_server(protocol, host, port)
    bound_port = server.sockets[0].getsockname()[1]

    async def close() -> None:
        # Stop accepting first, and let connections accepted just now get their transports: asyncio
        # (3.11) creates a transport in a task of its own after accept(), and if the server is closed
        # before that task runs, the accepted socket is dropped unclosed (a ResourceWarning later).
        for listening in server.sockets:
            loop.remove_reader(listening.fileno())
        for _ in range(5):
            await asyncio.sleep(0)
        server.close()
        for task in list(sessions):
            task.cancel()
        if sessions:
            await asyncio.gather(*sessions, return_exceptions=True)
        for transport in list(transports):  # accepted, but whose handler never ran to its end
            transport.abort()
        await server.wait_closed()
        # Let the transports' close callbacks run, so their sockets are closed before we return.
        for _ in range(3):
            await asyncio.sleep(0)

    return Endpoint(endpoint, f"socket://{host}:{bound_port}", [close])


async def serve_pty(simulator: Simulator, endpoint: str) -> Endpoint:
    loop = asyncio.get_running_loop()
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no CR/LF translation: the line carries bytes, as a serial port does
    path = os.ttyname(slave)
    reader = asyncio.StreamReader()
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(master), "rb", buffering=0)
    )
    write_transport, write_protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(os.dup(master), "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(write_transport, write_protocol, reader, loop)
    stream = Stream(
        reader, writer, simulator.faults, droppable=False, label=f"{simulator.name}.{endpoint}@{path}"
    )
    task = loop.create_task(_run_session(simulator, endpoint, stream))

    async def close() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        read_transport.close()
        write_transport.close()
        await asyncio.sleep(0)  # their close callbacks release the duplicated descriptors
        os.close(master)
        os.close(slave)

    return Endpoint(endpoint, path, [close])


async def serve(
    simulator: Simulator,
    link: Link = "tcp",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ports: dict[str, int] | None = None,
) -> list[Endpoint]:
    """Serve every endpoint of ``simulator``; with a fixed ``port`` the endpoints take consecutive ports,
    with ``ports`` (endpoint -> port, e.g. the instrument's standard ports) the ports given."""
    endpoints = []
    try:
        for index, name in enumerate(simulator.endpoints):
            if link == "pty":
                endpoints.append(await serve_pty(simulator, name))
            elif ports is not None:
                endpoints.append(await serve_tcp(simulator, name, host, ports[name]))
            else:
                endpoints.append(await serve_tcp(simulator, name, host, port + index if port else 0))
    except BaseException:
        for endpoint in endpoints:
            await endpoint.aclose()
        raise
    return endpoints
