"""The ophyd face of a Cavro pump: a Movable whose setpoint is a volume to deliver.

    water = make_device("water", "socket://127.0.0.1:5001", syringe_volume_ul=1000,
                        ports={"water": 1, "outlet": 2, "waste": 3}, source="water", outlet="outlet",
                        flow_ul_s=200.0, max_flow_ul_s=500.0)
    yield from bps.mv(water, 650.0)     # 650 µL from port "water" to port "outlet"

``set(volume_ul)`` transfers that volume from ``source`` to ``outlet`` (initialising the pump first
if it needs it, in several strokes if the syringe is smaller) and finishes when the plunger is
home again; it fails with the driver's exception (``PlungerOverload``, ``ValveOverload``...).
Reads ``<name>_volume`` (µL moved by the last set), ``<name>_valve`` (port) and
``<name>_plunger`` (µL in the syringe).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ophyd import Component, Device, Signal
from ophyd.status import DeviceStatus

from drivers.cavro.errors import Terminated
from drivers.cavro.xcalibur import CavroPump
from drivers.ophyd_support import settle

log = logging.getLogger(__name__)


class CavroDevice(Device):
    volume = Component(Signal, value=0.0, kind="hinted", metadata={"units": "uL"})
    valve = Component(Signal, value=0, kind="normal")
    plunger = Component(Signal, value=0.0, kind="normal", metadata={"units": "uL"})
    flow = Component(Signal, value=0.0, kind="config", metadata={"units": "uL/s"})

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
        self.source = source
        self.outlet = outlet
        self.aspirate_flow_ul_s = aspirate_flow_ul_s
        flow = pump.max_flow_ul_s if flow_ul_s is None else float(flow_ul_s)
        # Bad wiring (an unknown port label, a flow above the cap) shows when the device is made.
        pump.check_transfer(pump.ul_per_increment, source, outlet, flow, aspirate_flow_ul_s)
        self.flow.put(flow)
        self._moving: DeviceStatus | None = None

    def set(self, value: float) -> DeviceStatus:
        volume = float(value)
        flow = float(self.flow.get())
        self.pump.check_transfer(volume, self.source, self.outlet, flow, self.aspirate_flow_ul_s)
        if self._moving is not None and not self._moving.done:
            raise RuntimeError(f"{self.name} is still moving")
        status = DeviceStatus(self)
        self._moving = status
        thread = threading.Thread(
            target=self._transfer, args=(status, volume, flow), name=f"{self.name}-transfer", daemon=True
        )
        thread.start()
        return status

    def _transfer(self, status: DeviceStatus, volume: float, flow: float) -> None:
        try:
            moved = self.pump.transfer(
                volume, self.source, self.outlet, flow, aspirate_flow_ul_s=self.aspirate_flow_ul_s
            )
            self.volume.put(moved)
            self._refresh()
        except Exception as exc:
            if not isinstance(exc, Terminated):
                log.warning("%s: transfer failed: %s", self.name, exc)
            settle(status, exc)
            return
        settle(status, None)

    def _refresh(self) -> None:
        self.valve.put(self.pump.valve_port())
        self.plunger.put(self.pump.position_ul())

    def stop(self, *, success: bool = False) -> None:
        moving = self._moving
        if moving is None or moving.done:
            return
        self.pump.terminate()
        if not success:
            settle(moving, Terminated(f"{self.name}: stopped before the transfer finished"))

    def destroy(self) -> None:
        try:
            self.pump.close()
        finally:
            super().destroy()
