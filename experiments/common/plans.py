"""Plan pieces the published-lab campaigns share: blanks, flow runs, vials, waiting in the lab's time.

Everything here is an ordinary bluesky plan over the drivers' ophyd faces, so the campaigns read like
the papers' procedures: flush the line and take a blank, pump the reagents through the reactor for a
few residence times, read the flow cell; or fill a vial, carry it somewhere, wait, measure.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import bluesky.plan_stubs as bps

#: Below this a pump's share of the flow is not worth running (µL/min).
MIN_RATE_UL_MIN = 0.5


def blank(spectrometer: Any) -> Generator[Any, Any, Any]:
    """Dark (lamp off) and reference (lamp on) of whatever the holder holds now, each read into its own
    stream, so an extractor has the raw counts (a fluorescing sample's emission is read against them)."""
    yield from bps.mv(spectrometer.mode, "dark")
    yield from bps.trigger_and_read([spectrometer], name="dark")
    yield from bps.mv(spectrometer.mode, "reference")
    yield from bps.trigger_and_read([spectrometer], name="reference")


def lab_sleep(seconds: float, time_scale: float) -> Generator[Any, Any, Any]:
    """Wait ``seconds`` of the lab's time: a simulated lab runs ``time_scale`` times faster than the wall
    clock (the campaign's ``lab.speed``), a real one at 1."""
    yield from bps.sleep(seconds / time_scale)


def flow_through(
    pumps: Any,
    rates_ul_min: Mapping[str, float],
    volume_ul: float,
) -> Generator[Any, Any, list[Any]]:
    """Run the pumps together at their rates until ``volume_ul`` has gone through in all; the pumps
    that ran. Each delivers rate × time, so they start and stop together."""
    rates = {label: float(rate) for label, rate in rates_ul_min.items() if rate >= MIN_RATE_UL_MIN}
    total = sum(rates.values())
    if total <= 0:
        raise ValueError("no pump has a flow rate")
    minutes = volume_ul / total
    moves: list[Any] = []
    for label, rate in rates.items():
        channel = getattr(pumps, label)
        yield from bps.mv(channel.rate, rate)
        moves += [channel, rate * minutes]
    yield from bps.mv(*moves)
    return moves[::2]


def flow_experiment(
    devices: Mapping[str, Any],
    rates_ul_min: Mapping[str, float],
    *,
    reactor_volume_ul: float,
    carrier: str,
    residence_volumes: float = 2.5,
    flush_volumes: float = 1.3,
    flush_ul_min: float = 1000.0,
    temperature_c: float | None = None,
    emission: bool = False,
) -> Generator[Any, Any, Any]:
    """One steady-state flow experiment (inside a run): flush the reactor with the carrier and take a blank
    of the flow cell, optionally bring the reactor to ``temperature_c``, pump the reagents through for
    ``residence_volumes`` reactor volumes, read the flow cell with what the pumps delivered; with
    ``emission``, read it again with the lamp off (stream "emission": what the cell's LED excites)."""
    pumps, spectrometer = devices["pumps"], devices["spectrometer"]
    plate = devices.get("hotplate")
    if plate is not None and temperature_c is not None:
        yield from bps.mv(plate.temperature, temperature_c)
    yield from flow_through(pumps, {carrier: flush_ul_min}, flush_volumes * reactor_volume_ul)
    yield from blank(spectrometer)
    ran = yield from flow_through(pumps, rates_ul_min, residence_volumes * reactor_volume_ul)
    read = [spectrometer, *ran] + ([plate] if plate is not None else [])
    yield from bps.trigger_and_read(read)
    if emission:
        # Last, because the driver keeps a "dark" as its dark: nothing is read against this one.
        yield from bps.mv(spectrometer.mode, "dark")
        yield from bps.trigger_and_read([spectrometer], name="emission")
