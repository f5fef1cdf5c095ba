"""What a SiLA 2 server's errors become: ``drivers.errors`` types with a fault kind.

SiLA 2 has four kinds of execution error. A *validation error* (a parameter outside the feature's
constraints, refused before anything ran) is ``ParameterRefused`` (``limit_refused``: the recipe
asked for what the instrument may not do). A *defined execution error* is ``ExecutionFailed``
whose ``identifier`` names it; its fault kind comes from the lab file's ``errors:`` map, from
the identifier itself when it is one of our fault names (what `sdl sila serve` sends), else
``rejected``. An *undefined execution error* is ``ServerFault`` (``alarm``), a *framework error*
``ServerRefused`` (``rejected``). A dropped channel is ``LinkLost``.
"""

from __future__ import annotations

from drivers.errors import (
    CommandRejected,
    ConnectionLost,
    FaultKind,
    InstrumentAlarm,
    InstrumentBusy,
    InstrumentError,
    SafetyLimitError,
)


class SilaError(InstrumentError):
    """Base of the errors a SiLA 2 server's answers become."""


class ParameterRefused(SilaError, SafetyLimitError):
    """A parameter outside the feature's constraints (SiLA validation error); nothing ran."""

    fault = FaultKind.LIMIT_REFUSED

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class ExecutionFailed(SilaError, CommandRejected):
    """A defined execution error; ``identifier`` is its fully qualified identifier, ``fault`` its kind."""

    fault = FaultKind.REJECTED

    def __init__(self, message: str, *, identifier: str, fault: FaultKind = FaultKind.REJECTED) -> None:
        super().__init__(message)
        self.identifier = identifier
        self.fault = fault

    @property
    def name(self) -> str:
        """The error's own identifier (the last part of the fully qualified one)."""
        return self.identifier.rsplit("/", 1)[-1]


class ServerFault(SilaError, InstrumentAlarm):
    """An undefined execution error: the server failed in a way its features do not describe."""

    fault = FaultKind.ALARM


class ServerRefused(SilaError, CommandRejected):
    """A framework error: the call broke SiLA's rules (missing metadata, unknown execution…)."""

    fault = FaultKind.REJECTED


class ServerLocked(SilaError, InstrumentBusy):
    """Another client holds the server's lock (LockController)."""

    fault = FaultKind.BUSY


class LinkLost(SilaError, ConnectionLost):
    """The gRPC channel to the server failed or could not be opened."""

    fault = FaultKind.LINK_LOST


class CertificateRejected(SilaError, ConnectionLost):
    """The server's certificate is not trusted, or names another server UUID than the server reports."""

    fault = FaultKind.UNRECOVERABLE


__all__ = [
    "CertificateRejected",
    "ExecutionFailed",
    "LinkLost",
    "ParameterRefused",
    "ServerFault",
    "ServerLocked",
    "ServerRefused",
    "SilaError",
]
