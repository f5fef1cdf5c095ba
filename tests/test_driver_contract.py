"""What every built-in driver promises, checked the same way for each against its simulator.

Each instrument family has its own conformance suite (tests/test_<kind>_driver.py); this one
holds the promises they all share, so a new driver can be added to INSTRUMENTS and be held to
them: a factory that builds a device bluesky can drive, refuses unknown options before touching
the wire, and releases its links on destroy(); and errors that all derive from drivers.errors.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from bluesky.protocols import Movable, Readable, Stoppable, Triggerable, check_supports

from drivers.errors import InstrumentError
from simulators.testing import BackgroundLab, run_simulator
from simulators.ur import DEFAULT_POSITIONS


@dataclass(frozen=True)
class Instrument:
    kind: str
    family: str
    options: dict[str, Any]
    address: Callable[[BackgroundLab], Any]
    #: (attribute path on the device, the bluesky protocols it must support)
    faces: list[tuple[str, tuple[type, ...]]] = field(default_factory=list)


def single(endpoint: str) -> Callable[[BackgroundLab], str]:
    return lambda sim: sim.url(endpoint)


INSTRUMENTS = [
    Instrument(
        "ne1000", "newera",
        {"pumps": {"a": {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000,
                         "max_rate_ul_min": 5000, "rate_ul_min": 1000}}},
        single("pump"),
        [("a", (Movable, Readable, Stoppable))],
    ),
    Instrument(
        "cavro", "cavro",
        {"syringe_volume_ul": 1000, "ports": {"water": 1, "outlet": 2, "waste": 3}},
        single("pump"),
        [("", (Movable, Readable, Stoppable))],
    ),
    Instrument(
        "ur", "ur",
        {"positions": DEFAULT_POSITIONS},
        lambda sim: {name: sim.url(name) for name in ("dashboard", "script", "gripper")},
        [("", (Movable, Readable, Stoppable)), ("gripper", (Movable, Readable)), ("transfer", (Movable,))],
    ),
    Instrument(
        "ocean-hdx", "ocean",
        {"integration_time_us": 10000},
        single("obp"),
        [("", (Triggerable, Readable))],
    ),
]  # fmt: skip
IDS = [instrument.kind for instrument in INSTRUMENTS]


def factory(instrument: Instrument) -> Callable[..., Any]:
    return importlib.import_module(f"drivers.{instrument.family}").make_device


@pytest.mark.parametrize("instrument", INSTRUMENTS, ids=IDS)
def test_factory_builds_a_device_bluesky_can_drive_and_destroy_releases_it(instrument):
    with run_simulator(instrument.kind) as sim:
        device = factory(instrument)("dut", instrument.address(sim), **instrument.options)
        try:
            sim.wait_until_connected()  # TimeoutError if the factory never connected
            for path, protocols in instrument.faces:
                face = device
                for part in filter(None, path.split(".")):
                    face = getattr(face, part)
                for protocol in protocols:
                    check_supports(face, protocol)
                if Readable in protocols:
                    reading, description = face.read(), face.describe()
                    assert set(reading) == set(description), (
                        f"{path or 'device'}: read() and describe() disagree"
                    )
                    assert all(key.startswith("dut") for key in reading)
        finally:
            device.destroy()
        sim.wait_until_clients_leave()  # TimeoutError if destroy() left a link open


@pytest.mark.parametrize("instrument", INSTRUMENTS, ids=IDS)
def test_unknown_options_are_refused_before_any_connection(instrument):
    with run_simulator(instrument.kind) as sim:
        with pytest.raises((ValueError, TypeError)) as refused:
            factory(instrument)("dut", instrument.address(sim), **instrument.options, flow_rate_typo=3)
        assert "flow_rate_typo" in str(refused.value)
        assert sim.sessions_opened() == 0


@pytest.mark.parametrize("family", sorted({i.family for i in INSTRUMENTS}))
def test_every_exception_a_driver_exports_derives_from_drivers_errors(family):
    module = importlib.import_module(f"drivers.{family}")
    exported = [getattr(module, name) for name in module.__all__]
    errors = [obj for obj in exported if inspect.isclass(obj) and issubclass(obj, BaseException)]
    assert errors, f"drivers.{family} exports no exception types"
    assert [e.__name__ for e in errors if not issubclass(e, InstrumentError)] == []
