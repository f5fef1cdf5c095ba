"""Instrument health: faults counted per instrument, quarantine, suspects made safe, releases.

- An experiment lost to an instrument fault counts against that instrument; after ``quarantine_after`` in
  a row it is quarantined: workcells that need it take no work, the others carry on.
- An instrument a crash left mid-motion is *suspect*: before anything uses it, a worker whose workcell has
  it brings it to a safe state (the driver's ``make_safe``) and checks it (``recover``, ``check_health``);
  it is then back in service, or quarantined with the reason.
- A quarantined instrument is released by an administrator, or automatically after a recovery and a
  passing health check, at most ``max_auto_releases`` times. The automatic checks wait ``recheck_after``,
  doubling after each failed check and each automatic release; after ``max_rechecks`` failed in a row, or
  once no automatic release is left, they stop and an alert says the instrument needs a person. One an
  operator quarantined is never checked or released automatically.
- An administrator's release with a check waits for the check: it releases, or is refused with why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sdl.daemon import protocol as p
from sdl.daemon.cells import Cell
from sdl.daemon.leases import LeaseGrants
from sdl.daemon.state import LabState
from sdl.execution.faults import STOP_KINDS
from sdl.spec.status import InstrumentState
from sdl.store import Store

log = logging.getLogger("sdl.health")


#: The lab-state key of the instruments an operator took out of service (never released automatically).
BY_OPERATOR = "quarantined_by_operator"


class NoWorker(RuntimeError):
    """No worker can check the instrument now (the workcells that have it are busy or down)."""


class HealthKeeper:
    """``clock``: the monotonic clock :meth:`tick` is given the time of (a test's own)."""

    def __init__(
        self, state: LabState, leases: LeaseGrants, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.state = state
        self.leases = leases
        self.clock = clock
        self.policy = state.lab.health
        self.quarantined_at: dict[str, float] = {}
        self.checking: set[str] = set()
        #: Automatic checks under way, and how many failed in a row since the instrument was quarantined.
        self.rechecking: set[str] = set()
        self.failed_rechecks: dict[str, int] = {}
        self._waiting: dict[str, list[asyncio.Future[p.ServiceResult]]] = {}

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

    def quarantine(self, name: str, reason: str, *, by_operator: bool = False) -> None:
        log.error("%s quarantined: %s", name, reason)
        with self.store.transaction():
            self.store.set_instrument_state(name, InstrumentState.QUARANTINED, reason)
            if by_operator:
                held = self.store.lab_state(BY_OPERATOR) or {}
                self.store.set_lab_state(BY_OPERATOR, {**held, name: reason})
        self.quarantined_at[name] = self.clock()
        self._changed(name)

    def release(self, name: str, *, automatic: bool = False, fresh_start: bool = True) -> None:
        log.warning("%s released%s", name, " after a passing health check" if automatic else "")
        with self.store.transaction():
            self.store.set_instrument_state(
                name, InstrumentState.OK, None, auto_release=automatic, fresh_start=fresh_start
            )
            held = self.store.lab_state(BY_OPERATOR) or {}
            if name in held:
                self.store.set_lab_state(BY_OPERATOR, {k: v for k, v in held.items() if k != name} or None)
        self.quarantined_at.pop(name, None)
        self.failed_rechecks.pop(name, None)
        self.state.clear_alert(f"instrument:{name}", f"{name} is back in service")
        self._changed(name)
        self.state.wake.set()

    def fault(self, name: str, detail: str, kind: str | None = None) -> None:
        """An experiment was lost to ``name``: quarantine it after too many in a row, else have it recovered
        (its driver's recovery and health check, by a worker) before anything uses it again — a fault
        such as a protective stop outlives the experiment it happened in. An experiment refused ``name``
        because it was out of service already (``not_ready``) does not count again."""
        current = self.store.instrument(name)
        if kind == "not_ready" and current is not None and current.state is not InstrumentState.OK:
            log.info("an experiment was refused %s, out of service already: not counted against it", name)
            return
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
        automatic = name in self.rechecking
        self.rechecking.discard(name)
        record = self.store.instrument(name)
        try:
            if message.ok:
                if record is not None and record.state is InstrumentState.QUARANTINED:
                    self.release(name, automatic=automatic)
                elif record is not None and record.state is InstrumentState.SUSPECT:
                    log.warning("%s made safe and checked; back in service", name)
                    self.release(name, fresh_start=False)  # a recovered fault still counts toward quarantine
            elif message.fault in STOP_KINDS:  # stopped on request (an e-stop): not a failed check
                log.warning("%s: its %s was stopped; it stays out of service", name, message.action)
                self.quarantined_at[name] = self.clock()
            else:
                what = "making it safe" if message.action == "make_safe" else "its recovery or health check"
                if automatic:
                    self.failed_rechecks[name] = self.failed_rechecks.get(name, 0) + 1
                self.quarantine(name, f"{what} failed: {message.detail}")
        finally:
            self._answer(name, message)

    def lost(self, name: str, why: str) -> None:
        """The worker making ``name`` safe or checking it died: it is suspect again, and whoever waits for
        the check is told it failed."""
        self.checking.discard(name)
        self.rechecking.discard(name)
        self.suspect(name, f"its worker died ({why}) while making it safe")
        failed = p.ServiceResult(action="check", instrument=name, ok=False, detail=f"its worker died ({why})")
        self._answer(name, failed)

    def _answer(self, name: str, message: p.ServiceResult) -> None:
        for future in self._waiting.pop(name, []):
            if not future.done():
                future.set_result(message)

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

    async def check_and_wait(self, name: str, timeout: float) -> p.ServiceResult:
        """Have ``name`` recovered and checked (or join the check under way) and return its result.

        Raises :class:`NoWorker` if no worker can check it now, TimeoutError after ``timeout`` s (the check
        goes on; its result applies when it comes)."""
        future: asyncio.Future[p.ServiceResult] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(name, []).append(future)
        if name not in self.checking and not await self.check(name):
            self._waiting[name].remove(future)
            raise NoWorker(name)
        self.rechecking.discard(name)  # asked for by a person: its failure is not an automatic one
        return await asyncio.wait_for(future, timeout)

    def tick(self, now: float) -> None:
        """Start the automatic checks that are due; raise an alert for an instrument they gave up on."""
        if self.state.stopping:
            return
        held = self.store.lab_state(BY_OPERATOR) or {}
        for name, record in self.store.instruments().items():
            if (
                record.state is not InstrumentState.QUARANTINED
                or name in self.checking
                or name in held
                or name not in self.state.lab.instruments
            ):
                continue
            failed = self.failed_rechecks.get(name, 0)
            if not self.policy.auto_release:
                why = "automatic release is off for this lab"
            elif record.auto_releases >= self.policy.max_auto_releases:
                why = f"it was released automatically {record.auto_releases} time(s), the most allowed"
            elif failed >= self.policy.max_rechecks:
                why = f"{failed} automatic recoveries and health checks in a row failed"
            else:
                since = self.quarantined_at.setdefault(name, now)
                # Doubling with each failed check and each automatic release, up to the longest wait of
                # one quarantine's checks.
                doublings = min(record.auto_releases + failed, self.policy.max_rechecks)
                wait = self.policy.recheck_after * 2**doublings
                if now - since >= wait:
                    self.quarantined_at[name] = now
                    self.rechecking.add(name)
                    self.state.in_background(self._recheck(name, since))
                continue
            self.state.raise_alert(
                f"instrument:{name}",
                "instrument",
                f"{name} is quarantined and needs a person: {why} (last: {record.reason}). Release it with "
                f"`sdl release {name}` once it is seen to",
                name,
            )

    async def _recheck(self, name: str, due_since: float) -> None:
        if not await self.check(name):  # no worker can now: the next tick tries again
            self.rechecking.discard(name)
            self.quarantined_at[name] = due_since
