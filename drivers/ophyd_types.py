"""ophyd's classes as the instrument faces use them, with the types ophyd does not ship.

ophyd has no type information, so a strict type checker sees every Signal, Component and Status
as unknown. Faces import these names from here instead: at run time they are ophyd's own classes;
to the type checker they are what ``ophyd_types.pyi`` declares, the part of ophyd's API the faces
use. ``tests/test_driver_ophyd_types.py`` fails when an ophyd release no longer has what it declares.
"""

# ophyd ships no stubs: ophyd_types.pyi beside this file is them, for the names re-exported here.
# pyright: reportMissingTypeStubs=false

from __future__ import annotations

from ophyd import Component, Device, Kind, Signal
from ophyd.status import DeviceStatus, StatusBase
from ophyd.utils import InvalidState

__all__ = ["Component", "Device", "DeviceStatus", "InvalidState", "Kind", "Signal", "StatusBase"]
