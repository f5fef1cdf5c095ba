"""The lab service: the process that holds the store and the schedule, and outlives the workers.

It owns the lab (one service per store, by claim), adopts the campaigns it ran before a crash and marks
what was in flight, starts the simulated lab if the lab file names one, keeps one worker per workcell
alive, and keeps every free workcell busy: it proposes with the experiments still running as pending,
leases every instrument an experiment needs at once, and writes each step before acting on it.

All state changes happen on one asyncio loop (the store is written from here, or by a worker for the
experiment it runs), so the service itself has no locks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from sdl.api.server import ApiServer, Caller
from sdl.campaign import Campaign
from sdl.client import INFO_FILE
from sdl.daemon import protocol as p
from sdl.daemon.cells import Cell
from sdl.daemon.documents import DocumentProxy
from sdl.daemon.health import HealthKeeper
from sdl.daemon.scheduler import Candidate, plan_round
from sdl.experiment import MOTION
from sdl.history import pending, stop_reason
from sdl.lab import SimulatedLab, fill, simulator_command
from sdl.labfile import LabSpec
from sdl.optimizer import CampaignOptimizer, OptimizerExhausted, make_optimizer
from sdl.proposing import decide_next
from sdl.status import CampaignStatus, Cause, ExperimentStatus
from sdl.store import (
    HEARTBEAT_S,
    STALE_AFTER_S,
    ExperimentRecord,
    LeaseConflict,
    Store,
    new_owner,
    unacknowledged,
)

log = logging.getLogger("sdl.daemon")

WORKER_DIED = "the worker for workcell {cell} stopped ({why}); the experiment's physical outcome is unknown"
SERVICE_CRASHED = (
    "the lab service stopped while this experiment was in flight; its physical outcome is unknown"
)
ABORT_GRACE_S = 15.0


def is_daemon_owner(owner: str | None) -> bool:
    return owner is None or owner.startswith("daemon:")


class LabService:
    def __init__(
        self,
        lab: LabSpec,
        data_dir: Path,
        *,
        api: str,
        events: str,
        documents: str,
        on_stop: str = "finish",
        stop_timeout: float = 60.0,
        simulator: list[str] | None = None,
        worker_env: dict[str, str] | None = None,
    ) -> None:
        self.lab = lab
        self.data_dir = Path(data_dir)
        self.api_address, self.events_address, self.documents_address = api, events, documents
        self.on_stop = on_stop
        self.stop_timeout = stop_timeout
        self.simulator_command = simulator
        self.worker_env = worker_env or {}
        self.owner = new_owner("daemon")
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.store: Store | None = None
        self.cells = {name: Cell(name, spec) for name, spec in lab.workcells.items()}
        self.addresses: dict[str, Any] = {}
        self.optimizers: dict[str, CampaignOptimizer] = {}
        self.exhausted: set[str] = set()
        self.aborted: dict[str, str] = {}
        self.wake = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.stop_mode = on_stop
        self.stopping = False
        self.simulated: SimulatedLab | None = None
        self.health: HealthKeeper | None = None
        self._context = zmq.asyncio.Context()
        self._background: set[asyncio.Task[Any]] = set()
        self._proxy: DocumentProxy | None = None
        self.documents_in: str | None = None

    # -- starting ------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Claim the lab, adopt the campaigns it ran, mark what was in flight, start the simulator."""
        self.store = store = Store(self.data_dir)
        store.claim_lab(self.owner, stale_after=STALE_AFTER_S)
        store.ensure_instruments(self.lab.instruments)
        self.health = HealthKeeper(self)
        suspects: dict[str, str] = {}
        for record in store.campaigns():
            if record.status is not CampaignStatus.RUNNING or not is_daemon_owner(record.owner):
                continue
            store.claim_campaign(record.id, self.owner)
            for experiment in store.recover(record.id, SERVICE_CRASHED, Cause.CRASH):
                log.warning(
                    "campaign %s: experiment %d was in flight; marked interrupted", record.id, experiment.seq
                )
                suspects.update(self._suspects_of(experiment, "the lab service stopped"))
                self.publish("experiment.interrupted", self._experiment_body(experiment.id), record.id)
        for name, why in suspects.items():
            self.health.suspect(name, why)
        for name, (experiment_id, _) in store.leases().items():  # leases of experiments no longer running
            if store.experiment(experiment_id).status is not ExperimentStatus.RUNNING:
                log.warning("releasing a stale lease of %s", name)
        self._start_simulator()

    def _suspects_of(self, experiment: ExperimentRecord, why: str) -> dict[str, str]:
        """Instruments the experiment was moving (a motion sent, never acknowledged) when it was cut off."""
        assert self.store is not None
        out = {}
        for entry in unacknowledged(self.store.journal(experiment.id)):
            if entry.command in MOTION and entry.instrument:
                out[entry.instrument] = (
                    f"{why} while it ran {entry.command} on {entry.device or entry.instrument}"
                )
        return out

    def _start_simulator(self) -> None:
        if self.lab.simulated is None:
            self.addresses = {name: spec.address for name, spec in self.lab.instruments.items()}
            return
        needed = {f"{i}.{e}" for spec in self.lab.instruments.values() for i, e in spec.placeholders()}
        self.simulated = SimulatedLab(
            self.simulator_command or simulator_command(self.lab.simulated, self.lab.speed)
        )
        endpoints = self.simulated.start(needed, self.lab.startup_timeout)
        self.addresses = {name: fill(spec.address, endpoints) for name, spec in self.lab.instruments.items()}

    def bind(self) -> None:
        """Open the API, event and document sockets; write where they are to daemon.json."""
        self.api_socket = self._context.socket(zmq.ROUTER)
        self.api_socket.setsockopt(zmq.LINGER, 0)
        self.api_socket.setsockopt(zmq.MAXMSGSIZE, 16 << 20)
        self.api_address = _bind(self.api_socket, self.api_address)
        self.events_socket = self._context.socket(zmq.PUB)
        self.events_socket.setsockopt(zmq.LINGER, 0)
        self.events_address = _bind(self.events_socket, self.events_address)
        self.worker_socket = self._context.socket(zmq.ROUTER)
        self.worker_socket.setsockopt(zmq.LINGER, 0)
        self.worker_address = _bind(self.worker_socket, "tcp://127.0.0.1:0")
        self._proxy = DocumentProxy(self.documents_address).start()
        self.documents_in = self._proxy.in_address
        self.documents_address = self._proxy.out_address
        info = {
            "pid": os.getpid(),
            "api": self.api_address,
            "events": self.events_address,
            "documents": self.documents_address,
            "lab": self.lab.name,
        }
        (self.data_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        log.info(
            "API on %s, events on %s, documents on %s",
            self.api_address,
            self.events_address,
            self.documents_address,
        )

    def worker_config(self, cell: Cell) -> p.WorkerConfig:
        names = cell.spec.instruments
        return p.WorkerConfig(
            workcell=cell.name,
            manager=self.worker_address,
            token="",
            data_dir=str(self.data_dir),
            instruments={n: self.lab.instruments[n] for n in names},
            addresses={n: self.addresses.get(n) for n in names},
            documents=self.documents_in,
        )

    # -- running -------------------------------------------------------------------------------------------

    def run(self) -> int:
        return asyncio.run(self._main())

    async def _main(self) -> int:
        from sdl.daemon.handlers import Handlers

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        try:
            self.open()
            self.bind()
            handlers = Handlers(self)
            server = ApiServer(self.api_socket, handlers.table(), audit=self._audit)
            for cell in self.cells.values():
                cell.spawn(self.worker_config(cell), self.worker_env)
            tasks = [
                asyncio.create_task(server.serve(), name="api"),
                asyncio.create_task(self._serve_workers(), name="workers"),
                asyncio.create_task(self._supervise(), name="supervise"),
                asyncio.create_task(self._schedule_loop(), name="schedule"),
                asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            ]
            self.publish("lab.started", {"lab": self.lab.name, "pid": os.getpid()})
            log.info(
                "lab %r is up: %d workcell(s), %d instrument(s)",
                self.lab.name,
                len(self.cells),
                len(self.lab.instruments),
            )
            await self.stop_requested.wait()
            await self._shut_down()
            for task in [*tasks, *self._background]:
                task.cancel()
            await asyncio.gather(*tasks, *self._background, return_exceptions=True)
        finally:
            self._close()
        return 0

    def request_stop(self, sig: int | None = None, *, abort: bool | None = None) -> None:
        if sig is not None:
            log.warning(
                "%s: stopping the lab service (%s work in flight)", signal.Signals(sig).name, self.on_stop
            )
        if abort is not None:
            self.stop_mode = "abort" if abort else self.on_stop
        if self.stop_requested.is_set() and sig is not None:  # a second signal: abort whatever still runs
            self.stop_mode = "abort"
            self._abort_all(Cause.SHUTDOWN, "the lab service is stopping")
        self.stop_requested.set()

    async def _shut_down(self) -> None:
        self.stopping = True
        self.publish("lab.stopping", {"mode": self.stop_mode})
        if self.stop_mode == "abort":
            self._abort_all(Cause.SHUTDOWN, "the lab service is stopping")
        deadline = time.monotonic() + self.stop_timeout
        while any(c.state == "busy" for c in self.cells.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if any(c.state == "busy" for c in self.cells.values()):
            log.warning("work still in flight after %g s: aborting it", self.stop_timeout)
            self._abort_all(Cause.SHUTDOWN, "the lab service is stopping")
            until = time.monotonic() + ABORT_GRACE_S
            while any(c.state == "busy" for c in self.cells.values()) and time.monotonic() < until:
                await asyncio.sleep(0.05)
        for cell in self.cells.values():
            if cell.identity is not None and cell.alive:
                await self.send(cell, p.Shutdown())
        until = time.monotonic() + 20
        while any(c.alive for c in self.cells.values()) and time.monotonic() < until:
            await asyncio.sleep(0.05)
        for cell in self.cells.values():
            if cell.alive:
                log.error("workcell %s: worker did not exit; killing it", cell.name)
            cell.kill()

    def _close(self) -> None:
        for cell in self.cells.values():
            cell.kill()
        if self._proxy is not None:
            self._proxy.stop()
        self._context.destroy(linger=0)
        if self.simulated is not None:
            self.simulated.stop()
        if self.store is not None:
            (self.data_dir / INFO_FILE).unlink(missing_ok=True)
            self.store.set_lab_state("daemon", None)
            self.store.close()
            self.store = None
        log.info("lab service stopped")

    # -- events and audit ----------------------------------------------------------------------------------

    def publish(self, topic: str, body: dict[str, Any], campaign_id: str | None = None) -> None:
        """Record an event in the store, then publish it (a subscriber that misses it catches up)."""
        assert self.store is not None
        event = self.store.append_event(topic, body, campaign_id)
        socket = getattr(self, "events_socket", None)
        if socket is not None:
            from sdl.api.models import EventRecord

            record = EventRecord(
                seq=event.seq, at=event.at, topic=topic, campaign_id=campaign_id, body=event.body
            )
            try:
                socket.send_multipart([topic.encode(), record.model_dump_json().encode()], zmq.NOBLOCK)
            except zmq.ZMQError:
                log.debug("event %d not published", event.seq)

    def _audit(self, caller: Caller, request: Any, result: str) -> None:
        assert self.store is not None
        target = getattr(request, "campaign_id", None) or getattr(request, "name", None)
        arguments = request.model_dump(mode="json", exclude={"text"})
        self.store.audit(
            caller.name, request.method, result, origin=caller.origin, target=target, arguments=arguments
        )

    def _experiment_body(self, experiment_id: int) -> dict[str, Any]:
        assert self.store is not None
        e = self.store.experiment(experiment_id)
        return {
            "experiment_id": e.id,
            "seq": e.seq,
            "status": e.status.value,
            "workcell": e.workcell,
            "recipe": e.recipe,
            "measurements": e.measurements,
            "loss": e.objective,
            "failure": e.failure,
            "cause": e.cause.value if e.cause else None,
            "fault_kind": e.fault_kind,
            "fault_instrument": e.fault_instrument,
        }

    # -- workers -------------------------------------------------------------------------------------------

    def in_background(self, coroutine: Any) -> None:
        """Run a short coroutine (a message to a worker) owned by the service: cancelled at shutdown."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def send(self, cell: Cell, message: p.BaseModel) -> None:
        if cell.identity is None:
            return
        try:
            await self.worker_socket.send_multipart([cell.identity, p.encode(message)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("workcell %s: could not send %s: %s", cell.name, type(message).__name__, exc)

    async def _serve_workers(self) -> None:
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

    def _cell_of(self, identity: bytes) -> Cell | None:
        return next((c for c in self.cells.values() if c.identity == identity), None)

    def _on_worker(self, identity: bytes, message: Any) -> None:
        assert self.store is not None and self.health is not None
        if isinstance(message, p.Hello):
            cell = self.cells.get(message.workcell)
            if cell is None or message.token != cell.token or message.pid != cell.pid:
                log.warning("a worker that was not started by this service said hello; ignored")
                return
            cell.identity = identity
            cell.state = "idle"
            cell.last_seen = time.monotonic()
            cell.up_since = time.monotonic()
            self.publish("workcell.state", {"workcell": cell.name, "state": "idle", "pid": cell.pid})
            self.wake.set()
            return
        cell = self._cell_of(identity)
        if cell is None:
            return
        cell.last_seen = time.monotonic()
        if isinstance(message, p.Heartbeat):
            cell.connected = message.connected
        elif isinstance(message, p.Finished):
            self._on_finished(cell, message)
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

    def _on_finished(self, cell: Cell, message: p.Finished) -> None:
        assert self.store is not None and self.health is not None
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
            self.publish(
                f"experiment.{status.value}", self._experiment_body(message.experiment_id), campaign_id
            )
            self.publish_progress(campaign_id)
        self.wake.set()

    def publish_progress(self, campaign_id: str) -> None:
        from sdl.daemon.handlers import summary

        assert self.store is not None
        self.publish(
            "campaign.progress",
            summary(self.store, self.store.campaign(campaign_id)).model_dump(mode="json"),
            campaign_id,
        )

    async def _supervise(self) -> None:
        timeout = self.lab.workers.heartbeat_timeout
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for cell in self.cells.values():
                if cell.process is not None and not cell.alive:
                    self._worker_lost(cell, f"it exited with code {cell.process.returncode}")
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
            self.wake.set()

    def _enforce_timeout(self, cell: Cell, now: float) -> None:
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

    def _worker_lost(self, cell: Cell, why: str) -> None:
        """Replace a dead or silent worker; mark its experiment and the instruments it was moving."""
        assert self.store is not None and self.health is not None
        log.error("workcell %s: worker lost: %s", cell.name, why)
        experiment_id, campaign_id = cell.experiment, cell.campaign_id
        servicing = set(cell.servicing)
        cell.servicing.clear()
        cell.lost(time.monotonic(), self.lab.workers.restart_backoff)
        self.publish("workcell.state", {"workcell": cell.name, "state": "down", "why": why})
        if experiment_id is not None:
            experiment = self.store.experiment(experiment_id)
            if experiment.status is ExperimentStatus.RUNNING:
                self.store.mark_interrupted(
                    experiment_id, WORKER_DIED.format(cell=cell.name, why=why), Cause.CRASH
                )
            for name, reason in self._suspects_of(experiment, f"its worker died ({why})").items():
                self.health.suspect(name, reason)
            if campaign_id is not None:
                self.publish("experiment.interrupted", self._experiment_body(experiment_id), campaign_id)
        for name in servicing:
            self.health.suspect(name, f"its worker died ({why}) while making it safe")
        if self.stopping:
            cell.restart_at = float("inf")

    def _abort_all(self, cause: Cause, reason: str, campaign_id: str | None = None) -> None:
        for cell in self.cells.values():
            if cell.experiment is not None and (campaign_id is None or cell.campaign_id == campaign_id):
                self.in_background(
                    self.send(cell, p.Abort(experiment_id=cell.experiment, reason=reason, cause=cause))
                )

    async def _heartbeat_loop(self) -> None:
        assert self.store is not None
        beats = 0
        while True:
            try:
                self.store.heartbeat(self.owner)
                self.store.lab_heartbeat(self.owner, pid=os.getpid())
                beats += 1
                if beats % 10 == 0:
                    self.store.checkpoint()
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(HEARTBEAT_S)

    # -- scheduling ----------------------------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            try:
                await self._dispatch_round()
            except Exception:
                log.exception("scheduling failed; trying again")
                await asyncio.sleep(1.0)

    def estop_active(self) -> bool:
        assert self.store is not None
        return self.store.lab_state("estop") is not None

    def campaign(self, campaign_id: str) -> Campaign:
        assert self.store is not None
        return Campaign.model_validate(self.store.campaign(campaign_id).spec)

    def in_flight(self, campaign_id: str) -> list[Cell]:
        return [c for c in self.cells.values() if c.campaign_id == campaign_id]

    def unavailable(self) -> set[str]:
        """Instruments no experiment may lease now: leased, quarantined, suspect, or being serviced."""
        assert self.store is not None
        out = set(self.store.leases())
        out |= {name for name, r in self.store.instruments().items() if r.state != "ok"}
        for cell in self.cells.values():
            out |= cell.servicing
        return out

    async def _dispatch_round(self) -> None:
        assert self.store is not None and self.health is not None
        if self.stopping:
            return
        self._close_finished_campaigns()
        if self.estop_active():
            return
        await self.health.service_suspects()
        idle = [c.name for c in self.cells.values() if c.ready]
        if not idle:
            return
        candidates = self._candidates()
        if not candidates:
            return
        for assignment in plan_round(self.lab, idle, candidates, self.unavailable()):
            if self.stopping or self.estop_active():
                return
            await self._start(assignment.workcell, assignment.campaign_id, assignment.instruments)

    def _candidates(self) -> list[Candidate]:
        assert self.store is not None
        out = []
        for record in self.store.campaigns():
            if record.status is not CampaignStatus.RUNNING or record.owner != self.owner:
                continue
            if record.control != "run" or record.id in self.exhausted:
                continue
            campaign = self.campaign(record.id)
            history = self.store.experiments(record.id)
            if stop_reason(campaign, history, record.active_seconds) is not None:
                continue
            running = sum(e.status is ExperimentStatus.RUNNING for e in history)
            spent = sum(e.status in (ExperimentStatus.DONE, ExperimentStatus.FAILED) for e in history)
            slots = campaign.budget.max_experiments - spent - running
            used = sum(e.cause is not Cause.DROPPED for e in history)
            if slots > 0:
                out.append(Candidate(record.id, campaign, record.priority, record.weight, used, slots))
        return out

    async def _start(self, workcell: str, campaign_id: str, instruments: dict[str, str]) -> None:
        assert self.store is not None
        cell = self.cells[workcell]
        campaign = self.campaign(campaign_id)
        history = self.store.experiments(campaign_id)
        leftover = next((e for e in pending(history) if e.status is ExperimentStatus.PROPOSED), None)
        if leftover is not None:
            experiment = leftover
        else:
            optimizer = self.optimizers.get(campaign_id)
            if optimizer is None:
                optimizer = self.optimizers[campaign_id] = make_optimizer(campaign.space, campaign.optimizer)
            try:
                nxt = await asyncio.to_thread(decide_next, campaign, optimizer, history)
            except OptimizerExhausted:
                self.exhausted.add(campaign_id)
                return
            experiment = self.store.add_proposal(
                campaign_id, nxt.recipe, nxt.decision, workcell=workcell, retry_of=nxt.retry_of
            )
            self.publish("experiment.proposed", self._experiment_body(experiment.id), campaign_id)
        if not cell.ready or self.stopping or self.estop_active():
            return  # things changed while the optimizer thought: the proposal waits for the next round
        assignments = {
            role: {
                "instrument": name,
                "driver": self.lab.instruments[name].driver,
                "address": self.addresses.get(name),
            }
            for role, name in instruments.items()
        }
        try:
            self.store.start_experiment(
                experiment.id,
                assignments=assignments,
                workcell=workcell,
                instruments=list(dict.fromkeys(instruments.values())),
            )
        except LeaseConflict as exc:
            log.info("experiment %d waits: %s", experiment.seq, exc)
            return
        cell.state = "busy"
        cell.experiment, cell.campaign_id = experiment.id, campaign_id
        cell.started_at = time.monotonic()
        cell.timeout = campaign.procedure.timeout
        await self.send(
            cell,
            p.RunExperiment(
                experiment_id=experiment.id,
                campaign_id=campaign_id,
                devices=instruments,
                options=cell.spec.options,
                release_after=[n for n in instruments.values() if self.lab.shared(n)],
            ),
        )
        self.publish("experiment.started", self._experiment_body(experiment.id), campaign_id)

    def _close_finished_campaigns(self) -> None:
        assert self.store is not None
        for record in self.store.campaigns():
            if record.status is not CampaignStatus.RUNNING or record.owner != self.owner:
                continue
            if self.in_flight(record.id):
                continue
            history = self.store.experiments(record.id)
            if any(e.status is ExperimentStatus.RUNNING for e in history):
                continue  # a worker is about to report it
            campaign = self.campaign(record.id)
            if record.id in self.aborted:
                status, reason = CampaignStatus.INTERRUPTED, self.aborted.pop(record.id)
            elif record.control == "stop":
                status, reason = CampaignStatus.INTERRUPTED, "stopped by the operator"
            elif record.id in self.exhausted:
                done = any(e.status is ExperimentStatus.DONE for e in history)
                status = CampaignStatus.COMPLETED if done else CampaignStatus.FAILED
                reason = "search space exhausted" + ("" if done else " without a successful experiment")
            else:
                stop = stop_reason(campaign, history, record.active_seconds)
                if stop is None:
                    continue
                status, reason = stop.status, stop.reason
            self.close_campaign(record.id, status, reason)

    def close_campaign(self, campaign_id: str, status: CampaignStatus, reason: str) -> None:
        assert self.store is not None
        self.store.drop_proposals(campaign_id, f"never started: {reason}")
        self.store.set_campaign_status(campaign_id, status, reason)
        self.store.release_campaign(campaign_id, self.owner)
        self.optimizers.pop(campaign_id, None)
        self.exhausted.discard(campaign_id)
        log.info("campaign %s %s: %s", campaign_id, status.value, reason)
        self.publish("campaign.finished", {"status": status.value, "reason": reason}, campaign_id)
        self.publish_progress(campaign_id)


def _bind(socket: zmq.asyncio.Socket, address: str) -> str:
    """Bind, choosing a free port for ':0'; return the address actually bound."""
    if address.endswith(":0"):
        port = socket.bind_to_random_port(address[: -len(":0")])
        return f"{address[: -len(':0')]}:{port}"
    socket.bind(address)
    return address
