"""Typed errors of Cavro syringe pumps, each a subclass of the generic driver errors.

Every pump error code has its own class (``PlungerOverload`` is an ``InstrumentAlarm`` with
``code == 9``), so a plan can catch exactly what it can handle; ``error_for(code)`` builds one.
"""

from __future__ import annotations

from drivers.cavro.codec import ErrorCode, error_text
from drivers.errors import (
    CommandRejected,
    Empty,
    InstrumentAlarm,
    InstrumentBusy,
    InstrumentError,
    InstrumentTimeout,
    ProtocolError,
    ReplyCutShort,
    Stopped,
)

__all__ = [
    "CavroError",
    "CommandOverflow",
    "EepromFailure",
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
    "ReservoirEmpty",
    "Terminated",
    "TruncatedReply",
    "ValveOverload",
    "error_for",
]


class CavroError(InstrumentError):
    """The pump reported error ``code`` in its status byte."""

    code: int = -1
    #: True when the pump refuses further moves until it is initialised again.
    needs_initialisation: bool = False

    def __init__(self, message: str, *, command: str = ""):
        super().__init__(message)
        self.command = command


class InitFailure(CavroError, InstrumentAlarm):
    """Error 1: initialisation failed (blocked plunger or valve); initialise again."""

    code = ErrorCode.INIT_FAILURE
    needs_initialisation = True


class InvalidCommand(CavroError, CommandRejected):
    """Error 2: the pump did not understand the command string; nothing of it ran."""

    code = ErrorCode.INVALID_COMMAND


class InvalidOperand(CavroError, CommandRejected):
    """Error 3: an operand out of range; the pump ran the string up to that command."""

    code = ErrorCode.INVALID_OPERAND


class InvalidSequence(CavroError, CommandRejected):
    """Error 4: commands in an order the pump does not accept (a loop without its end...)."""

    code = ErrorCode.INVALID_SEQUENCE


class FluidDetected(CavroError, InstrumentAlarm):
    """Error 5: the optional fluid sensor tripped."""

    code = ErrorCode.FLUID_DETECTION


class EepromFailure(CavroError, InstrumentAlarm):
    """Error 6: the pump's EEPROM failed; service needed."""

    code = ErrorCode.EEPROM_FAILURE


class NotInitialised(CavroError, CommandRejected):
    """Error 7: a move before a successful initialisation (Z/Y/W)."""

    code = ErrorCode.NOT_INITIALISED
    needs_initialisation = True


class PlungerOverload(CavroError, InstrumentAlarm):
    """Error 9: the plunger stalled; its position is lost until the pump is initialised again."""

    code = ErrorCode.PLUNGER_OVERLOAD
    needs_initialisation = True


class ValveOverload(CavroError, InstrumentAlarm):
    """Error 10: the valve stalled; initialise again before any move."""

    code = ErrorCode.VALVE_OVERLOAD
    needs_initialisation = True


class PlungerMoveNotAllowed(CavroError, CommandRejected):
    """Error 11: a plunger move with the valve where no port is open (bypass)."""

    code = ErrorCode.PLUNGER_MOVE_NOT_ALLOWED


class CommandOverflow(CavroError, InstrumentBusy):
    """Error 15: a move, set or valve command arrived while the pump was busy; it was ignored."""

    code = ErrorCode.COMMAND_OVERFLOW


_BY_CODE: dict[int, type[CavroError]] = {
    cls.code: cls
    for cls in (
        InitFailure,
        InvalidCommand,
        InvalidOperand,
        InvalidSequence,
        FluidDetected,
        EepromFailure,
        NotInitialised,
        PlungerOverload,
        ValveOverload,
        PlungerMoveNotAllowed,
        CommandOverflow,
    )
}


def error_for(code: int, *, command: str = "", address: str = "") -> CavroError:
    """The exception for pump error ``code`` after ``command`` (an undocumented code gets CavroError)."""
    cls = _BY_CODE.get(code, CavroError)
    where = f"pump {address}: " if address else ""
    after = f" after {command!r}" if command else ""
    error = cls(f"{where}error {code} ({error_text(code)}){after}", command=command)
    if cls is CavroError:
        error.code = code
    return error


class GarbledReply(ProtocolError):
    """A reply that arrived whole but does not parse (a corrupted byte)."""


class TruncatedReply(ReplyCutShort):
    """A reply that started but never reached its ETX CR LF."""


class NoReply(InstrumentTimeout):
    """Nothing came back within the timeout."""


class Terminated(Stopped):
    """The move was stopped on request (``terminate()``) before it finished."""


class ReservoirEmpty(Empty):
    """The reservoir a transfer draws from holds less than it needs, by the volume the driver tracks
    (``set_reservoir``): refused before anything moved. Without the check the pump would draw air
    (the XCalibur has no sensor that says so) and deliver less liquid than its plunger moved."""
