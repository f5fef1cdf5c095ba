"""Typed errors of Ocean OBP spectrometers, each a subclass of the generic driver errors."""

from __future__ import annotations

from drivers.errors import (
    CommandRejected,
    FaultKind,
    InstrumentAlarm,
    InstrumentNotReady,
    ProtocolError,
    ReplyCutShort,
)
from drivers.ocean.codec import ChecksumError, ErrorCode, FrameError, error_text, type_name

__all__ = [
    "ChecksumError",
    "CorruptedRequest",
    "FrameError",
    "HardwareException",
    "MissingCalibration",
    "Nack",
    "NotReady",
    "Saturated",
    "TruncatedReply",
    "UnexpectedReply",
]


class Nack(CommandRejected):
    """The spectrometer refused a request; ``code`` is the OBP error number."""

    def __init__(self, message_type: int, code: int, text: str | None = None):
        super().__init__(text or f"{type_name(message_type)} refused: OBP error {code} ({error_text(code)})")
        self.message_type = message_type
        self.code = code


class NotReady(Nack, InstrumentNotReady):
    """OBP error 7: the device cannot take this request now (an acquisition is running)."""

    fault = FaultKind.NOT_READY

    def __init__(self, message_type: int, text: str | None = None):
        super().__init__(message_type, ErrorCode.NOT_READY, text)


class CorruptedRequest(Nack, ProtocolError):
    """OBP error 3: our request reached the device with a bad checksum (damaged on the way); resend it."""

    fault = FaultKind.GARBLED

    def __init__(self, message_type: int):
        super().__init__(message_type, ErrorCode.BAD_CHECKSUM)


class HardwareException(InstrumentAlarm):
    """The reply carries the hardware-exception flag: the device reports an internal fault."""


class TruncatedReply(ReplyCutShort):
    """A reply started but stopped before its announced length (a partial frame)."""


class UnexpectedReply(ProtocolError):
    """A well-formed frame that does not answer the request just sent."""


class Saturated(InstrumentAlarm):
    """Pixels reached the detector's full scale, so the spectrum cannot be used quantitatively.

    Shorten the integration time (``recover()`` halves it) or dim the source, then measure again.
    """

    def __init__(self, text: str, pixels: int):
        super().__init__(text)
        self.pixels = pixels


class MissingCalibration(CommandRejected):
    """Absorbance needs a dark and a reference taken at the current integration time."""
