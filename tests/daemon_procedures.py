"""Procedures the lab-service tests submit (importable by the service's workers through PYTHONPATH)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp


def bowl(recipe: dict[str, Any]) -> dict[str, float]:
    return {"loss": (recipe["x"] - 0.3) ** 2 + (recipe["y"] - 0.6) ** 2}


def gated(recipe: dict[str, Any], gate: str, points: int = 0) -> dict[str, Any]:
    """A long experiment: says it is running (a file in ``gate``), then waits until ``gate/open`` exists.
    With ``points``, it also measures a spectrum of that many values (a result of some size to store)."""
    directory = Path(gate)
    (directory / f"running-{os.getpid()}-{uuid.uuid4().hex[:8]}").write_text(repr(recipe))
    while not (directory / "open").exists():
        time.sleep(0.01)
    spectrum = {"spectrum": [recipe["x"] * i / points for i in range(points)]} if points else {}
    return {**bowl(recipe), **spectrum}


def waiting_plan(
    recipe: dict[str, Any], devices: dict[str, Any], seconds: float = 600.0
) -> Generator[Any, Any, Any]:
    """A plan that waits (abortable through the RunEngine), then reports a loss."""

    @bpp.run_decorator(md={"plan_name": "waiting_plan"})
    def inner() -> Generator[Any, Any, Any]:
        yield from bps.sleep(seconds)

    return (yield from inner())


def plan_loss(documents: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
    start = next(doc for name, doc in documents if name == "start")
    return bowl(start["recipe"])


def slow_bowl(recipe: dict[str, Any], seconds: float = 0.25) -> dict[str, float]:
    """An experiment that takes a while (a stand-in for real lab time)."""
    time.sleep(seconds)
    return bowl(recipe)


def make_motor(name: str, address: Any = None, **options: Any) -> Any:
    """A simulated motor (ophyd.sim), as a lab's instrument for tests that need journalled commands."""
    from ophyd.sim import SynAxis

    return SynAxis(name=name, delay=float(options.get("delay", 0.0)))


def move_and_read(recipe: dict[str, Any], devices: dict[str, Any]) -> Generator[Any, Any, Any]:
    """Move the motor to x, read it: a plan with journalled commands and event documents."""
    motor = devices["motor"]

    @bpp.run_decorator(md={"plan_name": "move_and_read"})
    def inner() -> Generator[Any, Any, Any]:
        yield from bps.mv(motor, recipe["x"])
        yield from bps.trigger_and_read([motor])

    return (yield from inner())


class ProbeFault(RuntimeError):
    """An instrument fault, tagged as a driver tags one."""

    fault = "alarm"

    def __init__(self, message: str, instrument: str) -> None:
        super().__init__(message)
        self.instrument = instrument


class Probe:
    """An instrument whose recovery and health check fail while the file ``broken`` exists (it says why)."""

    def __init__(self, name: str, broken: str) -> None:
        self.name = name
        self.parent = None
        self.broken = Path(broken)

    def recover(self) -> None:
        if self.broken.exists():
            raise ProbeFault(f"{self.name}: {self.broken.read_text()}", self.name)

    def check_health(self) -> None:
        self.recover()


def make_probe(name: str, address: Any = None, **options: Any) -> Probe:
    return Probe(name, str(options["broken"]))


def probe_plan(recipe: dict[str, Any], devices: dict[str, Any]) -> Generator[Any, Any, Any]:
    """A plan that checks the probe first: it fails with the probe's fault while the probe is broken."""

    @bpp.run_decorator(md={"plan_name": "probe_plan"})
    def inner() -> Generator[Any, Any, Any]:
        devices["probe"].check_health()
        yield from bps.null()

    return (yield from inner())


def leased_move(recipe: dict[str, Any], devices: dict[str, Any]) -> Generator[Any, Any, Any]:
    """Lease the arm (a shared instrument, leased on demand), move it to x, read it."""
    from sdl.plans import leased

    arm = devices["arm"]

    def move_and_read() -> Generator[Any, Any, Any]:
        yield from bps.mv(arm, recipe["x"])
        yield from bps.trigger_and_read([arm])

    @bpp.run_decorator(md={"plan_name": "leased_move"})
    def inner() -> Generator[Any, Any, Any]:
        yield from leased([arm], move_and_read())

    return (yield from inner())


def make_gated_motor(name: str, address: Any = None, **options: Any) -> Any:
    """A simulated motor whose moves wait until the file ``gate``/open exists (a move a test can hold)."""
    import threading

    from ophyd.sim import SynAxis
    from ophyd.status import DeviceStatus

    gate = Path(options["gate"])

    class GatedAxis(SynAxis):  # type: ignore[misc]
        def set(self, value: Any, **kwargs: Any) -> Any:
            status = DeviceStatus(self)

            def move() -> None:
                while not (gate / "open").exists():
                    time.sleep(0.01)
                SynAxis.set(self, value).wait()
                status.set_finished()

            threading.Thread(target=move, daemon=True).start()
            return status

    return GatedAxis(name=name)


def asking_plan(recipe: dict[str, Any], devices: dict[str, Any], timeout: float | None = None,
                default: str | None = None) -> Generator[Any, Any, Any]:  # fmt: skip
    """Ask a person whether the vial is capped, then read the answer into the run's start document."""
    from sdl.plans import ask

    answer = yield from ask(f"Is vial {recipe['x']:.3f} capped?", timeout=timeout, default=default)

    @bpp.run_decorator(md={"plan_name": "asking_plan", "recipe": recipe, "answer": answer})
    def inner() -> Generator[Any, Any, Any]:
        yield from bps.null()

    return (yield from inner())
