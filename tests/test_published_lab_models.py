"""The published labs' chemistry models and analyses, as plain functions (no bench)."""

from __future__ import annotations

from pathlib import Path

from experiments.mobile_chemist import procedure as mobile
from experiments.quantum_dots import procedure as qd
from experiments.quantum_dots.chemistry import HalideExchange
from experiments.reactivity_search import procedure as reactivity
from experiments.reactivity_search.chemistry import combinations, reactions_of
from sdl.loading import load_campaign

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
