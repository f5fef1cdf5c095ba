"""New Era syringe pumps (NE-1000 family): codec, line and pump driver, ophyd face.

``make_device`` is the factory a lab file names (``driver: drivers.newera:make_device``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drivers.newera.codec import Dispensed, Firmware
from drivers.newera.device import NE1000Channel, NE1000Pumps, make_pumps
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
    UnrecognisedCommand,
)
from drivers.newera.line import DEFAULT_BAUDRATE, NE1000Line
from drivers.newera.ne1000 import Move, NE1000Pump, PumpStatus
from drivers.transport import Transport

_LINE_OPTIONS = {"baudrate", "timeout", "retries", "reply_timeout"}
_DEVICE_OPTIONS = {"poll_s", "move_timeout_s"}


def make_device(
    name: str, address: str | Mapping[str, str], *, pumps: Mapping[str, Mapping[str, Any]], **options: Any
) -> NE1000Pumps:
    """An ophyd Device with one Movable child per entry of ``pumps`` (label -> pump options).

    ``address`` is the line's pyserial URL, or ``{"pump": URL}``. Pump options: ``address`` (0–99),
    ``diameter_mm``, ``syringe_volume_ul``, ``max_rate_ul_min``, ``rate_ul_min`` (used by ``set``),
    optional ``min_rate_ul_min``, ``max_volume_ul``, ``model``. Line options: ``baudrate`` (19200),
    ``reply_timeout`` (s), ``retries``; device options: ``poll_s``, ``move_timeout_s``.
    Connecting acknowledges each pump's power-up alarm and sets its syringe diameter.
    """
    url = address["pump"] if isinstance(address, Mapping) else address
    unknown = set(options) - _LINE_OPTIONS - _DEVICE_OPTIONS
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(sorted(unknown))}; "
            f"allowed: pumps, {', '.join(sorted(_LINE_OPTIONS | _DEVICE_OPTIONS))}"
        )
    line_options = {k: v for k, v in options.items() if k in _LINE_OPTIONS}
    transport = Transport(
        url,
        baudrate=line_options.pop("baudrate", DEFAULT_BAUDRATE),
        **({"timeout": line_options.pop("timeout")} if "timeout" in line_options else {}),
    )
    # The line opens on first use, so bad pump options are refused before the port is touched.
    line = NE1000Line(transport, **line_options)
    device_options = {k: v for k, v in options.items() if k in _DEVICE_OPTIONS}
    device = make_pumps(name, line, {k: dict(v) for k, v in pumps.items()}, **device_options)
    try:
        device.configure_pumps()
    except BaseException:
        line.close()
        raise
    return device


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
    "OutOfRange",
    "PacketRejected",
    "PartialReply",
    "PhaseOutOfRange",
    "ProgramError",
    "PumpAlarm",
    "PumpCommandRejected",
    "PumpReset",
    "PumpStatus",
    "SafeModeTimeout",
    "UnrecognisedCommand",
    "make_device",
]
