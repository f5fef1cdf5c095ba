"""The closed loop: propose -> record -> mark running -> execute -> record, until the budget says stop.

The store is the single source of truth: before each proposal the full history is read back from it and
handed to the optimizer, so a resumed campaign continues exactly where the record says it is. Each step
is an explicit status transition committed before the action it announces.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sdl.campaign import Campaign, MissingMeasurement
from sdl.extract import ExtractionError, extract
from sdl.imports import resolve
from sdl.optimizer import Observation, OptimizerExhausted, make_optimizer
from sdl.status import CampaignStatus, ExperimentStatus
from sdl.store import Decision, ExperimentRecord, Store
from sdl.store.schema import to_jsonable

log = logging.getLogger(__name__)

INTERRUPTED_BY_OPERATOR = "interrupted by the operator (Ctrl-C)"


class Observer(Protocol):
    """Receives progress as it happens (the CLI's progress bar; later the daemon's event stream)."""

    def experiment_started(self, experiment: ExperimentRecord) -> None: ...

    def experiment_finished(self, experiment: ExperimentRecord, history: list[ExperimentRecord]) -> None: ...


@dataclass(frozen=True)
class Outcome:
    status: ExperimentStatus
    measurements: dict[str, Any] = field(default_factory=dict)
    objective: float | None = None
    failure: str | None = None
    documents: list[tuple[str, dict[str, Any]]] | None = None


@dataclass(frozen=True)
class RunResult:
    """How a run of the loop ended."""

    stop_reason: str
    status: CampaignStatus
    counts: dict[ExperimentStatus, int]
    best: ExperimentRecord | None
    elapsed: float


def counts_toward_budget(experiment: ExperimentRecord) -> bool:
    """Done and failed experiments spent the budget; interrupted ones produced no result and do not."""
    return experiment.status in (ExperimentStatus.DONE, ExperimentStatus.FAILED)


def observations(history: list[ExperimentRecord]) -> list[Observation]:
    """The optimizer's view of the record; interrupted experiments are left out (no result either way)."""
    out = []
    for e in history:
        if e.status is ExperimentStatus.DONE:
            out.append(Observation(recipe=e.recipe, value=e.objective, measurements=e.measurements))
        elif e.status is ExperimentStatus.FAILED:
            out.append(Observation(recipe=e.recipe, value=None, failure=e.failure))
    return out


def best_experiment(history: list[ExperimentRecord]) -> ExperimentRecord | None:
    done = [e for e in history if e.status is ExperimentStatus.DONE and e.objective is not None]
    return min(done, key=lambda e: (e.objective, e.seq)) if done else None


class Executor:
    """Runs one campaign's experiments against its devices, recording every step in the store."""

    def __init__(
        self,
        store: Store,
        campaign_id: str,
        campaign: Campaign,
        *,
        base_dir: Path | None = None,
        devices: Mapping[str, Any] | None = None,
        assignments: Mapping[str, Any] | None = None,
        optimizer: Any = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.campaign_id = campaign_id
        self.campaign = campaign
        self.base_dir = base_dir
        self.devices = dict(devices or {})
        self.assignments = dict(assignments or {})
        self.optimizer = (
            optimizer
            if optimizer is not None
            else make_optimizer(campaign.space, campaign.optimizer, campaign.objective_set())
        )
        self.observer = observer
        self.clock = clock
        procedure = campaign.procedure
        self._procedure = resolve(procedure.plan or procedure.function or "", base_dir)
        self._extractor = resolve(procedure.extractor, base_dir) if procedure.extractor else None
        self._interrupt = threading.Event()
        self._phase = "idle"  # "idle" | "function" | "plan"
        self._run_engine: Any = None

    # -- interruption ------------------------------------------------------------------------------

    @property
    def interrupt_requested(self) -> bool:
        return self._interrupt.is_set()

    @property
    def in_function(self) -> bool:
        """Whether a plain-function procedure is running (only an exception can stop it)."""
        return self._phase == "function"

    def interrupt(self) -> None:
        """Stop after the current step; abort a running plan through the RunEngine (devices get stop()).

        Safe to call from a signal handler or another thread.
        """
        self._interrupt.set()
        run_engine = self._run_engine
        if self._phase == "plan" and run_engine is not None and not run_engine.state.is_idle:
            from bluesky.utils import TransitionError

            with contextlib.suppress(TransitionError):  # the run ended meanwhile; the loop sees the flag
                run_engine.abort(INTERRUPTED_BY_OPERATOR)

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> RunResult:
        started = self.clock()
        while True:
            history = self.store.experiments(self.campaign_id)
            stop_reason, status = self._stop_reason(history, self.clock() - started)
            if stop_reason:
                break
            try:
                experiment = self._propose(history)
            except OptimizerExhausted as exc:
                stop_reason = f"search space exhausted ({exc})" if str(exc) else "search space exhausted"
                status = CampaignStatus.COMPLETED
                break
            if self._interrupt.is_set():
                self.store.mark_interrupted(experiment.id, "interrupted before it started")
                continue
            self._run_one(experiment)
        history = self.store.experiments(self.campaign_id)
        counts = Counter(e.status for e in history)
        if self._interrupt.is_set():
            stop_reason, status = INTERRUPTED_BY_OPERATOR, CampaignStatus.INTERRUPTED
        log.info("campaign %s stopped: %s", self.campaign_id, stop_reason)
        return RunResult(
            stop_reason=stop_reason,
            status=status,
            counts={s: counts.get(s, 0) for s in ExperimentStatus},
            best=best_experiment(history),
            elapsed=self.clock() - started,
        )

    def _stop_reason(self, history: list[ExperimentRecord], elapsed: float) -> tuple[str, CampaignStatus]:
        """Why the loop must stop now ('' to go on), and the campaign status that follows."""
        budget = self.campaign.budget
        if self._interrupt.is_set():
            return INTERRUPTED_BY_OPERATOR, CampaignStatus.INTERRUPTED
        for e in history:
            if e.status is ExperimentStatus.DONE and self.campaign.target_reached(e.measurements or {}):
                return f"target reached by experiment {e.seq}", CampaignStatus.COMPLETED
        spent = sum(counts_toward_budget(e) for e in history)
        if spent >= budget.max_experiments:
            return f"budget spent: {spent} of {budget.max_experiments} experiments", CampaignStatus.COMPLETED
        if budget.max_wall_time is not None and elapsed >= budget.max_wall_time:
            return f"wall time spent: {elapsed:.0f} s of {budget.max_wall_time:g} s", CampaignStatus.COMPLETED
        limit = budget.max_consecutive_failures
        finished = [e for e in history if counts_toward_budget(e)]
        if (
            limit is not None
            and len(finished) >= limit
            and all(e.status is ExperimentStatus.FAILED for e in finished[-limit:])
        ):
            return (
                f"{limit} experiments failed in a row (last: {finished[-1].failure})",
                CampaignStatus.FAILED,
            )
        return "", CampaignStatus.RUNNING

    def _propose(self, history: list[ExperimentRecord]) -> ExperimentRecord:
        observed = observations(history)
        proposal = self.optimizer.propose(observed, [], n=1)[0]
        recipe = to_jsonable(proposal.recipe)
        self.campaign.space.validate_recipe(recipe)
        decision = Decision(
            model=proposal.model,
            acquisition=proposal.acquisition,
            acquisition_value=proposal.acquisition_value,
            seconds=proposal.seconds,
            n_observations=len(observed),
            n_pending=0,
        )
        experiment = self.store.add_proposal(self.campaign_id, recipe, decision)
        log.info(
            "experiment %d proposed by %s in %.2f s: %s",
            experiment.seq, proposal.model, proposal.seconds, _fmt_recipe(recipe),
        )  # fmt: skip
        return experiment

    def _run_one(self, experiment: ExperimentRecord) -> None:
        # Written before acting: the record says running before the first command leaves.
        self.store.mark_running(experiment.id, self.assignments)
        experiment = self.store.experiment(experiment.id)
        log.info("experiment %d started", experiment.seq)
        if self.observer is not None:
            self.observer.experiment_started(experiment)
        try:
            if self.campaign.procedure.plan is not None:
                outcome = self._execute_plan(experiment)
            else:
                outcome = self._execute_function(experiment)
        except KeyboardInterrupt:
            outcome = Outcome(ExperimentStatus.INTERRUPTED, failure=INTERRUPTED_BY_OPERATOR)
            self._interrupt.set()
        self._record(experiment, outcome)

    def _record(self, experiment: ExperimentRecord, outcome: Outcome) -> None:
        if outcome.documents is not None:
            self.store.save_documents(experiment.id, outcome.documents)
        if outcome.status is ExperimentStatus.DONE:
            assert outcome.objective is not None
            self.store.mark_done(experiment.id, outcome.measurements, outcome.objective)
            log.info(
                "experiment %d done: %s (objective %.6g)",
                experiment.seq, _fmt_recipe(outcome.measurements), outcome.objective,
            )  # fmt: skip
        elif outcome.status is ExperimentStatus.FAILED:
            self.store.mark_failed(experiment.id, outcome.failure or "failed", outcome.measurements or None)
            log.warning("experiment %d failed: %s", experiment.seq, outcome.failure)
        else:
            self.store.mark_interrupted(experiment.id, outcome.failure or INTERRUPTED_BY_OPERATOR)
            log.warning("experiment %d interrupted", experiment.seq)
        if self.observer is not None:
            self.observer.experiment_finished(
                self.store.experiment(experiment.id), self.store.experiments(self.campaign_id)
            )

    def _score(self, measurements: dict[str, Any], documents: list[Any] | None = None) -> Outcome:
        measurements = to_jsonable(measurements)
        try:
            objective = self.campaign.scalarise(measurements)
        except MissingMeasurement as exc:
            return Outcome(ExperimentStatus.FAILED, measurements, failure=str(exc), documents=documents)
        return Outcome(ExperimentStatus.DONE, measurements, objective=objective, documents=documents)

    def _execute_function(self, experiment: ExperimentRecord) -> Outcome:
        self._phase = "function"
        try:
            result = self._procedure(dict(experiment.recipe), **self.campaign.procedure.options)
        except Exception as exc:
            return Outcome(ExperimentStatus.FAILED, failure=_describe(exc))
        finally:
            self._phase = "idle"
        if not isinstance(result, Mapping):
            return Outcome(
                ExperimentStatus.FAILED, failure=f"the procedure returned {type(result).__name__}, not a dict"
            )
        return self._score(dict(result))

    def _execute_plan(self, experiment: ExperimentRecord) -> Outcome:
        from bluesky.utils import RunEngineInterrupted

        run_engine = self._get_run_engine()
        documents: list[tuple[str, dict[str, Any]]] = []

        def collect(name: str, doc: dict[str, Any]) -> None:
            documents.append((name, doc))

        try:
            plan = self._procedure(dict(experiment.recipe), self.devices, **self.campaign.procedure.options)
        except Exception as exc:
            return Outcome(ExperimentStatus.FAILED, failure=f"building the plan failed: {_describe(exc)}")
        self._phase = "plan"
        try:
            if self._interrupt.is_set():  # Ctrl-C landed between 'running' and here
                return Outcome(ExperimentStatus.INTERRUPTED, failure=INTERRUPTED_BY_OPERATOR, documents=[])
            result = run_engine(
                plan,
                collect,
                sdl_campaign=self.campaign_id,
                sdl_experiment=experiment.seq,
                recipe=experiment.recipe,
            )
        except RunEngineInterrupted:
            return Outcome(ExperimentStatus.INTERRUPTED, failure=INTERRUPTED_BY_OPERATOR, documents=documents)
        except Exception as exc:
            return Outcome(ExperimentStatus.FAILED, failure=_describe(exc), documents=documents)
        finally:
            self._phase = "idle"
        if getattr(result, "interrupted", False) or getattr(result, "exit_status", "success") != "success":
            reason = getattr(result, "reason", "") or f"run ended with status {result.exit_status}"
            status = ExperimentStatus.INTERRUPTED if self._interrupt.is_set() else ExperimentStatus.FAILED
            return Outcome(status, failure=reason, documents=documents)
        starts = sum(1 for name, _ in documents if name == "start")
        if starts != 1:
            return Outcome(
                ExperimentStatus.FAILED, failure=f"the plan opened {starts} runs; it must open exactly one",
                documents=documents,
            )  # fmt: skip
        try:
            measurements = extract(documents, self.campaign.procedure.measurements, self._extractor)
        except (ExtractionError, Exception) as exc:
            return Outcome(ExperimentStatus.FAILED, failure=_describe(exc), documents=documents)
        return self._score(dict(measurements), documents)

    def _get_run_engine(self) -> Any:
        if self._run_engine is None:
            from bluesky import RunEngine

            # No SIGINT handler of its own: sdl decides what Ctrl-C means (see interrupt()).
            self._run_engine = RunEngine({}, context_managers=[], call_returns_result=True)
        return self._run_engine


def _describe(exc: BaseException) -> str:
    """One line saying what went wrong, from the root cause (bluesky wraps device errors in FailedStatus)."""
    if isinstance(exc, ExtractionError):
        return str(exc)
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    prefix = ""
    if root is not exc and type(exc).__name__ == "FailedStatus" and exc.args:
        device = getattr(exc.args[0], "device", None) or getattr(exc.args[0], "obj", None)
        prefix = f"{device.name}: " if getattr(device, "name", None) else ""
    text = str(root).strip().splitlines()
    return f"{prefix}{type(root).__name__}: {text[0]}" if text else f"{prefix}{type(root).__name__}"


def _fmt_recipe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
