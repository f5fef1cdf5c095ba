"""Ocean Insight spectrometers over the Ocean Binary Protocol (network models such as the HDX).

``make_device`` is what a campaign's lab section names: ``drivers.ocean:make_device``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drivers.ocean.device import OceanSpectrometerDevice
from drivers.ocean.errors import (
    ChecksumError,
    CorruptedRequest,
    FrameError,
    HardwareException,
    MissingCalibration,
    Nack,
    NotReady,
    Saturated,
    TruncatedReply,
    UnexpectedReply,
)
from drivers.ocean.hdx import DEFAULT_TCP_PORT, HDX, Model, OceanSpectrometer

__all__ = [
    "DEFAULT_TCP_PORT",
    "HDX",
    "ChecksumError",
    "CorruptedRequest",
    "FrameError",
    "HardwareException",
    "MissingCalibration",
    "Model",
    "Nack",
    "NotReady",
    "OceanSpectrometer",
    "OceanSpectrometerDevice",
    "Saturated",
    "TruncatedReply",
    "UnexpectedReply",
    "make_device",
]

DEFAULT_INTEGRATION_TIME_US = 100_000

_OPTIONS = {
    "integration_time_us",
    "min_integration_time_us",
    "max_integration_time_us",
    "averages",
    "timeout",
    "correct_nonlinearity",
    "dark_with_lamp",
    "md5",
    "retries",
    "not_ready_wait_s",
    "baudrate",
}


def make_device(name: str, address: str | Mapping[str, str], **options: Any) -> OceanSpectrometerDevice:
    """An ophyd device for the spectrometer at ``address`` (a pyserial URL, or ``{"obp": URL}``).

    Options: ``integration_time_us`` (set at connect; default 100 ms within the limits),
    ``min_integration_time_us`` / ``max_integration_time_us`` (safety limits within the model's range),
    ``averages``, ``timeout`` (s),
    ``correct_nonlinearity``, ``dark_with_lamp``, ``md5``, ``retries``, ``not_ready_wait_s``, ``baudrate``.
    """
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_OPTIONS))}"
        )
    if isinstance(address, Mapping):
        if "obp" not in address:
            raise ValueError(f"{name}: address needs the 'obp' endpoint, got {sorted(address)}")
        address = address["obp"]
    integration_time = options.pop("integration_time_us", None)
    spectrometer = OceanSpectrometer.connect(address, **options)
    try:
        if integration_time is None:
            # The HDX cannot report its integration time: set a known one so the configuration is true.
            integration_time = min(
                max(DEFAULT_INTEGRATION_TIME_US, spectrometer.min_integration_time_us),
                spectrometer.max_integration_time_us,
            )
        spectrometer.set_integration_time_us(integration_time)
        return OceanSpectrometerDevice(spectrometer, name=name)
    except BaseException:
        spectrometer.close()
        raise
