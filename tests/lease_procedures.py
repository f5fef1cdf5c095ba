"""A plan the lab-service tests submit that leases devices on demand (importable through PYTHONPATH)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp

from sdl.plans import leased


def move_both(recipe: dict[str, Any], devices: dict[str, Any]) -> Generator[Any, Any, Any]:
    """Lease the motor and the probe in one call, move both to the recipe, read them."""
    motor, probe = devices["motor"], devices["probe"]

    def steps() -> Generator[Any, Any, Any]:
        yield from bps.mv(motor, recipe["x"], probe, recipe["y"])
        yield from bps.trigger_and_read([motor, probe])

    @bpp.run_decorator(md={"plan_name": "move_both"})
    def inner() -> Generator[Any, Any, Any]:
        yield from leased([motor, probe], steps())

    return (yield from inner())
