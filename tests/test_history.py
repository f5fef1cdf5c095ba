"""The pure functions of a campaign's record, and the tally the lab service keeps of it one experiment at a
time: whatever order experiments are proposed, started and finished in, the tally equals a recount."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from sdl.loop.history import (
    Tally,
    consecutive_failures,
    counts,
    observations,
    pending,
    spent,
    stop_reason,
)
from sdl.spec.best import leaders
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
        assert tally.best == leaders(CAMPAIGN, history).best and tally.target_hit == fresh.target_hit
        assert stop_reason(CAMPAIGN, history, 0.0, tally) == stop_reason(CAMPAIGN, history, 0.0)
        assert tally.observations == observations(history) and tally.pending == pending(history)


def several(method: str) -> Campaign:
    objectives: list[dict[str, object]] = [
        {"measurement": "a", "goal": "target", "target": 0.5},
        {"measurement": "b", "goal": "maximize"},
        {"measurement": "c"},
    ]
    if method == "chimera":
        objectives[0]["tolerance"], objectives[1]["threshold"] = 0.2, 0.6
    return Campaign.model_validate(
        {
            **CAMPAIGN.model_dump(),
            "objectives": objectives,
            "multi_objective": method,
            "budget": {"max_experiments": 40},
        }
    )


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["weighted_sum", "chimera", "pareto"]),
    st.lists(
        st.tuples(st.booleans(), st.tuples(*[st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])] * 3)), max_size=30
    ),
)
def test_the_tallys_best_and_front_with_several_objectives_equal_a_recount(
    method: str, results: list[tuple[bool, tuple[float, float, float]]]
) -> None:
    """A chimera ranks each result against the range of all of them, so the tally keeps every result's
    losses (not the experiments) and the non-dominated experiments; its answer is the recount's."""
    campaign = several(method)
    tally = Tally(campaign)
    history: list[ExperimentRecord] = []
    for seq, (done, (a, b, c)) in enumerate(results, start=1):
        measured = {"a": a, "b": b, "c": c}
        e = replace(
            record(seq), status=ExperimentStatus.DONE if done else ExperimentStatus.FAILED,
            measurements=measured if done else None, objective=campaign.scalarise(measured) if done else None,
        )  # fmt: skip
        tally.add(e)
        history.append(e)
        assert tally.leaders == leaders(campaign, history)
        if method == "pareto":
            assert tally.best is None


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
