"""Pure functions of a campaign's record: what it spent, what the optimizer may learn, what is still in
flight, what should run again, and whether the campaign must stop (what is best is `sdl.spec.best`).

`sdl run` and the lab service both decide from these, so a campaign behaves the same whoever runs it, and a
campaign rebuilt from the store after a crash continues exactly where the record says it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sdl.loop.observation_log import ObservationLog, completion_key
from sdl.optimizer import Observation
from sdl.spec.best import Leaders, Running
from sdl.spec.campaign import Campaign
from sdl.spec.status import CampaignStatus, Cause, ExperimentStatus
from sdl.store import ExperimentRecord

History = Sequence[ExperimentRecord]


def counts_toward_budget(experiment: ExperimentRecord) -> bool:
    """Done and failed experiments spent the budget; interrupted and faulted ones produced no result."""
    return experiment.status.spends_budget


def spent(history: History) -> int:
    return sum(counts_toward_budget(e) for e in history)


def spent_of(counted: Mapping[ExperimentStatus, int]) -> int:
    """The budget spent, from counts by status."""
    return sum(counted.get(status, 0) for status in ExperimentStatus if status.spends_budget)


def observations(history: History) -> list[Observation]:
    """The optimizer's view of the record: results and recipe failures, in completion order.

    Interrupted and faulted experiments are left out: they say nothing about their recipe.
    """
    finished = [e for e in history if counts_toward_budget(e)]
    finished.sort(key=lambda e: completion_key(e.finished_at, e.seq))
    return [observation(e) for e in finished]


def observation(e: ExperimentRecord) -> Observation:
    if e.status is ExperimentStatus.DONE:
        return Observation(recipe=e.recipe, value=e.objective, measurements=e.measurements)
    return Observation(recipe=e.recipe, value=None, failure=e.failure)


def pending(history: History) -> list[ExperimentRecord]:
    """Experiments proposed or running: the optimizer must not propose them again."""
    return [e for e in history if e.status in (ExperimentStatus.PROPOSED, ExperimentStatus.RUNNING)]


def attempts(history: History, experiment: ExperimentRecord) -> int:
    """How many times this experiment's recipe has been tried through retries (1 for an original)."""
    by_id = {e.id: e for e in history}
    count, current = 1, experiment
    while current.retry_of is not None and current.retry_of in by_id:
        count += 1
        current = by_id[current.retry_of]
    return count


def retry_candidate(campaign: Campaign, history: History) -> ExperimentRecord | None:
    """The oldest experiment whose recipe should run again: its procedure is safe to repeat, it ended
    without a result for a reason other than an operator's decision, nobody has retried it yet, and it
    has attempts left."""
    procedure = campaign.procedure
    if not procedure.safe_to_repeat:
        return None
    retried = {e.retry_of for e in history if e.retry_of is not None}
    for e in history:
        if e.status not in (ExperimentStatus.INTERRUPTED, ExperimentStatus.FAULTED) or e.id in retried:
            continue
        cause = e.cause or (Cause.FAULT if e.status is ExperimentStatus.FAULTED else None)
        if cause is not None and cause.retryable and attempts(history, e) < procedure.max_attempts:
            return e
    return None


def still_needed(experiment: ExperimentRecord, latest_done_seq: int) -> bool:
    """Whether the functions of this module can still need ``experiment`` once a :class:`Tally` has counted
    it, ``latest_done_seq`` being the highest sequence number of a done experiment so far.

    A long-running service keeps only these (see ``sdl.daemon.active``): experiments not yet final, the
    interrupted and faulted ones (retries and their chains), retries themselves, and the record from the
    latest done experiment on (failure and fault streaks end there). The rest is in the store and the tally.
    """
    return (
        experiment.status not in (ExperimentStatus.DONE, ExperimentStatus.FAILED)
        or experiment.retry_of is not None
        or experiment.seq >= latest_done_seq
    )


def consecutive_failures(history: History) -> int:
    """Failed experiments at the end of the record, counting only those that spent budget."""
    run = 0
    for e in reversed(history):  # from the end: stops at the first result, however long the record
        if e.status is ExperimentStatus.DONE:
            break
        run += e.status is ExperimentStatus.FAILED
    return run


@dataclass(frozen=True)
class FaultRun:
    """Experiments lost in a row to one instrument at the end of a record."""

    instrument: str
    count: int
    last: ExperimentRecord


def instrument_fault_run(history: History, after_seq: int = 0) -> FaultRun | None:
    """The instrument the latest experiments (those after ``after_seq``) were lost to, and how many in a
    row. An experiment that tried its recipe (done or failed) used the instruments, so it ends the run;
    interrupted ones neither add to it nor end it."""
    run: FaultRun | None = None
    for e in reversed(history):
        if e.seq <= after_seq or e.status in (ExperimentStatus.DONE, ExperimentStatus.FAILED):
            break
        if e.status is not ExperimentStatus.FAULTED or e.fault_instrument is None:
            continue
        if run is None:
            run = FaultRun(e.fault_instrument, 1, e)
        elif e.fault_instrument == run.instrument:
            run = FaultRun(run.instrument, run.count + 1, run.last)
        else:
            break
    return run


@dataclass(frozen=True)
class Stop:
    """Why a campaign must stop now, and the status it ends with."""

    reason: str
    status: CampaignStatus


class Tally:
    """What the stopping rules and summaries need from a history — counts by status, the best result (and
    front) as the campaign defines them (`sdl.spec.best`), the first experiment to reach the target — kept
    up to date one experiment at a time, so a lab service with thousands of experiments does not re-scan
    them all after each one."""

    def __init__(self, campaign: Campaign, history: History = ()) -> None:
        self.campaign = campaign
        self.counts: dict[ExperimentStatus, int] = dict.fromkeys(ExperimentStatus, 0)
        self.dropped = 0
        self._leaders: Running[ExperimentRecord] = Running(campaign)
        self.target_hit: ExperimentRecord | None = None
        self.last_failure: str | None = None
        #: The optimizer's inputs, as observations() and pending() give them.
        self.observations = ObservationLog()
        self.in_flight: dict[int, ExperimentRecord] = {}
        for experiment in history:
            self.add(experiment)

    @property
    def pending(self) -> list[ExperimentRecord]:
        return sorted(self.in_flight.values(), key=lambda e: e.seq)

    @property
    def spent(self) -> int:
        return spent_of(self.counts)

    @property
    def leaders(self) -> Leaders[ExperimentRecord]:
        return self._leaders.leaders

    @property
    def best(self) -> ExperimentRecord | None:
        return self._leaders.leaders.best

    @property
    def used(self) -> int:
        """Experiments started or waiting to start (all but the proposals dropped unstarted)."""
        return sum(self.counts.values()) - self.dropped

    def add(self, experiment: ExperimentRecord) -> None:
        self.counts[experiment.status] += 1
        self.dropped += experiment.cause is Cause.DROPPED
        if experiment.status in (ExperimentStatus.PROPOSED, ExperimentStatus.RUNNING):
            self.in_flight[experiment.id] = experiment
        elif counts_toward_budget(experiment):
            self.observations.insert(
                completion_key(experiment.finished_at, experiment.seq), observation(experiment)
            )
        if experiment.status is ExperimentStatus.FAILED:
            self.last_failure = experiment.failure
        if experiment.status is not ExperimentStatus.DONE or experiment.objective is None:
            return
        self._leaders.add(experiment)
        hit = self.target_hit
        if (hit is None or experiment.seq < hit.seq) and self.campaign.target_reached(
            experiment.measurements or {}
        ):
            self.target_hit = experiment

    def replace(self, old: ExperimentRecord, new: ExperimentRecord) -> None:
        """``old`` changed into ``new`` (a status moves only forward: nothing done is ever undone, so a final
        ``old`` is the same state told again, already counted)."""
        if old.status not in (ExperimentStatus.PROPOSED, ExperimentStatus.RUNNING):
            return
        self.counts[old.status] -= 1
        self.dropped -= old.cause is Cause.DROPPED
        self.in_flight.pop(old.id, None)
        self.add(new)


def stop_reason(
    campaign: Campaign, history: History, elapsed: float, tally: Tally | None = None
) -> Stop | None:
    """Whether the campaign must start nothing new (None: go on). ``elapsed``: wall time spent running;
    ``tally``: the history's, when the caller keeps one (it is counted from the history otherwise).

    A campaign that stops without a single result has failed, whatever stopped it.
    """
    tally = tally if tally is not None else Tally(campaign, history)
    stop = _stop(campaign, history, elapsed, tally)
    if stop is None or stop.status is not CampaignStatus.COMPLETED:
        return stop
    if tally.counts[ExperimentStatus.DONE] == 0:
        failed = tally.counts[ExperimentStatus.FAILED]
        detail = f"; last failure: {tally.last_failure}" if tally.last_failure else ""
        return Stop(
            f"{stop.reason}, without a single successful experiment ({failed} failed{detail})",
            CampaignStatus.FAILED,
        )
    return stop


def _stop(campaign: Campaign, history: History, elapsed: float, tally: Tally) -> Stop | None:
    budget = campaign.budget
    if tally.target_hit is not None:
        return Stop(f"target reached by experiment {tally.target_hit.seq}", CampaignStatus.COMPLETED)
    used = tally.spent
    if used >= budget.max_experiments:
        return Stop(f"budget spent: {used} of {budget.max_experiments} experiments", CampaignStatus.COMPLETED)
    if budget.max_wall_time is not None and elapsed >= budget.max_wall_time:
        return Stop(
            f"wall time spent: {elapsed:.0f} s of {budget.max_wall_time:g} s", CampaignStatus.COMPLETED
        )
    limit = budget.max_consecutive_failures
    if (
        limit is not None
        and tally.counts[ExperimentStatus.FAILED] >= limit
        and consecutive_failures(history) >= limit
    ):
        last = next(e for e in reversed(history) if e.status is ExperimentStatus.FAILED)
        return Stop(f"{limit} experiments failed in a row (last: {last.failure})", CampaignStatus.FAILED)
    return None


def counts(history: History) -> dict[ExperimentStatus, int]:
    return {s: sum(e.status is s for e in history) for s in ExperimentStatus}
