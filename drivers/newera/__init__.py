"""New Era syringe pumps (NE-1000 family): codec, line and pump driver, ophyd face.

``make_device`` is the factory a lab file names (``driver: ne1000`` or ``drivers.newera:make_device``).
Importing this package, or its pure ``codec``, does not import ophyd: the ophyd face loads on
first use of ``make_device`` or the face's classes, so a simulator can share the codec without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, field_validator

from drivers.newera.codec import Dispensed, Firmware
from drivers.newera.errors import (
    CommandIgnored,
    CommandNotApplicable,
    GarbledReply,
    IncompleteDispense,
    MotorStall,
    NE1000Error,
    NoReply,
    OutOfRange,
    PacketRejected,
    PartialReply,
    PhaseOutOfRange,
    ProgramError,
    PumpAlarm,
    PumpCommandRejected,
    PumpReset,
    SafeModeTimeout,
    SyringeEmpty,
    UnrecognisedCommand,
)
from drivers.newera.line import DEFAULT_BAUDRATE, DEFAULT_REPLY_TIMEOUT, NE1000Line
from drivers.newera.ne1000 import Move, NE1000Pump, PumpStatus
from drivers.options import STRICT, min_reply_timeout, validate_options
from drivers.transport import Transport

if TYPE_CHECKING:
    from drivers.newera.device import NE1000Channel, NE1000Pumps

_FACE = ("NE1000Channel", "NE1000Pumps")


def __getattr__(name: str) -> Any:
    # The ophyd face on demand (PEP 562), so `import drivers.newera.codec` stays free of ophyd.
    if name in _FACE:
        return getattr(importlib.import_module("drivers.newera.device"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Positive = Annotated[float, Field(gt=0)]


class PumpOptions(BaseModel):
    """One pump on the line (``pumps.<label>``)."""

    model_config = STRICT

    address: int = Field(ge=0, le=99, description="network address 0–99 (the pump's ADR setting)")
    diameter_mm: Positive = Field(description="syringe inner diameter; bounds the rates the pump allows")
    syringe_volume_ul: Positive
    max_rate_ul_min: Positive = Field(
        description="cap on the rate, within the model's limit for the diameter"
    )
    rate_ul_min: Positive = Field(description="the rate set() dispenses at")
    min_rate_ul_min: float = Field(0.0, ge=0)
    max_volume_ul: Positive | None = Field(None, description="cap on one move (default: the syringe volume)")
    model: str = Field("NE1000", description="NE300, NE500, NE1000, NE4000 or NE9000")
    empty_margin_ul: float | None = Field(
        None,
        ge=0,
        description="a stall with at most this left by the count is an empty syringe "
        "(default: 1 % of the syringe volume)",
    )


class Options(BaseModel):
    """``make_device`` options of a line of New Era pumps."""

    model_config = STRICT

    pumps: dict[str, PumpOptions] = Field(min_length=1, description="label -> pump; labels become attributes")
    baudrate: int = Field(DEFAULT_BAUDRATE, gt=0)
    timeout: Positive | None = Field(None, description="transport timeout, s (opening the port)")
    reply_timeout: Positive = Field(
        DEFAULT_REPLY_TIMEOUT, description="s to wait for one reply at most (less once the line is known)"
    )
    min_reply_timeout: Positive = min_reply_timeout()
    retries: int = Field(4, ge=0, description="resends of a repeatable command after a link fault")
    poll_s: Positive = Field(0.05, description="first status poll interval while a move runs")
    stall_retries: int = Field(1, ge=0, description="times the remainder of a stalled move is run again")
    move_timeout_s: Positive | None = Field(
        None, description="cap on one move (default: from volume and rate)"
    )

    @field_validator("pumps")
    @classmethod
    def _labels_are_identifiers(cls, pumps: dict[str, PumpOptions]) -> dict[str, PumpOptions]:
        for label in pumps:
            if not label.isidentifier() or label.startswith("_"):
                raise ValueError(
                    f"pump label {label!r} must be a Python identifier (it becomes an attribute)"
                )
        return pumps


def make_device(name: str, address: str | Mapping[str, str], **options: Any) -> NE1000Pumps:
    """An ophyd Device with one Movable child per entry of ``pumps`` (label -> pump options); no I/O.

    ``address`` is the line's pyserial URL, or ``{"pump": URL}``. ``connect()`` opens the line,
    acknowledges each pump's power-up alarm and sets its syringe diameter (skipped when it is set).
    """
    from drivers.newera.device import make_pumps

    checked = validate_options(Options, options, instrument=name)
    url = address["pump"] if isinstance(address, Mapping) else address
    transport = Transport(
        url,
        baudrate=checked.baudrate,
        min_reply_timeout=checked.min_reply_timeout,
        **({"timeout": checked.timeout} if checked.timeout else {}),
    )
    line = NE1000Line(transport, retries=checked.retries, reply_timeout=checked.reply_timeout)
    pumps = {label: pump.model_dump(exclude_none=True) for label, pump in checked.pumps.items()}
    return make_pumps(
        name,
        line,
        pumps,
        poll_s=checked.poll_s,
        move_timeout_s=checked.move_timeout_s,
        stall_retries=checked.stall_retries,
    )


__all__ = [
    "DEFAULT_BAUDRATE",
    "CommandIgnored",
    "CommandNotApplicable",
    "Dispensed",
    "Firmware",
    "GarbledReply",
    "IncompleteDispense",
    "MotorStall",
    "Move",
    "NE1000Channel",
    "NE1000Error",
    "NE1000Line",
    "NE1000Pump",
    "NE1000Pumps",
    "NoReply",
    "Options",
    "OutOfRange",
    "PacketRejected",
    "PartialReply",
    "PhaseOutOfRange",
    "ProgramError",
    "PumpAlarm",
    "PumpCommandRejected",
    "PumpOptions",
    "PumpReset",
    "PumpStatus",
    "SafeModeTimeout",
    "SyringeEmpty",
    "UnrecognisedCommand",
    "make_device",
]
