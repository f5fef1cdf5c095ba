"""The driver contract suite on the SiLA 2 driver: an NE-1000 reached only through SiLA 2.

The simulated pump is driven by our own NE-1000 driver, served by `drivers.sila2.serve` (what
`sdl sila serve` runs) with TLS, and the device under test is ``driver: sila2`` pointed at it
through a relay that counts SiLA sessions. "The stop reached the instrument" is read from the
pump's own wire: an aborted plan cancels the Dispense on the server (CancelController), which
sends the pump STP, and no RUN follows.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from bluesky.protocols import Movable, Readable, Stoppable
from sila_support import served_over_sila

import drivers.newera
import drivers.sila2
from drivers.newera import codec as newera_codec
from drivers.testing.contract import DriverCase, DriverContract

#: The servers' certificates live here for this test process (the case's options name the file).
CERTS = Path(tempfile.gettempdir()) / f"sdl-sila-contract-{os.getpid()}"
PUMP = {"a": {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000,
              "max_rate_ul_min": 5000, "rate_ul_min": 1000}}  # fmt: skip


def ne1000_command(record) -> str:
    try:
        data = newera_codec.unframe_safe(record.data) if record.data[:1] == b"\x02" else record.data
        return newera_codec.parse_request(data).command
    except (newera_codec.CodecError, ValueError):
        return ""


CASE = DriverCase(
    name="sila2",
    make_device=drivers.sila2.make_device,
    package="drivers.sila2",
    options={
        "ca": str(CERTS / "instrument.pem"),
        "set": {"command": "SyringePumpController.Dispense", "parameters": {"Pump": "a"}},
        "actions": {"a": {"command": "SyringePumpController.Dispense", "parameters": {"Pump": "a"}}},
    },
    simulator=functools.partial(
        served_over_sila, "ne1000", drivers.newera.make_device, {"pumps": PUMP}, certs=CERTS
    ),
    address=lambda served: served.address,
    long_action=lambda device: (device, 5000.0),  # five minutes of pumping
    short_action=lambda device: (device, 20.0),  # 1.2 s at 1000 µL/min
    is_stop=lambda r: ne1000_command(r) == "STP",
    is_motion=lambda r: ne1000_command(r) in ("RUN", "PUR"),
    faces=[("", (Movable, Readable, Stoppable)), ("a", (Movable, Readable, Stoppable))],
)


@pytest.fixture(scope="module", autouse=True)
def certificates() -> Iterator[None]:
    yield
    shutil.rmtree(CERTS, ignore_errors=True)


class TestSilaDriver(DriverContract):
    @pytest.fixture(params=[CASE], ids=[CASE.name])
    def case(self, request: pytest.FixtureRequest) -> DriverCase:
        return request.param
