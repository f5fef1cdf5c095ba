"""Proposals waiting for approval in the store (SQLite and PostgreSQL): asked once, decided once; a rejection
ends the experiment failed in the same transaction, with who refused it and why, and spends budget as any
failure does. And a campaign's approval rule: which proposals wait, and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdl.loop.history import observations, spent
from sdl.spec.campaign import Approval
from sdl.spec.status import ExperimentStatus
from sdl.store import ApprovalError, Decision, Store

SPEC = {
    "name": "gated",
    "parameters": [{"name": "x", "type": "real", "low": 0.0, "high": 1.0}],
    "objectives": [{"measurement": "y"}],
    "budget": {"max_experiments": 5},
    "procedure": {"function": "math:sqrt"},
}
DECISION = Decision("random", None, None, 0.0)


@pytest.fixture
def store(tmp_path: Path, backend):
    with Store(backend.bind(tmp_path)) as store:
        yield store


def test_a_proposal_is_approved_or_rejected_once(store: Store) -> None:
    campaign_id = store.create_campaign(name="gated", spec=SPEC, seed=0, max_experiments=5)
    first = store.add_proposal(campaign_id, {"x": 0.9}, DECISION)
    second = store.add_proposal(campaign_id, {"x": 0.1}, DECISION)
    for e in (first, second):
        store.ask_approval(e.id, "every proposal of this campaign needs approval")
    assert [a.experiment_id for a in store.approvals()] == [first.id, second.id]
    approved = store.decide_approval(first.id, True, "ana")
    assert (approved.state, approved.decided_by) == ("approved", "ana")
    assert store.experiment(first.id).status is ExperimentStatus.PROPOSED  # it runs when a workcell is free
    rejected = store.decide_approval(second.id, False, "ana", "too close to the last one")
    assert (rejected.state, rejected.reason, rejected.recipe) == (
        "rejected",
        "too close to the last one",
        {"x": 0.1},
    )
    failed = store.experiment(second.id)
    assert (
        failed.status is ExperimentStatus.FAILED
        and failed.failure == "rejected by ana: too close to the last one"
    )
    assert store.approvals() == [] and len(store.approvals(pending=False, campaign_id=campaign_id)) == 2
    with pytest.raises(ApprovalError, match="was rejected already"):
        store.decide_approval(second.id, True, "bob")
    with pytest.raises(ApprovalError, match="not a proposal waiting for approval"):
        store.decide_approval(999, True, "bob")
    # The optimizer learns the rejection as a failure of that recipe; it spends one experiment of the budget.
    history = store.experiments(campaign_id)
    [learned] = observations(history)
    assert (learned.recipe, learned.value, learned.failure) == ({"x": 0.1}, None, failed.failure)
    assert spent(history) == 1


def test_the_approval_rule_says_which_proposals_wait_and_why() -> None:
    assert Approval().why({"x": 1.0}, 1) is None
    assert Approval(require="all").why({"x": 1.0}, 99) == "every proposal of this campaign needs approval"
    first = Approval(require="first", first=3)
    assert [first.why({}, seq) is not None for seq in (1, 3, 4)] == [True, True, False]
    outside = Approval(require="outside", safe={"red": (0.0, 300.0), "blue": (0.0, 100.0)})
    assert outside.why({"red": 120.0, "blue": 99.0}, 1) is None
    assert (
        outside.why({"red": 420.0, "blue": 150.0}, 1) == "red 420 outside [0, 300]; blue 150 outside [0, 100]"
    )
    with pytest.raises(ValueError, match="needs `first`"):
        Approval(require="first")
    with pytest.raises(ValueError, match="needs `safe`"):
        Approval(require="outside")
