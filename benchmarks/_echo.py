"""The baseline every driver round trip is compared with: a bare echo over the same loopback link.

The echo server runs on its own event-loop thread, as the simulators do, so the ratio
driver/echo isolates what the driver and the instrument model add.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def echo_server() -> Iterator[tuple[str, int]]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    address: list[tuple[str, int]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def start() -> asyncio.Server:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        address.append(server.sockets[0].getsockname()[:2])
        ready.set()
        return server

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=5)
    ready.wait(5)
    try:
        yield address[0]
    finally:

        async def stop() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


def echo_round_trips(count: int, payload: bytes = b"\x02VER\r") -> list[float]:
    """Seconds per request/reply over a plain TCP socket to the echo server."""
    times = []
    with echo_server() as (host, port), socket.create_connection((host, port)) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            start = time.perf_counter()
            client.sendall(payload)
            received = 0
            while received < len(payload):
                received += len(client.recv(65536))
            times.append(time.perf_counter() - start)
    return times
