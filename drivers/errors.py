"""Exceptions every driver raises, so callers can handle instruments generically.

A driver raises the most specific subclass it can; instrument families add their own
subclasses (an NE-1000 motor stall is an ``InstrumentAlarm``) so that code which only knows
this module still does the right thing.
"""

from __future__ import annotations


class InstrumentError(Exception):
    """Base class of everything a driver raises about its instrument."""


class SafetyLimitError(InstrumentError, ValueError):
    """A request outside the configured safety limits. Nothing was sent to the instrument."""


class InstrumentTimeout(InstrumentError, TimeoutError):
    """The instrument did not answer (or did not finish) within the allowed time."""


class ConnectionLost(InstrumentError, ConnectionError):
    """The link to the instrument dropped; reconnecting may recover."""


class ProtocolError(InstrumentError):
    """A reply that does not follow the protocol: garbled, truncated or unexpected bytes."""


class CommandRejected(InstrumentError):
    """The instrument understood the frame but refused the command (bad operand, wrong state)."""


class InstrumentAlarm(InstrumentError):
    """The instrument reports an alarm or fault condition that must be acknowledged or cleared."""


class InstrumentBusy(InstrumentError):
    """The instrument is busy and cannot take this command now."""
