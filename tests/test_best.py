"""What a campaign calls best follows its own multi_objective everywhere: `sdl show`, `sdl campaigns`,
`sdl run`'s result, the lab service's summaries, the exports. A Pareto campaign shows its front instead."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from sdl.cli import main
from sdl.loop.foreground import run_campaign
from sdl.loop.history import Tally
from sdl.loop.lifecycle import start_campaign
from sdl.spec.campaign import Campaign
from sdl.spec.loading import LoadedCampaign
from sdl.spec.status import ExperimentStatus
from sdl.store import Finish, Store
from sdl.store.schema import Decision

#: The quantum-dots objectives (experiments/quantum_dots): emission at 2.10 eV first, then quantum yield,
#: then a narrow line.
QUANTUM_DOTS: dict[str, Any] = {
    "name": "qd",
    "parameters": [{"name": "x", "type": "real", "low": 0.0, "high": 1.0}],
    "objectives": [
        {"measurement": "peak_ev", "goal": "target", "target": 2.10, "threshold": 0.02, "units": "eV"},
        {"measurement": "plqy", "goal": "maximize", "tolerance": 0.1},
        {"measurement": "fwhm_mev", "goal": "minimize", "units": "meV"},
    ],
    "multi_objective": "chimera",
    "budget": {"max_experiments": 3},
    "procedure": {"function": "math:sqrt"},
}
#: An off-target sample with a high yield and a narrow line (the lowest unweighted sum of losses), one on
#: target, and one off target and worse in every way.
RESULTS = [
    {"peak_ev": 2.39, "plqy": 0.90, "fwhm_mev": 20.0},
    {"peak_ev": 2.11, "plqy": 0.50, "fwhm_mev": 25.0},
    {"peak_ev": 2.20, "plqy": 0.40, "fwhm_mev": 30.0},
]


def recorded(tmp_path: Path, spec: dict[str, Any], results: list[dict[str, float]]) -> tuple[Path, str]:
    """A store holding a finished campaign of ``spec`` whose experiments measured ``results``."""
    data = tmp_path / "data"
    campaign = Campaign.model_validate(spec)
    with Store(data) as store:
        loaded = LoadedCampaign(campaign=campaign, path=tmp_path / "c.yaml", source="")
        campaign_id = start_campaign(store, loaded)
        decision = Decision(model="sobol", acquisition=None, acquisition_value=None, seconds=0.0)
        for i, measured in enumerate(results):
            e = store.add_proposal(campaign_id, {"x": i / 10}, decision)
            store.start_experiment(e.id)
            store.finish_experiment(
                e.id,
                Finish(ExperimentStatus.DONE, measurements=measured, objective=campaign.scalarise(measured)),
            )
        run_campaign(store, campaign_id)  # the budget is spent: it stops at once and closes the record
    return data, campaign_id


def test_a_chimera_campaigns_best_is_the_on_target_sample_everywhere(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    data, campaign_id = recorded(tmp_path, QUANTUM_DOTS, RESULTS)

    assert main(["show", campaign_id, "--data-dir", str(data)]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "best experiment │ #2" in shown and "peak_ev=2.11 eV" in shown

    assert main(["campaigns", "--data-dir", str(data)]) == 0
    assert "(#2)" in capsys.readouterr().out

    assert main(["export", campaign_id, "--format", "csv", "--data-dir", str(data)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    ranked = sorted(rows, key=lambda r: float(r["loss"]))
    assert ranked[0]["experiment"] == "2"

    with Store(data) as store:
        history = store.experiments(campaign_id)
        assert run_campaign(store, campaign_id).best.seq == 2  # `sdl run`'s result (its summary)
    assert Tally(Campaign.model_validate(QUANTUM_DOTS), history).best.seq == 2  # what the service keeps


def test_the_lab_services_summary_follows_the_campaign_tracked_or_not(tmp_path):
    from sdl.access.keys import KeyRing
    from sdl.daemon.state import LabState
    from sdl.spec.lab import LabSpec

    data, campaign_id = recorded(tmp_path, QUANTUM_DOTS, RESULTS)
    with Store(data) as store:
        lab = LabSpec.model_validate({"workcells": {"w": {}}})
        state = LabState(lab, store, "test", KeyRing(tmp_path / "keys"), curve=False)
        record = store.campaign(campaign_id)
        untracked = state.summary(record)
        state.active.track(campaign_id)
        tracked = state.summary(record)
    for summary in (untracked, tracked):
        assert summary.best is not None and summary.best.experiment == 2
        assert summary.best.objectives == RESULTS[1]
        assert {b.experiment for b in summary.front} == {1, 2}


PARETO: dict[str, Any] = {
    **QUANTUM_DOTS,
    "objectives": [
        {"measurement": "peak_ev", "goal": "target", "target": 2.10},
        {"measurement": "plqy", "goal": "maximize"},
    ],
    "multi_objective": "pareto",
}


def test_a_pareto_campaign_shows_its_front_instead_of_one_best(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    data, campaign_id = recorded(tmp_path, PARETO, RESULTS)
    assert main(["show", campaign_id, "--data-dir", str(data)]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "best experiment" not in shown and "Pareto front │ front of 2: #1, #2" in shown
    assert main(["campaigns", "--data-dir", str(data)]) == 0
    assert "front of 2: #1, #2" in capsys.readouterr().out
    assert main(["export", campaign_id, "--format", "csv", "--data-dir", str(data)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["pareto"] for r in rows] == ["true", "true", "false"] and "loss" not in rows[0]
    with Store(data) as store:
        assert run_campaign(store, campaign_id).best is None


def test_a_weighted_sum_campaigns_best_is_its_lowest_weighted_sum(tmp_path, capsys):
    spec = {**QUANTUM_DOTS, "multi_objective": "weighted_sum"}
    spec["objectives"] = [  # weights make the on-target sample the best of the sum too
        {"measurement": "peak_ev", "goal": "target", "target": 2.10, "weight": 100.0},
        {"measurement": "plqy", "goal": "maximize"},
        {"measurement": "fwhm_mev", "goal": "minimize"},
    ]
    data, _ = recorded(tmp_path, spec, RESULTS)
    assert main(["campaigns", "--data-dir", str(data)]) == 0
    assert "(#2)" in capsys.readouterr().out
