"""One experiment on a given set of devices: run the procedure, record as it goes, return the outcome.

This is the unit of work of both `sdl run` and the lab service's workers. While a plan runs, each
command the RunEngine sends to a device is journalled before it is sent (the RunEngine's message hook)
and its acknowledgement when the device's status completes; each event-model document is written as it
is emitted. The run's last documents (its results, its stop: `sdl.execution.documents`) are handed back with
the outcome, so the caller records both in one transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from bluesky.protocols import HasName, Status

from sdl.execution.documents import DocumentSink
from sdl.execution.engine import abort_run, close_run_engine, new_run_engine
from sdl.execution.extract import ExtractionError, extract
from sdl.execution.faults import Fault, classify, describe, instrument_of, stopped
from sdl.plans import ASK, LEASE, RELEASE, NoAnswer
from sdl.spec.campaign import Campaign, MissingMeasurement
from sdl.spec.importpaths import resolve
from sdl.spec.status import Cause, ExperimentStatus
from sdl.store import ExperimentRecord, Finish
from sdl.store.records import ACKNOWLEDGED_COMMANDS
from sdl.store.schema import to_jsonable

log = logging.getLogger(__name__)

INTERRUPTED_BY_OPERATOR = "interrupted by the operator (Ctrl-C)"
#: RunEngine commands that act on a device and whose completion is worth recording.
ACKNOWLEDGED = ACKNOWLEDGED_COMMANDS
#: Commands whose journal line says a device was asked to move or dispense (a crash then leaves it suspect).
MOTION = frozenset({"set", "kickoff"})
_NOT_JOURNALLED = frozenset({"describe", "describe_collect", "subscribe", "unsubscribe", "wait_for"})

Document = tuple[int, str, dict[str, Any]]


class Recorder(Protocol):
    """Where a running experiment's documents and journal go (the store, in practice)."""

    def append_documents(self, experiment_id: int, documents: list[Document]) -> None: ...

    def journal_entry(
        self,
        experiment_id: int,
        entry: str,
        command: str,
        *,
        instrument: str | None = None,
        device: str | None = None,
        detail: str | None = None,
        ref: int | None = None,
    ) -> int: ...


class Leasing(Protocol):
    """How a plan's on-demand leases are granted (the lab service's worker asks the service)."""

    async def acquire(self, experiment_id: int, instruments: list[str]) -> None: ...

    async def release(self, experiment_id: int, instruments: list[str]) -> None: ...


class Asking(Protocol):
    """How a plan's questions reach a person (the worker asks the lab service, which opens a task): the
    answer, or None when none came within ``timeout`` seconds or the task was cancelled."""

    async def ask(self, experiment_id: int, question: str, timeout: float | None) -> str | None: ...


class NobodyToAsk:
    """`sdl run`: no lab service, no task list: nobody is asked."""

    async def ask(self, experiment_id: int, question: str, timeout: float | None) -> str | None:
        return None


class AlwaysLeased:
    """`sdl run`: the lab is the campaign's alone, every instrument is there all along."""

    async def acquire(self, experiment_id: int, instruments: list[str]) -> None:
        return None

    async def release(self, experiment_id: int, instruments: list[str]) -> None:
        return None


class LeaseRefused(RuntimeError):
    """A plan's lease cannot be granted: the instrument is out of service (quarantined or suspect)."""

    fault = "not_ready"  # the instrument's trouble, not the recipe's (decision 0005)

    def __init__(self, message: str, instrument: str | None = None) -> None:
        super().__init__(message)
        self.instrument = instrument


class AbortedBeforeStart(RuntimeError):
    """The experiment was aborted before its RunEngine had started running the plan."""


class LeaseMisuse(RuntimeError):
    """The plan used an on-demand device without leasing it, or asked for a lease while holding one."""


@dataclass(frozen=True)
class Outcome:
    """How one experiment ended."""

    status: ExperimentStatus
    measurements: dict[str, Any] = field(default_factory=dict)
    objective: float | None = None
    failure: str | None = None
    cause: Cause | None = None
    fault: Fault | None = None
    #: The run's last documents, to be recorded in the same transaction as the outcome.
    trailing_documents: list[Document] = field(default_factory=list)

    def finish(self) -> Finish:
        return Finish(
            status=self.status,
            measurements=self.measurements or None,
            objective=self.objective,
            failure=self.failure,
            cause=self.cause,
            fault_kind=self.fault.kind if self.fault else None,
            fault_instrument=self.fault.instrument if self.fault else None,
        )


class ExperimentRunner:
    """Runs a campaign's experiments one at a time on ``devices`` (name -> device the plan is handed)."""

    def __init__(
        self,
        campaign: Campaign,
        recorder: Recorder,
        *,
        base_dir: Path | None = None,
        devices: Mapping[str, HasName] | None = None,
        publish: Callable[[str, dict[str, Any]], None] | None = None,
        run_engine: Any = None,
        leasing: Leasing | None = None,
        asking: Asking | None = None,
    ) -> None:
        self.campaign = campaign
        self.asking = asking or NobodyToAsk()
        self.recorder = recorder
        self.devices = dict(devices or {})
        self.publish = publish
        self.leasing = leasing or AlwaysLeased()
        #: Instruments the plan must lease itself before using (the devices in procedure.lease_on_demand).
        self.on_demand = {
            getattr(instrument_of(self.devices[d]), "name", d)
            for d in campaign.procedure.lease_on_demand
            if d in self.devices
        }
        self.held: set[str] = set()
        self._own_run_engine = run_engine is None
        procedure = campaign.procedure
        self._procedure = resolve(procedure.plan or procedure.function or "", base_dir)
        self._extractor = resolve(procedure.extractor, base_dir) if procedure.extractor else None
        self._run_engine: Any = run_engine
        self._phase = "idle"  # idle | function | plan
        self._abort: tuple[str, Cause] | None = None
        self._abort_delivered = False  # whether the RunEngine (or the plan) has been told
        self._lock = threading.Lock()
        self._experiment_id: int | None = None
        self._sent: dict[int, int] = {}

    # -- stopping -----------------------------------------------------------------------------------------

    @property
    def aborted(self) -> bool:
        """Whether an abort was asked for (the experiment in flight ends interrupted)."""
        return self._abort is not None

    @property
    def in_function(self) -> bool:
        """Whether a plain-function procedure is running (only an exception can stop it)."""
        return self._phase == "function"

    def abort(self, reason: str = INTERRUPTED_BY_OPERATOR, cause: Cause = Cause.OPERATOR) -> None:
        """Abort the experiment in flight: a plan through the RunEngine, which calls stop() on every device
        it moved. Safe from a signal handler or another thread; a function cannot be stopped from outside."""
        with self._lock:
            self._abort = (reason, cause)
            run_engine, phase, experiment_id = self._run_engine, self._phase, self._experiment_id
        if phase == "plan" and run_engine is not None and not run_engine.state.is_idle:
            self._abort_delivered = True
            if experiment_id is not None:
                self.recorder.journal_entry(experiment_id, "abort", "abort", detail=reason)
            abort_run(run_engine, reason)

    def close(self) -> None:
        """Stop the RunEngine's event loop thread (unless the RunEngine was handed in)."""
        run_engine, self._run_engine = self._run_engine, None
        if run_engine is not None and self._own_run_engine:
            close_run_engine(run_engine)

    # -- running ------------------------------------------------------------------------------------------

    def run(self, experiment: ExperimentRecord) -> Outcome:
        """Run one experiment that the store already says is running. Once aborted, a runner runs
        nothing more: each later experiment ends interrupted at once."""
        with self._lock:
            self._experiment_id = experiment.id
        try:
            if self.campaign.procedure.plan is not None:
                return self._run_plan(experiment)
            return self._run_function(experiment)
        except KeyboardInterrupt:
            return Outcome(ExperimentStatus.INTERRUPTED, failure=self._abort_reason(), cause=Cause.OPERATOR)
        finally:
            with self._lock:
                self._experiment_id = None
                self._phase = "idle"
                self.held.clear()  # the experiment's end gives back whatever it still held

    def _abort_reason(self) -> str:
        return self._abort[0] if self._abort else INTERRUPTED_BY_OPERATOR

    def _interrupted(self) -> Outcome:
        reason, cause = self._abort or (INTERRUPTED_BY_OPERATOR, Cause.OPERATOR)
        return Outcome(ExperimentStatus.INTERRUPTED, failure=reason, cause=cause)

    def _score(self, measurements: Mapping[str, Any]) -> Outcome:
        try:
            objective = self.campaign.scalarise(measurements)  # before NaN becomes null in the record
        except MissingMeasurement as exc:
            return Outcome(ExperimentStatus.FAILED, to_jsonable(measurements), failure=str(exc))
        return Outcome(ExperimentStatus.DONE, to_jsonable(measurements), objective=objective)

    def _failed(self, exc: BaseException, prefix: str = "") -> Outcome:
        if stopped(exc):  # an instrument stopped on request: interrupted, whoever asked
            if self._abort is None:
                return Outcome(
                    ExperimentStatus.INTERRUPTED,
                    failure=f"stopped on request: {describe(exc)}",
                    cause=Cause.OPERATOR,
                )
            return self._interrupted()
        fault = classify(exc)
        if fault is not None:
            return Outcome(
                ExperimentStatus.FAULTED, failure=prefix + fault.detail, cause=Cause.FAULT, fault=fault
            )
        text = str(exc) if isinstance(exc, ExtractionError) else describe(exc)
        return Outcome(ExperimentStatus.FAILED, failure=prefix + text)

    def _run_function(self, experiment: ExperimentRecord) -> Outcome:
        with self._lock:
            if self._abort is not None:
                return self._interrupted()
            self._phase = "function"
        try:
            result = self._procedure(dict(experiment.recipe), **self.campaign.procedure.options)
        except Exception as exc:
            return self._failed(exc)
        finally:
            self._phase = "idle"
        if not isinstance(result, Mapping):
            return Outcome(
                ExperimentStatus.FAILED, failure=f"the procedure returned {type(result).__name__}, not a dict"
            )
        return self._score(dict(result))

    def _run_plan(self, experiment: ExperimentRecord) -> Outcome:
        """Run the plan; every experiment of a plan is a run, ended by the documents that say how it went
        (`sdl.execution.documents`)."""
        sink = document_sink(self.campaign, experiment, self.recorder, self.publish)
        outcome = self._plan_outcome(experiment, sink)
        trailing = sink.close(outcome.status, outcome.failure, outcome.measurements)
        return replace(outcome, trailing_documents=trailing)

    def _plan_outcome(self, experiment: ExperimentRecord, sink: DocumentSink) -> Outcome:
        from bluesky.utils import RunEngineInterrupted

        run_engine = self._get_run_engine()
        try:
            plan = self._procedure(dict(experiment.recipe), self.devices, **self.campaign.procedure.options)
        except Exception as exc:
            return self._failed(exc, prefix="building the plan failed: ")
        with self._lock:
            if self._abort is not None:  # aborted between 'running' and here
                return self._interrupted()
            self._phase = "plan"
        self._sent.clear()
        try:
            # The plan names itself (its start's plan_name); the campaign's name for it is only for runs
            # the sink composes when the plan never opened one.
            metadata = {k: v for k, v in sink.metadata.items() if k != "plan_name"}
            result = run_engine(self._acknowledging(plan, experiment.id), sink, **metadata)
        except RunEngineInterrupted:
            return self._interrupted()
        except Exception as exc:
            if self._abort is not None:
                return self._interrupted()
            return self._failed(exc)
        finally:
            with self._lock:
                self._phase = "idle"
        if self._abort is not None:
            return self._interrupted()
        if getattr(result, "interrupted", False) or getattr(result, "exit_status", "success") != "success":
            reason = getattr(result, "reason", "") or f"run ended with status {result.exit_status}"
            return Outcome(ExperimentStatus.FAILED, failure=reason)
        documents = sink.all()
        starts = sum(1 for name, _ in documents if name == "start")
        if starts != 1:
            return Outcome(
                ExperimentStatus.FAILED, failure=f"the plan opened {starts} runs; it must open exactly one"
            )
        try:
            measurements = extract(documents, self.campaign.procedure.measurements, self._extractor)
        except Exception as exc:
            return self._failed(exc)
        return self._score(dict(measurements))

    # -- the journal ----------------------------------------------------------------------------------------

    def _journal_message(self, msg: Any) -> None:
        """RunEngine message hook: write each command to a device before the RunEngine acts on it."""
        if self._abort is not None and not self._abort_delivered:
            # An abort that came while the RunEngine was still starting (too early for RunEngine.abort):
            # the plan stops at its next message instead of running on. Once only: the plan's own cleanup
            # (closing the run, releasing leases) must still go through.
            self._abort_delivered = True
            raise AbortedBeforeStart(self._abort[0])
        experiment_id = self._experiment_id
        if experiment_id is None or msg.obj is None or msg.command in _NOT_JOURNALLED:
            return
        root = instrument_of(msg.obj)
        name = getattr(root, "name", None)
        if name in self.on_demand and name not in self.held:
            raise LeaseMisuse(
                f"the plan used {getattr(msg.obj, 'name', name)} ({msg.command}) without leasing {name}: "
                "wrap the steps that use it in sdl.plans.leased (procedure.lease_on_demand lists it)"
            )
        detail = ", ".join(_short(a) for a in msg.args) if msg.args else None
        entry = self.recorder.journal_entry(
            experiment_id,
            "sent",
            msg.command,
            instrument=getattr(root, "name", None),
            device=getattr(msg.obj, "name", None),
            detail=detail,
        )
        if msg.command in ACKNOWLEDGED:
            self._sent[id(msg)] = entry

    def _acknowledging(self, plan: Any, experiment_id: int) -> Generator[Any, Any, Any]:
        """The plan, with a callback on each status it waits for, journalling when the device finished."""
        from bluesky.preprocessors import plan_mutator

        def watch(msg: Any) -> Generator[Any, Any, Any]:
            status = yield msg
            ref = self._sent.pop(id(msg), None)
            if ref is not None and isinstance(status, Status):
                status.add_callback(lambda st: self._acknowledge(experiment_id, msg, ref, st))
            return status

        def mutate(msg: Any) -> tuple[Any, None] | tuple[None, None]:
            return (watch(msg), None) if msg.command in ACKNOWLEDGED else (None, None)

        return plan_mutator(plan, mutate)

    def _acknowledge(self, experiment_id: int, msg: Any, ref: int, status: Status) -> None:
        ok = bool(status.success)
        detail = None
        if not ok:
            exc = status.exception()
            detail = describe(exc) if exc is not None else "failed"
        root = instrument_of(msg.obj)
        try:
            self.recorder.journal_entry(
                experiment_id,
                "done" if ok else "failed",
                msg.command,
                instrument=getattr(root, "name", None),
                device=getattr(msg.obj, "name", None),
                detail=detail,
                ref=ref,
            )
        except Exception:  # a status callback must never raise into the device's thread
            log.exception("could not journal the acknowledgement of %s", msg.command)

    # -- on-demand leases ------------------------------------------------------------------------------------

    async def _lease_command(self, msg: Any) -> None:
        names = list(dict.fromkeys(getattr(instrument_of(d), "name", str(d)) for d in msg.args))
        experiment_id = self._experiment_id
        assert experiment_id is not None
        if self.held:  # asking while holding could deadlock two experiments: ask for everything at once
            raise LeaseMisuse(f"lease {', '.join(names)} while holding {', '.join(sorted(self.held))}: "
                             "release first, or lease them all in one call")  # fmt: skip
        # Only what is leased on demand is asked for: the rest is this experiment's for its whole run, and
        # asking for it again would wait on itself.
        asked = [n for n in names if n in self.on_demand]
        whole = [n for n in names if n not in self.on_demand]
        note = f" ({', '.join(whole)}: held for the whole run)" if whole else ""
        self.recorder.journal_entry(experiment_id, "lease", "lease", detail=", ".join(asked) + note)
        if asked:
            await self.leasing.acquire(experiment_id, asked)
        self.held.update(asked)
        self.recorder.journal_entry(experiment_id, "granted", "lease", detail=", ".join(asked))

    async def _release_command(self, msg: Any) -> None:
        names = list(dict.fromkeys(getattr(instrument_of(d), "name", str(d)) for d in msg.args))
        experiment_id = self._experiment_id
        assert experiment_id is not None
        held = [n for n in names if n in self.held]
        self.held.difference_update(held)
        if held:
            await self.leasing.release(experiment_id, held)
        self.recorder.journal_entry(experiment_id, "released", "release", detail=", ".join(held))

    async def _ask_command(self, msg: Any) -> str:
        experiment_id = self._experiment_id
        assert experiment_id is not None
        question, default = str(msg.args[0]), msg.kwargs.get("default")
        self.recorder.journal_entry(experiment_id, "ask", "ask", detail=question[:1000])
        answer = await self.asking.ask(experiment_id, question, msg.kwargs.get("timeout"))
        self.recorder.journal_entry(experiment_id, "answered", "ask", detail=answer if answer is not None
                                    else f"no answer; default {default!r}")  # fmt: skip
        if answer is None and default is None:
            raise NoAnswer(f"nobody answered {question!r}")
        return answer if answer is not None else str(default)

    def _get_run_engine(self) -> Any:
        if self._run_engine is None:
            self._run_engine = new_run_engine()
        # A RunEngine may be shared by several runners: this one's hooks for this run.
        self._run_engine.msg_hook = self._journal_message
        self._run_engine.register_command(LEASE, self._lease_command)
        self._run_engine.register_command(RELEASE, self._release_command)
        self._run_engine.register_command(ASK, self._ask_command)
        return self._run_engine


def document_sink(
    campaign: Campaign,
    experiment: ExperimentRecord,
    recorder: Recorder,
    publish: Callable[[str, dict[str, Any]], None] | None,
) -> DocumentSink:
    """Where an experiment's documents go, with what its run's start says: the campaign and experiment,
    the recipe, the fixed conditions, and the units of both."""
    metadata: dict[str, Any] = {
        "sdl_campaign": experiment.campaign_id,
        "sdl_experiment": experiment.seq,
        "recipe": experiment.recipe,
        "plan_name": campaign.procedure.plan,
    }
    conditions = campaign.condition_values()
    if conditions:
        metadata["conditions"] = conditions
    units = {p.name: getattr(p, "units", "") for p in campaign.parameters}
    units.update({name: c.units for name, c in campaign.conditions.items()})
    if any(units.values()):
        metadata["units"] = {k: v for k, v in units.items() if v}
    measured = {o.measurement for o in campaign.objectives} | set(campaign.measurements)
    return DocumentSink(
        recorder,
        experiment.id,
        publish,
        metadata,
        {name: campaign.measurement_meaning(name).units for name in measured},
    )


def as_run(
    outcome: Outcome,
    campaign: Campaign,
    experiment: ExperimentRecord,
    recorder: Recorder,
    publish: Callable[[str, dict[str, Any]], None] | None = None,
) -> Outcome:
    """An outcome reached before the plan could run (its instruments would not connect), with the run that
    records it: a start and a stop with its exit status (`sdl.execution.documents`)."""
    if campaign.procedure.plan is None:
        return outcome
    sink = document_sink(campaign, experiment, recorder, publish)
    return replace(outcome, trailing_documents=sink.close(outcome.status, outcome.failure, None))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
