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


def gated(recipe: dict[str, Any], gate: str) -> dict[str, float]:
    """A long experiment: says it is running (a file in ``gate``), then waits until ``gate/open`` exists."""
    directory = Path(gate)
    (directory / f"running-{os.getpid()}-{uuid.uuid4().hex[:8]}").write_text(repr(recipe))
    while not (directory / "open").exists():
        time.sleep(0.01)
    return bowl(recipe)


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
