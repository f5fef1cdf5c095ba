"""Plans' on-demand leases (decision 0006): asked for by a worker, granted by the service in the order they
came, all of a request's instruments at once, never one that an earlier waiting request also wants; refused
for an instrument out of service. A request that waits longer than a few seconds is logged, with who holds
what it waits for."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sdl.daemon import protocol as p
from sdl.daemon.cells import Cell
from sdl.daemon.state import LabState
from sdl.store import LeaseConflict

log = logging.getLogger("sdl.daemon")

#: A request waiting this long (seconds) is logged, and again each time its wait doubles.
LONG_WAIT_S = 5.0


@dataclass
class Waiting:
    """A plan's lease request not yet granted."""

    workcell: str
    request: p.LeaseRequest
    since: float = field(default_factory=time.monotonic)
    logged_at: float = 0.0  # how long it had waited when it was last logged


class LeaseGrants:
    def __init__(self, state: LabState) -> None:
        self.state = state
        self.waiting: list[Waiting] = []

    def request(self, cell: Cell, message: p.LeaseRequest) -> None:
        self.waiting.append(Waiting(cell.name, message))
        self.grant()

    def release(self, cell: Cell, message: p.LeaseRelease) -> None:
        """A plan gave instruments back — or withdrew a request not yet granted (it was aborted)."""
        waiting = next(
            (w for w in self.waiting if w.workcell == cell.name and w.request.request == message.request),
            None,
        )
        if waiting is not None:
            self.waiting.remove(waiting)
        else:
            self.state.store.release(message.experiment_id, message.instruments)
        self.grant()
        self.state.wake.set()

    def tick(self, now: float) -> None:
        """Log each request that has waited longer than :data:`LONG_WAIT_S` (and again each time its wait
        doubles), saying who holds what it waits for."""
        for waiting in self.waiting:
            waited = now - waiting.since
            if waited < LONG_WAIT_S or waited < 2 * waiting.logged_at:
                continue
            waiting.logged_at = waited
            request = waiting.request
            log.warning(
                "workcell %s: experiment id %d has waited %.0f s for %s: %s",
                waiting.workcell,
                request.experiment_id,
                waited,
                ", ".join(request.instruments),
                "; ".join(self.holders(waiting)),
            )

    def holders(self, waiting: Waiting) -> list[str]:
        """What keeps ``waiting`` waiting, instrument by instrument."""
        state, request = self.state, waiting.request
        leases, unhealthy = state.store.leases(), state.unhealthy()
        ahead = self.waiting[: self.waiting.index(waiting)]
        out: list[str] = []
        for name in request.instruments:
            if name in leases:
                holder, workcell = leases[name]
                if holder == request.experiment_id:
                    out.append(f"{name} is leased to this same experiment")
                else:
                    out.append(f"{name} is leased to experiment id {holder} on {workcell or '?'}")
            elif name in unhealthy:
                out.append(f"{name} is {unhealthy[name]}")
            else:
                earlier = [w.workcell for w in ahead if name in w.request.instruments]
                if earlier:
                    out.append(f"{name} is promised to an earlier request (of {', '.join(earlier)})")
        return out or ["nothing holds them: they are granted at the next release"]

    def forget(self, workcell: str) -> None:
        """The workcell's worker is gone, and with it the requests of its plan."""
        self.waiting[:] = [w for w in self.waiting if w.workcell != workcell]

    def grant(self) -> None:
        """Grant what can be granted now, in the order asked; refuse those for instruments out of service."""
        state = self.state
        leased, unhealthy = set(state.store.leases()), state.unhealthy()
        blocked: set[str] = set()
        for waiting in list(self.waiting):
            cell, request = state.cells[waiting.workcell], waiting.request
            out = [n for n in request.instruments if n in unhealthy and "being made safe" not in unhealthy[n]]
            if out:
                self.waiting.remove(waiting)
                reason = "; ".join(f"{n} is out of service ({unhealthy[n]})" for n in out)
                refused = p.LeaseRefused(request=request.request, reason=reason, instruments=out)
                state.in_background(state.send(cell, refused))
                continue
            wanted = set(request.instruments)
            if wanted & (blocked | leased | set(unhealthy)):
                blocked |= wanted
                continue
            try:
                state.store.lease(request.experiment_id, request.instruments, waiting.workcell)
            except LeaseConflict:
                blocked |= wanted
                continue
            self.waiting.remove(waiting)
            state.timed("lease_wait", time.monotonic() - waiting.since)
            leased |= wanted
            state.in_background(state.send(cell, p.LeaseGranted(request=request.request)))
