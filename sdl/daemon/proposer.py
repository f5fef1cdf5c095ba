"""The optimizer's own process: proposals are computed where they cannot hold up the lab service.

The lab service answers the API and records every step on one event loop. A Bayesian proposal is tens to
hundreds of milliseconds of Python and numpy; run in a thread of the service, it held the interpreter lock a
switch interval at a time, and API requests waited behind it (p99 10 ms at 100 requests/s beside a GP
campaign of 0.5 s experiments, 5 ms beside a random one). Here it runs in a child process that keeps each
campaign's optimizer (cached hyperparameters, design stream) between proposals, as the thread did.

One length-prefixed pickle each way over the child's stdin and stdout; both ends are this package. The child
exits at the end of its input: when the service closes the pipe, or dies, however it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

from sdl.daemon.heap import freeze_startup_heap
from sdl.loop.proposing import NextExperiment, decide_next, optimizer_for
from sdl.optimizer import CampaignOptimizer, Observation
from sdl.spec.campaign import Campaign
from sdl.store import ExperimentRecord

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<Q")


class ProposerLost(RuntimeError):
    """The proposer process ended while it owed an answer."""


@dataclass(frozen=True)
class Setup:
    """What the child needs to make a campaign's optimizer: sent once per campaign and per child."""

    campaign: Campaign
    prior: Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Decide:
    campaign_id: str
    setup: Setup | None
    history: list[ExperimentRecord]
    observed: Sequence[Observation]
    in_flight: list[ExperimentRecord]


@dataclass(frozen=True)
class Forget:
    campaign_id: str


class Proposer:
    """The service's handle on its proposer process: started on first use, started again if it died."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._known: set[str] = set()  # campaigns whose optimizer the running child holds
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Start the child now (it imports the optimizers while the service goes on starting)."""
        async with self._lock:
            await self._ensure()

    async def decide(
        self,
        campaign_id: str,
        campaign: Campaign,
        prior: Callable[[], Sequence[Mapping[str, Any]]],
        history: list[ExperimentRecord],
        observed: Sequence[Observation],
        in_flight: list[ExperimentRecord],
    ) -> NextExperiment:
        """`decide_next` for the campaign, in the child; raises what it raises (``OptimizerExhausted``),
        or :class:`ProposerLost`. ``prior`` is called only when the child has no optimizer for it yet."""
        async with self._lock:
            for _ in range(2):
                await self._ensure()
                setup = None if campaign_id in self._known else Setup(campaign, prior())
                kind, value = await self._exchange(Decide(campaign_id, setup, history, observed, in_flight))
                if kind == "setup":  # a child started since we last told it about this campaign
                    self._known.discard(campaign_id)
                    continue
                self._known.add(campaign_id)
                if kind == "error":
                    raise value
                return cast(NextExperiment, value)
        raise ProposerLost("the proposer asked twice for a campaign's setup")

    async def forget(self, campaign_id: str) -> None:
        """Drop a finished campaign's optimizer from the child (a child that died has forgotten it)."""
        async with self._lock:
            if campaign_id in self._known and self._alive():
                self._known.discard(campaign_id)
                try:
                    await self._exchange(Forget(campaign_id))
                except ProposerLost as exc:
                    log.warning("%s", exc)

    async def close(self, timeout: float = 10.0) -> None:
        """End the child: end of input, then SIGKILL if it has not exited within ``timeout``."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            log.error("the proposer process %d did not exit; killing it", process.pid)
            self.kill()
            await process.wait()
        self._process = None

    def kill(self) -> None:
        if self._alive():
            assert self._process is not None
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    def _alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def _ensure(self) -> None:
        if self._alive():
            return
        if self._process is not None:
            log.error("the proposer process %d ended (exit %s); starting another",
                      self._process.pid, self._process.returncode)  # fmt: skip
        self._known.clear()
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sdl.daemon.proposer",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C at the terminal is the service's to handle, not the child's
        )  # fmt: skip
        log.info("proposer started (process %d)", self._process.pid)

    async def _exchange(self, request: Decide | Forget) -> tuple[str, Any]:
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            process.stdin.write(_HEADER.pack(len(data)) + data)
            await process.stdin.drain()
            (size,) = _HEADER.unpack(await process.stdout.readexactly(_HEADER.size))
            reply: tuple[str, Any] = pickle.loads(await process.stdout.readexactly(size))
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.kill()
            raise ProposerLost(f"the proposer process {process.pid} ended: {exc}") from None
        except BaseException:  # cancelled mid-exchange: the pipe holds half a message, so start afresh
            self.kill()
            raise
        return reply


# -- the child ----------------------------------------------------------------------------------------------


def _read(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)


def _write(stream: IO[bytes], reply: tuple[str, Any]) -> None:
    try:
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an exception that does not pickle still gets its message across
        data = pickle.dumps(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]} ({exc})")))
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def serve(incoming: IO[bytes], outgoing: IO[bytes]) -> None:
    """Answer requests until the input ends."""
    optimizers: dict[str, tuple[Campaign, CampaignOptimizer]] = {}
    while (request := _read(incoming)) is not None:
        if isinstance(request, Forget):
            optimizers.pop(request.campaign_id, None)
            _write(outgoing, ("ok", None))
            continue
        if request.setup is not None:
            optimizers[request.campaign_id] = (
                request.setup.campaign,
                optimizer_for(request.setup.campaign, request.setup.prior),
            )
        elif request.campaign_id not in optimizers:
            _write(outgoing, ("setup", None))
            continue
        campaign, optimizer = optimizers[request.campaign_id]
        try:
            reply: tuple[str, Any] = (
                "ok",
                decide_next(campaign, optimizer, request.history, request.observed, request.in_flight),
            )
        except Exception as exc:
            reply = ("error", exc)
        _write(outgoing, reply)


def main() -> int:
    incoming, outgoing = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything an optimizer prints goes to the log, not into the pipe
    freeze_startup_heap()
    with contextlib.suppress(BrokenPipeError):  # the service went away mid-answer
        serve(incoming, outgoing)
    with contextlib.suppress(OSError):
        os.close(outgoing.fileno())
    return 0


if __name__ == "__main__":
    # Run as -m, this file is __main__; what the service pickles names sdl.daemon.proposer's classes.
    from sdl.daemon.proposer import main as module_main

    sys.exit(module_main())
