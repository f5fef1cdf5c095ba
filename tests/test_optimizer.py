"""The ask/tell adapter: determinism, pending points, failures, mixed spaces, baselines and resume."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from sdl.optimizer import Observation, OptimizerExhausted, OptimizerSettings, Proposal, make_optimizer
from sdl.space import SearchSpace

REAL2 = SearchSpace.model_validate(
    {
        "parameters": [
            {"type": "real", "name": "x", "low": -5.0, "high": 10.0},
            {"type": "real", "name": "y", "low": 0.0, "high": 15.0},
        ]
    }
)
MIXED = SearchSpace.model_validate(
    {
        "parameters": [
            {"type": "real", "name": "temp", "low": 30.0, "high": 120.0},
            {"type": "real", "name": "conc", "low": 0.01, "high": 1.0, "log": True},
            {"type": "integer", "name": "equiv", "low": 1, "high": 5},
            {"type": "categorical", "name": "solvent", "choices": ["water", "ethanol", "dmso", 7]},
        ]
    }
)
SOLVENT_PENALTY = {"water": 0.8, "ethanol": 0.0, "dmso": 0.5, 7: 1.2}


def branin(r: dict[str, Any]) -> float:
    x, y = r["x"], r["y"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x**2 + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


def mixed(r: dict[str, Any]) -> float:
    return (
        ((r["temp"] - 80) / 40) ** 2
        + (math.log10(r["conc"]) + 1) ** 2
        + 0.3 * abs(r["equiv"] - 3)
        + SOLVENT_PENALTY[r["solvent"]]
    )


def run(space: SearchSpace, settings: OptimizerSettings, f, budget: int) -> list[Observation]:
    opt = make_optimizer(space, settings)
    history: list[Observation] = []
    for _ in range(budget):
        (p,) = opt.propose(history, [], 1)
        space.validate_recipe(p.recipe)
        history.append(Observation(p.recipe, f(p.recipe)))
    return history


def recipes(props: list[Proposal]) -> list[dict[str, Any]]:
    return [p.recipe for p in props]


def test_settings_reject_unknown_fields_and_values() -> None:
    with pytest.raises(ValidationError):
        OptimizerSettings.model_validate({"kind": "bayesian", "acquisiton": "ei"})
    with pytest.raises(ValidationError):
        OptimizerSettings.model_validate({"acquisition": "ucb"})


def test_bayesian_improves_on_its_initial_design() -> None:
    history = run(REAL2, OptimizerSettings(seed=1, initial_design=6), branin, 22)
    assert min(o.value for o in history[6:]) < min(o.value for o in history[:6])
    assert min(o.value for o in history) < 0.397887 + 0.5  # the global minimum of Branin is 0.397887


@pytest.mark.parametrize("kind", ["bayesian", "random"])
def test_same_seed_same_proposals_and_fresh_instance_equals_long_lived(kind: str) -> None:
    settings = OptimizerSettings(kind=kind, seed=3, initial_design=5)
    long_lived = make_optimizer(REAL2, settings)
    history: list[Observation] = []
    for _ in range(9):
        (p,) = long_lived.propose(history, [], 1)
        (q,) = make_optimizer(REAL2, settings).propose(history, [], 1)
        assert p.recipe == q.recipe
        history.append(Observation(p.recipe, branin(p.recipe)))
    other = run(REAL2, settings.model_copy(update={"seed": 4}), branin, 9)
    assert [o.recipe for o in other] != [o.recipe for o in history]


def test_resume_from_history_equals_continuing_with_pending_and_batches() -> None:
    settings = OptimizerSettings(seed=5, initial_design=4)
    opt = make_optimizer(REAL2, settings)
    history: list[Observation] = []
    running = recipes(opt.propose(history, [], 3))
    while len(history) < 12:
        done, running = running[0], running[1:]
        history.append(Observation(done, branin(done)))
        batch = opt.propose(history, running, 1)
        resumed = make_optimizer(REAL2, settings).propose(history, running, 1)
        assert recipes(batch) == recipes(resumed)
        running += recipes(batch)
    assert recipes(opt.propose(history, running, 4)) == recipes(
        make_optimizer(REAL2, settings).propose(history, running, 4)
    )


@pytest.mark.parametrize("acquisition", ["ei", "pi", "lcb", "gp_hedge"])
def test_four_back_to_back_pending_asks_give_four_distinct_points(acquisition: str) -> None:
    settings = OptimizerSettings(seed=2, initial_design=5, acquisition=acquisition)
    history = run(REAL2, settings, branin, 10)
    opt = make_optimizer(REAL2, settings)
    pending: list[dict[str, Any]] = []
    for _ in range(4):
        (p,) = opt.propose(history, pending, 1)
        assert p.model == "gp" and p.acquisition == (
            p.acquisition if acquisition == "gp_hedge" else acquisition
        )
        assert p.recipe not in pending
        pending.append(p.recipe)
    points = np.array([[r["x"], r["y"]] for r in pending])
    gaps = [np.linalg.norm(points[i] - points[j]) for i in range(4) for j in range(i)]
    assert min(gaps) > 1e-3  # not merely different in the last digit
    batch = recipes(opt.propose(history, [], 4))
    assert len({tuple(r.values()) for r in batch}) == 4


def test_failures_are_not_told_as_numbers_and_their_region_is_avoided() -> None:
    # Everything with x > 5 fails: the optimizer must learn to stop proposing there.
    def outcome(r: dict[str, Any]) -> Observation:
        if r["x"] > 5:
            return Observation(r, None, "pump stalled")
        return Observation(r, branin(r))

    settings = OptimizerSettings(seed=0, initial_design=8)
    opt = make_optimizer(REAL2, settings)
    history: list[Observation] = []
    for _ in range(30):
        (p,) = opt.propose(history, [], 1)
        assert p.recipe not in [o.recipe for o in history]
        history.append(outcome(p.recipe))
    # The feasibility weight has learnt where failures happen: low beyond x = 5, high where runs succeed.
    # (Branin's third minimum, x = 9.42, lies in the failing region, so over many seeds the optimizer still
    # spends a sizeable share of late evaluations probing its edge; see docs/optimizer.md.)
    from sdl.optimizer.bayesian import _Step

    step = _Step(
        opt, [o for o in history if o.value is not None], [o for o in history if o.value is None], []
    )
    assert step.feas is not None
    inside = step.feas(step.enc.encode([{"x": 9.0, "y": 7.5}, {"x": 8.0, "y": 2.0}]))
    outside = step.feas(step.enc.encode([{"x": 0.0, "y": 7.5}, {"x": -3.0, "y": 10.0}]))
    assert inside.max() < outside.min()
    # A failure never moves the model: the same successes with or without failures, the same mean.
    ok = [o for o in history if o.value is not None]
    bad = [o for o in history if o.value is None]
    with_bad, without = _Step(opt, ok, bad, []), _Step(opt, ok, [], [])
    np.testing.assert_allclose(with_bad.mean_at_data, without.mean_at_data)


def test_all_failures_fall_back_to_the_design_without_repeats() -> None:
    opt = make_optimizer(REAL2, OptimizerSettings(seed=0, initial_design=3))
    history = [Observation(p.recipe, None, "broken") for p in opt.propose([], [], 3)]
    more = opt.propose(history, [], 2)
    assert all(p.model == "sobol" for p in more)
    assert not {tuple(p.recipe.values()) for p in more} & {tuple(o.recipe.values()) for o in history}


def test_mixed_space_recipes_are_plain_values_inside_the_space() -> None:
    history = run(MIXED, OptimizerSettings(seed=7, initial_design=8), mixed, 24)
    for o in history:
        MIXED.validate_recipe(o.recipe)
        assert type(o.recipe["equiv"]) is int
        assert type(o.recipe["temp"]) is float and type(o.recipe["conc"]) is float
        assert o.recipe["solvent"] in SOLVENT_PENALTY
    assert min(o.value for o in history) < 0.4  # ethanol, equiv 3, ~80 °C, 0.1 M gives 0
    best = min(history, key=lambda o: o.value)
    assert best.recipe["solvent"] == "ethanol"


def test_small_discrete_space_is_exhausted_without_repeats() -> None:
    space = SearchSpace.model_validate(
        {
            "parameters": [
                {"type": "integer", "name": "n", "low": 0, "high": 2},
                {"type": "categorical", "name": "c", "choices": ["a", "b"]},
            ]
        }
    )
    for kind in ("bayesian", "random", "grid"):
        opt = make_optimizer(space, OptimizerSettings(kind=kind, initial_design=2))
        history: list[Observation] = []
        for _ in range(6):
            (p,) = opt.propose(history, [], 1)
            history.append(Observation(p.recipe, float(p.recipe["n"]) + (p.recipe["c"] == "b")))
        assert len({tuple(o.recipe.values()) for o in history}) == 6, kind
        with pytest.raises(OptimizerExhausted):
            opt.propose(history, [], 1)


def test_grid_enumerates_skips_seen_and_pending_then_exhausts() -> None:
    opt = make_optimizer(REAL2, OptimizerSettings(kind="grid", grid_points=3))
    first = recipes(opt.propose([], [], 2))
    assert first == [{"x": -5.0, "y": 0.0}, {"x": -5.0, "y": 7.5}]
    history = [Observation(first[0], 1.0)]
    nxt = recipes(opt.propose(history, [first[1]], 7))
    assert first[1] not in nxt and len({tuple(r.values()) for r in nxt}) == 7
    with pytest.raises(OptimizerExhausted):
        opt.propose(history, [first[1], *nxt], 1)


def test_random_baseline_is_uniform_and_pending_aware() -> None:
    opt = make_optimizer(REAL2, OptimizerSettings(kind="random", seed=9))
    pts = recipes(opt.propose([], [], 64))
    xs = np.array([r["x"] for r in pts])
    assert xs.min() >= -5 and xs.max() <= 10 and abs(np.median(xs) - 2.5) < 1.5
    (nxt,) = opt.propose([], pts[:3], 1)
    assert nxt.recipe == pts[3] and nxt.model == "random"


def test_integer_and_log_dimensions_round_trip_through_the_encoding() -> None:
    from sdl.optimizer.encoding import Encoder

    enc = Encoder(MIXED)
    sample = [
        {"temp": 30.0, "conc": 0.01, "equiv": 1, "solvent": "water"},
        {"temp": 120.0, "conc": 1.0, "equiv": 5, "solvent": 7},
        {"temp": 77.7, "conc": 0.123, "equiv": 3, "solvent": "dmso"},
    ]
    back = enc.decode(enc.encode(sample))
    for a, b in zip(sample, back, strict=True):
        assert a["equiv"] == b["equiv"] and a["solvent"] == b["solvent"]
        assert math.isclose(a["temp"], b["temp"]) and math.isclose(a["conc"], b["conc"])


def test_unexplored_regions_are_predicted_no_better_than_the_worst_observation() -> None:
    from sdl.optimizer.bayesian import _Step

    rng = np.random.default_rng(0)
    pts = [
        {"x": float(x), "y": float(y)}
        for x, y in zip(rng.uniform(1, 4, 12), rng.uniform(5, 9, 12), strict=True)
    ]
    ok = [Observation(r, branin(r)) for r in pts]
    opt = make_optimizer(REAL2, OptimizerSettings(seed=0, initial_design=4))
    step = _Step(opt, ok, [], [])
    corner = step.enc.encode([{"x": 10.0, "y": 15.0}])
    mean = step.y_mean + step.y_sd * step.post.predict(corner)[0][0]
    assert mean > np.median([o.value for o in ok])


def test_hartmann6_proposals_probe_the_corners_of_the_cube_less(monkeypatch: pytest.MonkeyPatch) -> None:
    # Centred on the sample mean, the GP sent about one evaluation in six of this run to a corner of the
    # cube (where Hartmann-6 is flat at 0) once the incumbent's basin was refined.
    from benchmark_problems import problems

    import sdl.optimizer.bayesian as bayesian

    prob = problems.make_problems()["hartmann6"]

    def corner_probes() -> tuple[int, float]:
        opt = make_optimizer(prob.space, OptimizerSettings(seed=114, initial_design=prob.n_init))
        history: list[Observation] = []
        corners = 0
        for _ in range(prob.budget):
            (p,) = opt.propose(history, [], 1)
            x = np.array(list(p.recipe.values()))
            corners += p.model == "gp" and bool(np.all((x < 1e-6) | (x > 1 - 1e-6)))
            history.append(Observation(p.recipe, prob.truth(p.recipe)))
        return corners, min(o.value for o in history)  # type: ignore[type-var]

    at_worst, best_at_worst = corner_probes()
    monkeypatch.setattr(bayesian, "prior_mean", lambda y: float(y.mean()))
    at_mean, _ = corner_probes()
    assert at_worst * 2 < at_mean
    assert best_at_worst < -3.0


def test_blas_threads_limit_blas_while_a_proposal_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    from sdl.optimizer import bayesian

    def blas_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    seen: list[set[int]] = []
    fit = bayesian.fit_hyper

    def recording_fit(*args: Any, **kwargs: Any) -> Any:
        seen.append(blas_threads())
        return fit(*args, **kwargs)

    monkeypatch.setattr(bayesian, "fit_hyper", recording_fit)
    history = run(REAL2, OptimizerSettings(seed=0, initial_design=4), branin, 6)
    with threadpool_limits(limits=2, user_api="blas"):  # the process's own setting, whatever the machine
        for threads, expected in ((1, {1}), (None, {2})):
            seen.clear()
            make_optimizer(REAL2, OptimizerSettings(seed=0, blas_threads=threads)).propose(history, [], 1)
            assert seen and all(s == expected for s in seen), (threads, seen)
        assert blas_threads() == {2}  # the limit ends with the proposal
    with pytest.raises(ValidationError):
        OptimizerSettings(blas_threads=0)
