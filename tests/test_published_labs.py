"""The published-lab campaigns, each closed-loop on its simulated bench through the real drivers.

A shortened form of each campaign (three experiments: two of the initial design, one proposed by the
model from their results) runs in-process as `sdl run` would run it: the simulated lab from the
campaign's lab file, the drivers over TCP, every experiment a bluesky plan. What each experiment
measured through the bench must agree with the campaign's chemistry read offline (``simulate``), so
the drivers really delivered the recipe the optimizer asked for.

A sped-up lab turns every wall-clock delay into lab time (at speed 600, a tenth of a second of a loaded
machine is a minute), so a vial waits a little longer than the recipe says wherever the plan times a
step: on the hotplate, under the lamp, reacting. Those labs are held to what the chemistry gives for
the recipe's time or somewhat longer, never less.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest

from sdl.loop.foreground import run_campaign
from sdl.loop.lifecycle import start_campaign
from sdl.spec.campaign import Campaign
from sdl.spec.loading import LoadedCampaign, load_campaign
from sdl.spec.status import ExperimentStatus
from sdl.store import Store

ROOT = Path(__file__).resolve().parents[1]

#: How much longer than the recipe says a timed step may run on a loaded machine, in lab time.
SLACK_S = 900.0

#: Campaign folder -> (measurement compared with the offline model, relative tolerance, absolute floor,
#: timing): "steady" (a flow at steady state: no timed step), "grows" (a timed step, and the measurement
#: only grows with its time: the bench reads at least what the chemistry gives), "anneal" (the Ada
#: films: the bench reads what some annealing time from the recipe's to SLACK_S longer gives).
LABS = {
    "au_nanoparticles": ("distance", 0.1, 0.01, "steady"),
    "mobile_chemist": ("activity", 0.1, 0.02, "grows"),
    "opv_stability": ("degradation", 0.1, 0.02, "grows"),
    "quantum_dots": ("peak_ev", 0.01, 0.01, "steady"),
    "reactivity_search": ("reactivity", 0.1, 0.005, "grows"),
    "robotic_flow": ("yield", 0.1, 0.02, "steady"),
    "thin_film_ada": ("pseudo_mobility", 0.1, 0.02, "anneal"),
}


def expected_range(folder: str, recipe: dict, measurement: str, timing: str) -> tuple[float, float]:
    simulate = importlib.import_module(f"experiments.{folder}.procedure").simulate
    nominal = simulate(recipe)[measurement]
    if timing == "steady":
        return nominal, nominal
    if timing == "grows":
        return nominal, math.inf
    longer = [simulate({**recipe, "anneal_min": recipe["anneal_min"] + SLACK_S / 60 * k / 4})[measurement]
              for k in range(5)]  # fmt: skip
    return min(longer), max(longer)


def shortened(folder: str, experiments: int = 3) -> LoadedCampaign:
    loaded = load_campaign(ROOT / "experiments" / folder / "campaign.yaml")
    spec = loaded.campaign.model_dump()
    spec["budget"].update(max_experiments=experiments, stop_when={}, max_wall_time=None)
    spec["optimizer"].update(initial_design=experiments - 1, seed=1)
    return LoadedCampaign(Campaign.model_validate(spec), loaded.path, loaded.source)


@pytest.mark.parametrize("folder", sorted(LABS))
def test_campaign_runs_closed_loop_on_its_simulated_bench(folder, tmp_path):
    measurement, relative, floor, timing = LABS[folder]
    campaign = shortened(folder)
    with Store(tmp_path / "data") as store:
        campaign_id = start_campaign(store, campaign)
        run_campaign(store, campaign_id)
        experiments = store.experiments(campaign_id)

    assert [e.status for e in experiments] == [ExperimentStatus.DONE] * 3, [e.cause for e in experiments]
    assert experiments[-1].decision is not None and experiments[-1].decision.model.startswith("gp")
    for experiment in experiments:
        measured = experiment.measurements[measurement]
        low, high = expected_range(folder, experiment.recipe, measurement, timing)
        assert math.isfinite(measured)
        assert low - max(relative * abs(low), floor) <= measured, (experiment.recipe, measured, low)
        assert measured <= high + max(relative * abs(high), floor), (experiment.recipe, measured, high)
