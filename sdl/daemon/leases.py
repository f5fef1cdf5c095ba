"""Plans' on-demand leases (decision 0006): asked for by a worker, granted by the service in the order they
came, all of a request's instruments at once, never one that an earlier waiting request also wants; refused
for an instrument out of service."""

from __future__ import annotations

from dataclasses import dataclass

from sdl.daemon import protocol as p
from sdl.daemon.cells import Cell
from sdl.daemon.state import LabState
from sdl.store import LeaseConflict


@dataclass(frozen=True)
class Waiting:
    """A plan's lease request not yet granted."""

    workcell: str
    request: p.LeaseRequest


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
            leased |= wanted
            state.in_background(state.send(cell, p.LeaseGranted(request=request.request)))
