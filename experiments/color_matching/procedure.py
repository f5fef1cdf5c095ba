"""One colour-matching experiment as a bluesky plan over the bench's ophyd devices.

A fresh vial goes from the feeder to the dispense station; the three dye pumps and the water
pump fill it to a fixed total volume; the arm carries it to the spectrometer, which has taken a
dark and a blank reference with its holder empty; the sample spectrum is read; the vial goes to
waste. Every step is a message to the RunEngine, so the plan can be dry-run and the documents
record what happened.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp

from sdl.plans import leased

DYES = ("yellow", "red", "blue")


def color_match(
    recipe: Mapping[str, float],
    devices: Mapping[str, Any],
    *,
    total_volume_ul: float = 1500.0,
    dispense_station: str = "dispense",
) -> Generator[Any, Any, Any]:
    """Dispense ``recipe`` (µL of each dye; water makes up ``total_volume_ul``) at ``dispense_station``
    (the arm's name for it: a lab of several stations says which in its workcell's options) and measure it."""
    pumps, water, arm, spectrometer = (devices[n] for n in ("dye_pumps", "water_pump", "arm", "spectrometer"))
    dye_volumes = {dye: float(recipe[dye]) for dye in DYES}
    dyes_ul = sum(dye_volumes.values())
    water_ul = total_volume_ul - dyes_ul
    if water_ul < 0:
        raise ValueError(f"dyes add up to {dyes_ul:.0f} µL, more than the {total_volume_ul:.0f} µL total")
    metadata = {
        "plan_name": "color_match",
        "recipe": dict(recipe),
        "total_volume_ul": total_volume_ul,
        "dispense_station": dispense_station,
    }

    @bpp.run_decorator(md=metadata)
    def experiment() -> Generator[Any, Any, Any]:
        # The arm and the spectrometer may serve other stations too: each is leased only for the steps
        # that use it (procedure.lease_on_demand), and never one while waiting for another.
        yield from leased([spectrometer], blank(spectrometer))
        yield from leased([arm], bps.mv(arm.transfer, ("feeder", dispense_station)))
        moves: list[Any] = []
        for dye, volume in dye_volumes.items():
            if volume > 0.05:  # below the pumps' resolution there is nothing to dispense
                moves += [getattr(pumps, dye), volume]
        if water_ul > 0.05:
            moves += [water, water_ul]
        if moves:
            yield from bps.mv(*moves)  # all pumps run at once
        # Only what this experiment dispensed is read with the spectrum: a pump that did not move still
        # shows its previous move's volume.
        dispensed = moves[::2]
        yield from leased([arm, spectrometer], measure(arm, spectrometer, dispensed, dispense_station))

    return (yield from experiment())


def blank(spectrometer: Any) -> Generator[Any, Any, Any]:
    """Dark and reference with the holder empty: lamp off for the dark, lamp on for the reference."""
    yield from bps.mv(spectrometer.mode, "dark")
    yield from bps.trigger(spectrometer, wait=True)
    yield from bps.mv(spectrometer.mode, "reference")
    yield from bps.trigger(spectrometer, wait=True)


def measure(arm: Any, spectrometer: Any, dispensed: list[Any], station: str) -> Generator[Any, Any, Any]:
    """The vial to the spectrometer, its spectrum (with what the pumps that moved dispensed), to waste."""
    yield from bps.mv(arm.transfer, (station, "spectrometer"))
    yield from bps.trigger_and_read([spectrometer, *dispensed])
    yield from bps.mv(arm.transfer, ("spectrometer", "waste"))


def needs(recipe: Mapping[str, float], *, total_volume_ul: float = 1500.0, **_: Any) -> dict[str, float]:
    """What one experiment uses up (``procedure.needs``): each dye's volume from its syringe, the water that
    makes up the rest, one vial from the feeder, and a place for it in the waste."""
    dyes = {f"dye_pumps.{dye}": float(recipe[dye]) for dye in DYES}
    water = max(0.0, total_volume_ul - sum(dyes.values()))
    return {**dyes, "water_pump.water": water, "arm.feeder": 1, "arm.waste": 1}
