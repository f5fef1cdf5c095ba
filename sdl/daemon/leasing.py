"""A plan's on-demand leases and questions for a person, as a worker asks the lab service for them.

A plan that leases instruments as it goes (`sdl.plans.lease`) waits here, on its RunEngine's loop, while the
request travels to the service and its answer comes back to the worker's main thread, which hands it over
(:meth:`ServiceLeasing.answered`). Granted, the instruments are connected; given back, the shared ones are
disconnected, so that another workcell's worker can open them next.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from sdl.daemon import protocol as p
from sdl.execution.experiment import LeaseRefused
from sdl.execution.instruments import Instruments

#: Sends a message to the lab service, from any thread.
Send = Callable[[p.BaseModel], None]


class ServiceLeasing:
    """A plan's on-demand leases, from the lab service: ask, wait for the grant, connect the instruments;
    give them back, disconnect the shared ones (another workcell's worker opens them next)."""

    def __init__(self, send: Send, instruments: Instruments) -> None:
        self.send = send
        self.instruments = instruments
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = {}
        self.shared: set[str] = set()

    async def acquire(self, experiment_id: int, instruments: list[str]) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        request = next(self._ids)
        self._waiting[request] = (loop, future)
        self.send(p.LeaseRequest(request=request, experiment_id=experiment_id, instruments=instruments))
        try:
            await future
        except asyncio.CancelledError:  # aborted while waiting: withdraw the request
            self.send(p.LeaseRelease(request=request, experiment_id=experiment_id, instruments=instruments))
            raise
        finally:
            self._waiting.pop(request, None)
        await loop.run_in_executor(None, self.instruments.connect, instruments)

    async def release(self, experiment_id: int, instruments: list[str]) -> None:
        shared = [n for n in instruments if n in self.shared]
        await asyncio.get_running_loop().run_in_executor(None, self.instruments.disconnect, shared)
        self.send(p.LeaseRelease(request=0, experiment_id=experiment_id, instruments=instruments))

    def answered(self, message: p.LeaseGranted | p.LeaseRefused) -> None:
        """From the main thread: wake the plan waiting for this request."""
        waiting = self._waiting.get(message.request)
        if waiting is None:
            return
        loop, future = waiting
        if isinstance(message, p.LeaseGranted):
            loop.call_soon_threadsafe(_settle, future, None)
        else:  # the refusal names the instrument, so the fault it ends the experiment with does too
            refused = LeaseRefused(message.reason, message.instruments[0] if message.instruments else None)
            loop.call_soon_threadsafe(_settle, future, refused)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if not future.done():
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class ServiceAsking:
    """A plan's questions for a person, through the lab service: it opens a task, and its answer (the note
    given when the task is done) comes back; a question that times out or whose experiment is aborted is
    withdrawn (the task cancelled)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[str | None]]] = {}

    async def ask(self, experiment_id: int, question: str, timeout: float | None) -> str | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()
        request = next(self._ids)
        self._waiting[request] = (loop, future)
        self.send(p.Ask(request=request, experiment_id=experiment_id, question=question[:4000]))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self.send(p.Ask(request=request, experiment_id=experiment_id, withdraw=True))
            return None
        except asyncio.CancelledError:  # aborted while waiting: the question is moot
            self.send(p.Ask(request=request, experiment_id=experiment_id, withdraw=True))
            raise
        finally:
            self._waiting.pop(request, None)

    def answered(self, message: p.Answered) -> None:
        """From the main thread: wake the plan waiting for this answer."""
        waiting = self._waiting.get(message.request)
        if waiting is not None:
            loop, future = waiting
            loop.call_soon_threadsafe(_answer, future, message.answer)


def _answer(future: asyncio.Future[str | None], answer: str | None) -> None:
    if not future.done():
        future.set_result(answer)
