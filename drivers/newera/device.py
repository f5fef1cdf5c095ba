"""The ophyd face of a line of New Era pumps: one Movable child per pump.

    pumps = make_device("pumps", "socket://127.0.0.1:5000", pumps={
        "yellow": {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000,
                   "max_rate_ul_min": 5000, "rate_ul_min": 2000},
        "red": {"address": 1, ...}})
    pumps.connect()                                           # acknowledges alarms, sets diameters
    yield from bps.mv(pumps.yellow, 120.0, pumps.red, 80.0)   # both pumps run at once

``set(volume_ul)`` infuses that volume at the child's configured rate and finishes when the pump
has stopped; it fails with the driver's exception (``MotorStall``, ``PumpReset``, ``SyringeEmpty``...)
otherwise. Each child reads ``<name>_<label>_dispensed``: µL the pump reported infused by its last
``set``. ``stop()`` on a child sends ``STP`` to its pump; on the line, to every pump.

Each pump's syringe is a consumable named by its label (``pumps.set_contents("red", 10000,
lot="R-0412")``, ``pumps.contents()``); each ``set`` reports what it delivered to the subscribers of
``pumps.subscribe_usage`` (``drivers.stock``), also when it fails part-way.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from drivers.errors import InstrumentBusy, InstrumentError
from drivers.newera.errors import MotorStall, PumpReset
from drivers.newera.line import NE1000Line
from drivers.newera.ne1000 import NE1000Pump
from drivers.ophyd_support import BackgroundAction, InstrumentDevice, UnitSignal
from drivers.ophyd_types import Component, Device, DeviceStatus
from drivers.stock import Contents

log = logging.getLogger(__name__)


class NE1000Channel(Device):
    """One pump on the line; ``set(volume_ul)`` dispenses at ``rate_ul_min``."""

    dispensed = Component(UnitSignal, value=0.0, kind="hinted", metadata={"units": "uL"})
    rate = Component(UnitSignal, value=0.0, kind="config", metadata={"units": "uL/min"})

    def __init__(
        self, prefix: str = "", *, pump_options: dict[str, Any], name: str, parent: Any = None, **kwargs: Any
    ):
        super().__init__(prefix, name=name, parent=parent, **kwargs)
        options = dict(pump_options)
        rate = float(options.pop("rate_ul_min"))
        self.pump = NE1000Pump(parent.line, label=self.attr_name, **options)
        self.pump.check_move(min(1.0, self.pump.max_volume_ul), rate)  # the rate itself must be allowed
        self.rate.put(rate)
        self.poll_s: float = parent.poll_s
        self.action = BackgroundAction(parent.name)

    def set(self, value: float) -> DeviceStatus:
        volume = float(value)
        rate = float(self.rate.get())
        self.pump.check_move(volume, rate)  # refuse before anything is sent

        def dispense(halt: threading.Event) -> None:
            self.parent.ensure_connected()
            with self.pump.halt.operation(halt):  # a stop ends this move, and no later one
                self.dispensed.put(self._dispense(volume, rate))

        return self.action.run(self, dispense, f"dispense {volume:g} uL")

    def _dispense(self, volume: float, rate: float) -> float:
        """Infuse ``volume`` and wait for the end; after a stall, dispense the remainder. The µL delivered,
        as the pump reported them; reported on the usage events whether or not the dispense succeeds."""
        delivered = 0.0
        serial, added, complete = self.pump.move_serial, True, True
        try:
            for attempt in range(1, self.parent.stall_retries + 2):
                serial, added = self.pump.move_serial, False
                move = self.pump.infuse(volume - delivered, rate)
                # Simulated pumps run faster than the clock on the wall; a real one needs the full time
                # plus margin. The parent's move_timeout_s caps it if set.
                expected_s = move.volume_ul / move.rate_ul_min * 60.0
                timeout = self.parent.move_timeout_s or (expected_s * 1.5 + 10.0)
                try:
                    done = self.pump.wait_until_stopped(timeout, poll_s=self.poll_s)
                except MotorStall as stall:
                    # The stall is acknowledged and the counters hold what was delivered: the
                    # documented recovery is to run the remainder (once; a blocked line stalls again).
                    delivered += self.pump.dispensed().infused_ul
                    added = True
                    remaining = volume - delivered
                    if attempt > self.parent.stall_retries or not self._dispensable(remaining, rate):
                        self.parent.fault_events.emit("gave_up", stall.fault, str(stall), attempt)
                        raise
                    self.parent.fault_events.emit(
                        "retry", stall.fault, f"{stall}; dispensing the remaining {remaining:.4g} uL", attempt
                    )
                    continue
                delivered += done.infused_ul
                added = True
                if attempt > 1:
                    self.parent.fault_events.emit(
                        "recovered", "alarm", f"{self.name}: dispensed after a stall"
                    )
                break
            return delivered
        except BaseException:
            if self.pump.move_serial != serial and not added:
                # A move began and its volume is not counted in yet: ask the pump what it delivered, once
                # it has stopped (a stop's STP may reach it just after this thread gave up the move).
                done, complete = self.pump.count_when_stopped()
                delivered += done.infused_ul
            raise
        finally:
            if delivered > 0 or not complete:
                contents = self.pump.contents()
                self.parent.usage_events.emit(
                    "dispensed", device=self.name, consumable=self.attr_name, amount=delivered,
                    lot=contents.lot, remaining=contents.amount, requested=volume, complete=complete,
                )  # fmt: skip

    def _dispensable(self, volume: float, rate: float) -> bool:
        try:
            self.pump.check_move(volume, rate)
        except InstrumentError:
            return False
        return True

    def stop(self, *, success: bool = False) -> None:
        if success and not self.action.busy:
            return  # the RunEngine's end-of-plan courtesy stop: nothing is moving, keep the line quiet
        self.action.stop("the move")
        if not self.parent.line.closed:
            self.pump.stop()


class NE1000Pumps(InstrumentDevice):
    """The line; its children (one per pump label) are added by ``make_pumps``."""

    def __init__(
        self,
        *args: Any,
        line: NE1000Line,
        poll_s: float = 0.05,
        move_timeout_s: float | None = None,
        stall_retries: int = 1,
        **kwargs: Any,
    ):
        self.line = line
        self.stall_retries = stall_retries
        self.poll_s = poll_s
        self.move_timeout_s = move_timeout_s
        super().__init__(*args, **kwargs)
        line.events = self.fault_events

    def channels(self) -> list[NE1000Channel]:
        return [getattr(self, attr) for attr in self.component_names]

    def stop(self, *, success: bool = False) -> None:
        for channel in self.channels():
            channel.stop(success=success)

    # -- the device contract -----------------------------------------------------------------
    def _actions(self) -> list[BackgroundAction]:
        return [channel.action for channel in self.channels()]

    def _open_line(self) -> None:
        if not self.line.transport.is_open:
            self.line.retry.run(self.line.open, events=self.fault_events, what="opening the line")

    def _connect(self) -> None:
        self._open_line()
        for channel in self.channels():
            channel.pump.configure()

    def _disconnect(self) -> None:
        self.line.close()

    def _make_safe(self) -> None:
        self._open_line()
        failures: list[InstrumentError] = []
        for channel in self.channels():
            try:
                channel.pump.stop()
            except InstrumentError as exc:
                failures.append(exc)
        if failures:
            raise failures[0]

    def _recover(self) -> None:
        self._open_line()
        for channel in self.channels():
            channel.pump.recover()

    def _check_health(self) -> None:
        for channel in self.channels():
            try:
                channel.pump.status()
            except PumpReset as reset:
                # It power-cycled this moment (the reply acknowledged it): stopped, its settings lost.
                # Set up again, it is healthy if it then answers cleanly.
                self.fault_events.emit("retry", reset.fault, f"{reset}; configuring again", 1)
                channel.pump.configure()
                channel.pump.status()

    def _contents(self) -> dict[str, Contents]:
        return {channel.attr_name: channel.pump.contents() for channel in self.channels()}

    def _set_contents(self, name: str, amount: float | None, lot: str | None) -> None:
        labels = [channel.attr_name for channel in self.channels()]
        if name not in labels:
            raise self._unknown_consumable(name, labels)
        channel: NE1000Channel = getattr(self, name)
        if channel.action.busy:
            raise InstrumentBusy(f"{channel.name} is dispensing; say what its syringe holds once it stops")
        channel.pump.set_contents(amount, lot)

    def identity(self) -> dict[str, Any]:
        """What each pump on the line reports (``VER``: model and firmware); the protocol has no serial."""
        with self._named():
            self.ensure_connected()
            pumps: dict[str, dict[str, Any]] = {}
            for channel in self.channels():
                firmware = channel.pump.firmware()
                pumps[channel.attr_name] = {
                    "address": channel.pump.address,
                    "model": firmware.model,
                    "firmware": firmware.version + (f" {firmware.upgrade}" if firmware.upgrade else ""),
                }
        models = sorted({p["model"] for p in pumps.values()})
        versions = sorted({p["firmware"] for p in pumps.values()})
        return {"model": ", ".join(models), "serial": None, "firmware": ", ".join(versions), "pumps": pumps}


def make_pumps(name: str, line: NE1000Line, pumps: dict[str, dict[str, Any]], **options: Any) -> NE1000Pumps:
    components = {label: Component(NE1000Channel, pump_options=dict(spec)) for label, spec in pumps.items()}
    cls = type(f"NE1000Pumps_{name}", (NE1000Pumps,), components)
    return cls(name=name, line=line, **options)
