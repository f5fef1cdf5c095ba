"""Refusals in the audit log without letting a flood of them fill it.

Every refusal of a connection or a web request is audited, but an attacker can make them cheaply and without
end: a fresh CurveZMQ key costs nothing, so throttling by key would still write one line per attempt. The
throttle therefore groups refusals by what was refused, why, and the source address: the first of a group is
written at once, the others within ``every`` seconds are counted, and when that window closes one summary
says how many there were ("refused: unknown key (99 more from 10.0.0.7 in the next 60 s, not listed one by
one)").
The owner of the throttle calls :meth:`RefusalThrottle.flush` now and then and when it stops, so a count is
never lost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

#: How long refusals of one group are counted rather than written.
WINDOW_S = 60.0
SUMMARY_WHO = "(summary)"


@dataclass(frozen=True)
class Refusal:
    """One audit entry: who (a key, "no key", a web visitor), the action refused, the result (which starts
    with ``refused:``), the source address, and what it named (a Host, an Origin; not part of its group, so
    that varying it does not escape the throttle)."""

    who: str
    action: str
    result: str
    origin: str | None
    target: str | None = None


@dataclass
class _Window:
    opened: float
    suppressed: int = 0


class RefusalThrottle:
    """Writes refusals through ``write``: the first of each (action, result, source) group at once, then one
    summary per window of ``every`` seconds for the rest."""

    def __init__(
        self,
        write: Callable[[Refusal], None],
        every: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write = write
        self.every = every
        self.clock = clock
        self._windows: dict[tuple[str, str, str], _Window] = {}

    def refused(self, refusal: Refusal) -> None:
        group = (refusal.action, refusal.result, refusal.origin or "")
        now = self.clock()
        window = self._windows.get(group)
        if window is not None and now - window.opened < self.every:
            window.suppressed += 1
            return
        if window is not None:
            self._summarise(group, window, now)
        self._windows[group] = _Window(opened=now)
        self.write(refusal)

    def flush(self, *, everything: bool = False) -> None:
        """Write the summary of every window that has closed (``everything``: of every window, at a stop)."""
        now = self.clock()
        for group, window in list(self._windows.items()):
            if everything or now - window.opened >= self.every:
                del self._windows[group]
                self._summarise(group, window, now)

    def _summarise(self, group: tuple[str, str, str], window: _Window, now: float) -> None:
        if not window.suppressed:
            return
        action, result, origin = group
        where = f" from {origin}" if origin else ""
        seconds = math.ceil(min(now - window.opened, self.every))
        self.write(
            Refusal(
                who=SUMMARY_WHO,
                action=action,
                result=f"{result} ({window.suppressed} more{where} in the next {seconds} s, "
                "not listed one by one)",
                origin=origin or None,
            )
        )
