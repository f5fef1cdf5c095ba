"""Tecan Cavro XCalibur / XLP / XP 3000 syringe pumps with a distribution valve (DT protocol).

``make_device`` is the factory a lab file names (``driver: drivers.cavro:make_device``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drivers.cavro.codec import ErrorCode, SpeedProfile
from drivers.cavro.device import CavroDevice
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
    Terminated,
    TruncatedReply,
    ValveOverload,
)
from drivers.cavro.xcalibur import CavroPump, PumpStatus, SyringeNotEmpty

_PUMP_OPTIONS = {
    "valve_port_count",
    "max_flow_ul_s",
    "min_flow_ul_s",
    "max_top_speed",
    "max_transfer_ul",
    "resolution",
    "waste",
    "retries",
    "poll_interval_s",
    "init_timeout_s",
}
_LINK_OPTIONS = {"baudrate", "timeout"}
_DEVICE_OPTIONS = {"aspirate_flow_ul_s"}


def make_device(
    name: str,
    address: str | Mapping[str, str],
    *,
    syringe_volume_ul: float = 1000.0,
    ports: Mapping[str, int] | None = None,
    source: str | int = "water",
    outlet: str | int = "outlet",
    flow_ul_s: float | None = None,
    pump_address: int | str = 1,
    **options: Any,
) -> CavroDevice:
    """A Movable pump: ``set(volume_ul)`` moves that volume from ``source`` to ``outlet``.

    ``address`` is the pyserial URL, or ``{"pump": URL}``. ``pump_address`` is the DT address
    (1 = address switch 0). ``ports`` maps labels to valve ports (default water=1, outlet=2,
    waste=3); a port labelled ``waste`` receives what initialisation pushes out of the syringe.
    Limits: ``max_flow_ul_s``, ``min_flow_ul_s``, ``max_top_speed`` (half-steps/s, ≤ 6000),
    ``max_transfer_ul``; others: ``valve_port_count`` (6), ``resolution`` (standard|fine|microstep),
    ``aspirate_flow_ul_s``, ``retries``, ``poll_interval_s``, ``init_timeout_s``, ``baudrate``,
    ``timeout`` (reply timeout, s). The pump is initialised on the first ``set``, not here.
    """
    url = address["pump"] if isinstance(address, Mapping) else address
    unknown = set(options) - _PUMP_OPTIONS - _LINK_OPTIONS - _DEVICE_OPTIONS
    if unknown:
        allowed = _PUMP_OPTIONS | _LINK_OPTIONS | _DEVICE_OPTIONS
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(sorted(unknown))}; allowed: syringe_volume_ul, ports, "
            f"source, outlet, flow_ul_s, pump_address, {', '.join(sorted(allowed))}"
        )
    ports = dict(ports if ports is not None else {"water": 1, "outlet": 2, "waste": 3})
    pump_options = {k: v for k, v in options.items() if k in _PUMP_OPTIONS}
    pump_options.setdefault("waste", "waste" if "waste" in ports else None)
    pump = CavroPump.connect(
        url,
        syringe_volume_ul=syringe_volume_ul,
        address=pump_address,
        ports=ports,
        **{k: v for k, v in options.items() if k in _LINK_OPTIONS},
        **pump_options,
    )
    try:
        return CavroDevice(
            name=name,
            pump=pump,
            source=source,
            outlet=outlet,
            flow_ul_s=flow_ul_s,
            **{k: v for k, v in options.items() if k in _DEVICE_OPTIONS},
        )
    except BaseException:
        pump.close()
        raise


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
    "NoReply",
    "NotInitialised",
    "PlungerMoveNotAllowed",
    "PlungerOverload",
    "PumpStatus",
    "SpeedProfile",
    "SyringeNotEmpty",
    "Terminated",
    "TruncatedReply",
    "ValveOverload",
    "make_device",
]
