"""What the CLI tells an operator about the record and about files: faulted experiments are counted, and a
file of the wrong kind is named for what it is and what was expected, instead of a list of schema errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdl.cli import main
from sdl.spec.status import Cause, ExperimentStatus
from sdl.store import Decision, Finish, Store

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "experiments" / "two_stations" / "bench.yaml"
LAB = ROOT / "experiments" / "two_stations" / "lab.yaml"
BRANIN = ROOT / "experiments" / "branin" / "campaign.yaml"
SPEC = {
    "name": "faulty",
    "parameters": [{"name": "x", "type": "real", "low": 0.0, "high": 1.0}],
    "objectives": [{"measurement": "y"}],
    "budget": {"max_experiments": 20},
    "procedure": {"function": "math:sqrt"},
}


def test_campaigns_counts_faulted_experiments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(tmp_path / "data") as store:
        campaign_id = store.create_campaign(name="faulty", spec=SPEC, seed=0, max_experiments=20)
        decision = Decision(model="random", acquisition=None, acquisition_value=None, seconds=0.0)
        for i in range(13):
            experiment = store.add_proposal(campaign_id, {"x": i / 20}, decision)
            store.start_experiment(experiment.id)
            if i == 0:
                store.finish_experiment(experiment.id, Finish(ExperimentStatus.DONE, {"y": 0.5}, 0.5))
            else:
                fault = Finish(ExperimentStatus.FAULTED, failure="pump: stall", cause=Cause.FAULT)
                store.finish_experiment(experiment.id, fault)
    assert main(["campaigns", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    row = next(line for line in out.splitlines() if line.startswith(f"│ {campaign_id}"))
    cells = dict(
        zip([c.strip() for c in header.split("┃")], [c.strip() for c in row.split("│")], strict=True)
    )
    assert (cells["done"], cells["failed"], cells["faulted"]) == ("1", "0", "12")


@pytest.mark.parametrize(
    ("argv", "is_", "expected"),
    [
        (["validate", str(BENCH)], "a simulated lab file", "a campaign file"),
        (["run", str(BENCH)], "a simulated lab file", "a campaign file"),
        (["run", str(LAB)], "a lab file", "a campaign file"),
        (["daemon", "--lab", str(BENCH)], "a simulated lab file", "a lab file"),
        (["daemon", "--lab", str(BRANIN)], "a campaign file", "a lab file"),
    ],
)
def test_a_file_of_the_wrong_kind_is_named_for_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], is_: str, expected: str
) -> None:
    assert main([*argv, "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1, err
    assert f": this is {is_} (" in err and f"; expected {expected} (" in err, err
    assert not (tmp_path / "data").exists()
