"""Ocean Insight spectrometers over the Ocean Binary Protocol (network models such as the HDX).

``make_device`` is what a campaign's lab section names: ``driver: ocean-hdx`` or
``drivers.ocean:make_device``. Importing this package or its ``codec`` does not import ophyd.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field

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
from drivers.options import STRICT, min_reply_timeout, validate_options
from drivers.transport import Transport

if TYPE_CHECKING:
    from drivers.ocean.device import OceanSpectrometerDevice


def __getattr__(name: str) -> Any:
    # The ophyd face on demand (PEP 562), so `import drivers.ocean.codec` stays free of ophyd.
    if name == "OceanSpectrometerDevice":
        return importlib.import_module("drivers.ocean.device").OceanSpectrometerDevice
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "Options",
    "Saturated",
    "TruncatedReply",
    "UnexpectedReply",
    "make_device",
]

DEFAULT_INTEGRATION_TIME_US = 100_000
Microseconds = Annotated[int, Field(gt=0)]


class Options(BaseModel):
    """``make_device`` options of an Ocean OBP spectrometer (the HDX)."""

    model_config = STRICT

    integration_time_us: Microseconds | None = Field(
        None, description="set on connect; default 100 ms within the limits"
    )
    min_integration_time_us: Microseconds | None = Field(None, description="safety limit within the model's")
    max_integration_time_us: Microseconds | None = Field(None, description="safety limit within the model's")
    averages: int = Field(1, ge=1, le=1000)
    timeout: float = Field(
        1.0, gt=0, description="s to wait for a reply at most, plus the integration time (less once the "
        "link is known)",
    )  # fmt: skip
    min_reply_timeout: float = min_reply_timeout()
    correct_nonlinearity: bool = True
    dark_with_lamp: bool = Field(True, description="take darks by switching the lamp-enable line off")
    md5: bool = Field(True, description="MD5 checksums on requests (off for firmware without them)")
    retries: int = Field(4, ge=0, description="resends of a request after a link fault")
    not_ready_wait_s: float = Field(5.0, ge=0, description="how long 'not ready' is waited out")
    saturation_retries: int = Field(1, ge=0, description="retakes of a saturated scan (a lamp flare passes)")
    baudrate: int = Field(9600, gt=0, description="for OBP over a serial port")


def make_device(name: str, address: str | Mapping[str, str], **options: Any) -> OceanSpectrometerDevice:
    """An ophyd device for the spectrometer at ``address`` (a pyserial URL, or ``{"obp": URL}``); no I/O.

    ``connect()`` opens the link, sets the integration time and reads the wavelength calibration.
    """
    from drivers.ocean.device import OceanSpectrometerDevice

    checked = validate_options(Options, options, instrument=name)
    if isinstance(address, Mapping):
        if "obp" not in address:
            raise ValueError(f"{name}: address needs the 'obp' endpoint, got {sorted(address)}")
        address = address["obp"]
    spectrometer = OceanSpectrometer(
        Transport(
            address,
            timeout=checked.timeout,
            baudrate=checked.baudrate,
            min_reply_timeout=checked.min_reply_timeout,
        ),
        min_integration_time_us=checked.min_integration_time_us,
        max_integration_time_us=checked.max_integration_time_us,
        averages=checked.averages,
        correct_nonlinearity=checked.correct_nonlinearity,
        dark_with_lamp=checked.dark_with_lamp,
        md5=checked.md5,
        retries=checked.retries,
        not_ready_wait_s=checked.not_ready_wait_s,
        saturation_retries=checked.saturation_retries,
    )
    integration_time = checked.integration_time_us
    if integration_time is None:
        integration_time = min(
            max(DEFAULT_INTEGRATION_TIME_US, spectrometer.min_integration_time_us),
            spectrometer.max_integration_time_us,
        )
    spectrometer.check_integration_time_us(integration_time)  # refused offline, before any connection
    return OceanSpectrometerDevice(spectrometer, name=name, integration_time_us=integration_time)
