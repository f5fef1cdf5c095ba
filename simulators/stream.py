"""The byte stream a simulator session reads requests from and writes replies to.

It wraps asyncio streams from a TCP connection or a pseudo-terminal, and applies the link
faults (drop, garble, partial, silent) in one place so every simulator gets them alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from simulators.faults import FaultPlan

log = logging.getLogger(__name__)


class SessionClosed(Exception):
    """The client went away, or a ``drop`` fault ended the session."""


class Stream:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        faults: FaultPlan,
        *,
        droppable: bool = True,
        label: str = "",
    ):
        self.reader = reader
        self.writer = writer
        self.faults = faults
        self.droppable = droppable  # a pty cannot hang up; a dropped reply is simply lost there
        self.label = label

    async def read_until(self, separator: bytes, *, max_bytes: int = 65536) -> bytes:
        try:
            return await self.reader.readuntil(separator)
        except asyncio.IncompleteReadError as exc:
            raise SessionClosed(self.label) from exc
        except asyncio.LimitOverrunError as exc:
            # A client streaming garbage without terminators: throw it away and carry on.
            await self.reader.read(exc.consumed)
            return b""

    async def read_exactly(self, size: int) -> bytes:
        try:
            return await self.reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise SessionClosed(self.label) from exc

    async def read_some(self, max_bytes: int = 65536) -> bytes:
        data = await self.reader.read(max_bytes)
        if not data:
            raise SessionClosed(self.label)
        return data

    async def send(self, data: bytes, *, faultable: bool = True) -> None:
        """Write a reply, unless a link fault decides otherwise."""
        if faultable and data:
            # Every reply is one opportunity for each link fault, so schedules count replies.
            fired = {name for name in ("drop", "silent", "garble", "partial") if self.faults.fires(name)}
            if "drop" in fired:
                log.info("%s: fault drop", self.label)
                if self.droppable:
                    await self.close()
                    raise SessionClosed(f"{self.label}: dropped by fault")
                return
            if "silent" in fired:
                log.info("%s: fault silent", self.label)
                return
            if "garble" in fired:
                log.info("%s: fault garble", self.label)
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0x5A]) + data[middle + 1 :]
            elif "partial" in fired:
                log.info("%s: fault partial", self.label)
                data = data[: max(1, len(data) // 2)]
        self.writer.write(data)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise SessionClosed(self.label) from exc

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
