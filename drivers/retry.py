"""One retry policy for every driver, and the fault events it reports.

A driver wraps each exchange that is safe to repeat (a query, an absolute setting) in
``policy.run(...)``: on a retryable error it reconnects when the link dropped (or just drops
stale input when the reply was garbled), waits a growing backoff and tries again, until the
attempts or the overall deadline run out. Each retry, reconnect, recovery and give-up is emitted
as a structured event (docs/decisions/0003) to whoever subscribed on the device, so a health
monitor counts faults per instrument without parsing logs. Commands that are not safe to repeat
(``RUN`` on a pump) are never wrapped; their drivers look before they resend.

    policy = RetryPolicy(attempts=3, deadline_s=5.0)
    events = FaultEvents("dye_pumps")
    reply = policy.run(lambda: transport.exchange(request, read), transport=transport,
                       events=events, what="pump 00 status")
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from drivers.errors import ConnectionLost, FaultKind, InstrumentTimeout, ProtocolError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: What a link glitch looks like: worth a resend of an idempotent request.
LINK_ERRORS: tuple[type[BaseException], ...] = (ConnectionLost, InstrumentTimeout, ProtocolError)

FaultCallback = Callable[[dict[str, Any]], None]


class FaultEvents:
    """Subscribers to one instrument's fault events; ``emit`` calls each one, from any thread.

    Events are dicts: ``{"instrument", "event" ("retry" | "reconnect" | "recovered" | "gave_up"),
    "fault" (a FaultKind value), "detail", "attempt"}``. A subscriber that raises is logged and kept.
    """

    def __init__(self, instrument: str = "") -> None:
        self.instrument = instrument
        self._subscribers: list[FaultCallback] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: FaultCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event from now on; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: str, fault: str, detail: str, attempt: int = 0) -> None:
        record = {
            "instrument": self.instrument,
            "event": event,
            "fault": str(fault),
            "detail": detail,
            "attempt": attempt,
        }
        # The log is the second consumer: benchmarks and operators count retries from it.
        log.log(logging.WARNING if event == "gave_up" else logging.INFO, "%s: %s (%s) %s",
                self.instrument or "instrument", event, fault, detail)  # fmt: skip
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(dict(record))
            except Exception:
                log.exception("%s: fault subscriber %r failed", self.instrument, callback)


def fault_of(error: BaseException) -> str:
    """The fault kind of any exception (an untyped one counts as unrecoverable)."""
    return str(getattr(error, "fault", FaultKind.UNRECOVERABLE))


class Link(Protocol):
    """What the policy needs of a transport to resynchronise between attempts."""

    @property
    def is_open(self) -> bool: ...

    def reconnect(self) -> None: ...

    def discard_input(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts, backoff and an overall deadline for exchanges that are safe to repeat.

    ``attempts`` counts every try (1 = no retry). The wait before try n+1 is
    ``backoff_s * backoff_factor**(n-1)``, at most ``max_backoff_s``; no try starts after
    ``deadline_s`` from the first. ``retryable`` lists the errors worth another try.
    """

    attempts: int = 3
    backoff_s: float = 0.0
    backoff_factor: float = 2.0
    max_backoff_s: float = 0.25
    deadline_s: float | None = 10.0
    retryable: tuple[type[BaseException], ...] = field(default=LINK_ERRORS)
    #: Subclasses of a retryable error that are final all the same (a motion that timed out).
    final: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, not {self.attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoff must be >= 0 s")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError(f"deadline_s must be > 0 s, not {self.deadline_s}")

    def with_(self, **changes: Any) -> RetryPolicy:
        return replace(self, **changes)

    def backoffs(self) -> Iterator[float]:
        delay = self.backoff_s
        while True:
            yield min(delay, self.max_backoff_s)
            delay = delay * self.backoff_factor if delay else 0.0

    def run(
        self,
        action: Callable[[], T],
        *,
        transport: Link | None = None,
        events: FaultEvents | None = None,
        what: str = "",
        on_reconnect: Callable[[], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> T:
        """``action()``, tried again after each retryable error while attempts and time remain.

        Between tries the ``transport`` is reconnected when the link dropped (then ``on_reconnect``
        restores what the instrument must know again) or its stale input discarded. A set
        ``cancelled`` event (someone called stop) ends the retries at once.
        """
        start = time.monotonic()
        deadline = None if self.deadline_s is None else start + self.deadline_s
        waits = self.backoffs()
        attempt = 0
        while True:
            attempt += 1
            try:
                return action()
            except self.retryable as exc:
                if isinstance(exc, self.final):
                    raise
                error = exc
            now = time.monotonic()
            out_of_time = deadline is not None and now >= deadline
            if attempt >= self.attempts or out_of_time or (cancelled is not None and cancelled.is_set()):
                if attempt > 1 or out_of_time:
                    reason = "deadline passed" if out_of_time else f"{attempt} attempt(s)"
                    _emit(events, "gave_up", error, f"{what}: {error} ({reason})", attempt)
                raise error
            _emit(events, "retry", error, f"{what}: {error}", attempt)
            wait = next(waits)
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            if wait:
                if cancelled is not None:
                    cancelled.wait(wait)
                else:
                    time.sleep(wait)
            if transport is not None:
                try:
                    self._resynchronise(transport, error, events, what, attempt, on_reconnect)
                except self.retryable as exc:
                    # The reconnect itself failed: that costs this attempt; the next one reconnects again.
                    _emit(events, "retry", exc, f"{what}: reconnecting: {exc}", attempt)

    @staticmethod
    def _resynchronise(
        transport: Link,
        error: BaseException,
        events: FaultEvents | None,
        what: str,
        attempt: int,
        on_reconnect: Callable[[], None] | None,
    ) -> None:
        if isinstance(error, ConnectionLost) or not transport.is_open:
            _emit(events, "reconnect", error, f"{what}: reconnecting", attempt)
            transport.reconnect()
            if on_reconnect is not None:
                on_reconnect()
        else:
            # A late or half reply may still be on its way; the next exchange discards stale bytes too.
            transport.discard_input()


def _emit(events: FaultEvents | None, event: str, error: BaseException, detail: str, attempt: int) -> None:
    if events is not None:
        events.emit(event, fault_of(error), detail, attempt)
    else:
        log.info("%s (%s): %s", event, fault_of(error), detail)


class Backoff:
    """Poll intervals that start short and grow to a cap: quick to see a fast change, cheap on a slow one."""

    def __init__(self, first_s: float, *, factor: float = 1.5, max_s: float = 0.1) -> None:
        self.first_s = first_s
        self.factor = factor
        self.max_s = max(max_s, first_s)
        self._next = first_s

    def reset(self) -> None:
        self._next = self.first_s

    def next(self) -> float:
        wait = self._next
        self._next = min(self.max_s, self._next * self.factor)
        return wait


__all__ = ["LINK_ERRORS", "Backoff", "FaultCallback", "FaultEvents", "RetryPolicy", "fault_of"]
