"""scikit-optimize behind our adapter: its own Optimizer, our contract (pure, pending-aware, failure-safe)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sdl.optimizer import Observation, OptimizerSettings, make_optimizer
from sdl.space import SearchSpace

SPACE = SearchSpace.model_validate(
    {
        "parameters": [
            {"type": "real", "name": "x", "low": -1.0, "high": 1.0},
            {"type": "integer", "name": "n", "low": 0, "high": 4},
            {"type": "categorical", "name": "solvent", "choices": ["water", "ethanol", "dmso"]},
        ]
    }
)
PENALTY = {"water": 1.0, "ethanol": 0.0, "dmso": 0.5}
# small acquisition searches keep the tests quick; the behaviour is skopt's either way
FAST = {"n_initial_points": 5, "n_points": 500, "n_restarts_optimizer": 1}


def loss(r: dict[str, Any]) -> float:
    return (r["x"] - 0.3) ** 2 + 0.1 * (r["n"] - 2) ** 2 + PENALTY[r["solvent"]]


def settings(**skopt: Any) -> OptimizerSettings:
    return OptimizerSettings.model_validate({"kind": "skopt", "seed": 2, "skopt": {**FAST, **skopt}})


def test_skopt_backend_is_a_pure_function_of_the_history_and_optimises() -> None:
    opt = make_optimizer(SPACE, settings())
    history: list[Observation] = []
    for _ in range(14):
        (p,) = opt.propose(history, [], 1)
        (again,) = make_optimizer(SPACE, settings()).propose(history, [], 1)
        assert p.recipe == again.recipe
        SPACE.validate_recipe(p.recipe)
        assert type(p.recipe["n"]) is int and type(p.recipe["x"]) is float
        history.append(Observation(p.recipe, loss(p.recipe)))
    assert [p.model for p in [opt.propose(history, [], 1)[0]]] == ["skopt-gp"]
    assert min(o.value for o in history[5:]) < min(o.value for o in history[:5])  # type: ignore[type-var]


def test_skopt_backend_is_pending_aware_with_constant_liar_batches() -> None:
    opt = make_optimizer(SPACE, settings(strategy="cl_max"))
    history: list[Observation] = []
    while len(history) < 8:
        history += [Observation(p.recipe, loss(p.recipe)) for p in opt.propose(history, [], 2)]
    pending = [p.recipe for p in opt.propose(history, [], 2)]
    batch = opt.propose(history, pending, 4)
    keys = {tuple(r.values()) for r in [*pending, *(p.recipe for p in batch)]}
    assert len(keys) == 6
    assert not keys & {tuple(o.recipe.values()) for o in history}


def test_skopt_backend_never_tells_a_failure_and_never_repeats_it() -> None:
    opt = make_optimizer(SPACE, settings())
    history: list[Observation] = []
    for i in range(12):
        (p,) = opt.propose(history, [], 1)
        assert p.recipe not in [o.recipe for o in history]
        failed = p.recipe["solvent"] == "water" or i == 2
        history.append(
            Observation(p.recipe, None, "clogged") if failed else Observation(p.recipe, loss(p.recipe))
        )


def test_skopt_backend_honours_inequality_constraints_and_refuses_equalities() -> None:
    space = SearchSpace.model_validate(
        {
            "parameters": [{"type": "real", "name": n, "low": 0.0, "high": 1.0} for n in ("a", "b")],
            "constraints": [{"coefficients": {"a": 1, "b": 1}, "at_most": 0.8}],
        }
    )
    opt = make_optimizer(space, settings())
    history: list[Observation] = []
    for _ in range(9):
        for p in opt.propose(history, [], 1):
            space.validate_recipe(p.recipe)
            history.append(Observation(p.recipe, (p.recipe["a"] - 0.6) ** 2 + (p.recipe["b"] - 0.6) ** 2))
    equality = SearchSpace.model_validate(
        {
            "parameters": [{"type": "real", "name": n, "low": 0.0, "high": 1.0} for n in ("a", "b")],
            "constraints": [{"coefficients": {"a": 1, "b": 1}, "equals": 1.0}],
        }
    )
    with pytest.raises(ValueError, match="cannot honour equality constraints"):
        make_optimizer(equality, settings())


def test_skopt_options_belong_to_the_skopt_kind() -> None:
    with pytest.raises(ValidationError, match="apply to kind 'skopt'"):
        OptimizerSettings.model_validate({"kind": "bayesian", "skopt": {"acq_func": "EI"}})
    with pytest.raises(ValidationError):
        OptimizerSettings.model_validate({"kind": "skopt", "skopt": {"strategy": "kriging"}})
