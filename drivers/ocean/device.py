"""The ophyd face of an Ocean spectrometer, for bluesky plans.

    yield from bps.mv(spec.mode, "dark")          # lamp off, measure the dark
    yield from bps.trigger(spec, wait=True)
    yield from bps.mv(spec.mode, "reference")     # blank in the holder
    yield from bps.trigger(spec, wait=True)
    yield from bps.trigger_and_read([spec])       # sample: event carries spec_absorbance, spec_counts

``mode`` goes back to "sample" after a dark or reference has been taken, so a plan cannot
overwrite its reference by forgetting to switch back. Wavelengths and integration time are
configuration (in the descriptor), not repeated in every event.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import DeviceStatus

from drivers.ocean.hdx import OceanSpectrometer
from drivers.ophyd_support import BackgroundAction

log = logging.getLogger(__name__)

MODES = ("sample", "dark", "reference")


class ArraySignal(Signal):
    """A soft signal holding a 1-D float spectrum; describes its shape and numpy dtype."""

    def describe(self) -> dict[str, dict[str, Any]]:
        description = super().describe()
        value = np.asarray(self.get())
        description[self.name].update(dtype="array", shape=list(value.shape), dtype_numpy=value.dtype.str)
        return description


class IntegrationTimeSignal(Signal):
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


class OceanSpectrometerDevice(Device):
    absorbance = Cpt(ArraySignal, value=np.zeros(0), kind="hinted")
    counts = Cpt(ArraySignal, value=np.zeros(0), kind="normal")
    mode = Cpt(ModeSignal, value="sample", kind="config")
    integration_time = Cpt(IntegrationTimeSignal, value=0, kind="config")
    averages = Cpt(AveragesSignal, value=1, kind="config")
    wavelengths = Cpt(ArraySignal, value=np.zeros(0), kind="config")

    def __init__(self, spectrometer: OceanSpectrometer, *, name: str, **kwargs: Any):
        self.spectrometer = spectrometer
        super().__init__(name=name, **kwargs)
        pixels = spectrometer.model.pixels
        self.absorbance.put(np.full(pixels, np.nan))
        self.counts.put(np.zeros(pixels))
        self.wavelengths.put(spectrometer.wavelengths())
        Signal.put(self.averages, spectrometer.averages)
        if spectrometer.integration_time_us is not None:
            Signal.put(self.integration_time, spectrometer.integration_time_us)
        self._action = BackgroundAction()

    def trigger(self) -> DeviceStatus:
        mode = self.mode.get()

        def acquire() -> None:
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

        return self._action.run(self, acquire, f"acquire ({mode})")

    def stop(self, *, success: bool = False) -> None:
        # An acquisition cannot be aborted over OBP; it ends by itself within the integration time.
        pass

    def destroy(self) -> None:
        self.spectrometer.close()
        super().destroy()
