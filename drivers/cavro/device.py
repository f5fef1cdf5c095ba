"""The ophyd face of a Cavro pump: a Movable whose setpoint is a volume to deliver.

    water = make_device("water", "socket://127.0.0.1:5001", syringe_volume_ul=1000,
                        ports={"water": 1, "outlet": 2, "waste": 3}, source="water", outlet="outlet",
                        flow_ul_s=200.0, max_flow_ul_s=500.0)
    water.connect()
    yield from bps.mv(water, 650.0)     # 650 µL from port "water" to port "outlet"

``set(volume_ul)`` transfers that volume from ``source`` to ``outlet`` (initialising the pump first
if it needs it, in several strokes if the syringe is smaller) and finishes when the plunger is
home again; it fails with the driver's exception (``PlungerOverload``, ``ValveOverload``,
``ReservoirEmpty``...). Reads ``<name>_volume`` (µL delivered by the last set, from the plunger
positions the pump reported), ``<name>_valve`` (port) and ``<name>_plunger`` (µL in the syringe).

The reservoir behind ``source`` is a consumable named by its port label (``water.set_contents(
"water", 500000, lot="DI-12")``, ``water.contents()``); each ``set`` reports to the subscribers of
``water.subscribe_usage`` what it drew from it, delivered to the outlet and pushed to waste
(``drivers.stock``), also when it fails part-way.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from drivers.cavro.errors import Terminated
from drivers.cavro.xcalibur import CavroPump
from drivers.errors import InstrumentBusy, Unrecoverable
from drivers.ophyd_support import BackgroundAction, InstrumentDevice, UnitSignal
from drivers.ophyd_types import Component, DeviceStatus, Signal
from drivers.stock import Contents

log = logging.getLogger(__name__)


class CavroDevice(InstrumentDevice):
    volume = Component(UnitSignal, value=0.0, kind="hinted", metadata={"units": "uL"})
    valve = Component(Signal, value=0, kind="normal")
    plunger = Component(UnitSignal, value=0.0, kind="normal", metadata={"units": "uL"})
    flow = Component(UnitSignal, value=0.0, kind="config", metadata={"units": "uL/s"})

    def __init__(
        self,
        *args: Any,
        pump: CavroPump,
        source: str | int,
        outlet: str | int,
        flow_ul_s: float | None = None,
        aspirate_flow_ul_s: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.pump = pump
        pump.events = self.fault_events
        self.source = source
        self.outlet = outlet
        self.aspirate_flow_ul_s = aspirate_flow_ul_s
        flow = pump.max_flow_ul_s if flow_ul_s is None else float(flow_ul_s)
        # Bad wiring (an unknown port label, a flow above the cap) shows when the device is made.
        pump.check_transfer(pump.ul_per_increment, source, outlet, flow, aspirate_flow_ul_s)
        self.flow.put(flow)
        self.action = BackgroundAction(self.name)

    def set(self, value: float) -> DeviceStatus:
        volume = float(value)
        flow = float(self.flow.get())
        self.pump.check_transfer(volume, self.source, self.outlet, flow, self.aspirate_flow_ul_s)

        def transfer(halt: threading.Event) -> None:
            self.ensure_connected()
            with self.pump.operation(halt):
                try:
                    moved = self.pump.transfer(
                        volume, self.source, self.outlet, flow, aspirate_flow_ul_s=self.aspirate_flow_ul_s
                    )
                finally:
                    self._report_usage(volume)
            self.volume.put(moved)
            self.valve.put(self.pump.valve_port())
            self.plunger.put(self.pump.position_ul())

        return self.action.run(self, transfer, f"transfer {volume:g} uL")

    def _report_usage(self, requested: float) -> None:
        moved, name = self.pump.last_transfer, self._source_name()
        reservoir = self.pump.reservoir(self.source)
        for event, amount in (("drawn", moved.drawn_ul), ("dispensed", moved.delivered_ul),
                              ("wasted", moved.wasted_ul)):  # fmt: skip
            if amount:
                self.usage_events.emit(
                    event, device=self.name, consumable=name, amount=amount, lot=reservoir.lot,
                    remaining=reservoir.amount, requested=requested if event == "dispensed" else None,
                )  # fmt: skip

    def _source_name(self) -> str:
        return str(self.source)

    def stop(self, *, success: bool = False) -> None:
        # A transfer, or an initialisation that recover() runs: either moves the plunger.
        if not (self.action.busy or self.pump.halt.active):
            return
        self.action.stop("the transfer", Terminated("stopped before the transfer finished"))
        self.pump.terminate()

    # -- the device contract -----------------------------------------------------------------
    def _actions(self) -> list[BackgroundAction]:
        return [self.action]

    def _open(self) -> None:
        if not self.pump.transport.is_open:
            self.pump.retry.run(self.pump.transport.open, events=self.fault_events, what="opening the link")

    def _connect(self) -> None:
        self._open()
        # One status query proves the pump answers; initialising moves the plunger, so it waits
        # for the first transfer (or recover()).
        self.pump.status()

    def _disconnect(self) -> None:
        self.pump.close()

    def _make_safe(self) -> None:
        self._open()
        self.pump.terminate()

    def _recover(self) -> None:
        self._open()
        try:
            self.pump.recover()
        except Exception as exc:
            raise Unrecoverable(f"re-initialising the pump failed: {exc}") from exc

    def identity(self) -> dict[str, Any]:
        """The firmware version the pump reports (``&``); the DT protocol has no model or serial query."""
        with self._named():
            self.ensure_connected()
            return {
                "model": None,
                "serial": None,
                "firmware": self.pump.firmware(),
                "address": self.pump.address,
            }

    def _contents(self) -> dict[str, Contents]:
        names = {self._source_name(): self.source}
        for port in self.pump.tracked_ports():
            labels = [label for label, number in self.pump.ports.items() if number == port]
            names.setdefault(labels[0] if labels else str(port), port)
        return {name: self.pump.reservoir(port) for name, port in names.items()}

    def _set_contents(self, name: str, amount: float | None, lot: str | None) -> None:
        port = int(name) if name.isdigit() else name
        if isinstance(port, str) and port not in self.pump.ports:
            raise self._unknown_consumable(name, self.pump.ports)
        if self.action.busy:
            raise InstrumentBusy(f"{self.name} is transferring; say what the reservoir holds once it stops")
        self.pump.set_reservoir(port, amount, lot)

    def _check_health(self) -> None:
        status = self.pump.status()
        if status.error and status.error not in (7,):  # 7: not initialised yet, which the next set() does
            raise self.pump.error_for_status(status)
