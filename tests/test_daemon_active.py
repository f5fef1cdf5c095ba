"""What the lab service keeps in memory of a running campaign: every answer the scheduler asks of the history
(pending, retries, failure and fault streaks, stop reasons, the optimizer's inputs) is the same from the
rows it keeps as from the whole record, whatever order experiments are proposed, retried and finished in —
and the rows it keeps do not grow with the record."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sdl.daemon.active import Tracked
from sdl.loop.history import (
    Tally,
    consecutive_failures,
    instrument_fault_run,
    observations,
    pending,
    retry_candidate,
    stop_reason,
)
from sdl.spec.campaign import Campaign
from sdl.spec.status import CampaignStatus, Cause, ExperimentStatus
from sdl.store import CampaignRecord, ExperimentRecord

CAMPAIGN = Campaign.model_validate(
    {
        "name": "t",
        "parameters": [{"name": "x", "type": "real", "low": 0.0, "high": 1.0}],
        "objectives": [{"measurement": "y"}],
        "budget": {"max_experiments": 1000, "stop_when": {"y": -1.0}, "max_consecutive_failures": 4},
        "procedure": {"function": "math:sqrt", "safe_to_repeat": True, "max_attempts": 3},
    }
)
RECORD = CampaignRecord(
    id="c", name="t", status=CampaignStatus.RUNNING, stop_reason=None, spec=CAMPAIGN.model_dump(mode="json"),
    source_path=None, source_text=None, base_dir=None, seed=0, max_experiments=1000, runner_pid=None,
    runner_host=None, created_at="", started_at=None, finished_at=None,
)  # fmt: skip
ENDINGS = [
    (ExperimentStatus.DONE, None, None),
    (ExperimentStatus.FAILED, None, None),
    (ExperimentStatus.FAULTED, Cause.FAULT, "pump"),
    (ExperimentStatus.FAULTED, Cause.FAULT, "arm"),
    (ExperimentStatus.INTERRUPTED, Cause.CRASH, None),
    (ExperimentStatus.INTERRUPTED, Cause.OPERATOR, None),
]
#: One step of a campaign: propose (a retry when the scheduler would make one), start one of the
#: experiments in flight, or end one of the running ones (which one, how, with what value).
STEP = st.one_of(
    st.tuples(st.just("propose")),
    st.tuples(st.just("start"), st.integers(0, 10)),
    st.tuples(st.just("end"), st.integers(0, 10), st.sampled_from(range(len(ENDINGS))), st.floats(0, 1)),
)


def proposed(seq: int, retry_of: ExperimentRecord | None) -> ExperimentRecord:
    return ExperimentRecord(
        id=seq, campaign_id="c", seq=seq, status=ExperimentStatus.PROPOSED,
        recipe=dict(retry_of.recipe) if retry_of else {"x": seq / 1000}, assignments=None, measurements=None,
        objective=None, failure=None, proposed_at="", started_at=None, finished_at=None,
        retry_of=retry_of.id if retry_of else None,
    )  # fmt: skip


def assert_same_answers(kept: list[ExperimentRecord], whole: list[ExperimentRecord], tally: Tally) -> None:
    assert pending(kept) == pending(whole) == tally.pending
    assert retry_candidate(CAMPAIGN, kept) == retry_candidate(CAMPAIGN, whole)
    assert consecutive_failures(kept) == consecutive_failures(whole)
    assert instrument_fault_run(kept) == instrument_fault_run(whole)
    assert stop_reason(CAMPAIGN, kept, 0.0, tally) == stop_reason(CAMPAIGN, whole, 0.0)
    assert tally.observations == observations(whole)


P, S = ("propose",), ("start", 0)


def end(how: int) -> tuple[str, int, int, float]:
    return ("end", 0, how, 0.5)


@settings(max_examples=1000, deadline=None)
@given(st.lists(STEP, max_size=60))
@example([P, P, P, S, S, S, end(2), end(0), end(2)])  # a fault streak ends at a result
@example([P, S, end(4), P, S, end(1), P, S, end(0), P, S, end(1)])  # a failed retry before the latest result
def test_the_rows_kept_answer_every_question_as_the_whole_record_does(steps: list[tuple]) -> None:
    tracked = Tracked.of(RECORD, CAMPAIGN, [])
    whole: dict[int, ExperimentRecord] = {}
    clock = 0
    for step in steps:
        if step[0] == "propose":
            experiment = proposed(len(whole) + 1, retry_candidate(CAMPAIGN, tracked.history))
        else:
            wanted = ExperimentStatus.PROPOSED if step[0] == "start" else ExperimentStatus.RUNNING
            candidates = [e for e in whole.values() if e.status is wanted]
            if not candidates:
                continue
            chosen = candidates[step[1] % len(candidates)]
            if step[0] == "start":
                experiment = replace(chosen, status=ExperimentStatus.RUNNING)
            else:
                status, cause, instrument = ENDINGS[step[2]]
                done = status is ExperimentStatus.DONE
                clock += 1
                experiment = replace(
                    chosen, status=status, cause=cause, fault_instrument=instrument,
                    fault_kind="link" if instrument else None, objective=step[3] if done else None,
                    measurements={"y": step[3]} if done else None, failure=None if done else "why",
                    finished_at=f"2026-01-01T00:{clock // 60:02d}:{clock % 60:02d}",
                )  # fmt: skip
        whole[experiment.id] = experiment
        tracked.update(experiment)
        tracked.update(experiment)  # told twice (a worker's repeated message): counted once
        history = list(whole.values())
        fresh = Tally(CAMPAIGN, history)
        assert tracked.tally.counts == fresh.counts and tracked.tally.best == fresh.best
        assert_same_answers(tracked.history, history, tracked.tally)
        again = Tracked.of(RECORD, CAMPAIGN, history)  # the service restarted: taken up from the store
        assert again.history == tracked.history
        assert_same_answers(again.history, history, again.tally)


def test_a_long_campaign_keeps_a_handful_of_rows() -> None:
    tracked = Tracked.of(RECORD, CAMPAIGN, [])
    for seq in range(1, 2001):
        experiment = proposed(seq, None)
        tracked.update(experiment)
        status = ExperimentStatus.FAILED if seq % 3 == 0 else ExperimentStatus.DONE
        tracked.update(
            replace(experiment, status=status, objective=0.5 if status is ExperimentStatus.DONE else None)
        )
    assert tracked.tally.counts[ExperimentStatus.DONE] + tracked.tally.counts[ExperimentStatus.FAILED] == 2000
    assert len(tracked.history) <= 2
