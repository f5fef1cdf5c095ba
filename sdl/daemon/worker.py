"""A worker: the process that touches one workcell's hardware, with its own RunEngine.

    python -m sdl.daemon.worker        (started by the lab service, configured by $SDL_WORKER_CONFIG)

The main thread owns the 0MQ socket to the lab service: it receives commands, sends a heartbeat, and
handles aborts and e-stops at once. Experiments and instrument service run one at a time on a work
thread. If the lab service dies, the worker aborts what it is doing (the RunEngine stops every device it
moved), records that, closes its instruments and exits: hardware is never left running unsupervised.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal

import zmq

from sdl import crashpoints
from sdl.crashpoints import crash_point
from sdl.daemon import protocol as p
from sdl.daemon.heap import freeze_startup_heap
from sdl.daemon.holding import RECORDED, PatientRecorder, record_outcome
from sdl.daemon.leasing import ServiceAsking, ServiceLeasing
from sdl.daemon.usage import Ledger
from sdl.execution.engine import close_run_engine, document_publisher, new_run_engine
from sdl.execution.experiment import ExperimentRunner, Outcome, as_run
from sdl.execution.faults import Fault
from sdl.execution.instruments import Instruments, InstrumentUnavailable
from sdl.execution.provenance import ProvenanceSource, campaign_provenance
from sdl.spec.campaign import Campaign
from sdl.spec.devices import MakesSafe
from sdl.spec.status import Cause, ExperimentStatus, IllegalTransition
from sdl.store import Store, StoreFull

log = logging.getLogger("sdl.worker")

MANAGER_GONE = "the lab service stopped while this experiment was in flight; it was aborted"
#: How often a worker reads who holds the lab.
CLAIM_READ_S = 0.5


def _failed(action: Literal["make_safe", "check"], exc: InstrumentUnavailable) -> p.ServiceResult:
    return p.ServiceResult(
        action=action, instrument=exc.instrument, ok=False, detail=str(exc), fault=exc.fault
    )


class Worker:
    def __init__(self, config: p.WorkerConfig) -> None:
        self.config = config
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.connect(config.manager)
        # Other threads hand messages to the main thread through one PUSH socket, under a lock.
        self._outbox = self.context.socket(zmq.PULL)
        self._outbox.bind(f"inproc://outbox-{id(self)}")
        self._push = self.context.socket(zmq.PUSH)
        self._push.connect(f"inproc://outbox-{id(self)}")
        self._push_lock = threading.Lock()
        self.store = Store(config.data_dir)
        self.recorder = PatientRecorder(self.store, self._store_full)
        self._closing = threading.Event()
        self._full_told_at: float | None = None
        base_dir = Path(config.base_dir) if config.base_dir else None
        self.base_dir = base_dir
        self.instruments = Instruments(
            config.instruments,
            config.addresses,
            base_dir=base_dir,
            on_fault=self._on_fault,
            on_usage=self._on_usage,
            on_connect=lambda instrument, device: self.ledger.tell(instrument, device),
        )
        self.ledger = Ledger(self.store, config.workcell, self.instruments.devices.get, self._store_full)
        self.work = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"work-{config.workcell}")
        self.run_engine: Any = None
        self.publisher: Any = None
        self.runner: ExperimentRunner | None = None
        self.leasing = ServiceLeasing(self.send, self.instruments)
        self.asking = ServiceAsking(self.send)
        self.current: int | None = None
        self._pending: list[Future[Any]] = []
        # From the config, not getppid(): the service may already be gone by the time this runs.
        self._parent = config.parent_pid
        self._claim_read_at = 0.0
        self._aborted: dict[int, tuple[str, Cause]] = {}
        # Set once the lab service is gone: an experiment still being prepared then must not start.
        self._orphan = False
        self._provenance: dict[str, ProvenanceSource] = {}  # by campaign id

    # -- messaging -------------------------------------------------------------------------------------------

    def send(self, message: p.BaseModel) -> None:
        """Send to the lab service from any thread."""
        data = p.encode(message)
        if threading.current_thread() is threading.main_thread():
            self.socket.send(data)
        else:
            with self._push_lock:
                self._push.send(data)

    def _store_full(self, detail: str, spilled: str | None = None) -> None:
        """A write failed for want of space: tell the service (now and then, not at every retry)."""
        now = time.monotonic()
        if spilled is None and self._full_told_at is not None and now - self._full_told_at < 5.0:
            return
        self._full_told_at = now
        holding = self.current if spilled is not None else None
        self.send(p.Storage(full=True, detail=detail, experiment_id=holding, spilled=spilled))

    def _on_usage(self, instrument: str, record: dict[str, Any]) -> None:
        self.ledger.book(self.current, instrument, record)

    def _on_fault(self, event: dict[str, Any]) -> None:
        self.send(
            p.InstrumentReport(
                instrument=str(event.get("instrument", "?")),
                event=str(event.get("event", "?")),
                fault=event.get("fault"),
                detail=str(event.get("detail", ""))[:500],
            )
        )

    # -- the main loop ---------------------------------------------------------------------------------------

    def run(self) -> int:
        self.send(p.Hello(workcell=self.config.workcell, pid=os.getpid(), token=self.config.token))
        # Importing bluesky and starting its event loop takes a second or more: do it now, on the work
        # thread (ahead of any experiment), rather than inside the first experiment's time.
        self.work.submit(self._warm_up)
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._outbox, zmq.POLLIN)
        period = self.config.heartbeat_s
        next_beat = 0.0
        while True:
            now = time.monotonic()
            if now >= next_beat:
                if os.getppid() != self._parent or self._deposed(now):
                    self._orphaned()
                    return 0
                self.send(
                    p.Heartbeat(experiment_id=self.current, connected=sorted(self.instruments.connected))
                )
                next_beat = now + period
            events = dict(poller.poll(timeout=max(1, int((next_beat - time.monotonic()) * 1000))))
            if self._outbox in events:
                while True:
                    try:
                        self.socket.send(self._outbox.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            if self.socket in events:
                while True:
                    try:
                        raw = self.socket.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if self._handle(p.TO_WORKER.validate_json(raw)):
                        return 0

    def _deposed(self, now: float) -> bool:
        """Whether another service holds the lab now (read from the store once a second): a standby took it
        over from this worker's service, which is alive but went silent (hung, or cut off from the store).
        Its workers must stop as if it had died, before the new holder's workers reach the instruments."""
        if self.config.owner is None or now < self._claim_read_at + CLAIM_READ_S:
            return False
        self._claim_read_at = now
        try:
            held = self.store.lab_state("daemon")
        except Exception:  # the store unreadable for a moment says nothing about who holds the lab
            return False
        if held is None or held.get("owner") == self.config.owner:
            return False
        log.error("the lab is held by another service now (%s); stopping", held.get("owner"))
        return True

    def _handle(self, message: Any) -> bool:
        """Act on one command; True when the worker must exit."""
        if isinstance(message, p.RunExperiment):
            self._submit(self._run_experiment, message)
        elif isinstance(message, p.Abort):
            log.warning("aborting experiment id %d: %s", message.experiment_id, message.reason)
            runner = self.runner
            if self.current == message.experiment_id and runner is not None:
                runner.abort(message.reason, message.cause)
            else:  # not started here yet: it ends interrupted as soon as it would start
                self._aborted[message.experiment_id] = (message.reason, message.cause)
        elif isinstance(message, (p.LeaseGranted, p.LeaseRefused)):
            self.leasing.answered(message)
        elif isinstance(message, p.Answered):
            self.asking.answered(message)
        elif isinstance(message, p.EStop):
            self._estop(message.reason)
        elif isinstance(message, p.MakeSafe):
            self._submit(self._make_safe, message)
        elif isinstance(message, p.CheckHealth):
            self._submit(self._check, message)
        elif isinstance(message, p.Shutdown):
            self._shutdown()
            return True
        return False

    def _submit(self, fn: Any, message: Any) -> None:
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self.work.submit(self._guarded, fn, message))

    def _guarded(self, fn: Any, message: Any) -> None:
        try:
            fn(message)
        except Exception:  # a bug here must not kill the work thread silently
            log.exception("%s failed", type(message).__name__)

    # -- experiments -----------------------------------------------------------------------------------------

    def _run_experiment(self, message: p.RunExperiment) -> None:
        self.current = message.experiment_id
        instruments = list(dict.fromkeys(message.devices.values()))
        try:
            self._run_and_record(message, instruments)
        except Exception as exc:  # a bug, not the recipe's doing: the experiment ends interrupted
            log.exception("experiment id %d could not be run", message.experiment_id)
            reason = f"the worker failed: {type(exc).__name__}: {exc}"
            outcome = Outcome(ExperimentStatus.INTERRUPTED, failure=reason, cause=Cause.CRASH)
            recorded = self._record(message.experiment_id, outcome)
            self.send(
                p.Finished(
                    experiment_id=message.experiment_id,
                    status=outcome.status.value,
                    failure=reason,
                    recorded=recorded,
                    instruments=instruments,
                )
            )
        finally:
            self.current = None
            self.runner = None
            self.instruments.disconnect(message.release_after)

    def _run_and_record(self, message: p.RunExperiment, instruments: list[str]) -> None:
        experiment = self.store.experiment(message.experiment_id)
        record = self.store.campaign(message.campaign_id)
        campaign = Campaign.model_validate(record.spec)
        if message.options:
            options = {**campaign.procedure.options, **message.options}
            campaign = campaign.model_copy(
                update={"procedure": campaign.procedure.model_copy(update={"options": options})}
            )
        provenance = self._provenance.get(record.id)
        if provenance is None:
            provenance = ProvenanceSource(
                campaign_provenance(record.source_text, record.base_dir, record.submitted_by),
                self.config.lab_provenance,
                self.instruments,
                self.config.workcell,
            )
            self._provenance[record.id] = provenance
        try:
            # Instruments the plan leases on demand are built now and connected when it leases them.
            held = self.instruments.connect([n for n in instruments if n not in message.on_demand])
            held.update({n: self.instruments.build(n) for n in message.on_demand})
            for name, device in held.items():  # refilled since they were connected, maybe
                self.ledger.tell(name, device)
            self.leasing.shared = set(message.release_after)
            try:
                self.store.save_provenance(experiment.id, provenance.of(instruments))
            except StoreFull as exc:  # it is written with the outcome anyway
                self._store_full(str(exc))
            outcome = self._run(experiment, campaign, record.base_dir, message, held)
        except InstrumentUnavailable as exc:
            fault = Fault(kind=exc.fault or "link_lost", instrument=exc.instrument, detail=str(exc))
            outcome = Outcome(ExperimentStatus.FAULTED, failure=str(exc), cause=Cause.FAULT, fault=fault)
            outcome = as_run(outcome, campaign, experiment, self.store, self.publisher)
        recorded = self._record(message.experiment_id, outcome, provenance.of(instruments))
        self.send(
            p.Finished(
                experiment_id=message.experiment_id,
                status=outcome.status.value,
                failure=outcome.failure,
                fault_kind=outcome.fault.kind if outcome.fault else None,
                fault_instrument=outcome.fault.instrument if outcome.fault else None,
                fault_consumable=outcome.fault.consumable if outcome.fault else None,
                recorded=recorded,
                instruments=instruments,
            )
        )

    def _warm_up(self) -> None:
        if self.run_engine is None:
            self.run_engine = new_run_engine()
            freeze_startup_heap()

    def _run(
        self,
        experiment: Any,
        campaign: Campaign,
        base_dir: str | None,
        message: p.RunExperiment,
        held: dict[str, Any],
    ) -> Outcome:
        self._warm_up()
        if self.publisher is None and self.config.documents and campaign.procedure.plan is not None:
            # Documents not yet sent when the worker closes are dropped, not waited for: if the lab
            # service (the proxy's owner) is gone, closing would otherwise wait forever. The store has them.
            self.publisher = document_publisher(self.config.documents, self.config.workcell.encode())
        devices = {role: held[name] for role, name in message.devices.items()}
        runner = ExperimentRunner(
            campaign,
            self.recorder,
            base_dir=Path(base_dir) if base_dir else self.base_dir,
            devices=devices,
            publish=self.publisher,
            run_engine=self.run_engine,
            leasing=self.leasing,
            asking=self.asking,
        )
        self.runner = runner
        self.recorder.cancelled = lambda: runner.aborted
        aborted = self._aborted.pop(experiment.id, None)
        if self._orphan:  # the service went while this was being prepared: `_orphaned` saw no runner
            aborted = (MANAGER_GONE, Cause.CRASH)
        if aborted is not None:
            runner.abort(*aborted)
        self.send(p.Started(experiment_id=experiment.id))
        log.info("experiment %s #%d started on %s", campaign.name, experiment.seq, self.config.workcell)
        outcome = runner.run(experiment)
        log.info("experiment %s #%d %s", campaign.name, experiment.seq, outcome.status.value)
        return outcome

    def _record(self, experiment_id: int, outcome: Outcome, provenance: dict[str, Any] | None = None) -> bool:
        crash_point("worker.before-outcome")
        failed = outcome.status in (ExperimentStatus.FAILED, ExperimentStatus.FAULTED)
        if failed and (os.getppid() != self._parent or self._orphan):
            # The service died during the experiment, and a simulated lab with it: a failure now says
            # nothing about the recipe or the instrument.
            failure = f"{MANAGER_GONE} ({outcome.failure})"
            outcome = Outcome(
                ExperimentStatus.INTERRUPTED,
                failure=failure,
                cause=Cause.CRASH,
                trailing_documents=outcome.trailing_documents,  # the run's stop: how it really ended
            )
        held = self.recorder.take(experiment_id, outcome.finish(), outcome.trailing_documents, provenance)
        try:
            # While the disk is full: spilled to a file and held here until the store has room.
            result = record_outcome(self.store, held, full=self._store_full, closing=self._closing)
        except IllegalTransition:
            # The lab service closed it first (it gave this worker up for dead); its record stands.
            log.warning(
                "experiment id %d was already closed; its outcome here is not recorded", experiment_id
            )
            return False
        if result != RECORDED:
            log.error("experiment id %d: the worker stops with its outcome %s", experiment_id, result)
            return False
        if self._full_told_at is not None:
            self._full_told_at = None
            self.send(p.Storage(full=False))
        return True  # the lab service checkpoints the store on a schedule

    # -- service ---------------------------------------------------------------------------------------------

    def _make_safe(self, message: p.MakeSafe) -> None:
        try:
            for name in message.instruments:
                try:
                    self.instruments.make_safe(name)
                    if message.check:
                        self.instruments.check(name)
                except InstrumentUnavailable as exc:
                    self.send(_failed("make_safe", exc))
                else:
                    self.send(p.ServiceResult(action="make_safe", instrument=name, ok=True))
        finally:
            self.instruments.disconnect(message.release_after)

    def _check(self, message: p.CheckHealth) -> None:
        try:
            self.instruments.check(message.instrument)
        except InstrumentUnavailable as exc:
            self.send(_failed("check", exc))
        else:
            self.send(p.ServiceResult(action="check", instrument=message.instrument, ok=True))
        finally:
            if message.release_after:
                self.instruments.disconnect([message.instrument])

    def _estop(self, reason: str) -> None:
        log.warning("E-STOP: %s", reason)
        if self.runner is not None:
            self.runner.abort(f"e-stop: {reason}", Cause.ESTOP)
        stopped = self.instruments.stop_all()
        self.send(p.EStopped(stopped=stopped))

    # -- ending ----------------------------------------------------------------------------------------------

    def _orphaned(self) -> None:
        """The lab service is gone: abort, record, close everything, exit."""
        log.error("the lab service (process %d) is gone; stopping", self._parent)
        self._closing.set()  # an outcome the store has no room for stays in its spill file
        self._orphan = True  # before reading the runner: `_run` sets the runner, then reads this
        runner, current = self.runner, self.current
        if runner is not None:
            runner.abort(MANAGER_GONE, Cause.CRASH)
            if runner.in_function and current is not None:
                # A plain function cannot be stopped from outside: record it, and end the process under it.
                self._record(
                    current, Outcome(ExperimentStatus.INTERRUPTED, failure=MANAGER_GONE, cause=Cause.CRASH)
                )
                self.instruments.close()
                os._exit(0)
        self._close()

    def _shutdown(self) -> None:
        self._close()
        with suppress(zmq.ZMQError):
            self.socket.send(p.encode(p.Goodbye()), zmq.NOBLOCK)

    def _close(self, wait_s: float = 60.0) -> None:
        """Let the work in hand end (an aborted plan ends quickly; an outcome the store has no room for
        stays in its spill file), make open instruments safe, close them."""
        self._closing.set()
        self.work.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + wait_s
        for future in self._pending:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                log.error("the work in hand did not end within %g s; leaving it", wait_s)
                os._exit(1)
            except Exception:
                pass  # already logged by _guarded
        for name in sorted(self.instruments.connected):
            device = self.instruments.devices.get(name)
            if isinstance(device, MakesSafe):
                try:
                    device.make_safe()
                except Exception:
                    log.exception("making %s safe on the way out failed", name)
        self.instruments.close()
        if self.run_engine is not None:
            close_run_engine(self.run_engine)
            self.run_engine = None
        if self.publisher is not None:
            self.publisher.close()
        self.store.close()

    def close_sockets(self) -> None:
        for socket in (self._push, self._outbox, self.socket):
            socket.close(linger=500)
        self.context.term()


def main() -> int:
    crashpoints.role = "worker"
    config = p.WorkerConfig.model_validate_json(os.environ["SDL_WORKER_CONFIG"])
    logging.basicConfig(
        level=os.environ.get("SDL_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)s [{config.workcell}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in ("bluesky", "ophyd", "caproto"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The lab service decides what a signal means for the hardware: a worker never dies of one mid-move
    # (it stops when the service tells it to, or when the service is gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker = Worker(config)
    try:
        return worker.run()
    finally:
        worker.close_sockets()


if __name__ == "__main__":
    sys.exit(main())
