"""The ophyd face of an IKA hotplate stirrer: a temperature child and a stirrer child, both Movable.

    plate = make_device("plate", "socket://127.0.0.1:5000", max_temperature_c=150)
    plate.connect()                                        # reads the safety temperature
    yield from bps.mv(plate.temperature, 60.0, plate.stirrer, 500)   # both at once
    yield from bps.trigger_and_read([plate])               # plate_temperature_medium, ..._plate, ..._speed

``temperature.set(°C)`` sets the point, switches the heater on and finishes when the medium holds it
(the heater stays on, holding); ``stirrer.set(1/min)`` starts the motor (0 stops it). ``stop()`` on
the temperature child sends STOP_1, on the stirrer STOP_4, on the device both; ``make_safe()`` is
heater off and motor stopped. A plan that is done with the heat says so: ``bps.stop(plate)``.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from drivers.ika.hotplate import IkaHotplate
from drivers.ophyd_support import BackgroundAction, InstrumentDevice, UnitSignal
from drivers.ophyd_types import Component, Device, DeviceStatus


class TemperatureControl(Device):
    """``set(°C)``: heat the medium to that temperature and hold it."""

    medium = Component(UnitSignal, value=math.nan, kind="hinted", metadata={"units": "degC"})
    plate = Component(UnitSignal, value=math.nan, kind="normal", metadata={"units": "degC"})
    setpoint = Component(UnitSignal, value=math.nan, kind="config", metadata={"units": "degC"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.action = BackgroundAction(self.root.name)

    def set(self, value: float) -> DeviceStatus:
        hotplate: IkaPlate = self.parent
        target = hotplate.plate.check_temperature(float(value))  # refused before anything is sent

        def heat(halt: threading.Event) -> None:
            hotplate.ensure_connected()
            reached = hotplate.plate.heat_to(target, halt=halt, **hotplate.heat_options)
            self.setpoint.put(target)
            self.medium.put(reached)

        return self.action.run(self, heat, f"heat to {target:g} °C")

    def stop(self, *, success: bool = False) -> None:
        if success and not self.action.busy:
            return  # the RunEngine's end-of-run courtesy: a plate holding its temperature keeps it
        self.action.stop("heating")
        self.parent.plate.heating_halt.request()
        if self.parent.plate.transport.is_open:
            self.parent.plate.stop_heating()


class StirrerControl(Device):
    """``set(1/min)``: stir at that speed (0 stops the motor)."""

    speed = Component(UnitSignal, value=math.nan, kind="hinted", metadata={"units": "rpm"})
    setpoint = Component(UnitSignal, value=math.nan, kind="config", metadata={"units": "rpm"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.action = BackgroundAction(self.root.name)

    def set(self, value: float) -> DeviceStatus:
        hotplate: IkaPlate = self.parent
        rpm = hotplate.plate.check_speed(float(value))

        def stir(halt: threading.Event) -> None:
            hotplate.ensure_connected()
            reached = hotplate.plate.stir_at(rpm, halt=halt, **hotplate.stir_options)
            self.setpoint.put(rpm)
            self.speed.put(reached)

        return self.action.run(self, stir, f"stir at {rpm:g} rpm")

    def stop(self, *, success: bool = False) -> None:
        if success and not self.action.busy:
            return
        self.action.stop("stirring")
        self.parent.plate.stirring_halt.request()
        if self.parent.plate.transport.is_open:
            self.parent.plate.stop_stirring()


class IkaPlate(InstrumentDevice):
    """A hotplate stirrer; ``trigger()`` reads the medium, plate and speed now."""

    temperature = Component(TemperatureControl)
    stirrer = Component(StirrerControl)

    def __init__(
        self,
        *args: Any,
        plate: IkaHotplate,
        heat_options: dict[str, Any] | None = None,
        stir_options: dict[str, Any] | None = None,
        watchdog_s: int | None = None,
        **kwargs: Any,
    ):
        self.plate = plate
        self.heat_options = dict(heat_options or {})
        self.stir_options = dict(stir_options or {})
        self.watchdog_s = watchdog_s
        super().__init__(*args, **kwargs)
        plate.events = self.fault_events

    def trigger(self) -> DeviceStatus:
        status = DeviceStatus(self)
        try:
            with self._named():
                self.ensure_connected()
                self.temperature.medium.put(self.plate.temperature())
                self.temperature.plate.put(self.plate.plate_temperature())
                self.stirrer.speed.put(self.plate.speed())
        except Exception as exc:
            status.set_exception(exc)
        else:
            status.set_finished()
        return status

    def stop(self, *, success: bool = False) -> None:
        self.temperature.stop(success=success)
        self.stirrer.stop(success=success)

    # -- the device contract -------------------------------------------------------------------
    def _actions(self) -> list[BackgroundAction]:
        return [self.temperature.action, self.stirrer.action]

    def _open(self) -> None:
        if not self.plate.transport.is_open:
            self.plate.retry.run(self.plate.transport.open, events=self.fault_events, what="opening the port")

    def _connect(self) -> None:
        self._open()
        self.plate.configure()
        if self.watchdog_s is not None:
            self.plate.arm_watchdog(self.watchdog_s)

    def _disconnect(self) -> None:
        self.plate.close()

    def _make_safe(self) -> None:
        self._open()
        self.plate.stop()

    def _recover(self) -> None:
        self._open()
        self.plate.recover()

    def _check_health(self) -> None:
        # A reading first: its reply names its channel, so a garbled one is caught (NAMUR has no
        # checksum; a garbled name could pass for another).
        self.plate.plate_temperature()
        self.plate.name()
        if self.watchdog_s is not None:
            self.plate.arm_watchdog(self.watchdog_s)  # also the keep-alive the watchdog wants


__all__ = ["IkaPlate", "StirrerControl", "TemperatureControl"]
