"""Typed errors of IKA hotplate stirrers, each a subclass of the generic driver errors.

The NAMUR interface reports no faults of its own (the device never speaks unasked, and set
commands answer nothing), so the driver finds them by reading back: a set point that is not what
it sent (the plate power-cycled and forgot it), a heater that does not heat (the plate's own
sensor no hotter than the medium while the medium is below the set point: a watchdog event or a
power cycle switched it off), a motor that does not turn.
"""

from __future__ import annotations

from drivers.errors import (
    CommandRejected,
    InstrumentAlarm,
    InstrumentError,
    InstrumentTimeout,
    ProtocolError,
    Stopped,
)


class IkaError(InstrumentError):
    """Base of the hotplate's errors."""


class NoReply(IkaError, InstrumentTimeout):
    """No reply within the timeout (wrong port, wrong framing: the plate wants 9600 7E1)."""


class GarbledReply(IkaError, ProtocolError):
    """A reply that does not parse, or a reading of another channel than the one asked for."""


class SetpointRejected(IkaError, CommandRejected):
    """The plate holds another set point than the one sent, after every resend."""


class SettingsLost(IkaError, InstrumentAlarm):
    """The plate forgot its set point while holding it (a power cycle: heater and motor are off)."""


class HeaterNotHeating(IkaError, InstrumentAlarm):
    """The heater is off although it was started: the plate is no hotter than the medium below its
    set point (a watchdog event, Er 2, or a power cycle switched it off)."""


class StirringStopped(IkaError, InstrumentAlarm):
    """The motor does not turn although it was started (speed read 0)."""


class TemperatureNotReached(IkaError, InstrumentTimeout):
    """The medium did not reach the set point in time."""


class HotplateStopped(IkaError, Stopped):
    """A wait (or a START) ended because someone called ``stop()``."""


__all__ = [
    "GarbledReply",
    "HeaterNotHeating",
    "HotplateStopped",
    "IkaError",
    "NoReply",
    "SetpointRejected",
    "SettingsLost",
    "StirringStopped",
    "TemperatureNotReached",
]
