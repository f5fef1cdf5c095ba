"""`sdl run`: one campaign in the foreground, one experiment at a time, on a lab brought up for it.

It is a composition of the same pieces the lab service uses — the history functions, `decide_next`,
`ExperimentRunner` and the campaign's lifecycle (`sdl.loop.lifecycle`) — around a claim on the campaign in the
store: the claim is taken in one transaction (two processes resuming one crashed campaign cannot both win)
and kept alive by a heartbeat.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bluesky.protocols import HasName

from sdl.execution.bringup import LabSession
from sdl.execution.experiment import INTERRUPTED_BY_OPERATOR, ExperimentRunner, Outcome
from sdl.execution.provenance import ProvenanceSource, campaign_provenance, lab_provenance
from sdl.loop import lifecycle
from sdl.loop.history import counts, instrument_fault_run, pending, stop_reason
from sdl.loop.proposing import decide_next, optimizer_for
from sdl.optimizer import CampaignOptimizer, OptimizerExhausted
from sdl.spec.best import best
from sdl.spec.campaign import Campaign
from sdl.spec.lab import Health
from sdl.spec.status import CampaignStatus, Cause, ExperimentStatus
from sdl.store import HEARTBEAT_S, ExperimentRecord, Store, StoreVanished

log = logging.getLogger(__name__)

TAKEN_OVER = "another process took this campaign over"


class Observer(Protocol):
    """Receives progress as it happens (the CLI's progress display)."""

    def experiment_started(self, experiment: ExperimentRecord) -> None: ...

    def experiment_finished(self, experiment: ExperimentRecord, history: list[ExperimentRecord]) -> None: ...


@dataclass(frozen=True)
class RunResult:
    """How a run of the loop ended."""

    stop_reason: str
    status: CampaignStatus
    counts: dict[ExperimentStatus, int]
    #: as the campaign defines it (`sdl.spec.best`); None for a Pareto campaign
    best: ExperimentRecord | None
    elapsed: float
    #: The instrument the run stopped for (taken out of service after faults in a row), if any.
    out_of_service: str | None = None


# -- the loop ---------------------------------------------------------------------------------------------


class ForegroundRun:
    """Proposes, records and runs one experiment at a time until the campaign's record says stop."""

    def __init__(
        self,
        store: Store,
        campaign_id: str,
        campaign: Campaign,
        *,
        base_dir: Path | None = None,
        devices: Mapping[str, HasName] | None = None,
        assignments: Mapping[str, Any] | None = None,
        optimizer: CampaignOptimizer | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
        quarantine_after: int = Health().quarantine_after,
        provenance: ProvenanceSource | None = None,
        publish: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.store = store
        self.quarantine_after = quarantine_after
        self.out_of_service: str | None = None
        self.campaign_id = campaign_id
        self.campaign = campaign
        self.assignments = dict(assignments or {})
        self.optimizer = optimizer or optimizer_for(campaign, store.prior_observations(campaign_id))
        self.provenance = provenance or provenance_for(store, campaign_id, campaign, base_dir)
        self.observer = observer
        self.clock = clock
        self.runner = ExperimentRunner(campaign, store, base_dir=base_dir, devices=devices, publish=publish)
        self._interrupt: str | None = None

    @property
    def in_function(self) -> bool:
        return self.runner.in_function

    def interrupt(self, reason: str = INTERRUPTED_BY_OPERATOR) -> None:
        """Stop after the current step; abort a running plan through the RunEngine. Thread/signal safe."""
        self._interrupt = reason
        self.runner.abort(reason, Cause.OPERATOR)

    def run(self) -> RunResult:
        started = self.clock()
        already = self.store.campaign(self.campaign_id).active_seconds

        def elapsed() -> float:
            return already + self.clock() - started

        history = self.store.experiments(self.campaign_id)
        # Faults before this run do not count: resuming is how an operator says the instrument is fixed.
        self._first_seq = max((e.seq for e in history), default=0)
        try:
            status, reason = self._loop(elapsed)
        finally:
            self.runner.close()
        history = self.store.experiments(self.campaign_id)
        log.info("campaign %s stopped: %s", self.campaign_id, reason)
        return RunResult(
            reason, status, counts(history), best(self.campaign, history), self.clock() - started,
            self.out_of_service,
        )  # fmt: skip

    def _loop(self, elapsed: Callable[[], float]) -> tuple[CampaignStatus, str]:
        while True:
            if self._interrupt is not None:
                return CampaignStatus.INTERRUPTED, self._interrupt
            history = self.store.experiments(self.campaign_id)
            stop = stop_reason(self.campaign, history, elapsed())
            if stop is not None:
                return stop.status, stop.reason
            lost = instrument_fault_run(history, after_seq=self._first_seq)
            if lost is not None and lost.count >= self.quarantine_after:
                # The lab service would quarantine it and let other workcells carry on; here there is
                # only this one, and retrying on a broken instrument would loop without end.
                self.out_of_service = lost.instrument
                log.error("instrument %s taken out of service: %s", lost.instrument, lost.last.failure)
                return CampaignStatus.INTERRUPTED, (
                    f"instrument {lost.instrument} taken out of service: {lost.count} experiments in a row "
                    f"lost to it (last: {lost.last.failure})"
                )
            leftover = [e for e in pending(history) if e.status is ExperimentStatus.PROPOSED]
            if leftover:
                experiment = leftover[0]  # proposed before a crash, never started: run it now
            else:
                try:
                    nxt = decide_next(self.campaign, self.optimizer, history)
                except OptimizerExhausted as exc:
                    if not any(e.status is ExperimentStatus.DONE for e in history):
                        return CampaignStatus.FAILED, "search space exhausted without a successful experiment"
                    return CampaignStatus.COMPLETED, f"search space exhausted ({exc})".replace(" ()", "")
                experiment = self.store.add_proposal(
                    self.campaign_id, nxt.recipe, nxt.decision, retry_of=nxt.retry_of
                )
                log.info(
                    "experiment %d proposed by %s in %.2f s: %s",
                    experiment.seq, nxt.decision.model, nxt.decision.seconds, fmt_values(nxt.recipe),
                )  # fmt: skip
            if self._interrupt is not None:
                self.store.mark_interrupted(experiment.id, "interrupted before it started", Cause.DROPPED)
                continue
            self._run_one(experiment)

    def _run_one(self, experiment: ExperimentRecord) -> None:
        # Written before acting: the record says running before the first command leaves.
        self.store.start_experiment(
            experiment.id, assignments=self.assignments, provenance=self.provenance.of()
        )
        experiment = self.store.experiment(experiment.id)
        log.info("experiment %d started", experiment.seq)
        if self.observer is not None:
            self.observer.experiment_started(experiment)
        outcome = self.runner.run(experiment)
        if outcome.status is ExperimentStatus.INTERRUPTED and self._interrupt is None:
            self._interrupt = outcome.failure or INTERRUPTED_BY_OPERATOR
        self._record(experiment, outcome)

    def _record(self, experiment: ExperimentRecord, outcome: Outcome) -> None:
        self.store.finish_experiment(
            experiment.id, outcome.finish(), outcome.trailing_documents, provenance=self.provenance.of()
        )
        self.store.checkpoint()
        # INFO, failures included: the operator's display shows each outcome once; -v adds this line.
        log.info(
            "experiment %d %s: %s",
            experiment.seq,
            outcome.status.value,
            fmt_values(outcome.measurements) if outcome.status is ExperimentStatus.DONE else outcome.failure,
        )
        if self.observer is not None:
            self.observer.experiment_finished(
                self.store.experiment(experiment.id), self.store.experiments(self.campaign_id)
            )


def provenance_for(
    store: Store,
    campaign_id: str,
    campaign: Campaign,
    base_dir: Path | None,
    instruments: Any = None,
) -> ProvenanceSource:
    """What `sdl run` records about where its experiments' results come from (`sdl.execution.provenance`)."""
    record = store.campaign(campaign_id)
    simulated = campaign.lab.simulated
    if simulated is not None and not simulated.is_absolute() and base_dir is not None:
        simulated = base_dir / simulated
    return ProvenanceSource(
        campaign_provenance(record.source_text, record.base_dir, record.submitted_by),
        lab_provenance(campaign.lab, simulated, name="campaign lab"),
        instruments,
    )


@contextmanager
def heartbeat(store: Store, owner: str, run: ForegroundRun, period: float = HEARTBEAT_S) -> Iterator[None]:
    """Keep ``owner``'s claim alive while the block runs; if the campaign is taken over or the store
    vanishes, interrupt the run rather than keep acting on a record nobody can read."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(period):
            try:
                held = store.heartbeat(owner)
            except StoreVanished as exc:
                log.error("%s", exc)
                run.interrupt(f"interrupted: {exc}")
                return
            except Exception:
                log.exception("heartbeat failed")
                continue
            if run.campaign_id not in held:
                log.error("%s: %s", run.campaign_id, TAKEN_OVER)
                run.interrupt(TAKEN_OVER)
                return

    thread = threading.Thread(target=beat, name="sdl-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_campaign(
    store: Store,
    campaign_id: str,
    owner: str | None = None,
    *,
    observer: Observer | None = None,
    simulator_command: Sequence[str] | None = None,
    guard: Callable[[ForegroundRun], AbstractContextManager[Any]] | None = None,
    optimizer: CampaignOptimizer | None = None,
    publish: Callable[[str, dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run (or continue) a running campaign, claimed for ``owner`` (a new one if not given), and close
    its record. Raises ``CampaignBusy`` if another live process holds it.

    ``guard(run)`` wraps the loop, e.g. to route Ctrl-C to :meth:`ForegroundRun.interrupt`; ``publish``
    receives every document as the RunEngine emits it (a live Tiled publisher).
    """
    owner = owner or lifecycle.new_run_owner()
    if store.campaign(campaign_id).owner == owner:
        store.claim_campaign(campaign_id, owner)
    else:
        lifecycle.adopt(store, campaign_id, owner)
    campaign, base_dir = lifecycle.campaign_of(store, campaign_id)
    try:
        seed = campaign.optimizer.seed  # the simulated lab's faults too: a rerun meets the same ones
        with LabSession(campaign.lab, base_dir, command=simulator_command, faults_seed=seed) as lab:
            loop = ForegroundRun(
                store,
                campaign_id,
                campaign,
                base_dir=base_dir,
                devices=lab.devices,
                assignments=lab.assignments,
                observer=observer,
                optimizer=optimizer,
                provenance=provenance_for(store, campaign_id, campaign, base_dir, lab.instruments),
                publish=publish,
            )
            with heartbeat(store, owner, loop), guard(loop) if guard is not None else nullcontext():
                result = loop.run()
    except KeyboardInterrupt:
        _close(store, campaign_id, owner, CampaignStatus.INTERRUPTED, INTERRUPTED_BY_OPERATOR)
        raise
    except BaseException as exc:
        _close(store, campaign_id, owner, CampaignStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    store.check_present()
    _close(store, campaign_id, owner, result.status, result.stop_reason)
    return result


def _close(store: Store, campaign_id: str, owner: str, status: CampaignStatus, reason: str) -> None:
    lifecycle.close_campaign(store, campaign_id, owner, status, reason)
    store.checkpoint()


def fmt_values(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
