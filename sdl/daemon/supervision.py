"""Keeping the workers alive and listening to them: hellos, heartbeats, outcomes, instrument reports; a
silent or dead worker is replaced, its experiment marked interrupted, the instruments it was moving
suspect; an experiment past its procedure's timeout is aborted, and its worker replaced if it will not
stop."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zmq

from sdl.crashpoints import crash_point
from sdl.daemon import protocol as p
from sdl.execution.experiment import MOTION
from sdl.spec.status import Cause, ExperimentStatus
from sdl.store import ExperimentRecord, unacknowledged

if TYPE_CHECKING:
    from sdl.daemon.cells import Cell
    from sdl.daemon.service import LabService

log = logging.getLogger("sdl.daemon")


@dataclass(frozen=True)
class Waiting:
    """A plan's lease request not yet granted."""

    workcell: str
    request: p.LeaseRequest


WORKER_DIED = "the worker for workcell {cell} stopped ({why}); the experiment's physical outcome is unknown"
ABORT_GRACE_S = 15.0


class Supervision:
    def in_background(self: LabService, coroutine: Any) -> None:
        """Run a short coroutine (a message to a worker) owned by the service: cancelled at shutdown."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def send(self: LabService, cell: Cell, message: p.BaseModel) -> None:
        if cell.identity is None:
            return
        try:
            await self.worker_socket.send_multipart([cell.identity, p.encode(message)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("workcell %s: could not send %s: %s", cell.name, type(message).__name__, exc)

    def suspects_of(self: LabService, experiment: ExperimentRecord, why: str) -> dict[str, str]:
        """Instruments the experiment was moving (a motion sent, never acknowledged) when it was cut off."""
        assert self.store is not None
        out = {}
        for entry in unacknowledged(self.store.journal(experiment.id)):
            if entry.command in MOTION and entry.instrument:
                out[entry.instrument] = (
                    f"{why} while it ran {entry.command} on {entry.device or entry.instrument}"
                )
        return out

    async def _serve_workers(self: LabService) -> None:
        while True:
            identity, raw = (await self.worker_socket.recv_multipart())[:2]
            try:
                message = p.FROM_WORKER.validate_json(raw)
            except ValueError:
                log.warning("a malformed message on the worker socket was ignored")
                continue
            try:
                self._on_worker(identity, message)
            except Exception:
                log.exception("handling %s from a worker failed", type(message).__name__)

    def _on_worker(self: LabService, identity: bytes, message: Any) -> None:
        assert self.health is not None
        if isinstance(message, p.Hello):
            cell = self.cells.get(message.workcell)
            if cell is None or message.token != cell.token or message.pid != cell.pid:
                log.warning("a worker that was not started by this service said hello; ignored")
                return
            cell.identity, cell.state = identity, "idle"
            cell.last_seen = cell.up_since = time.monotonic()
            self.publish("workcell.state", {"workcell": cell.name, "state": "idle", "pid": cell.pid})
            self.wake.set()
            return
        cell = next((c for c in self.cells.values() if c.identity == identity), None)
        if cell is None:
            return
        cell.last_seen = time.monotonic()
        if isinstance(message, p.Heartbeat):
            cell.connected = message.connected
        elif isinstance(message, p.Finished):
            self._on_finished(cell, message)
            self.grant_leases()  # the experiment's leases ended with it
        elif isinstance(message, p.LeaseRequest):
            self.lease_waiting.append(Waiting(cell.name, message))
            self.grant_leases()
        elif isinstance(message, p.LeaseRelease):
            self._on_release(cell, message)
        elif isinstance(message, p.InstrumentReport):
            self.health.report(message)
        elif isinstance(message, p.ServiceResult):
            cell.servicing.discard(message.instrument)
            self.health.service_result(message)
            self.wake.set()
        elif isinstance(message, p.EStopped):
            log.warning(
                "workcell %s stopped %s",
                cell.name,
                ", ".join(message.stopped) or "nothing (nothing was open)",
            )

    def _on_finished(self: LabService, cell: Cell, message: p.Finished) -> None:
        assert self.health is not None and self.active is not None
        campaign_id = cell.campaign_id
        if cell.experiment != message.experiment_id:
            log.warning(
                "workcell %s finished experiment id %d it was not running", cell.name, message.experiment_id
            )
        cell.clear_experiment()
        cell.state = "idle"
        status = ExperimentStatus(message.status)
        if status is ExperimentStatus.FAULTED and message.fault_instrument in self.lab.instruments:
            self.health.fault(message.fault_instrument, message.failure or message.fault_kind or "fault")
        elif status in (ExperimentStatus.DONE, ExperimentStatus.FAILED):
            self.health.served(message.instruments)
        if campaign_id is not None:
            experiment = self.active.refresh_experiment(campaign_id, message.experiment_id)
            with self.recording():
                self.publish(
                    f"experiment.{experiment.status.value}", self.experiment_body(experiment), campaign_id
                )
                self.publish_progress(campaign_id)
            crash_point("service.after-finished")
        self.wake.set()

    def _on_release(self: LabService, cell: Cell, message: p.LeaseRelease) -> None:
        assert self.store is not None
        waiting = next(
            (
                w
                for w in self.lease_waiting
                if w.workcell == cell.name and w.request.request == message.request
            ),
            None,
        )
        if waiting is not None:  # withdrawn before it was granted (the plan was aborted)
            self.lease_waiting.remove(waiting)
        else:
            self.store.release(message.experiment_id, message.instruments)
        self.grant_leases()
        self.wake.set()

    async def _supervise(self: LabService) -> None:
        timeout = self.lab.workers.heartbeat_timeout
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for cell in self.cells.values():
                if cell.process is not None and not cell.alive:
                    if self.stopping and cell.process.returncode == 0 and cell.experiment is None:
                        log.info("workcell %s: worker stopped", cell.name)
                        cell.stopped()
                        continue
                    self._worker_lost(cell, f"it exited with code {cell.process.returncode}")
                elif cell.process is not None and cell.state == "starting":
                    if now - cell.last_seen > self.lab.workers.startup_timeout:
                        self._worker_lost(cell, f"no hello within {now - cell.last_seen:.0f} s of its start")
                elif cell.process is not None and now - cell.last_seen > timeout:
                    self._worker_lost(cell, f"no heartbeat for {now - cell.last_seen:.0f} s")
                elif cell.state == "busy":
                    self._enforce_timeout(cell, now)
                elif cell.process is None and not self.stopping and now >= cell.restart_at:
                    cell.spawn(self.worker_config(cell), self.worker_env)
                    self.publish(
                        "workcell.state",
                        {"workcell": cell.name, "state": "starting", "restarts": cell.restarts},
                    )
            assert self.health is not None
            self.health.tick(now)
            self.wake.set()  # wall-time budgets and releases are noticed without an event

    def _enforce_timeout(self: LabService, cell: Cell, now: float) -> None:
        if cell.timeout is None or cell.started_at is None or cell.experiment is None:
            return
        if cell.abort_sent_at is None and now - cell.started_at > cell.timeout:
            cell.abort_sent_at = now
            reason = f"ran longer than its procedure's timeout of {cell.timeout:g} s"
            self.in_background(
                self.send(cell, p.Abort(experiment_id=cell.experiment, reason=reason, cause=Cause.TIMEOUT))
            )
        elif cell.abort_sent_at is not None and now - cell.abort_sent_at > ABORT_GRACE_S:
            self._worker_lost(cell, f"did not stop within {ABORT_GRACE_S:g} s of an abort")

    def _worker_lost(self: LabService, cell: Cell, why: str) -> None:
        """Replace a dead or silent worker; mark its experiment and the instruments it was moving."""
        assert self.store is not None and self.health is not None and self.active is not None
        log.error("workcell %s: worker lost: %s", cell.name, why)
        self.lease_waiting[:] = [w for w in self.lease_waiting if w.workcell != cell.name]
        experiment_id, campaign_id = cell.experiment, cell.campaign_id
        servicing = set(cell.servicing)
        cell.servicing.clear()
        cell.lost(time.monotonic(), self.lab.workers.restart_backoff)
        if self.stopping:
            cell.restart_at = float("inf")
        self.publish("workcell.state", {"workcell": cell.name, "state": "down", "why": why})
        if experiment_id is not None:
            experiment = self.store.experiment(experiment_id)
            if experiment.status is ExperimentStatus.RUNNING:  # else the worker recorded it before dying
                self.store.mark_interrupted(
                    experiment_id, WORKER_DIED.format(cell=cell.name, why=why), Cause.CRASH
                )
            for name, reason in self.suspects_of(experiment, f"its worker died ({why})").items():
                self.health.suspect(name, reason)
            if campaign_id is not None:
                experiment = self.active.refresh_experiment(campaign_id, experiment_id)
                self.publish(
                    f"experiment.{experiment.status.value}", self.experiment_body(experiment), campaign_id
                )
        for name in servicing:
            self.health.suspect(name, f"its worker died ({why}) while making it safe")
        self.grant_leases()  # the dead worker's experiment gave its leases back

    def abort_all(self: LabService, cause: Cause, reason: str, campaign_id: str | None = None) -> None:
        for cell in self.cells.values():
            if cell.experiment is not None and (campaign_id is None or cell.campaign_id == campaign_id):
                self.in_background(
                    self.send(cell, p.Abort(experiment_id=cell.experiment, reason=reason, cause=cause))
                )
