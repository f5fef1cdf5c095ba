"""Telling an instrument fault from a bad recipe, from the exception an experiment ended with.

Drivers tag every error with a ``fault`` kind (docs/decisions/0003-device-lifecycle-and-faults.md); the
core reads it by duck typing, since it imports no driver. ``stopped`` is no fault: an operation stopped on
request (an abort, an e-stop, a make-safe) interrupts the experiment, and neither the recipe nor the
instrument is to blame. Any other kind but ``limit_refused`` means the instrument failed and the recipe was
never really tried; anything else — a limit refused, a plan that raised, an analysis that found nothing —
is the recipe's own outcome (decision 0005).
"""

from __future__ import annotations

from dataclasses import dataclass

from bluesky.protocols import HasParent

#: Fault kinds that are the recipe's doing, not the instrument's: the optimizer learns from them.
RECIPE_FAULT_KINDS = frozenset({"limit_refused"})
#: Kinds that say an operation was stopped on request: the experiment was interrupted, nothing failed.
STOP_KINDS = frozenset({"stopped"})


@dataclass(frozen=True)
class Fault:
    """An instrument fault: its kind (the driver's), which instrument, and what happened."""

    kind: str
    instrument: str | None
    detail: str
    #: For an ``empty`` fault: the consumable that ran out (its driver's name for it).
    consumable: str | None = None


def root_cause(exc: BaseException) -> BaseException:
    """The innermost cause a driver tagged with a fault kind, else the innermost cause (bluesky wraps a
    device's exception in FailedStatus; a driver's error may be raised from a codec's, which has none)."""
    chain, seen = [exc], {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
        chain.append(exc)
    tagged = [e for e in chain if isinstance(getattr(e, "fault", None), str)]
    return tagged[-1] if tagged else chain[-1]


def _failed_device_name(exc: BaseException) -> str | None:
    """The instrument a FailedStatus came from: the root of the status's device."""
    if type(exc).__name__ != "FailedStatus" or not exc.args:
        return None
    device = getattr(exc.args[0], "device", None) or getattr(exc.args[0], "obj", None)
    return getattr(instrument_of(device), "name", None) if device is not None else None


def instrument_of(device: object) -> object:
    """The top-level device (the instrument) a child signal or component belongs to."""
    while isinstance(device, HasParent) and device.parent is not None:
        device = device.parent
    return device


def stopped(exc: BaseException) -> bool:
    """Whether ``exc`` is an operation stopped on request (an interruption, not a failure)."""
    return getattr(root_cause(exc), "fault", None) in STOP_KINDS


def classify(exc: BaseException) -> Fault | None:
    """The instrument fault behind ``exc``, or None when the failure is the recipe's own (or no failure:
    see :func:`stopped`)."""
    root = root_cause(exc)
    kind = getattr(root, "fault", None)
    if not isinstance(kind, str) or kind in RECIPE_FAULT_KINDS or kind in STOP_KINDS:
        return None
    instrument = getattr(root, "instrument", None) or _failed_device_name(exc)
    consumable = getattr(root, "consumable", None)
    return Fault(
        kind=kind,
        instrument=instrument,
        detail=describe(exc),
        consumable=consumable if isinstance(consumable, str) else None,
    )


def describe(exc: BaseException) -> str:
    """One line saying what went wrong, from the root cause, naming the instrument when known."""
    root = root_cause(exc)
    instrument = getattr(root, "instrument", None) or (_failed_device_name(exc) if root is not exc else None)
    lines = str(root).strip().splitlines()
    text = lines[0] if lines else ""
    if instrument:
        text = text.removeprefix(f"{instrument}: ")  # drivers start their messages with the name
        return (
            f"{instrument}: {type(root).__name__}: {text}" if text else f"{instrument}: {type(root).__name__}"
        )
    return f"{type(root).__name__}: {text}" if text else type(root).__name__
