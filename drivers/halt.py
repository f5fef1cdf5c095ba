"""One way for a driver to be stopped and to come back: a stop ends the operation in progress, not the next.

Every driver runs its public operations (a transfer, a move, an acquisition, a recovery) inside
``halt.operation()``, checks ``halt.check(...)`` before each command that moves something, and
waits with ``halt.wait(...)`` so a stop wakes it. ``halt.request()`` (the driver's stop, from any
thread) stops the operation in progress. The next operation starts clear: a recovery after
``stop()`` and ``make_safe()`` is not refused as "stopped on request".

The ophyd face runs each action with its own halt event (``BackgroundAction``) and hands it to
the driver's operation; that event then *is* the operation's, so stopping the action and stopping
the driver are the same thing, and an action stopped before its operation began ends at once.

    halt = Halt()
    with halt.operation(caller_event):            # outermost: a fresh stop state (or the caller's)
        halt.check("aspirate", Terminated)          # raises Terminated if a stop was requested
        ...
        halt.wait(0.05)                              # a poll interval a stop cuts short
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from contextlib import contextmanager

from drivers.errors import Stopped


class Halt:
    """The stop state of one instrument (or one independent channel of it), scoped to an operation.

    Operations on one ``Halt`` run one at a time (a second thread waits for the first to end);
    nested operations share the outermost one's state. ``request()`` never waits.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._event = threading.Event()
        self._depth = 0

    @contextmanager
    def operation(self, caller: threading.Event | None = None) -> Generator[threading.Event, None, None]:
        """Run one operation: the outermost starts with no stop requested (or with ``caller``'s event)."""
        with self._lock:
            if self._depth == 0:
                # A stop belongs to the operation it interrupted; this one starts afresh.
                self._event = caller if caller is not None else threading.Event()
            self._depth += 1
            try:
                yield self._event
            finally:
                self._depth -= 1

    def request(self) -> None:
        """Stop the operation in progress, from any thread (it sees the request at its next check)."""
        self._event.set()

    @property
    def requested(self) -> bool:
        """A stop was requested during the operation in progress (or the last one)."""
        return self._event.is_set()

    @property
    def active(self) -> bool:
        """An operation is in progress (a snapshot: another thread may start or end one)."""
        return self._depth > 0

    def check(self, what: str, error: type[Stopped] = Stopped) -> None:
        """Raise ``error`` ("WHAT: stopped on request") if a stop was requested."""
        if self._event.is_set():
            raise error(f"{what}: stopped on request")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, less if a stop is requested; True if one was."""
        return self._event.wait(seconds)


__all__ = ["Halt"]
