"""Keeping the workers alive and listening to them: hellos, heartbeats, outcomes, instrument reports; a
silent or dead worker is replaced, its experiment marked interrupted, the instruments it was moving
suspect; an experiment past its procedure's timeout is aborted, and its worker replaced if it will not
stop."""

from __future__ import annotations

import asyncio
import logging
import time

from sdl.crashpoints import crash_point
from sdl.daemon import protocol as p
from sdl.daemon.cells import Cell, WorkerLaunch
from sdl.daemon.health import HealthKeeper
from sdl.daemon.leases import LeaseGrants
from sdl.daemon.state import LabState
from sdl.daemon.stock import StockKeeper
from sdl.spec.status import Cause, ExperimentStatus, WorkcellState
from sdl.store import Finish, StoreFull
from sdl.store.spill import spilled

log = logging.getLogger("sdl.daemon")

WORKER_DIED = "the worker for workcell {cell} stopped ({why}); the experiment's physical outcome is unknown"
ABORT_GRACE_S = 15.0
#: An agent beats every half second: quiet for longer than this, its link is down for now, and a remote
#: worker's silence says nothing about the worker.
LINK_QUIET_S = 1.5


class Supervisor:
    def __init__(
        self,
        state: LabState,
        health: HealthKeeper,
        leases: LeaseGrants,
        launch: WorkerLaunch,
        stock: StockKeeper | None = None,
    ) -> None:
        self.state = state
        self.health = health
        self.leases = leases
        self.launch = launch
        self.stock = stock if stock is not None else StockKeeper(state)

    def start_workers(self) -> None:
        for cell in self.state.cells.values():
            self.launch.spawn(cell)

    # -- listening -------------------------------------------------------------------------------------------

    async def serve_workers(self) -> None:
        workers = self.state.workers
        assert workers is not None
        while True:
            identity, raw = (await workers.recv_multipart())[:2]
            try:
                message = p.FROM_WORKER.validate_json(raw)
            except ValueError:
                log.warning("a malformed message on the worker socket was ignored")
                continue
            try:
                self.on_message(identity, message)
            except StoreFull as exc:  # what was not written is in the store's record or announced later
                self.state.storage_failed(str(exc))
            except Exception:
                log.exception("handling %s from a worker failed", type(message).__name__)

    def on_message(self, identity: bytes, message: p.FromWorker) -> None:
        state = self.state
        if isinstance(message, p.Hello):
            cell = state.cells.get(message.workcell)
            if cell is None or message.token != cell.token or message.pid != cell.pid:
                log.warning("a worker that was not started by this service said hello; ignored")
                return
            cell.identity, cell.state = identity, WorkcellState.IDLE
            cell.last_seen = cell.up_since = time.monotonic()
            state.publish("workcell.state", {"workcell": cell.name, "state": "idle", "pid": cell.pid})
            state.wake.set()
            return
        cell = next((c for c in state.cells.values() if c.identity == identity), None)
        if cell is None:
            return
        cell.last_seen = time.monotonic()
        if isinstance(message, p.Heartbeat):
            cell.connected = message.connected
        elif isinstance(message, p.Finished):
            self._on_finished(cell, message)
            self.leases.grant()  # the experiment's leases ended with it
        elif isinstance(message, p.LeaseRequest):
            self.leases.request(cell, message)
        elif isinstance(message, p.LeaseRelease):
            self.leases.release(cell, message)
        elif isinstance(message, p.InstrumentReport):
            self.health.report(message)
        elif isinstance(message, p.Ask):
            self.stock.asked(cell.name, message)
        elif isinstance(message, p.ServiceResult):
            cell.servicing.discard(message.instrument)
            self.health.service_result(message)
            state.wake.set()
        elif isinstance(message, p.Storage):
            if message.full:
                state.storage_failed(f"workcell {cell.name}: {message.detail}")
                if message.experiment_id is not None and message.experiment_id == cell.experiment:
                    cell.holding = message.spilled or "memory"
            else:
                cell.holding = None
        elif isinstance(message, p.EStopped):
            log.warning(
                "workcell %s stopped %s",
                cell.name,
                ", ".join(message.stopped) or "nothing (nothing was open)",
            )

    def _on_finished(self, cell: Cell, message: p.Finished) -> None:
        state = self.state
        campaign_id = cell.campaign_id
        if cell.experiment != message.experiment_id:
            log.warning(
                "workcell %s finished experiment id %d it was not running", cell.name, message.experiment_id
            )
        cell.clear_experiment()
        cell.state = WorkcellState.IDLE
        if not message.recorded and spilled(state.store.data_dir, message.experiment_id):
            # Its worker had to stop before the store had room for its outcome: written when it has.
            self._write_spilled(message.experiment_id)
        status = ExperimentStatus(message.status)
        self.stock.finished(message.experiment_id)
        if (
            status is ExperimentStatus.FAULTED
            and message.fault_kind == "empty"
            and message.fault_instrument in state.lab.instruments
        ):  # not the instrument's failure: a person refills it (decision 0005)
            consumable = message.fault_consumable or "?"
            self.stock.ask_refill(
                message.fault_instrument,
                consumable,
                message.failure or f"{consumable} ran out",
                workcell=cell.name,
                experiment_id=message.experiment_id,
            )
        elif status is ExperimentStatus.FAULTED and message.fault_instrument in state.lab.instruments:
            detail = message.failure or message.fault_kind or "fault"
            self.health.fault(message.fault_instrument, detail, message.fault_kind)
        elif status in (ExperimentStatus.DONE, ExperimentStatus.FAILED):
            self.health.served(message.instruments)
        if campaign_id is not None:
            state.active.refresh_experiment(campaign_id, message.experiment_id)
            with state.recording():
                state.announce()
                state.publish_progress(campaign_id)
            crash_point("service.after-finished")
        state.wake.set()

    # -- watching --------------------------------------------------------------------------------------------

    async def supervise(self) -> None:
        state = self.state
        timeout = state.lab.workers.heartbeat_timeout
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for cell in state.cells.values():
                if self._unreachable(cell, now):
                    continue
                if cell.process is not None and not cell.alive:
                    clean = state.stopping and cell.process.returncode == 0
                    if clean and cell.experiment is None:
                        log.info("workcell %s: worker stopped", cell.name)
                        cell.stopped()
                    elif clean and cell.experiment is not None and cell.holding not in (None, "memory"):
                        log.warning("workcell %s: worker stopped; the outcome it held is in %s",
                                    cell.name, cell.holding)  # fmt: skip
                        self._write_spilled(cell.experiment)
                        cell.clear_experiment()
                        cell.stopped()
                    else:
                        why = (
                            getattr(cell.process, "reason", "")
                            or f"it exited with code {cell.process.returncode}"
                        )
                        self._worker_lost(cell, why)
                elif cell.process is not None and cell.state is WorkcellState.STARTING:
                    if now - cell.last_seen > state.lab.workers.startup_timeout:
                        self._worker_lost(cell, f"no hello within {now - cell.last_seen:.0f} s of its start")
                elif cell.process is not None and now - cell.last_seen > timeout:
                    self._worker_lost(cell, f"no heartbeat for {now - cell.last_seen:.0f} s")
                elif cell.state is WorkcellState.BUSY:
                    self._enforce_timeout(cell, now)
                elif cell.process is None and not state.stopping and now >= cell.restart_at:
                    self.launch.spawn(cell)
                    if cell.process is not None:  # else its agent is unreachable: tried again soon
                        state.publish(
                            "workcell.state",
                            {"workcell": cell.name, "state": "starting", "restarts": cell.restarts},
                        )
            self.health.tick(now)
            self.leases.tick(now)
            state.wake.set()  # wall-time budgets and releases are noticed without an event

    def _unreachable(self, cell: Cell, now: float) -> bool:
        """For a remote workcell whose agent is silent: mark it unreachable (nothing starts there), and once
        the lab's agent_grace has passed, give its worker up as lost. True while its agent is silent (the
        worker's own silence is not judged then)."""
        agents, agent = self.state.agents, cell.spec.agent
        if agent is None or agents is None or cell.process is None:
            return False
        workers = self.state.lab.workers
        silent = agents.silent_for(agent)
        if LINK_QUIET_S < silent <= workers.heartbeat_timeout:
            return True  # the link is quiet: its worker's silence is the link's, judged once it is long
        if silent <= workers.heartbeat_timeout:
            if cell.state is WorkcellState.UNREACHABLE:  # back: what it was doing, as it now says
                cell.state = (
                    WorkcellState.BUSY if cell.experiment is not None
                    else WorkcellState.IDLE if cell.identity is not None
                    else WorkcellState.STARTING
                )  # fmt: skip
                cell.last_seen = now
                log.warning("workcell %s: its agent %s is reachable again", cell.name, agent)
                self.state.publish("workcell.state", {"workcell": cell.name, "state": cell.state.value})
            return False
        if silent > workers.agent_grace:
            self._worker_lost(cell, f"its agent {agent} was unreachable for {silent:.0f} s")
        elif cell.state is not WorkcellState.UNREACHABLE:
            cell.state = WorkcellState.UNREACHABLE
            held = "" if cell.experiment is None else f"; experiment id {cell.experiment} runs on there"
            log.warning("workcell %s: its agent %s is unreachable%s", cell.name, agent, held)
            self.state.publish("workcell.state", {"workcell": cell.name, "state": "unreachable"})
        return True

    def _enforce_timeout(self, cell: Cell, now: float) -> None:
        if cell.timeout is None or cell.started_at is None or cell.experiment is None:
            return
        if cell.abort_sent_at is None and now - cell.started_at > cell.timeout:
            cell.abort_sent_at = now
            reason = f"ran longer than its procedure's timeout of {cell.timeout:g} s"
            self.state.in_background(
                self.state.send(
                    cell, p.Abort(experiment_id=cell.experiment, reason=reason, cause=Cause.TIMEOUT)
                )
            )
        elif cell.abort_sent_at is not None and now - cell.abort_sent_at > ABORT_GRACE_S:
            self._worker_lost(cell, f"did not stop within {ABORT_GRACE_S:g} s of an abort")

    def _worker_lost(self, cell: Cell, why: str) -> None:
        """Replace a dead or silent worker; mark its experiment and the instruments it was moving."""
        state = self.state
        log.error("workcell %s: worker lost: %s", cell.name, why)
        self.leases.forget(cell.name)
        experiment_id, campaign_id, holding = cell.experiment, cell.campaign_id, cell.holding
        servicing = set(cell.servicing)
        cell.servicing.clear()
        cell.lost(time.monotonic(), state.lab.workers.restart_backoff)
        if state.stopping:
            cell.restart_at = float("inf")
        state.publish("workcell.state", {"workcell": cell.name, "state": "down", "why": why})
        if experiment_id is not None:
            experiment = state.store.experiment(experiment_id)
            if spilled(state.store.data_dir, experiment_id):  # its outcome, held for want of space
                self._write_spilled(experiment_id)
            elif experiment.status is ExperimentStatus.RUNNING:  # else the worker recorded it before dying
                reason = WORKER_DIED.format(cell=cell.name, why=why)
                if state.storage_full():
                    held = "" if holding is None else ", holding its outcome in memory (nowhere to spill it)"
                    reason += f"; the disk holding the store was full{held}"
                state.write(
                    f"experiment id {experiment_id} interrupted",
                    lambda: _interrupt(state, experiment_id, reason),
                )
            for name, reason in state.suspects_of(experiment, f"its worker died ({why})").items():
                self.health.suspect(name, reason)
            if campaign_id is not None:
                state.active.refresh_experiment(campaign_id, experiment_id)
            state.announce()
        for name in servicing:
            self.health.lost(name, why)
        self.leases.grant()  # the dead worker's experiment gave its leases back

    def _write_spilled(self, experiment_id: int) -> None:
        store = self.state.store
        self.state.write(
            f"the outcome of experiment id {experiment_id}, spilled by its worker",
            lambda: store.write_spilled(experiment_id),
        )

    # -- stopping --------------------------------------------------------------------------------------------

    def abort_all(self, cause: Cause, reason: str, campaign_id: str | None = None) -> None:
        for cell in self.state.cells.values():
            if cell.experiment is not None and (campaign_id is None or cell.campaign_id == campaign_id):
                self.state.in_background(
                    self.state.send(cell, p.Abort(experiment_id=cell.experiment, reason=reason, cause=cause))
                )

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until no workcell is busy — but for those holding an outcome they spilled to a file for want
        of space: stopping them loses nothing."""
        deadline = time.monotonic() + seconds
        while any(
            c.state is WorkcellState.BUSY and c.holding in (None, "memory") for c in self.state.cells.values()
        ):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop_workers(self, abort: bool, finish_within: float) -> None:
        """Let the work in flight finish (abort it now with ``abort``, or after ``finish_within`` s), then
        stop every worker; return once supervision has accounted for each (a clean exit is logged as
        stopped, anything else as lost)."""
        if abort:
            self.abort_all(Cause.SHUTDOWN, "the lab service is stopping")
        if not await self.wait_idle(finish_within):
            log.warning("work still in flight after %g s: aborting it", finish_within)
            self.abort_all(Cause.SHUTDOWN, "the lab service is stopping")
            await self.wait_idle(ABORT_GRACE_S)
        for cell in self.state.cells.values():
            if cell.identity is not None and cell.alive:
                await self.state.send(cell, p.Shutdown())
            elif cell.alive:  # still starting: it has touched no hardware, nothing to finish
                cell.kill()
        deadline = time.monotonic() + 20
        while any(c.process is not None for c in self.state.cells.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for cell in self.state.cells.values():
            if cell.alive:
                log.error("workcell %s: worker did not exit; killing it", cell.name)
            cell.kill()


def _interrupt(state: LabState, experiment_id: int, reason: str) -> None:
    """Mark a lost worker's experiment interrupted, unless something recorded its end meanwhile."""
    interrupted = Finish(ExperimentStatus.INTERRUPTED, failure=reason, cause=Cause.CRASH)
    state.store.finish_experiment(experiment_id, interrupted, only_from=ExperimentStatus.RUNNING)
