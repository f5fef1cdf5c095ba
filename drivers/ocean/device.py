"""The ophyd face of an Ocean spectrometer, for bluesky plans.

    yield from bps.mv(spec.mode, "dark")          # lamp off, measure the dark
    yield from bps.trigger(spec, wait=True)
    yield from bps.mv(spec.mode, "reference")     # blank in the holder
    yield from bps.trigger(spec, wait=True)
    yield from bps.trigger_and_read([spec])       # sample: event carries spec_absorbance, spec_counts

``mode`` goes back to "sample" after a dark or reference has been taken, so a plan cannot
overwrite its reference by forgetting to switch back. Wavelengths and integration time are
configuration (in the descriptor), not repeated in every event. ``stop()`` during an acquisition
sends OBP "abort acquisition" and starts no further scan; ``make_safe()`` turns the lamp off.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from drivers.ocean.errors import Saturated
from drivers.ocean.hdx import OceanSpectrometer
from drivers.ophyd_support import BackgroundAction, InstrumentDevice, UnitSignal
from drivers.ophyd_types import Component as Cpt
from drivers.ophyd_types import DeviceStatus, Signal

log = logging.getLogger(__name__)

MODES = ("sample", "dark", "reference")


class ArraySignal(UnitSignal):
    """A soft signal holding a 1-D float spectrum; describes its shape and numpy dtype."""

    def describe(self) -> dict[str, dict[str, Any]]:
        description = super().describe()
        value = np.asarray(self.get())
        description[self.name].update(dtype="array", shape=list(value.shape), dtype_numpy=value.dtype.str)
        return description


class IntegrationTimeSignal(UnitSignal):
    """Integration time in µs; putting a value sends it (limits are checked before sending)."""

    def put(self, value: Any, **kwargs: Any) -> None:
        self.parent.spectrometer.set_integration_time_us(value)
        super().put(int(value), **kwargs)


class AveragesSignal(Signal):
    def put(self, value: Any, **kwargs: Any) -> None:
        self.parent.spectrometer.set_averages(value)
        super().put(int(value), **kwargs)


class ModeSignal(Signal):
    """What the next trigger measures: "sample", "dark" or "reference"."""

    def put(self, value: Any, **kwargs: Any) -> None:
        if value not in MODES:
            raise ValueError(f"{self.name}: mode must be one of {', '.join(MODES)}, not {value!r}")
        super().put(value, **kwargs)


class OceanSpectrometerDevice(InstrumentDevice):
    absorbance = Cpt(ArraySignal, value=np.zeros(0), kind="hinted", metadata={"units": "AU"})
    counts = Cpt(ArraySignal, value=np.zeros(0), kind="normal", metadata={"units": "counts"})
    mode = Cpt(ModeSignal, value="sample", kind="config")
    integration_time = Cpt(IntegrationTimeSignal, value=0, kind="config", metadata={"units": "us"})
    averages = Cpt(AveragesSignal, value=1, kind="config")
    wavelengths = Cpt(ArraySignal, value=np.zeros(0), kind="config", metadata={"units": "nm"})

    def __init__(
        self, spectrometer: OceanSpectrometer, *, name: str, integration_time_us: int, **kwargs: Any
    ):
        self.spectrometer = spectrometer
        super().__init__(name=name, **kwargs)
        spectrometer.events = self.fault_events
        pixels = spectrometer.model.pixels
        self.absorbance.put(np.full(pixels, np.nan))
        self.counts.put(np.zeros(pixels))
        self.wavelengths.put(np.full(pixels, np.nan))  # read from the instrument on connect()
        Signal.put(self.averages, spectrometer.averages)
        Signal.put(self.integration_time, integration_time_us)
        self._action = BackgroundAction(name)
        self._saturated = False

    def trigger(self) -> DeviceStatus:
        mode = self.mode.get()

        def acquire(halt: threading.Event) -> None:
            self.ensure_connected()
            with self.spectrometer.halt.operation(halt):
                if self.spectrometer.lamp is False and mode != "dark":
                    self.spectrometer.set_lamp(True)  # make_safe() turned it off
                try:
                    self._acquire(mode)
                except Saturated:
                    self._saturated = True
                    raise

        return self._action.run(self, acquire, f"acquire ({mode})")

    def _acquire(self, mode: str) -> None:
        if mode == "dark":
            counts = self.spectrometer.acquire_dark()
            absorbance = np.full(counts.shape, np.nan)
        elif mode == "reference":
            counts = self.spectrometer.acquire_reference()
            absorbance = np.full(counts.shape, np.nan)
        else:
            counts = self.spectrometer.spectrum()
            absorbance = self.spectrometer.absorbance(counts)
        self.counts.put(counts)
        self.absorbance.put(absorbance)
        if mode != "sample":
            self.mode.put("sample")

    def stop(self, *, success: bool = False) -> None:
        if not (self._action.busy or self.spectrometer.halt.active):
            return  # nothing moves and nothing is being acquired
        self._action.stop("the acquisition")
        self.spectrometer.abort()

    # -- the device contract -----------------------------------------------------------------
    def _actions(self) -> list[BackgroundAction]:
        return [self._action]

    def _open(self) -> None:
        if not self.spectrometer.transport.is_open:
            self.spectrometer.retry.run(
                self.spectrometer.transport.open, events=self.fault_events, what="opening the link"
            )

    def _connect(self) -> None:
        self._open()
        wanted = int(self.integration_time.get())
        # The HDX cannot report its integration time: set it, so the configuration is true.
        self.spectrometer.set_integration_time_us(wanted)
        self.wavelengths.put(self.spectrometer.wavelengths())  # read once, then cached

    def _disconnect(self) -> None:
        self.spectrometer.close()

    def _make_safe(self) -> None:
        self._open()
        self.spectrometer.abort()
        self.spectrometer.set_lamp(False)

    def _recover(self) -> None:
        self._open()
        self.spectrometer.recover()  # a fresh link, the settings applied again
        if self._saturated:
            shorter = self.spectrometer.shorten_integration()
            Signal.put(self.integration_time, shorter)
            self._saturated = False
        self.spectrometer.set_lamp(True)

    def identity(self) -> dict[str, Any]:
        """Serial number and USB product id over OBP; the model is the one the driver was built for."""
        with self._named():
            self.ensure_connected()
            return {
                "model": self.spectrometer.model.name,
                "serial": self.spectrometer.serial_number(),
                "product_id": f"0x{self.spectrometer.product_id():04X}",
                "firmware": None,  # OBP's firmware query (0x00000090) is not among the HDX's served messages
            }

    def _check_health(self) -> None:
        self.spectrometer.product_id()
        self.spectrometer.raw_spectrum()
