"""Tecan Cavro XCalibur / XLP / XP 3000 syringe pumps with a distribution valve (DT protocol).

``make_device`` is the factory a lab file names (``driver: cavro`` or ``drivers.cavro:make_device``).
Importing this package or its ``codec`` does not import ophyd (the face loads on demand).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field

from drivers.cavro.codec import ErrorCode, SpeedProfile
from drivers.cavro.errors import (
    CavroError,
    CommandOverflow,
    EepromFailure,
    FluidDetected,
    GarbledReply,
    InitFailure,
    InvalidCommand,
    InvalidOperand,
    InvalidSequence,
    NoReply,
    NotInitialised,
    PlungerMoveNotAllowed,
    PlungerOverload,
    ReservoirEmpty,
    Terminated,
    TruncatedReply,
    ValveOverload,
)
from drivers.cavro.xcalibur import CavroPump, Moved, PumpStatus, SyringeNotEmpty
from drivers.options import STRICT, min_reply_timeout, validate_options
from drivers.transport import Transport

if TYPE_CHECKING:
    from drivers.cavro.device import CavroDevice


def __getattr__(name: str) -> Any:
    # The ophyd face on demand (PEP 562), so `import drivers.cavro.codec` stays free of ophyd.
    if name == "CavroDevice":
        return importlib.import_module("drivers.cavro.device").CavroDevice
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Positive = Annotated[float, Field(gt=0)]
Port = int | str


class Options(BaseModel):
    """``make_device`` options of a Cavro pump with a distribution valve."""

    model_config = STRICT

    syringe_volume_ul: Positive = 1000.0
    ports: dict[str, Annotated[int, Field(ge=1, le=12)]] = Field(
        default_factory=lambda: {"water": 1, "outlet": 2, "waste": 3},
        description="label -> valve port; a port labelled 'waste' takes what initialisation pushes out",
    )
    source: Port = Field("water", description="port (label or number) set() draws from")
    outlet: Port = Field("outlet", description="port (label or number) set() delivers to")
    flow_ul_s: Positive | None = Field(None, description="flow of set() (default: max_flow_ul_s)")
    pump_address: int | str = Field(1, description="DT address: 1 = address switch 0")
    valve_port_count: int = Field(6, ge=2, le=12)
    max_flow_ul_s: Positive | None = None
    min_flow_ul_s: Positive | None = None
    max_top_speed: int = Field(6000, ge=5, le=6000, description="half-steps/s")
    max_transfer_ul: Positive | None = None
    resolution: Literal["standard", "fine", "microstep"] | int = "standard"
    waste: Port | None = None
    retries: int = Field(4, ge=0, description="resends of a repeatable command after a link fault")
    poll_interval_s: Positive = 0.02
    overload_retries: int = Field(
        1, ge=0, description="re-initialisations to absorb an overload before delivery"
    )
    init_timeout_s: Positive = 30.0
    aspirate_flow_ul_s: Positive | None = None
    baudrate: Literal[9600, 38400] = 9600
    timeout: Positive = Field(
        0.5, description="s to wait for one reply at most (less once the link is known)"
    )
    min_reply_timeout: Positive = min_reply_timeout()


def make_device(name: str, address: str | Mapping[str, str], **options: Any) -> CavroDevice:
    """A Movable pump: ``set(volume_ul)`` moves that volume from ``source`` to ``outlet``; no I/O.

    ``address`` is the pyserial URL, or ``{"pump": URL}``. ``connect()`` opens the link and asks
    the pump's status; the pump is initialised on the first ``set`` (or by ``recover()``), not here.
    """
    from drivers.cavro.device import CavroDevice

    checked = validate_options(Options, options, instrument=name)
    url = address["pump"] if isinstance(address, Mapping) else address
    ports = dict(checked.ports)
    waste = checked.waste if checked.waste is not None else ("waste" if "waste" in ports else None)
    pump = CavroPump(
        Transport(
            url,
            baudrate=checked.baudrate,
            timeout=checked.timeout,
            min_reply_timeout=checked.min_reply_timeout,
        ),
        syringe_volume_ul=checked.syringe_volume_ul,
        address=checked.pump_address,
        ports=ports,
        valve_port_count=checked.valve_port_count,
        max_flow_ul_s=checked.max_flow_ul_s,
        min_flow_ul_s=checked.min_flow_ul_s,
        max_top_speed=checked.max_top_speed,
        max_transfer_ul=checked.max_transfer_ul,
        resolution=checked.resolution,
        waste=waste,
        retries=checked.retries,
        poll_interval_s=checked.poll_interval_s,
        init_timeout_s=checked.init_timeout_s,
        overload_retries=checked.overload_retries,
    )
    return CavroDevice(
        name=name,
        pump=pump,
        source=checked.source,
        outlet=checked.outlet,
        flow_ul_s=checked.flow_ul_s,
        aspirate_flow_ul_s=checked.aspirate_flow_ul_s,
    )


__all__ = [
    "CavroDevice",
    "CavroError",
    "CavroPump",
    "CommandOverflow",
    "EepromFailure",
    "ErrorCode",
    "FluidDetected",
    "GarbledReply",
    "InitFailure",
    "InvalidCommand",
    "InvalidOperand",
    "InvalidSequence",
    "Moved",
    "NoReply",
    "NotInitialised",
    "Options",
    "PlungerMoveNotAllowed",
    "PlungerOverload",
    "PumpStatus",
    "ReservoirEmpty",
    "SpeedProfile",
    "SyringeNotEmpty",
    "Terminated",
    "TruncatedReply",
    "ValveOverload",
    "make_device",
]
