"""Exceptions every driver raises, so callers can handle instruments generically.

A driver raises the most specific subclass it can; instrument families add their own
subclasses (an NE-1000 motor stall is an ``InstrumentAlarm``) so that code which only knows
this module still does the right thing.

Every class carries a ``fault`` kind (docs/decisions/0003-device-lifecycle-and-faults.md): the
core tells an instrument fault from a recipe the instrument refused by it alone, without
knowing any driver. An error also names its ``instrument`` once the device that raised it is
known (the ophyd face sets it with :func:`name_instrument`); its message then starts with that name.
"""

from __future__ import annotations

from enum import StrEnum


class FaultKind(StrEnum):
    """Why an instrument could not do what it was asked (decision 0003)."""

    LINK_LOST = "link_lost"
    TIMEOUT = "timeout"
    GARBLED = "garbled"
    ALARM = "alarm"
    PROTECTIVE_STOP = "protective_stop"
    LIMIT_REFUSED = "limit_refused"
    BUSY = "busy"
    REJECTED = "rejected"
    NOT_READY = "not_ready"
    UNRECOVERABLE = "unrecoverable"
    #: Not a fault: the operation was stopped on request (an abort, an e-stop, ``make_safe()``).
    STOPPED = "stopped"
    #: A consumable ran out (a syringe, a reservoir, a vial feeder): a person must refill it. Not a
    #: failure of the instrument, nor of the recipe (decision 0005).
    EMPTY = "empty"


class InstrumentError(Exception):
    """Base class of everything a driver raises about its instrument."""

    fault: FaultKind = FaultKind.UNRECOVERABLE
    #: The device name, once known; ``str(error)`` then starts with it.
    instrument: str | None = None


class SafetyLimitError(InstrumentError, ValueError):
    """A request outside the configured safety limits. Nothing was sent to the instrument."""

    fault = FaultKind.LIMIT_REFUSED


class InstrumentTimeout(InstrumentError, TimeoutError):
    """The instrument did not answer (or did not finish) within the allowed time."""

    fault = FaultKind.TIMEOUT


class ConnectionLost(InstrumentError, ConnectionError):
    """The link to the instrument dropped; reconnecting may recover."""

    fault = FaultKind.LINK_LOST


class ProtocolError(InstrumentError):
    """A reply that does not follow the protocol: garbled, truncated, unexpected bytes or values."""

    fault = FaultKind.GARBLED


class ReplyCutShort(ProtocolError):
    """A reply began but did not end in time: part of it was lost on the way (not a silent instrument)."""


class CommandRejected(InstrumentError):
    """The instrument understood the frame but refused the command (bad operand, wrong state)."""

    fault = FaultKind.REJECTED


class InstrumentAlarm(InstrumentError):
    """The instrument reports an alarm or fault condition that must be acknowledged or cleared."""

    fault = FaultKind.ALARM


class InstrumentBusy(InstrumentError):
    """The instrument is busy and cannot take this command now."""

    fault = FaultKind.BUSY


class InstrumentNotReady(InstrumentBusy):
    """The instrument says it is not ready yet (warming up, finishing an acquisition); ask again later."""

    fault = FaultKind.NOT_READY


class Stopped(InstrumentError):
    """An operation ended early because someone stopped it (``stop()``, ``make_safe()``, an abort).

    Nothing moves after it; the next operation starts afresh (``drivers.halt``). Its kind, ``stopped``, is
    no fault: whatever it cut short was interrupted, and the instrument is not to blame.
    """

    fault = FaultKind.STOPPED


class Empty(InstrumentError):
    """A consumable the instrument draws from has run out, by the amount its driver tracks.

    Raised instead of the instrument's own symptom (a syringe pump's motor stall at the end of travel)
    when the driver's tracked amount says the syringe, reservoir or feeder is used up, and before an
    action that would need more than is left (nothing moved then). ``consumable`` is the name
    ``device.contents()`` lists it under; ``remaining`` and ``needed`` are in ``unit`` ("uL" or
    "vials"); ``needed`` is None when the instrument ran out part-way.
    """

    fault = FaultKind.EMPTY

    def __init__(
        self,
        message: str,
        *,
        consumable: str = "",
        remaining: float | None = None,
        needed: float | None = None,
        unit: str = "uL",
    ) -> None:
        super().__init__(message)
        self.consumable = consumable
        self.remaining = remaining
        self.needed = needed
        self.unit = unit


class Unrecoverable(InstrumentError):
    """A recovery procedure ran and could not bring the instrument back; an operator must look."""

    fault = FaultKind.UNRECOVERABLE


def name_instrument(error: BaseException, instrument: str) -> BaseException:
    """Tag ``error`` with the device that raised it, so its message starts with the device name.

    Idempotent; returns ``error``. Non-driver exceptions are left alone.
    """
    if not isinstance(error, InstrumentError) or not instrument:
        return error
    if error.instrument is None:
        error.instrument = instrument
    message = str(error.args[0]) if error.args else type(error).__name__
    if not message.startswith(f"{instrument}:") and not message.startswith(f"{instrument} "):
        error.args = (f"{instrument}: {message}", *error.args[1:])
    return error


__all__ = [
    "CommandRejected",
    "ConnectionLost",
    "Empty",
    "FaultKind",
    "InstrumentAlarm",
    "InstrumentBusy",
    "InstrumentError",
    "InstrumentNotReady",
    "InstrumentTimeout",
    "ProtocolError",
    "ReplyCutShort",
    "SafetyLimitError",
    "Stopped",
    "Unrecoverable",
    "name_instrument",
]
