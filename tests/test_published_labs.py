"""The published-lab campaigns, each closed-loop on its simulated bench through the real drivers.

A shortened form of each campaign (three experiments: two of the initial design, one proposed by the
model from their results) runs in-process as `sdl run` would run it: the simulated lab from the
campaign's lab file, the drivers over TCP, every experiment a bluesky plan. What each experiment
measured through the bench must agree with the campaign's chemistry read offline (``simulate``), so
the drivers really delivered the recipe the optimizer asked for.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest

from sdl.campaign import Campaign
from sdl.foreground import run_campaign, start_campaign
from sdl.loading import LoadedCampaign, load_campaign
from sdl.status import ExperimentStatus
from sdl.store import Store

ROOT = Path(__file__).resolve().parents[1]

#: Campaign folder -> (measurement compared with the offline model, relative tolerance, absolute floor).
LABS = {
    "au_nanoparticles": ("distance", 0.1, 0.01),
    "mobile_chemist": ("activity", 0.1, 0.02),
    "opv_stability": ("degradation", 0.1, 0.02),
    "quantum_dots": ("peak_ev", 0.01, 0.01),
    "reactivity_search": ("reactivity", 0.1, 0.005),
    "robotic_flow": ("yield", 0.1, 0.02),
    "thin_film_ada": ("pseudo_mobility", 0.1, 0.02),
}


def shortened(folder: str, experiments: int = 3) -> LoadedCampaign:
    loaded = load_campaign(ROOT / "experiments" / folder / "campaign.yaml")
    spec = loaded.campaign.model_dump()
    spec["budget"].update(max_experiments=experiments, stop_when={}, max_wall_time=None)
    spec["optimizer"].update(initial_design=experiments - 1, seed=1)
    return LoadedCampaign(Campaign.model_validate(spec), loaded.path, loaded.source)


@pytest.mark.parametrize("folder", sorted(LABS))
def test_campaign_runs_closed_loop_on_its_simulated_bench(folder, tmp_path):
    measurement, relative, floor = LABS[folder]
    campaign = shortened(folder)
    simulate = importlib.import_module(f"experiments.{folder}.procedure").simulate
    with Store(tmp_path / "data") as store:
        campaign_id = start_campaign(store, campaign)
        run_campaign(store, campaign_id)
        experiments = store.experiments(campaign_id)

    assert [e.status for e in experiments] == [ExperimentStatus.DONE] * 3, [e.cause for e in experiments]
    assert experiments[-1].decision is not None and experiments[-1].decision.model.startswith("gp")
    for experiment in experiments:
        measured = experiment.measurements[measurement]
        expected = simulate(experiment.recipe)[measurement]
        assert math.isfinite(measured)
        assert abs(measured - expected) <= max(relative * abs(expected), floor), (experiment.recipe, measured)
