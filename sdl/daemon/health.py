"""Instrument health: faults counted per instrument, quarantine, suspects made safe, releases.

- An experiment lost to an instrument fault counts against that instrument; after ``quarantine_after`` in
  a row it is quarantined: workcells that need it take no work, the others carry on.
- An instrument a crash left mid-motion is *suspect*: before anything uses it, a worker whose workcell has
  it brings it to a safe state (the driver's ``make_safe``) and checks it (``recover``, ``check_health``);
  it is then back in service, or quarantined with the reason.
- A quarantined instrument is released by an administrator, or automatically after a recovery and a
  passing health check, at most ``max_auto_releases`` times, the wait doubling each time.
"""

from __future__ import annotations

import logging
import time

from sdl.daemon import protocol as p
from sdl.daemon.cells import Cell
from sdl.daemon.leases import LeaseGrants
from sdl.daemon.state import LabState
from sdl.spec.status import InstrumentState
from sdl.store import Store

log = logging.getLogger("sdl.health")


class HealthKeeper:
    def __init__(self, state: LabState, leases: LeaseGrants) -> None:
        self.state = state
        self.leases = leases
        self.policy = state.lab.health
        self.quarantined_at: dict[str, float] = {}
        self.checking: set[str] = set()

    @property
    def store(self) -> Store:
        return self.state.store

    def _changed(self, name: str) -> None:
        self.leases.grant()  # a plan waiting for an instrument that went out of service is told so
        record = self.store.instrument(name)
        if record is not None:
            self.state.publish(
                "instrument.state",
                {"instrument": name, "state": record.state.value, "reason": record.reason,
                 "consecutive_faults": record.consecutive_faults, "faults": record.faults},
            )  # fmt: skip

    # -- what happens to instruments -----------------------------------------------------------------------

    def suspect(self, name: str, why: str) -> None:
        record = self.store.instrument(name)
        if record is not None and record.state is InstrumentState.QUARANTINED:
            return
        log.warning("%s is suspect: %s", name, why)
        self.store.set_instrument_state(name, InstrumentState.SUSPECT, why)
        self._changed(name)

    def quarantine(self, name: str, reason: str) -> None:
        log.error("%s quarantined: %s", name, reason)
        self.store.set_instrument_state(name, InstrumentState.QUARANTINED, reason)
        self.quarantined_at[name] = time.monotonic()
        self._changed(name)

    def release(self, name: str, *, automatic: bool = False, fresh_start: bool = True) -> None:
        log.warning("%s released%s", name, " after a passing health check" if automatic else "")
        self.store.set_instrument_state(
            name, InstrumentState.OK, None, auto_release=automatic, fresh_start=fresh_start
        )
        self.quarantined_at.pop(name, None)
        self._changed(name)
        self.state.wake.set()

    def fault(self, name: str, detail: str) -> None:
        """An experiment was lost to ``name``: quarantine it after too many in a row, else have it recovered
        (its driver's recovery and health check, by a worker) before anything uses it again — a fault
        such as a protective stop outlives the experiment it happened in."""
        record = self.store.record_fault(name)
        if record.state is InstrumentState.QUARANTINED:
            return
        if record.consecutive_faults >= self.policy.quarantine_after:
            self.quarantine(
                name, f"{record.consecutive_faults} experiments in a row lost to it (last: {detail})"
            )
        else:
            self.suspect(name, f"recovering after a fault: {detail}")

    def served(self, names: list[str]) -> None:
        self.store.record_success(names)

    def report(self, message: p.InstrumentReport) -> None:
        if message.instrument not in self.state.lab.instruments:
            return
        if message.event in ("retry", "reconnect"):
            self.store.record_retries(message.instrument)
        self.state.publish(
            "instrument.health",
            {
                "instrument": message.instrument,
                "event": message.event,
                "fault": message.fault,
                "detail": message.detail,
            },
        )

    def service_result(self, message: p.ServiceResult) -> None:
        name = message.instrument
        self.checking.discard(name)
        record = self.store.instrument(name)
        if message.ok:
            if record is not None and record.state is InstrumentState.QUARANTINED:
                self.release(name, automatic=message.action == "check")
            elif record is not None and record.state is InstrumentState.SUSPECT:
                log.warning("%s made safe and checked; back in service", name)
                self.release(name, fresh_start=False)  # a recovered fault still counts toward quarantine
        else:
            what = "making it safe" if message.action == "make_safe" else "its health check"
            self.quarantine(name, f"{what} failed: {message.detail}")

    # -- what the lab does about it --------------------------------------------------------------------

    def _worker_for(self, name: str) -> Cell | None:
        """A ready worker whose workcell has ``name``, preferring one that holds it open already."""
        cells = [c for c in self.state.cells.values() if c.ready and name in c.spec.instruments]
        cells.sort(key=lambda c: name not in c.connected)
        return cells[0] if cells else None

    async def service_suspects(self) -> None:
        leased = set(self.store.leases())
        busy = {n for c in self.state.cells.values() for n in c.servicing}
        for name, record in self.store.instruments().items():
            if (
                record.state is not InstrumentState.SUSPECT
                or name in leased
                or name in busy
                or name not in self.state.lab.instruments
            ):
                continue
            cell = self._worker_for(name)
            if cell is None:
                continue
            cell.servicing.add(name)
            busy.add(name)
            log.warning("making %s safe on workcell %s before it is used again", name, cell.name)
            release = [name] if self.state.lab.shared(name) else []
            await self.state.send(cell, p.MakeSafe(instruments=[name], check=True, release_after=release))

    async def check(self, name: str) -> bool:
        """Ask a worker to recover and health-check ``name``; False when no worker can now."""
        cell = self._worker_for(name)
        if cell is None or name in set(self.store.leases()):
            return False
        cell.servicing.add(name)
        self.checking.add(name)
        await self.state.send(cell, p.CheckHealth(instrument=name, release_after=self.state.lab.shared(name)))
        return True

    def tick(self, now: float) -> None:
        """Try automatic releases that are due."""
        if not self.policy.auto_release or self.state.stopping:
            return
        for name, record in self.store.instruments().items():
            if record.state is not InstrumentState.QUARANTINED or name in self.checking:
                continue
            since = self.quarantined_at.setdefault(name, now)
            wait = self.policy.recheck_after * (2**record.auto_releases)
            if record.auto_releases < self.policy.max_auto_releases and now - since >= wait:
                self.quarantined_at[name] = now
                self.state.in_background(self.check(name))
