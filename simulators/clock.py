"""Simulated time: real durations scaled by a speed factor, or a virtual clock that tests drive.

Instrument models compute their state from ``clock.now()`` (a plunger started at t0 at rate r
has moved r·(now − t0)), so they need no background tasks and a faster clock makes the whole
lab faster consistently. Only genuine waits (an integration time) call ``clock.sleep``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Simulated seconds since the clock started."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait for ``seconds`` of simulated time."""
        ...


class ScaledClock:
    """Simulated time runs ``speed`` times faster than the wall clock."""

    def __init__(self, speed: float = 1.0):
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class VirtualClock:
    """Time stands still until a test calls ``advance``; safe to advance from another thread."""

    def __init__(self) -> None:
        self._now = 0.0
        self._lock = threading.Lock()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not run backwards")
        with self._lock:
            self._now += seconds
            due = []
            while self._sleepers and self._sleepers[0][0] <= self._now:
                due.append(heapq.heappop(self._sleepers)[2])
        for future in due:
            future.get_loop().call_soon_threadsafe(_wake, future)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
