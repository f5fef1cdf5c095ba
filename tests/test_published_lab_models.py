"""The published labs' chemistry models and analyses, as plain functions (no bench)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from experiments.au_nanoparticles.chemistry import plasmon_peak_nm
from experiments.mobile_chemist import procedure as mobile
from experiments.mobile_chemist.chemistry import ADDITIVES, activity
from experiments.quantum_dots import procedure as qd
from experiments.quantum_dots.chemistry import HalideExchange
from experiments.reactivity_search import procedure as reactivity
from experiments.reactivity_search.chemistry import combinations, reactions_of
from experiments.thin_film_ada import procedure as ada
from sdl.spec.loading import load_campaign

ROOT = Path(__file__).resolve().parents[1]


def recipe_of(combination: tuple[str, ...]) -> dict[str, str]:
    third = combination[2] if len(combination) > 2 else reactivity.NONE
    return {"reagent_1": combination[0], "reagent_2": combination[1], "reagent_3": third}


def test_a_crystal_that_does_not_emit_reads_dark_with_its_composition_still_told():
    # Too much oleylamine strips the crystals: nothing emits above the detector's noise.
    stripped = {"perovskite_ul_min": 10.3, "iodide_ul_min": 3.55, "ligand_ul_min": 35.0, "total_ul_min": 75.6}
    figures = qd.simulate(stripped)
    assert figures["plqy"] == 0.0 and figures["fwhm_mev"] == qd.DARK_FWHM_MEV
    # The peak energy it is given comes from its absorption edge: near where it would emit.
    plug = qd.outflow(stripped)
    sample = type("Sample", (), {"amounts": plug.amounts, "volume_ul": plug.volume_ul})()
    would_emit = HalideExchange().state(sample)["emission"]
    assert abs(figures["peak_ev"] - would_emit) < 0.03


def test_an_emitting_crystal_is_read_at_its_emission_peak():
    bright = {"perovskite_ul_min": 54.9, "iodide_ul_min": 37.1, "ligand_ul_min": 17.2, "total_ul_min": 183.6}
    figures = qd.simulate(bright)
    assert figures["plqy"] > 0.1 and figures["fwhm_mev"] < qd.DARK_FWHM_MEV / 2
    assert 1.9 < figures["peak_ev"] < 2.3


def test_the_reactivity_analysis_calls_reactive_exactly_the_mixtures_that_react():
    # Fast and slow reactions, pairs and triples, and no reaction at all: the spectral change says which.
    cases = [
        ("benzylamine", "benzaldehyde"),  # imine
        ("benzyl_azide", "phenylacetylene"),  # CuAAC without its copper: nothing
        ("benzyl_azide", "phenylacetylene", "copper_iodide"),  # with it
        ("tert_butyl_isocyanide", "benzaldehyde", "acetic_acid"),  # Passerini, three components
        ("acetic_acid", "triethylamine"),  # a salt: no new band
        ("cyclopentadiene", "maleic_anhydride"),  # Diels-Alder
    ]
    for combination in cases:
        measured = reactivity.simulate(recipe_of(combination))
        assert (measured["reactive"] == 1.0) == bool(reactions_of(combination)), (combination, measured)


def test_a_recipe_names_a_set_of_reagents():
    recipe = {"reagent_1": "benzaldehyde", "reagent_2": "benzylamine", "reagent_3": "benzaldehyde"}
    assert reactivity.combination(recipe) == ("benzaldehyde", "benzylamine")
    assert reactivity.volumes(recipe) == {"benzaldehyde": 250.0, "benzylamine": 250.0, "solvent": 500.0}
    assert len(combinations()) == 969


def test_the_mobile_chemist_volumes_fill_the_vial_within_the_constraint():
    campaign = load_campaign(ROOT / "experiments" / "mobile_chemist" / "campaign.yaml").campaign
    (constraint,) = campaign.constraints
    recipe = {name: 200.0 for name in constraint.coefficients}
    assert sum(recipe.values()) <= constraint.at_most
    volumes = mobile.volumes(recipe)
    assert sum(volumes.values()) == mobile.TOTAL_UL and volumes["water"] == 500.0
    # The reporter reads activity: the best formulation beats a dye-laden one by far.
    best = {**dict.fromkeys(recipe, 0.0), "p10": 250, "cysteine": 250, "naoh": 174, "nacl": 250,
            "silicate": 250, "pvp": 110}  # fmt: skip
    dyed = {**best, "acid_red": 250.0, "methylene_blue": 250.0, "rhodamine_b": 250.0}
    assert mobile.simulate(best)["activity"] > 0.8 > 10 * mobile.simulate(dyed)["activity"]


def test_the_quantum_yield_read_from_the_bench_is_the_crystals_own():
    # Unexchanged CsPbBr3 absorbs all of the LED (an opaque band), a mixed halide part of it: either way
    # the yield the analysis reads is the model's, within the few per cent the detector costs.
    bromide = {"perovskite_ul_min": 50.0, "iodide_ul_min": 0.0, "ligand_ul_min": 20.0, "total_ul_min": 100.0}
    mixed = {"perovskite_ul_min": 30.0, "iodide_ul_min": 20.0, "ligand_ul_min": 10.0, "total_ul_min": 150.0}
    for recipe in (bromide, mixed):
        plug = qd.outflow(recipe)
        sample = type("Sample", (), {"amounts": plug.amounts, "volume_ul": plug.volume_ul})()
        truth = HalideExchange().state(sample)["qy"]
        assert truth > 0.1
        assert 0.85 * truth <= qd.simulate(recipe)["plqy"] <= 1.05 * truth, (recipe, truth)


def test_gold_spheres_peak_where_haiss_et_al_eq_11_puts_them():
    # d = ln((λ − 512)/6.53)/0.0216 (Anal. Chem. 79, 4215, 2007): 100 nm spheres at 569 nm, not 611.
    for diameter, peak in ((12.0, 520.5), (50.0, 531.2), (100.0, 568.6)):
        assert plasmon_peak_nm(diameter) == pytest.approx(peak, abs=0.1)
        assert math.log((plasmon_peak_nm(diameter) - 512.0) / 6.53) / 0.0216 == pytest.approx(diameter)


def test_ada_films_anneal_to_an_optimum_and_past_it():
    # Ordering, then crystallisation: the optimum lies inside the campaign's 1-40 minutes.
    at = {minutes: ada.simulate({"dopant_ratio": 0.1, "anneal_min": minutes})["pseudo_mobility"]
          for minutes in (2.0, 10.0, 40.0)}  # fmt: skip
    assert at[10.0] == pytest.approx(0.77, abs=0.02) and at[40.0] == pytest.approx(0.56, abs=0.02)
    assert at[2.0] < at[10.0]
    grid = [
        (ratio, minutes)
        for ratio in (0.05, 0.1, 0.15, 0.2, 0.3, 0.45)
        for minutes in (1, 3, 7, 10, 15, 25, 40)
    ]
    best = max(
        grid, key=lambda rm: ada.simulate({"dopant_ratio": rm[0], "anneal_min": rm[1]})["pseudo_mobility"]
    )
    assert 0.08 <= best[0] <= 0.2 and 5 <= best[1] <= 20, best


def test_the_mobile_chemist_landscape_where_a_search_starts():
    # The README's figures: far more peaked than the paper's six-fold improvement.
    zero = dict.fromkeys(ADDITIVES, 0.0)
    assert activity(dict.fromkeys(ADDITIVES, 125.0)) == pytest.approx(0.017, abs=0.001)
    assert activity({**zero, "p10": 250.0, "cysteine": 250.0}) == pytest.approx(0.36, abs=0.01)
    rng = np.random.default_rng(0)
    draws = rng.uniform(0.0, 250.0, (4000, len(ADDITIVES)))
    feasible = draws[draws.sum(axis=1) <= 2000.0]
    median = np.median([activity(dict(zip(ADDITIVES, row, strict=True))) for row in feasible])
    assert median == pytest.approx(0.010, abs=0.002)


PUBLISHED = ("au_nanoparticles", "mobile_chemist", "opv_stability", "quantum_dots", "reactivity_search",
             "robotic_flow", "thin_film_ada")  # fmt: skip


@pytest.mark.parametrize("folder", PUBLISHED)
def test_every_published_campaign_says_what_its_columns_are(folder):
    campaign = load_campaign(ROOT / "experiments" / folder / "campaign.yaml").campaign
    for parameter in campaign.parameters:
        assert parameter.stage and parameter.description, parameter.name
        if parameter.type == "real":
            assert parameter.units, parameter.name
            # A dispensed amount, fraction or flow says which stock it is of.
            assert parameter.stage != "composition" or parameter.material, parameter.name
    assert campaign.materials and all(m.lot for m in campaign.materials.values()), campaign.materials
    assert campaign.conditions and all(c.units and c.description for c in campaign.conditions.values())
    for objective in campaign.objectives:
        meaning = campaign.measurements[objective.measurement]
        assert meaning.units and meaning.description, objective.measurement
