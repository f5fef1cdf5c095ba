"""Campaign-file fields for several objectives and constraints: accepted forms and clear refusals."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sdl.spec.campaign import Campaign


def spec(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "mo",
        "parameters": [
            {"type": "real", "name": "a", "low": 0.0, "high": 1.0},
            {"type": "real", "name": "b", "low": 0.0, "high": 1.0},
        ],
        "objectives": [
            {"measurement": "yield", "goal": "maximize", "tolerance": 0.1},
            {"measurement": "cost", "goal": "minimize"},
        ],
        "multi_objective": "chimera",
        "budget": {"max_experiments": 5},
        "procedure": {"function": "experiments.branin.procedure:measure"},
    }
    base.update(changes)
    return base


def test_a_chimera_campaign_with_constraints_builds_its_optimizer_inputs() -> None:
    c = Campaign.model_validate(spec(constraints=[{"coefficients": {"a": 1, "b": 1}, "at_most": 1.2}]))
    objectives = c.objective_set()
    assert objectives.method == "chimera" and objectives.names == ["yield", "cost"]
    assert objectives.specs[0].tolerance == 0.1 and objectives.specs[0].goal == "maximize"
    assert len(c.space.constraints) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"objectives": [{"measurement": "yield"}]}, "needs at least two objectives"),
        ({"multi_objective": "pareto"}, "applies to multi_objective 'chimera' only"),
        (
            {"objectives": [{"measurement": "yield"}, {"measurement": "cost", "threshold": 3.0}]},
            "is the last of the chimera hierarchy",
        ),
        (
            {
                "objectives": [
                    {"measurement": "yield", "tolerance": 0.1, "threshold": 2.0},
                    {"measurement": "cost"},
                ]
            },
            "not both",
        ),
        (
            {
                "optimizer": {"kind": "skopt"},
                "constraints": [{"coefficients": {"a": 1, "b": 1}, "equals": 1.0}],
            },
            "cannot honour equality constraints",
        ),
        ({"constraints": [{"coefficients": {"z": 1}, "at_most": 1}]}, "unknown parameter 'z'"),
    ],
)
def test_mistakes_in_the_new_fields_are_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Campaign.model_validate(spec(**changes))
