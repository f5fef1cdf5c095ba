"""Run simulators on a background event loop, for tests and benchmarks that drive real drivers.

    with run_simulator("ne1000", link="pty") as sim:
        pump = NE1000Pump(sim.url("pump"))
        ...
        volume = sim.call(lambda: sim.lab.world.vessel_at("dispense").volume_ul)

Drivers are synchronous and talk over real sockets or ptys, so the simulator needs a loop of
its own; ``call`` runs a function on that loop so tests read the world without racing it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from simulators.base import WireRecord
from simulators.clock import Clock, ScaledClock
from simulators.lab import Lab, build_lab, build_single, read_lab_file, serve_lab
from simulators.server import Link

T = TypeVar("T")


class BackgroundLab:
    """A lab served from a daemon thread; a context manager that stops it cleanly on exit."""

    def __init__(self, lab: Lab, link: Link = "tcp", *, prefixed: bool = True):
        self.lab = lab
        self.link = link
        self.urls: dict[str, str] = {}
        self._prefixed = prefixed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="simulator-loop", daemon=True)
        self._served: list = []

    def __enter__(self) -> BackgroundLab:
        self._thread.start()
        self._served = self._submit(serve_lab(self.lab, self.link)).result(timeout=10)
        for instrument, endpoint, info in self._served:
            self.urls[f"{instrument}.{endpoint}" if self._prefixed else endpoint] = info.url
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def shutdown() -> None:
            for *_, info in self._served:
                await info.aclose()
            for simulator in self.lab.simulators.values():
                simulator.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for _ in range(3):  # transports closed above finish closing their sockets in callbacks
                await asyncio.sleep(0)

        try:
            self._submit(shutdown()).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def url(self, endpoint: str) -> str:
        return self.urls[endpoint]

    def inject(self, fault: str, *, instrument: str | None = None, times: int = 1, skip: int = 0) -> None:
        """Make ``fault`` happen at ``times`` opportunities in a row on ``instrument`` (the only one if
        None), after ``skip`` more have passed.

        A link fault's opportunity is the instrument's next reply; an instrument fault's is its own
        (``python -m simulators faults KIND``).
        """
        if instrument is None:
            if len(self.lab.simulators) != 1:
                raise ValueError(f"name the instrument: {', '.join(self.lab.simulators)}")
            instrument = next(iter(self.lab.simulators))
        simulator = self.lab.simulators[instrument]
        if fault not in simulator.supported_faults():
            raise ValueError(
                f"{instrument} has no fault {fault!r}; it has {', '.join(simulator.supported_faults())}"
            )
        self.call(lambda: simulator.faults.inject(fault, times, skip=skip))

    def fired(self, fault: str, *, instrument: str | None = None) -> int:
        """How often ``fault`` has fired on ``instrument`` (the only one if None)."""
        name = instrument if instrument is not None else next(iter(self.lab.simulators))
        return self.call(lambda: self.lab.simulators[name].faults.fired[fault])

    def sessions_opened(self) -> int:
        """Client connections accepted since start, over every instrument and endpoint."""
        return self.call(lambda: sum(sum(s.sessions_opened.values()) for s in self.lab.simulators.values()))

    def sessions_open(self) -> int:
        """Client connections still open (a pty's single session never closes)."""
        return self.call(lambda: sum(sum(s.sessions_open.values()) for s in self.lab.simulators.values()))

    def wire_log(self) -> list[WireRecord]:
        """Every request the lab's instruments received, oldest first (see ``Simulator.record``)."""
        return self.call(
            lambda: sorted(
                (r for s in self.lab.simulators.values() for r in s.wire_log), key=lambda r: r.time
            )
        )

    def wait_until_connected(self, timeout: float = 5.0) -> None:
        """Return once some client has connected; TimeoutError otherwise."""
        self._wait(lambda: self.sessions_opened() > 0, timeout, "no client connected")

    def wait_until_clients_leave(self, timeout: float = 5.0) -> None:
        """Return once no client connection is open; TimeoutError otherwise."""
        self._wait(lambda: self.sessions_open() == 0, timeout, "a client connection is still open")

    def _wait(self, condition: Callable[[], bool], timeout: float, failure: str) -> None:
        # Connections open and close asynchronously to the client's call, so poll, with a deadline.
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{failure} after {timeout} s")
            time.sleep(0.001)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on the simulator's loop and return its result."""

        async def run() -> T:
            return function(*args)

        return self._submit(run()).result(timeout=10)

    def _submit(self, coroutine: Any) -> Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)


def run_simulator(
    kind: str,
    *,
    link: Link = "tcp",
    clock: Clock | None = None,
    faults: str | None = None,
    config: Mapping[str, Any] | None = None,
    faults_seed: int | None = None,
) -> BackgroundLab:
    """One instrument on its default bench; endpoint URLs are keyed by bare endpoint name.

    ``faults`` is a fault spec (``"garble%0.05,stall@3"``), drawn with ``faults_seed`` (default 0).
    """
    lab = build_single(kind, clock or ScaledClock(), faults=faults, config=config, faults_seed=faults_seed)
    return BackgroundLab(lab, link, prefixed=False)


def run_lab(
    config: Mapping[str, Any] | str | Path, *, link: Link = "tcp", clock: Clock | None = None
) -> BackgroundLab:
    """A whole lab; endpoint URLs are keyed ``instrument.endpoint``."""
    if not isinstance(config, Mapping):
        config = read_lab_file(config)
    return BackgroundLab(build_lab(config, clock or ScaledClock(float(config.get("speed", 1.0)))), link)
