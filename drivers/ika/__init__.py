"""IKA hotplate stirrers (RCT digital, C-MAG HS, RET control-visc) over RS-232, NAMUR commands.

``make_device`` is the factory a lab file names (``driver: ika-rct`` or ``drivers.ika:make_device``).
Importing this package, or its pure ``codec``, does not import ophyd: the ophyd face loads on
first use, so a simulator can share the codec without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from drivers.ika import codec
from drivers.ika.errors import (
    GarbledReply,
    HeaterNotHeating,
    HotplateStopped,
    IkaError,
    NoReply,
    SetpointRejected,
    SettingsLost,
    StirringStopped,
    TemperatureNotReached,
)
from drivers.ika.hotplate import DEFAULT_REPLY_TIMEOUT, HEATER_GRACE_S, SAFETY_MARGIN_K, IkaHotplate
from drivers.options import STRICT, min_reply_timeout, validate_options
from drivers.retry import RetryPolicy
from drivers.transport import Transport

if TYPE_CHECKING:
    from drivers.ika.device import IkaPlate, StirrerControl, TemperatureControl

_FACE = ("IkaPlate", "StirrerControl", "TemperatureControl")


def __getattr__(name: str) -> Any:
    # The ophyd face on demand (PEP 562), so `import drivers.ika.codec` stays free of ophyd.
    if name in _FACE:
        return getattr(importlib.import_module("drivers.ika.device"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Options(BaseModel):
    """``make_device`` options of an IKA hotplate stirrer."""

    model_config = STRICT

    max_temperature_c: float = Field(
        150.0, gt=0, le=codec.MAX_TEMPERATURE_C, description="safety limit on the set point (°C)"
    )
    max_speed_rpm: float = Field(codec.MAX_SPEED_RPM, gt=0, le=codec.MAX_SPEED_RPM)
    min_speed_rpm: float = Field(0.0, ge=0, description="lowest speed set() accepts, besides 0 (stop)")
    tolerance_k: float = Field(1.0, gt=0, description="the medium holds its set point within this")
    readings_in_band: int = Field(3, ge=1, description="readings in a row within tolerance to count as held")
    heat_timeout_s: float = Field(3600.0, gt=0, description="give up heating after this")
    stir_timeout_s: float = Field(60.0, gt=0)
    poll_s: float = Field(0.05, gt=0, description="first poll interval while heating or spinning up")
    recoveries: int = Field(1, ge=0, description="times a heater found off is reset and started again")
    heater_grace_s: float = Field(
        HEATER_GRACE_S, ge=0, description="s a (re)started heater has to warm the plate above the medium"
    )
    watchdog_s: int | None = Field(
        None, ge=codec.WATCHDOG_RANGE_S[0], le=codec.WATCHDOG_RANGE_S[1],
        description="arm watchdog mode 1 on connect (heater and motor off if the host falls silent)",
    )  # fmt: skip
    reply_timeout: float = Field(
        DEFAULT_REPLY_TIMEOUT,
        gt=0,
        description="s to wait for one reply at most (less once the line is known)",
    )
    min_reply_timeout: float = min_reply_timeout()
    retries: int = Field(3, ge=0, description="resends of a query or setting after a link fault")
    timeout: float = Field(1.0, gt=0, description="transport timeout, s (opening the port)")


def make_device(name: str, address: str | Mapping[str, str], **options: Any) -> IkaPlate:
    """An ophyd device for the hotplate at ``address`` (a pyserial URL, or ``{"serial": URL}``); no I/O."""
    from drivers.ika.device import IkaPlate

    checked = validate_options(Options, options, instrument=name)
    url = address["serial"] if isinstance(address, Mapping) else address
    transport = Transport(url, baudrate=codec.BAUDRATE, timeout=checked.timeout, bytesize=codec.BYTESIZE,
                          parity=codec.PARITY, stopbits=codec.STOPBITS,
                          min_reply_timeout=checked.min_reply_timeout)  # fmt: skip
    plate = IkaHotplate(
        transport,
        max_temperature_c=checked.max_temperature_c,
        max_speed_rpm=checked.max_speed_rpm,
        min_speed_rpm=checked.min_speed_rpm,
        reply_timeout=checked.reply_timeout,
        retry=RetryPolicy(attempts=1 + checked.retries, deadline_s=max(5.0, 4 * checked.reply_timeout)),
    )
    heat = {
        "tolerance_k": checked.tolerance_k,
        "readings_in_band": checked.readings_in_band,
        "timeout": checked.heat_timeout_s,
        "poll_s": checked.poll_s,
        "recoveries": checked.recoveries,
        "heater_grace_s": checked.heater_grace_s,
    }
    stir = {"timeout": checked.stir_timeout_s, "poll_s": checked.poll_s}
    return IkaPlate(
        name=name, plate=plate, heat_options=heat, stir_options=stir, watchdog_s=checked.watchdog_s
    )


__all__ = [
    "SAFETY_MARGIN_K",
    "GarbledReply",
    "HeaterNotHeating",
    "HotplateStopped",
    "IkaError",
    "IkaHotplate",
    "IkaPlate",
    "NoReply",
    "Options",
    "SetpointRejected",
    "SettingsLost",
    "StirrerControl",
    "StirringStopped",
    "TemperatureControl",
    "TemperatureNotReached",
    "make_device",
]
