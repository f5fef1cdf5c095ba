"""The ophyd face of a line of New Era pumps: one Movable child per pump.

    pumps = make_device("pumps", "socket://127.0.0.1:5000", pumps={
        "yellow": {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000,
                   "max_rate_ul_min": 5000, "rate_ul_min": 2000},
        "red": {"address": 1, ...}})
    yield from bps.mv(pumps.yellow, 120.0, pumps.red, 80.0)   # both pumps run at once

``set(volume_ul)`` infuses that volume at the child's configured rate and finishes when the pump
has stopped; it fails with the driver's exception (``MotorStall``, ``PumpReset``...) otherwise.
Each child reads ``<name>_<label>_dispensed``: µL infused by its last move.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ophyd import Component, Device, Signal
from ophyd.status import DeviceStatus

from drivers.errors import InstrumentBusy, InstrumentError
from drivers.newera.line import NE1000Line
from drivers.newera.ne1000 import NE1000Pump
from drivers.ophyd_support import settle

log = logging.getLogger(__name__)

_PUMP_OPTIONS = {
    "address",
    "diameter_mm",
    "syringe_volume_ul",
    "max_rate_ul_min",
    "min_rate_ul_min",
    "max_volume_ul",
    "model",
}


class NE1000Channel(Device):
    """One pump on the line; ``set(volume_ul)`` dispenses at ``rate_ul_min``."""

    dispensed = Component(Signal, value=0.0, kind="hinted", metadata={"units": "uL"})
    rate = Component(Signal, value=0.0, kind="config", metadata={"units": "uL/min"})

    def __init__(
        self, prefix: str = "", *, pump_options: dict[str, Any], name: str, parent: Any = None, **kwargs: Any
    ):
        super().__init__(prefix, name=name, parent=parent, **kwargs)
        options = dict(pump_options)
        unknown = set(options) - _PUMP_OPTIONS - {"rate_ul_min"}
        if unknown:
            raise ValueError(
                f"{name}: unknown pump option(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(_PUMP_OPTIONS | {'rate_ul_min'}))}"
            )
        if "rate_ul_min" not in options:
            raise ValueError(f"{name}: rate_ul_min (the dispensing rate) is required")
        rate = float(options.pop("rate_ul_min"))
        self.pump = NE1000Pump(parent.line, **options)
        self.pump.check_move(min(1.0, self.pump.max_volume_ul), rate)  # the rate itself must be allowed
        self.rate.put(rate)
        self.poll_s: float = parent.poll_s
        self._moving: DeviceStatus | None = None
        self._halt = threading.Event()
        self._follower: threading.Thread | None = None

    def set(self, value: float) -> DeviceStatus:
        volume = float(value)
        self.pump.check_move(volume, float(self.rate.get()))  # refuse before anything is sent
        if self._moving is not None and not self._moving.done:
            raise InstrumentBusy(f"{self.name} is still dispensing")
        status = DeviceStatus(self)
        self._moving = status
        self._halt.clear()
        move = self.pump.infuse(volume, float(self.rate.get()))
        expected_s = move.volume_ul / move.rate_ul_min * 60.0
        thread = threading.Thread(
            target=self._follow, args=(status, expected_s), name=f"{self.name}-follow", daemon=True
        )
        self._follower = thread
        thread.start()
        return status

    def _follow(self, status: DeviceStatus, expected_s: float) -> None:
        try:
            # Simulated pumps run faster than the clock on the wall; a real one needs the full time
            # plus margin. The parent's move_timeout_s caps it if set.
            timeout = self.parent.move_timeout_s or (expected_s * 1.5 + 10.0)
            done = self.pump.wait_until_stopped(timeout, poll_s=self.poll_s, halt=self._halt)
            self.dispensed.put(done.infused_ul)
        except Exception as exc:
            if not self._halt.is_set():
                log.warning("%s: move failed: %s", self.name, exc)
            settle(status, exc)
            return
        settle(status, None)

    def stop(self, *, success: bool = False) -> None:
        moving = self._moving
        if success and (moving is None or moving.done):
            return  # the RunEngine's end-of-plan courtesy stop: nothing is moving, keep the line quiet
        if moving is not None and not moving.done and not success:
            # Fail the move before halting its follower, so the caller sees why it ended.
            settle(moving, InstrumentError(f"{self.name}: stopped before the move finished"))
        self._halt.set()
        self.pump.stop()

    def abandon(self) -> None:
        """Stop following a move (the device is going away); the pump itself is left as it is."""
        self._halt.set()
        if self._follower is not None:
            self._follower.join(timeout=5)


class NE1000Pumps(Device):
    """The line; its children (one per pump label) are added by ``make_pumps``."""

    def __init__(
        self,
        *args: Any,
        line: NE1000Line,
        poll_s: float = 0.05,
        move_timeout_s: float | None = None,
        **kwargs: Any,
    ):
        self.line = line
        self.poll_s = poll_s
        self.move_timeout_s = move_timeout_s
        super().__init__(*args, **kwargs)

    def configure_pumps(self) -> None:
        for child in self.channels():
            child.pump.configure()

    def channels(self) -> list[NE1000Channel]:
        return [getattr(self, attr) for attr in self.component_names]

    def destroy(self) -> None:
        for child in self.channels():
            child.abandon()
        try:
            self.line.close()
        finally:
            super().destroy()


def make_pumps(name: str, line: NE1000Line, pumps: dict[str, dict[str, Any]], **options: Any) -> NE1000Pumps:
    if not pumps:
        raise ValueError(
            f"{name}: pumps: give at least one pump as label: {{address: ..., diameter_mm: ...}}"
        )
    for label in pumps:
        if not label.isidentifier() or label.startswith("_"):
            raise ValueError(
                f"{name}: pump label {label!r} must be a Python identifier (it becomes an attribute)"
            )
    components = {label: Component(NE1000Channel, pump_options=dict(spec)) for label, spec in pumps.items()}
    cls = type(f"NE1000Pumps_{name}", (NE1000Pumps,), components)
    return cls(name=name, line=line, **options)
