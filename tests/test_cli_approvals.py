"""`sdl approvals`, `sdl approve` and `sdl reject` as an operator runs them, against a real lab service (a
subprocess) with a workcell without instruments: a campaign whose every proposal waits for approval,
proposals listed, approved (they run and end done) and rejected (they end failed, with who and why), a
viewer refused, decisions that cannot be made twice, and every decision in the audit log."""

from __future__ import annotations

import getpass
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdl.access.keys import KeyRing, generate, read_public
from sdl.api import models as m
from sdl.cli import main
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
OWNER = f"local:{getpass.getuser()}"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def campaign_file(tmp_path: Path, budget: int = 3) -> Path:
    return write(
        tmp_path / "bowl.yaml",
        f"""\
        name: bowl
        parameters:
          - {{name: x, type: real, low: 0.0, high: 1.0}}
          - {{name: y, type: real, low: 0.0, high: 1.0}}
        objectives: [{{measurement: loss}}]
        budget: {{max_experiments: {budget}}}
        optimizer: {{kind: random, seed: 3}}
        approval: {{require: all}}
        procedure:
          function: daemon_procedures:bowl
        """,
    )


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as their rows: no cell is wrapped onto a second line."""
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServiceProcess]:
    """A lab service of one workcell without instruments and no campaign but those the tests submit. 'ana'
    is a viewer on its allow-list."""
    tmp = tmp_path_factory.mktemp("lab")
    public, _ = generate(tmp, "ana")
    KeyRing(tmp / "data" / "keys.yaml").add("ana", read_public(public), "viewer")
    lab = write(tmp / "lab.yaml", "name: compute\nworkers: {heartbeat_timeout: 5}\nworkcells:\n  w1: {}\n")
    service = LabServiceProcess(lab, tmp / "data", pythonpath=[TESTS, ROOT])
    service.start()
    yield service
    if service.process is not None and service.process.poll() is None:
        assert service.stop() == 0, service.log_text()
    service.assert_nothing_left()


def sdl(service: LabServiceProcess, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`sdl ARGV` against ``service`` as its owner: the exit code, standard output and standard error."""
    capsys.readouterr()
    code = main([*argv, "--data-dir", str(service.data_dir)])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[list[str]]:
    """A rich table's rows, as lists of cells."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]


def table(out: str) -> list[dict[str, str]]:
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    names = [c.strip() for c in header.split("┃")[1:-1]]
    return [dict(zip(names, row, strict=True)) for row in rows(out)]


def waiting(service: LabServiceProcess, campaign_id: str) -> list[m.Proposal]:
    return service.call(m.ListApprovals(campaign_id=campaign_id)).proposals


def experiment(service: LabServiceProcess, campaign_id: str, experiment_id: int) -> m.ExperimentSummary:
    found = service.call(m.ListExperiments(campaign_id=campaign_id)).experiments
    return next(e for e in found if e.id == experiment_id)


def campaign(service: LabServiceProcess, campaign_id: str) -> m.CampaignSummary:
    return service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign


# -- the whole story -----------------------------------------------------------------------------------------


def test_proposals_wait_and_are_approved_or_rejected_from_the_command_line(
    lab: LabServiceProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with lab.client() as client:
        campaign_id = client.submit(campaign_file(tmp_path)).campaign_id
    # The proposal waits (one per workcell: no more is proposed until it is decided), and nothing runs.
    [first] = wait_for(lambda: waiting(lab, campaign_id), what="a proposal to wait for approval")
    assert first.seq == 1 and first.state == "pending"
    [proposed] = lab.call(m.ListExperiments(campaign_id=campaign_id)).experiments
    assert (proposed.id, proposed.status, proposed.started_at) == (first.experiment_id, "proposed", None)

    code, out, err = sdl(lab, capsys, "approvals")
    assert (code, err) == (0, "")
    [row] = table(out)
    assert (row["experiment"], row["campaign"], row["seq"]) == (str(first.experiment_id), campaign_id, "1")
    assert row["why"] == "every proposal of this campaign needs approval"
    assert row["recipe"] == f"x={first.recipe['x']:.4g} y={first.recipe['y']:.4g}"
    assert row["asked (UTC)"] == first.asked_at[:19].replace("T", " ")
    assert "state" not in row
    assert out.splitlines()[-1] == (
        "`sdl approve EXPERIMENT_ID` lets one run, `sdl reject EXPERIMENT_ID --reason TEXT` refuses it"
    )
    code, out, _ = sdl(lab, capsys, "approvals", "--campaign", campaign_id)
    assert [r["experiment"] for r in table(out)] == [str(first.experiment_id)]

    # A viewer sees it, and may not decide it.
    ana = str(lab.data_dir.parent / "ana.key_secret")
    code, out, _ = sdl(lab, capsys, "approvals", "--key", ana)
    assert code == 0 and [r["experiment"] for r in table(out)] == [str(first.experiment_id)]
    code, out, err = sdl(lab, capsys, "approve", str(first.experiment_id), "--key", ana)
    assert (code, out, err) == (2, "", "error: viewer 'ana' may not approval.approve; needs operator\n")
    code, out, err = sdl(lab, capsys, "reject", str(first.experiment_id), "--reason", "no", "--key", ana)
    assert (code, out, err) == (2, "", "error: viewer 'ana' may not approval.reject; needs operator\n")
    assert waiting(lab, campaign_id) == [first]

    # Approved: it runs on the workcell and ends done; the next proposal waits in its turn.
    code, out, err = sdl(lab, capsys, "approve", str(first.experiment_id), "--reason", "looks safe")
    assert (code, err) == (0, "")
    assert out == f"proposal 1 of {campaign_id} approved: it runs on the next free workcell\n"
    wait_for(
        lambda: experiment(lab, campaign_id, first.experiment_id).status == "done",
        what="the approved proposal to run",
    )
    done = experiment(lab, campaign_id, first.experiment_id)
    assert done.recipe == first.recipe and done.loss is not None and done.workcell == "w1"
    [second] = wait_for(lambda: waiting(lab, campaign_id), what="the second proposal")
    assert second.seq == 2

    # Rejected: it never runs, and ends failed with who rejected it and why.
    code, out, err = sdl(lab, capsys, "reject", str(second.experiment_id), "--reason", "too close to the rim")
    assert (code, err) == (0, "")
    assert out == f"proposal 2 of {campaign_id} rejected: too close to the rim (recorded as a failure)\n"
    rejected = experiment(lab, campaign_id, second.experiment_id)
    assert (rejected.status, rejected.failure) == ("failed", f"rejected by {OWNER}: too close to the rim")
    assert rejected.started_at is None and rejected.loss is None  # it never ran

    code, out, _ = sdl(lab, capsys, "approvals", "--all", "--campaign", campaign_id)
    listed = {r["experiment"]: (r["state"], r["by"], r["reason"]) for r in table(out)}
    decided = {k: v for k, v in listed.items() if v[0] != "pending"}  # the third may wait already
    assert decided == {
        str(first.experiment_id): ("approved", OWNER, "looks safe"),
        str(second.experiment_id): ("rejected", OWNER, "too close to the rim"),
    }

    # Decided once: neither decision can be made again (a conflict, exit 1), and nothing changes.
    for action, experiment_id, state in (
        (["reject", "--reason", "again"], second.experiment_id, "rejected"),
        (["approve"], second.experiment_id, "rejected"),
        (["reject", "--reason", "too late"], first.experiment_id, "approved"),
    ):
        code, out, err = sdl(lab, capsys, *action, str(experiment_id))
        assert (code, out) == (1, ""), action
        assert err == f"error: experiment id {experiment_id} was {state} already (see `sdl approvals`)\n"
    again = experiment(lab, campaign_id, second.experiment_id)
    assert (again.status, again.failure) == (rejected.status, rejected.failure)

    # Approve what comes until the campaign has spent its budget of 3.
    approved = [first.experiment_id]

    def decide_next() -> bool:
        """Approve the next proposal that waits; whether the campaign has ended."""
        if campaign(lab, campaign_id).status != "running":
            return True
        for proposal in waiting(lab, campaign_id):
            code, out, _ = sdl(lab, capsys, "approve", str(proposal.experiment_id))
            assert (code, out) == (
                0, f"proposal {proposal.seq} of {campaign_id} approved: it runs on the next free workcell\n"
            )  # fmt: skip
            approved.append(proposal.experiment_id)
        return False

    wait_for(decide_next, what="the campaign to end, every proposal approved")
    summary = campaign(lab, campaign_id)
    assert (summary.status, summary.counts) == ("completed", {"done": 2, "failed": 1})
    finished = lab.call(m.ListExperiments(campaign_id=campaign_id)).experiments
    assert sorted(e.id for e in finished if e.status == "done") == sorted(approved)
    assert waiting(lab, campaign_id) == []
    assert sdl(lab, capsys, "approvals", "--campaign", campaign_id) == (
        0, f"no proposals of campaign {campaign_id} wait for approval\n", ""
    )  # fmt: skip

    # The audit log: every decision, and every refusal, with who made it.
    entries = lab.call(m.ListAudit(action="approval.")).entries
    by_action = {(e.who, e.action, e.result.split(":")[0]) for e in entries}
    assert (OWNER, "approval.approve", "ok") in by_action
    assert (OWNER, "approval.reject", "ok") in by_action
    assert ("ana", "approval.approve", "refused") in by_action
    assert ("ana", "approval.reject", "refused") in by_action
    ok = [e for e in entries if e.result == "ok"]
    assert sum(e.action == "approval.approve" for e in ok) == len(approved)
    assert sum(e.action == "approval.reject" for e in ok) == 1


# -- mistakes ------------------------------------------------------------------------------------------------


def test_an_unknown_proposal_is_not_found_in_one_line_with_exit_2(
    lab: LabServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["approve", "987654"], ["reject", "987654", "--reason", "no"]):
        code, out, err = sdl(lab, capsys, *argv)
        assert (code, out) == (2, ""), argv
        assert err == (
            "error: experiment id 987654 is not a proposal waiting for approval (see `sdl approvals`)\n"
        ), argv
    code, out, err = sdl(lab, capsys, "approve", "-3")
    assert (code, out) == (2, "")
    assert err.startswith("error: EXPERIMENT_ID: Input should be greater than or equal to 0"), err
    code, _, err = sdl(lab, capsys, "reject", "987654", "--reason", "")
    assert (code, err) == (2, "error: --reason: String should have at least 1 character\n")
    code, _, err = sdl(lab, capsys, "approve", "987654", "--reason", "R" * 1001)
    assert code == 2 and err.startswith("error: --reason: String should have at most 1000 characters"), err
    assert sdl(lab, capsys, "approvals", "--all", "--campaign", "no-such-campaign") == (
        0, "no proposals of campaign no-such-campaign have asked for approval\n", ""
    )  # fmt: skip


def test_a_rejection_needs_a_reason(lab: LabServiceProcess, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        sdl(lab, capsys, "reject", "1")
    assert exit_.value.code == 2
    assert "the following arguments are required: --reason" in capsys.readouterr().err


def test_without_a_lab_service_each_command_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["approvals"], ["approve", "1"], ["reject", "1", "--reason", "no"]):
        assert main([*argv, "--data-dir", str(tmp_path)]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: no lab service runs with data directory") and "sdl daemon" in err
