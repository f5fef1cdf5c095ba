"""Cost-aware acquisition (`optimizer.cost`, sdl/optimizer/cost.py): the acquisition divided by the recipe's
cost, so cheaper recipes where it is alike; still a pure function of the history; bad settings refused."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from sdl.optimizer import (
    CostSettings,
    Objectives,
    ObjectiveSpec,
    Observation,
    OptimizerSettings,
    make_optimizer,
)
from sdl.space import SearchSpace

SQUARE = SearchSpace.model_validate(
    {"parameters": [{"type": "real", "name": n, "low": 0.0, "high": 1.0} for n in ("x", "y")]}
)
#: x is the volume of a scarce stock: a recipe costs 1 + 10 x (x = 1 costs eleven times x = 0)
COST = CostSettings(per_unit={"x": 10.0}, fixed=1.0)
SEEDS = range(8)


def mirrored(r: dict[str, Any]) -> float:
    """The same value at x and 1 - x: wells at both ends of x."""
    return (r["y"] - 0.4) ** 2 + 0.3 * math.cos(2 * math.pi * (r["x"] - 0.5))


def mirrored_history(seed: int) -> list[Observation]:
    """Five random recipes and their mirror images: the model, and so the acquisition, is the same at x and
    at 1 - x; only the cost tells the two sides apart."""
    rng = np.random.default_rng(seed)
    out = []
    for x, y in rng.uniform(0.05, 0.95, size=(5, 2)):
        for r in ({"x": float(x), "y": float(y)}, {"x": float(1 - x), "y": float(y)}):
            out.append(Observation(r, mirrored(r)))
    return out


def settings(cost: CostSettings | None, **kw: Any) -> OptimizerSettings:
    return OptimizerSettings(seed=1, initial_design=4, cost=cost, **kw)


@pytest.mark.parametrize("acquisition", ["ei", "pi", "lcb"])
def test_where_the_acquisition_is_alike_the_cost_picks_the_cheaper_recipe(acquisition: str) -> None:
    plain, costed = [], []
    for seed in SEEDS:
        history = mirrored_history(seed)
        (p,) = make_optimizer(SQUARE, settings(None, acquisition=acquisition)).propose(history, [], 1)
        (c,) = make_optimizer(SQUARE, settings(COST, acquisition=acquisition)).propose(history, [], 1)
        plain.append(p.recipe["x"])
        costed.append(c.recipe["x"])
        assert p.acquisition == acquisition and c.acquisition == f"{acquisition}/cost"
    # Without the cost either side may win; with it, always the cheaper one.
    assert max(plain) > 0.5, plain
    assert max(costed) < 0.5, costed


def test_the_acquisition_is_divided_by_the_cost_of_the_recipe() -> None:
    import sdl.optimizer.bayesian as bayesian

    history = mirrored_history(4)
    opt = make_optimizer(SQUARE, settings(COST))
    step = bayesian._Step(opt, history, [], [])  # type: ignore[arg-type]
    best = float(step.mean_at_data.min())
    Z = np.random.default_rng(1).uniform(0.0, 1.0, size=(20, 2))
    plain = step._values("ei", Z, best, step.post)
    step.cost = opt.cost  # type: ignore[attr-defined]
    costed = step._values("ei", Z, best, step.post)
    assert costed == pytest.approx(plain / (1.0 + 10.0 * Z[:, 0]), rel=1e-12)


@pytest.mark.parametrize("acquisition", ["ei", "pi", "lcb"])
def test_the_polished_acquisition_has_the_gradient_of_its_values(acquisition: Any) -> None:
    import sdl.optimizer.bayesian as bayesian

    history = mirrored_history(2)
    failed = [Observation({"x": 0.2, "y": 0.7}, None, "clogged")]
    opt = make_optimizer(SQUARE, settings(COST))
    assert opt.cost is not None  # type: ignore[attr-defined]
    step = bayesian._Step(opt, history, failed, [])  # type: ignore[arg-type]
    step.cost = opt.cost  # type: ignore[attr-defined]
    best = float(step.mean_at_data.min())
    for z in np.random.default_rng(0).uniform(0.1, 0.9, size=(5, 2)):
        value, grad = step._value_grad(acquisition, z, best, step.post)
        assert value == pytest.approx(float(step._values(acquisition, z[None, :], best, step.post)[0]))
        h = 1e-6
        numeric = [
            (step._values(acquisition, (z + h * e)[None, :], best, step.post)[0]
             - step._values(acquisition, (z - h * e)[None, :], best, step.post)[0]) / (2 * h)
            for e in np.eye(2)
        ]  # fmt: skip
        assert grad == pytest.approx(numeric, rel=1e-4, abs=1e-7)


MIXTURE = SearchSpace.model_validate(
    {
        "parameters": [
            {"type": "real", "name": "water", "low": 0.0, "high": 1.0},
            {"type": "real", "name": "ethanol", "low": 0.0, "high": 1.0},
            {"type": "real", "name": "volume", "low": 50.0, "high": 500.0, "units": "uL"},
            {"type": "integer", "name": "equiv", "low": 1, "high": 4},
        ],
        "constraints": [
            {"coefficients": {"water": 1, "ethanol": 1}, "equals": 1.0},
            {"coefficients": {"volume": 1, "water": 200}, "at_most": 400},
        ],
    }
)


def test_batches_under_constraints_and_a_cost_stay_feasible_and_distinct() -> None:
    cost = CostSettings(per_unit={"volume": 1.0, "equiv": 20.0})
    opt = make_optimizer(MIXTURE, OptimizerSettings(seed=4, initial_design=5, cost=cost))
    history: list[Observation] = []
    while len(history) < 17:
        props = opt.propose(history, [], 4)
        assert len({tuple(p.recipe.values()) for p in props}) == len(props)
        for p in props:
            MIXTURE.validate_recipe(p.recipe)
            r = p.recipe
            history.append(Observation(r, (r["water"] - 0.3) ** 2 + ((r["volume"] - 300) / 300) ** 2))
    assert {p.acquisition for p in props} == {"ei/cost"}


def test_a_pareto_search_divides_hypervolume_improvement_by_the_cost() -> None:
    objectives = Objectives(
        (ObjectiveSpec("a", "minimize", reference=2.0), ObjectiveSpec("b", "minimize", reference=2.0)),
        "pareto",
    )
    opt = make_optimizer(SQUARE, OptimizerSettings(seed=0, initial_design=5, cost=COST), objectives)
    history: list[Observation] = []
    for _ in range(8):
        (p,) = opt.propose(history, [], 1)
        m = {"a": p.recipe["x"] + p.recipe["y"] ** 2, "b": 1 - p.recipe["x"] + (p.recipe["y"] - 0.5) ** 2}
        history.append(Observation(p.recipe, m["a"] + m["b"], measurements=m))
    assert p.acquisition == "ehvi/cost"


def test_bad_cost_settings_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValidationError, match="applies to kind 'bayesian'"):
        OptimizerSettings(kind="random", cost=COST)
    with pytest.raises(ValidationError, match=r"per_unit: .* finite number at least 0; x: -1.0 is not"):
        CostSettings(per_unit={"x": -1.0}, fixed=20.0)
    with pytest.raises(ValidationError, match="x: nan is not"):
        CostSettings(per_unit={"x": math.nan}, fixed=20.0)
    with pytest.raises(ValidationError, match="fixed"):
        CostSettings(per_unit={"x": 1.0}, fixed=-1.0)
    with pytest.raises(ValidationError, match="budget"):  # no such field: extra names are refused
        CostSettings.model_validate({"per_unit": {"x": 1.0}, "budget": 10.0})
    mixed = SearchSpace.model_validate(
        {
            "parameters": [
                {"type": "real", "name": "v", "low": 0.0, "high": 5.0},
                {"type": "categorical", "name": "dye", "choices": ["red", "blue"]},
            ]
        }
    )
    with pytest.raises(ValueError, match="names 'w', which is not a parameter"):
        make_optimizer(mixed, OptimizerSettings(cost=CostSettings(per_unit={"w": 1.0}, fixed=1.0)))
    with pytest.raises(ValueError, match="a categorical parameter"):
        CostSettings(per_unit={"dye": 1.0}, fixed=1.0).check(mixed)
    with pytest.raises(ValueError, match="cheapest recipe would cost 0"):
        CostSettings(per_unit={"v": 1.0}).check(mixed)


def test_a_campaign_file_with_a_cost_naming_no_parameter_is_refused() -> None:
    from sdl.spec.campaign import Campaign
    from sdl.spec.loading import load_campaign

    spec = load_campaign("experiments/color_matching/campaign.yaml").campaign.model_dump()
    spec["optimizer"]["cost"] = {"per_unit": {"red": 1.0}, "fixed": 20.0}
    assert Campaign.model_validate(spec).optimizer.cost == CostSettings(per_unit={"red": 1.0}, fixed=20.0)
    spec["optimizer"]["cost"]["per_unit"] = {"green": 1.0}
    with pytest.raises(ValidationError, match="names 'green', which is not a parameter"):
        Campaign.model_validate(spec)


def test_a_restart_step_weighs_its_expected_improvement_by_the_cost_too() -> None:
    import sdl.optimizer.bayesian as bayesian
    from sdl.optimizer.restart import Restart

    history = mirrored_history(5)
    opt = make_optimizer(SQUARE, settings(COST))
    step = bayesian._Step(opt, history, [], [])  # type: ignore[arg-type]
    incumbent = step.X[np.argmin(step.y)]
    restart = Restart(np.array([0.5, 0.5]), incumbent)
    F = np.zeros((0, 2))
    rng = np.random.default_rng(0)
    p = step.restart_step(F, set(), rng, restart, opt.cost)  # type: ignore[attr-defined]
    assert p is not None and p.acquisition == "ei/cost"
    region = restart.region(step.X)
    centre = step.X[region[np.argmin(step.y[region])]]  # the restart's box is around its region's best
    assert np.max(np.abs(np.array([p.recipe["x"], p.recipe["y"]]) - centre)) <= 0.2 + 1e-9


def test_the_same_history_gives_the_same_proposals_whoever_asks() -> None:
    """A pure function of (settings, history, running): a fresh optimizer, or the same one asked again after
    other questions, proposes the same batch."""
    history = mirrored_history(6)
    running = [{"x": 0.3, "y": 0.6}]
    first = make_optimizer(SQUARE, settings(COST))
    before = first.propose(history, running, 2)
    first.propose(history[:7], [], 3)  # another question in between
    again = first.propose(history, running, 2)
    fresh = make_optimizer(SQUARE, settings(COST)).propose(history, running, 2)
    recipes = [p.recipe for p in before]
    assert [p.recipe for p in again] == recipes and [p.recipe for p in fresh] == recipes
    assert [p.acquisition_value for p in again] == [p.acquisition_value for p in before]
