"""The pure functions of a campaign's record, and the tally the lab service keeps of it one experiment at a
time: whatever order experiments are proposed, started and finished in, the tally equals a recount."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from sdl.loop.history import (
    Tally,
    best_experiment,
    consecutive_failures,
    counts,
    observations,
    pending,
    spent,
    stop_reason,
)
from sdl.spec.campaign import Campaign
from sdl.spec.status import Cause, ExperimentStatus
from sdl.store import ExperimentRecord

CAMPAIGN = Campaign.model_validate(
    {
        "name": "t",
        "parameters": [{"name": "x", "type": "real", "low": 0.0, "high": 1.0}],
        "objectives": [{"measurement": "y"}],
        "budget": {"max_experiments": 12, "stop_when": {"y": 0.05}, "max_consecutive_failures": 3},
        "procedure": {"function": "math:sqrt"},
    }
)
ENDINGS = [
    (ExperimentStatus.DONE, None),
    (ExperimentStatus.FAILED, None),
    (ExperimentStatus.FAULTED, Cause.FAULT),
    (ExperimentStatus.INTERRUPTED, Cause.CRASH),
    (ExperimentStatus.INTERRUPTED, Cause.DROPPED),
]


def record(seq: int, status: ExperimentStatus = ExperimentStatus.PROPOSED) -> ExperimentRecord:
    return ExperimentRecord(
        id=seq, campaign_id="c", seq=seq, status=status, recipe={"x": seq / 100}, assignments=None,
        measurements=None, objective=None, failure=None, proposed_at="", started_at=None, finished_at=None,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(len(ENDINGS))), st.floats(0, 1), st.booleans()), max_size=25))
def test_the_tally_kept_one_experiment_at_a_time_equals_a_recount(
    steps: list[tuple[int, float, bool]],
) -> None:
    history: list[ExperimentRecord] = []
    tally = Tally(CAMPAIGN)
    for seq, (ending, value, finish_now) in enumerate(steps, start=1):
        proposed = record(seq)
        history.append(proposed)
        tally.add(proposed)
        if not finish_now:
            continue
        status, cause = ENDINGS[ending]
        done = status is ExperimentStatus.DONE
        finished = replace(
            proposed,
            status=status,
            cause=cause,
            objective=value if done else None,
            measurements={"y": value} if done else None,
            failure=None if done else "why",
            finished_at=f"2026-01-01T00:00:{(seq * 7919) % 60:02d}",  # completes out of seq order
        )
        tally.replace(proposed, finished)
        history[-1] = finished
        fresh = Tally(CAMPAIGN, history)
        assert tally.counts == fresh.counts == counts(history)
        assert tally.spent == spent(history) and tally.used == fresh.used
        assert tally.best == best_experiment(history) and tally.target_hit == fresh.target_hit
        assert stop_reason(CAMPAIGN, history, 0.0, tally) == stop_reason(CAMPAIGN, history, 0.0)
        assert tally.observations == observations(history) and tally.pending == pending(history)


def test_consecutive_failures_count_only_experiments_that_spent_budget() -> None:
    def ended(seq: int, status: ExperimentStatus) -> ExperimentRecord:
        return replace(record(seq), status=status)

    history = [
        ended(1, ExperimentStatus.DONE),
        ended(2, ExperimentStatus.FAILED),
        ended(3, ExperimentStatus.FAULTED),
        ended(4, ExperimentStatus.FAILED),
        ended(5, ExperimentStatus.INTERRUPTED),
    ]
    assert consecutive_failures(history) == 2
    assert consecutive_failures([*history, ended(6, ExperimentStatus.DONE)]) == 0
