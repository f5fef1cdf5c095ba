"""Approval gates through the lab service's API: a proposal outside the campaign's safe region waits for an
operator, one inside runs at once; an approval runs the proposal, a rejection ends it failed and is learned
by the optimizer; a viewer cannot decide; every decision is in the audit log."""

from __future__ import annotations

import getpass
import textwrap
from pathlib import Path

import pytest

from sdl.access.keys import KeyRing, generate, read_public
from sdl.api import models as m
from sdl.api.client import Client, Credentials
from sdl.api.models import ApiError
from sdl.loop.history import observations
from sdl.spec.status import ExperimentStatus
from sdl.store import Store
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
OWNER = f"local:{getpass.getuser()}"
SAFE_HIGH = 0.5


def test_proposals_outside_the_safe_region_wait_for_an_operator(tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: compute\nworkers: {heartbeat_timeout: 5}\nworkcells:\n  w1: {}\n  w2: {}\n")
    campaign = tmp_path / "gated.yaml"
    campaign.write_text(
        textwrap.dedent(
            f"""\
            name: gated
            parameters:
              - {{name: x, type: real, low: 0.0, high: 1.0}}
              - {{name: y, type: real, low: 0.0, high: 1.0}}
            objectives: [{{measurement: loss}}]
            budget: {{max_experiments: 10}}
            optimizer: {{kind: bayesian, initial_design: 4, seed: 3}}
            procedure: {{function: "daemon_procedures:bowl"}}
            approval: {{require: outside, safe: {{x: [0.0, {SAFE_HIGH}]}}}}
            """
        )
    )
    public, _ = generate(tmp_path, "ana")
    KeyRing(tmp_path / "data" / "keys.yaml").add("ana", read_public(public), "viewer")
    with LabServiceProcess(lab, tmp_path / "data", pythonpath=[TESTS, ROOT]).start() as service:
        with service.client() as client:
            campaign_id = client.submit(campaign).campaign_id
        viewer = Credentials.load(tmp_path / "ana.key_secret", tmp_path / "data" / "keys" / "server.key")
        rejected: int | None = None
        decided: set[int] = set()

        def settled() -> bool:
            """Decide what waits (reject the first, approve the rest); True once the campaign has ended."""
            nonlocal rejected
            for proposal in service.call(m.ListApprovals()).proposals:
                assert proposal.recipe["x"] > SAFE_HIGH and "x " in proposal.why, proposal
                assert service.call(
                    m.ShowExperiment(experiment_id=proposal.experiment_id)
                ).experiment.status == ("proposed")  # waiting: not started
                if rejected is None:
                    with Client(service.address, credentials=viewer, timeout=20) as ana:
                        with pytest.raises(ApiError) as refused:
                            ana.call(m.ApproveProposal(experiment_id=proposal.experiment_id))
                        assert refused.value.error.type == "forbidden"
                        assert ana.call(m.ListApprovals()).proposals  # a viewer sees the queue
                    service.call(m.RejectProposal(experiment_id=proposal.experiment_id, reason="too hot"))
                    rejected = proposal.experiment_id
                else:
                    service.call(m.ApproveProposal(experiment_id=proposal.experiment_id))
                decided.add(proposal.experiment_id)
            return service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.status != "running"

        wait_for(settled, 300, "the campaign to end, deciding every proposal that waits")
        summary = service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign
        audit = service.call(m.ListAudit(action="approval.")).entries
    assert summary.status == "completed", summary
    assert rejected is not None, "no proposal ever left the safe region"
    with Store(tmp_path / "data", read_only=True) as store:
        experiments = store.experiments(campaign_id)
        approvals = {a.experiment_id: a for a in store.approvals(pending=False)}
    by_id = {e.id: e for e in experiments}
    assert by_id[rejected].status is ExperimentStatus.FAILED
    assert by_id[rejected].failure == f"rejected by {OWNER}: too hot"
    for e in experiments:
        outside = e.recipe["x"] > SAFE_HIGH
        assert (e.id in approvals) == outside, (e.seq, e.recipe)  # asked exactly when outside
        if e.started_at is not None and outside:
            assert approvals[e.id].state == "approved", e.seq  # nothing outside ran unapproved
    # The rejection is learned: a failure among the optimizer's observations, counted by proposals after it.
    learned = [o for o in observations(experiments) if o.recipe == by_id[rejected].recipe]
    assert [(o.value, o.failure) for o in learned] == [(None, by_id[rejected].failure)]
    at = approvals[rejected].decided_at or ""
    later = [e for e in experiments if e.proposed_at > at and e.decision is not None]
    assert later and all(e.decision.n_observations >= 1 for e in later)  # type: ignore[union-attr]
    assert sorted(a.action for a in audit if a.result == "ok") == sorted(
        ["approval.reject"] + ["approval.approve"] * (len(decided) - 1)
    )
    assert all(a.who == OWNER for a in audit if a.result == "ok")


def test_an_approved_proposal_runs_while_others_wait_and_none_is_proposed_beyond_the_budget(
    tmp_path: Path,
) -> None:
    """Two workcells, every proposal held, the operator approving one at a time: the approved one always
    runs (the others waiting do not starve it), at most one proposal per workcell waits, and the proposals
    never outnumber the budget."""
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: compute\nworkers: {heartbeat_timeout: 5}\nworkcells:\n  w1: {}\n  w2: {}\n")
    campaign = tmp_path / "held.yaml"
    campaign.write_text(
        textwrap.dedent(
            """\
            name: held
            parameters:
              - {name: x, type: real, low: 0.0, high: 1.0}
              - {name: y, type: real, low: 0.0, high: 1.0}
            objectives: [{measurement: loss}]
            budget: {max_experiments: 5}
            optimizer: {kind: bayesian, initial_design: 4, seed: 5}
            procedure: {function: "daemon_procedures:bowl"}
            approval: {require: all}
            """
        )
    )
    with LabServiceProcess(lab, tmp_path / "data", pythonpath=[TESTS, ROOT]).start() as service:
        with service.client() as client:
            campaign_id = client.submit(campaign).campaign_id
        most_waiting = 0

        def approve_one() -> bool:
            nonlocal most_waiting
            queue = service.call(m.ListApprovals()).proposals
            most_waiting = max(most_waiting, len(queue))
            if queue:
                service.call(m.ApproveProposal(experiment_id=queue[0].experiment_id))
                wait_for(
                    lambda: (
                        service.call(m.ShowExperiment(experiment_id=queue[0].experiment_id)).experiment.status
                        == "done"
                    ),
                    60,
                    f"approved experiment id {queue[0].experiment_id} to run",
                )
            return service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.status != "running"

        wait_for(approve_one, 300, "the campaign to end, one approval at a time")
        summary = service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign
        experiments = service.call(m.ListExperiments(campaign_id=campaign_id)).experiments
    assert summary.status == "completed" and summary.spent == 5, summary
    assert most_waiting <= 2
    assert [e.status for e in experiments] == ["done"] * 5  # proposed exactly the budget: no proposal dropped
