"""Several objectives: Chimera's hierarchy, ParEGO's random scalarisations, the front and its hypervolume."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from sdl.optimizer import (
    Objectives,
    ObjectiveSpec,
    Observation,
    OptimizerSettings,
    hypervolume,
    make_optimizer,
    pareto_mask,
)
from sdl.optimizer.objectives import Scalariser, chimera
from sdl.space import SearchSpace


def test_pareto_mask_and_two_objective_hypervolume() -> None:
    L = np.array([[1.0, 5.0], [2.0, 3.0], [3.0, 4.0], [4.0, 1.0], [np.nan, np.nan], [2.0, 3.0]])
    assert pareto_mask(L).tolist() == [True, True, False, True, False, True]
    # staircase against (5, 6): 1x1 + 1x3 + 2x5 ... computed by hand column by column
    assert math.isclose(hypervolume(L, np.array([5.0, 6.0])), 1 * 1 + 2 * 3 + 1 * 5, rel_tol=1e-12)
    assert hypervolume(L, np.array([0.5, 0.5])) == 0.0


def test_three_objective_hypervolume_matches_a_monte_carlo_estimate() -> None:
    rng = np.random.default_rng(0)
    L = rng.random((12, 3))
    ref = np.ones(3)
    U = rng.random((200_000, 3))
    dominated = np.zeros(len(U), dtype=bool)
    for p in L:
        dominated |= np.all(p <= U, axis=1)
    assert math.isclose(hypervolume(L, ref), dominated.mean(), abs_tol=4e-3)


def test_chimera_ranks_by_the_first_objective_until_its_tolerance_then_by_the_next() -> None:
    specs = (ObjectiveSpec("yield", "maximize", tolerance=0.2), ObjectiveSpec("cost"))
    # losses: -yield, cost
    L = np.array([[-90.0, 9.0], [-88.0, 2.0], [-85.0, 1.0], [-60.0, 0.5], [-10.0, 0.1]])
    s = chimera(L, specs)
    # tolerance: within 20 % of the observed yield range (80) of the best (90): yield >= 74
    meets = [0, 1, 2]
    assert max(s[meets]) < min(s[[3, 4]])  # missing the yield tolerance always ranks worse
    assert np.argsort(s[meets]).tolist() == [2, 1, 0]  # among those within it: by cost
    assert s[3] < s[4]  # among those missing it: by yield
    absolute = chimera(L, (ObjectiveSpec("yield", "maximize", threshold=87.0), ObjectiveSpec("cost")))
    assert np.argmin(absolute) == 1  # yield >= 87 leaves experiments 0 and 1; 1 is cheaper


def _two_measurement_obs(rows: list[tuple[float, float] | None]) -> list[Observation]:
    out = []
    for i, r in enumerate(rows):
        if r is None:
            out.append(Observation({"x": float(i)}, None, "failed"))
        else:
            out.append(Observation({"x": float(i)}, r[0] + r[1], measurements={"a": r[0], "b": r[1]}))
    return out


def test_scalariser_keeps_failures_and_missing_measurements_as_failures() -> None:
    obs = [*_two_measurement_obs([(1.0, 2.0), None, (3.0, 0.5)])]
    obs.append(Observation({"x": 9.0}, 4.0, measurements={"a": 1.0}))  # b is missing
    for method in ("weighted_sum", "chimera", "pareto"):
        objectives = Objectives((ObjectiveSpec("a"), ObjectiveSpec("b")), method)  # type: ignore[arg-type]
        values = Scalariser(objectives, seed=0).values(obs, issued=4)
        assert values[1] is None and values[3] is None, method
        assert values[0] is not None and values[2] is not None, method


def test_pareto_weights_change_with_each_proposal_and_are_reproducible() -> None:
    obs = _two_measurement_obs([(0.0, 1.0), (1.0, 0.0), (0.5, 0.5)])
    sc = Scalariser(Objectives((ObjectiveSpec("a"), ObjectiveSpec("b")), "pareto"), seed=3)
    assert sc.values(obs, 3) == sc.values(obs, 3)
    assert any(sc.values(obs, 3) != sc.values(obs, k) for k in range(4, 8))


SPACE = SearchSpace.model_validate(
    {"parameters": [{"type": "real", "name": n, "low": 0.0, "high": 1.0} for n in ("x", "y")]}
)


def _two_bowls(r: dict[str, Any]) -> dict[str, float]:
    # conflicting objectives: the front is the segment between (0.2, 0.5) and (0.8, 0.5)
    x, y = r["x"], r["y"]
    return {"f1": (x - 0.2) ** 2 + (y - 0.5) ** 2, "f2": (x - 0.8) ** 2 + (y - 0.5) ** 2}


def _campaign_hv(kind: str, method: str, seed: int, budget: int = 24) -> float:
    objectives = Objectives((ObjectiveSpec("f1", reference=1.0), ObjectiveSpec("f2", reference=1.0)), method)  # type: ignore[arg-type]
    opt = make_optimizer(SPACE, OptimizerSettings(kind=kind, seed=seed, initial_design=6), objectives)  # type: ignore[arg-type]
    history: list[Observation] = []
    while len(history) < budget:
        for p in opt.propose(history, [], 2):
            m = _two_bowls(p.recipe)
            history.append(Observation(p.recipe, m["f1"] + m["f2"], measurements=m))
    L = objectives.loss_matrix(history)
    return hypervolume(L, np.array([1.0, 1.0]))


def test_pareto_search_covers_the_front_better_than_random_and_a_weighted_sum() -> None:
    seeds = range(3)
    pareto = [_campaign_hv("bayesian", "pareto", s) for s in seeds]
    random = [_campaign_hv("random", "pareto", s) for s in seeds]
    weighted = [_campaign_hv("bayesian", "weighted_sum", s) for s in seeds]
    assert np.mean(pareto) > np.mean(random)
    assert np.mean(pareto) > np.mean(weighted)


def test_chimera_optimizer_meets_the_first_tolerance_then_improves_the_second() -> None:
    objectives = Objectives(
        (ObjectiveSpec("f1", tolerance=0.05), ObjectiveSpec("f2")),
        "chimera",
    )
    opt = make_optimizer(SPACE, OptimizerSettings(seed=1, initial_design=6), objectives)
    history: list[Observation] = []
    for _ in range(24):
        (p,) = opt.propose(history, [], 1)
        m = _two_bowls(p.recipe)
        history.append(Observation(p.recipe, m["f1"] + m["f2"], measurements=m))
    L = objectives.loss_matrix(history)
    best = int(np.argmin(chimera(L, objectives.specs)))
    # f1 is nearly minimal (within 5 % of its range) and, within that, f2 has been pushed down
    assert L[best, 0] <= L[:, 0].min() + 0.05 * np.ptp(L[:, 0]) + 1e-12
    near = L[:, 0] <= L[:, 0].min() + 0.05 * np.ptp(L[:, 0])
    assert L[best, 1] == pytest.approx(L[near, 1].min())
    assert L[best, 1] < 0.36 - 0.02  # better than f1's own minimiser (0.2, 0.5), where f2 = 0.36


def test_without_measurements_a_multi_objective_optimizer_says_what_it_needs() -> None:
    objectives = Objectives((ObjectiveSpec("f1"), ObjectiveSpec("f2")), "pareto")
    opt = make_optimizer(SPACE, OptimizerSettings(seed=0, initial_design=2), objectives)
    history = [Observation({"x": 0.1 * i, "y": 0.5}, float(i)) for i in range(4)]
    with pytest.raises(ValueError, match="needs each observation's measurements"):
        opt.propose(history, [], 1)
