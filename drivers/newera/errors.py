"""Typed errors for the New Era pumps, each a subclass of the generic ``drivers.errors`` family.

The pump reports alarms (``A?R``, ``A?S``...) in place of the status character and command errors
(``?``, ``?NA``, ``?OOR``...) after it; each maps to one class here, so callers can catch a motor
stall specifically or any ``InstrumentAlarm`` generically.
"""

from __future__ import annotations

from drivers.errors import (
    CommandRejected,
    Empty,
    InstrumentAlarm,
    InstrumentError,
    InstrumentTimeout,
    ProtocolError,
    ReplyCutShort,
)


class NE1000Error(InstrumentError):
    """Base of the errors that name a pump: ``address`` is its network address (None if unknown)."""

    def __init__(self, message: str, *, address: int | None = None, command: str = ""):
        super().__init__(message)
        self.address = address
        self.command = command


class PumpAlarm(NE1000Error, InstrumentAlarm):
    """The reply carried an alarm; sending it acknowledged (cleared) the alarm on the pump."""

    code = ""


class PumpReset(PumpAlarm):
    """``A?R``: the pump power-cycled. Motion stopped; settings may have reverted: configure again."""

    code = "R"


class MotorStall(PumpAlarm):
    """``A?S``: the motor stalled (blocked line, plunger at the end of travel)."""

    code = "S"


class SafeModeTimeout(PumpAlarm):
    """``A?T``: no valid safe-mode packet within the timeout; the pump stopped."""

    code = "T"


class ProgramError(PumpAlarm):
    """``A?E``: pumping program error."""

    code = "E"


class PhaseOutOfRange(PumpAlarm):
    """``A?O``: pumping program phase out of range."""

    code = "O"


ALARMS: dict[str, type[PumpAlarm]] = {
    cls.code: cls for cls in (PumpReset, MotorStall, SafeModeTimeout, ProgramError, PhaseOutOfRange)
}


class PumpCommandRejected(NE1000Error, CommandRejected):
    """The pump answered with a command error."""

    code = ""


class UnrecognisedCommand(PumpCommandRejected):
    """``?``: the pump does not know the command."""

    code = ""


class CommandNotApplicable(PumpCommandRejected):
    """``?NA``: not possible now (e.g. changing rate units or the diameter while pumping)."""

    code = "NA"


class OutOfRange(PumpCommandRejected):
    """``?OOR``: the value is outside what the pump accepts (e.g. a rate beyond the syringe's limits)."""

    code = "OOR"


class CommandIgnored(PumpCommandRejected):
    """``?IGN``: ignored because a new program phase started at the same moment."""

    code = "IGN"


class PacketRejected(NE1000Error, ProtocolError):
    """``?COM``: the pump received a corrupted packet (safe mode). Sending it again is safe."""

    code = "COM"


COMMAND_ERRORS: dict[str, type[NE1000Error]] = {
    cls.code: cls
    for cls in (UnrecognisedCommand, CommandNotApplicable, OutOfRange, CommandIgnored, PacketRejected)
}


class GarbledReply(NE1000Error, ProtocolError):
    """A reply that does not parse (corrupted byte, bad CRC) or comes from another address."""


class PartialReply(NE1000Error, ReplyCutShort):
    """Part of a reply arrived, then nothing: the rest was lost on the line."""


class NoReply(NE1000Error, InstrumentTimeout):
    """No reply at all within the timeout (pump off, wrong address, wrong baud rate or framing)."""


class IncompleteDispense(NE1000Error):
    """The pump stopped before delivering the requested volume without reporting an alarm.

    Seen when the alarm reply itself was lost on the line (the pump counts an alarm as acknowledged
    once it has sent it), or when someone stopped the pump from its keypad.
    """

    def __init__(self, message: str, *, address: int | None = None, delivered_ul: float = 0.0):
        super().__init__(message, address=address)
        self.delivered_ul = delivered_ul


class SyringeEmpty(NE1000Error, Empty):
    """The syringe is used up by the volume the driver tracks (``set_contents``).

    Raised when a stall (``A?S``) ends an infusion with the tracked content within the pump's empty
    margin — the plunger reached the end of its travel — and before an infusion that needs more than
    is tracked, when nothing is sent. A stall with content left is a ``MotorStall``.
    """

    def __init__(
        self,
        message: str,
        *,
        address: int | None = None,
        consumable: str = "",
        remaining: float | None = None,
        needed: float | None = None,
    ):
        super().__init__(message, address=address)
        self.consumable = consumable
        self.remaining = remaining
        self.needed = needed
        self.unit = "uL"
