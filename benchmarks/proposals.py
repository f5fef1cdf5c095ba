"""Every proposal of a fixed set of campaigns, recorded bit for bit, to show that a change proposes the same.

A refactor of the optimizer must not change what it proposes. `record` runs 136 campaigns on development
seeds (Hartmann-6 on seeds 100-179 at 60 evaluations; a few each of Branin, Ackley-6, mixed, SnAr and noisy
Hartmann-6; asynchronous, constrained, batched, descriptor, two- and three-objective campaigns; gp_hedge, pi
and lcb; the random, grid and skopt kinds) and writes every proposal (recipe, model, acquisition and its
value, floats in hexadecimal) to a JSON file; `compare` says whether two such files are identical, or where
they part.

    python benchmarks/proposals.py record /tmp/before.json        # ~5 min on 2 cores
    python benchmarks/proposals.py record /tmp/after.json
    python benchmarks/proposals.py compare /tmp/before.json /tmp/after.json
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _problems import make_multi_problems, make_problems

from sdl.optimizer import (
    Objectives,
    ObjectiveSpec,
    Observation,
    OptimizerSettings,
    Proposal,
    make_optimizer,
)
from sdl.space import SearchSpace


def _exact(v: Any) -> Any:
    """Floats as their exact hexadecimal spelling, so that a comparison is bit for bit."""
    return float(v).hex() if isinstance(v, float | np.floating) else v


def _record(p: Proposal) -> dict[str, Any]:
    return {
        "recipe": {k: _exact(v) for k, v in p.recipe.items()},
        "model": p.model,
        "acq": p.acquisition,
        "acq_value": _exact(p.acquisition_value) if p.acquisition_value is not None else None,
    }


def _noise_rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, 99, i])


def sequential(prob: Any, seed: int, budget: int, settings: dict[str, Any], n: int = 1) -> list[Any]:
    """One campaign, ``n`` proposals at a time, each batch's results told before the next."""
    opt = make_optimizer(prob.space, OptimizerSettings(seed=seed, **settings))
    hist: list[Observation] = []
    out = []
    while len(hist) < budget:
        props = opt.propose(hist, [], n)
        out.append([_record(p) for p in props])
        for p in props:
            v = prob.observe(p.recipe, _noise_rng(seed, len(hist)))
            hist.append(Observation(p.recipe, v, None if v is not None else "infeasible"))
    return out


def asynchronous(prob: Any, seed: int, evaluations: int, workers: int = 4) -> list[Any]:
    """Four workers with lognormal durations: a pending-aware proposal whenever one finishes."""
    opt = make_optimizer(prob.space, OptimizerSettings(seed=seed, initial_design=prob.n_init))
    dur = np.random.default_rng([seed, 77]).lognormal(0.0, 0.5, size=evaluations + workers)
    hist: list[Observation] = []
    running: list[tuple[float, int, dict[str, Any]]] = []
    out: list[Any] = []
    issued = 0

    def issue(now: float, n: int) -> None:
        nonlocal issued
        props = opt.propose(hist, [r for _, _, r in running], n)
        out.append([_record(p) for p in props])
        for p in props:
            heapq.heappush(running, (now + float(dur[issued]), issued, p.recipe))
            issued += 1

    issue(0.0, workers)
    while len(hist) < evaluations:
        now, index, recipe = heapq.heappop(running)
        v = prob.observe(recipe, _noise_rng(seed, index))
        hist.append(Observation(recipe, v, None if v is not None else "infeasible"))
        if issued < evaluations:
            issue(now, 1)
    return out


class Plain:
    """A problem given by its space, its value and (optionally) which recipes fail."""

    def __init__(self, space: SearchSpace, truth: Any, feasible: Any = None) -> None:
        self.space, self.truth, self.feasible = space, truth, feasible

    def observe(self, r: dict[str, Any], rng: np.random.Generator) -> float | None:
        if self.feasible is not None and not self.feasible(r):
            return None
        return self.truth(r)


def mixture() -> Plain:
    """Mixture fractions summing to one, a volume limit, an integer; ethanol above 0.7 fails."""
    space = SearchSpace.model_validate(
        {
            "parameters": [
                {"type": "real", "name": "water", "low": 0.0, "high": 1.0},
                {"type": "real", "name": "ethanol", "low": 0.0, "high": 1.0},
                {"type": "real", "name": "dmso", "low": 0.0, "high": 1.0},
                {"type": "real", "name": "volume", "low": 50.0, "high": 500.0, "units": "uL"},
                {"type": "integer", "name": "equiv", "low": 1, "high": 4},
            ],
            "constraints": [
                {"coefficients": {"water": 1, "ethanol": 1, "dmso": 1}, "equals": 1.0},
                {"coefficients": {"volume": 1, "water": 200}, "at_most": 400},
            ],
        }
    )

    def loss(r: dict[str, Any]) -> float:
        return (
            (r["water"] - 0.2) ** 2
            + (r["dmso"] - 0.5) ** 2
            + ((r["volume"] - 250) / 300) ** 2
            + 0.1 * r["equiv"]
        )

    return Plain(space, loss, lambda r: r["ethanol"] < 0.7)


def solvents() -> Plain:
    """A temperature and one of 12 solvents described by two descriptors."""
    names = [f"s{i}" for i in range(12)]
    rng = np.random.default_rng(3)
    d1, d2 = rng.uniform(0, 80, 12), rng.uniform(0, 5, 12)
    space = SearchSpace.model_validate(
        {
            "parameters": [
                {"type": "real", "name": "t", "low": 20.0, "high": 80.0},
                {
                    "type": "categorical",
                    "name": "solvent",
                    "choices": names,
                    "descriptors": {"eps": list(map(float, d1)), "mu": list(map(float, d2))},
                },
            ]
        }
    )

    def truth(r):
        i = names.index(r["solvent"])
        return float((d1[i] / 80 - 0.3) ** 2 + (d2[i] / 5 - 0.6) ** 2 + ((r["t"] - 50) / 60) ** 2)

    return Plain(space, truth)


def cases() -> dict[str, tuple[Any, ...]]:
    """The campaigns recorded: name -> how to run it. Development seeds (100 on) only."""
    probs = make_problems()
    c: dict[str, Any] = {}
    for s in range(100, 180):
        c[f"hartmann6/{s}"] = ("seq", "hartmann6", s, 60, {"initial_design": 14})
    for name, budget, seeds in [
        ("branin", 30, 6),
        ("ackley6", 60, 4),
        ("mixed", 40, 5),
        ("snar", 40, 4),
        ("hartmann6_noisy", 60, 4),
    ]:
        for s in range(100, 100 + seeds):
            c[f"{name}/{s}"] = ("seq", name, s, budget, {"initial_design": probs[name].n_init})
    for name, ev in [("hartmann6", 45), ("mixed", 30), ("hartmann6_noisy", 40)]:
        for s in (100, 101):
            c[f"async4-{name}/{s}"] = ("async", name, s, ev, None)
    for acq in ("gp_hedge", "pi", "lcb"):
        for s in (100, 101):
            c[f"{acq}-branin/{s}"] = ("seq", "branin", s, 24, {"acquisition": acq, "initial_design": 6})
        c[f"{acq}-noisy/100"] = ("seq", "hartmann6_noisy", 100, 30, {"acquisition": acq})
    for s in (100, 101, 102):
        c[f"constrained/{s}"] = ("mixture", s, 24, 1)
    c["constrained-batch3/100"] = ("mixture", 100, 24, 3)
    c["batch4-branin/100"] = ("seq-batch", "branin", 100, 24, 4)
    c["batch8-hartmann6/100"] = ("seq-batch", "hartmann6", 100, 48, 8)
    c["descriptors/100"] = ("solvents", 100, 20)
    for method in ("pareto", "chimera", "weighted_sum"):
        for s in (100, 101):
            c[f"snar2-{method}/{s}"] = ("multi", method, s, 30, 1)
    c["snar2-pareto-batch3/100"] = ("multi", "pareto", 100, 30, 3)
    c["parego3/100"] = ("multi3", 100, 24, 2)
    c["random-branin/100"] = ("seq", "branin", 100, 12, {"kind": "random"})
    c["grid-mixed/100"] = ("seq", "mixed", 100, 12, {"kind": "grid"})
    c["skopt-branin/100"] = ("seq", "branin", 100, 14, {"kind": "skopt"})
    return c


def run_case(item: tuple[str, tuple[Any, ...]]) -> tuple[str, list[Any]]:
    key, spec = item
    probs = make_problems()
    kind = spec[0]
    if kind == "seq":
        _, name, s, budget, kw = spec
        return key, sequential(probs[name], s, budget, kw)
    if kind == "seq-batch":
        _, name, s, budget, n = spec
        return key, sequential(probs[name], s, budget, {"initial_design": probs[name].n_init}, n=n)
    if kind == "async":
        _, name, s, ev, _ = spec
        return key, asynchronous(probs[name], s, ev)
    if kind == "mixture":
        _, s, budget, n = spec
        return key, sequential(mixture(), s, budget, {}, n=n)
    if kind == "solvents":
        _, s, budget = spec
        return key, sequential(solvents(), s, budget, {"initial_design": 5})
    if kind in ("multi", "multi3"):
        mp = make_multi_problems()["snar2"]
        if kind == "multi":
            _, method, s, budget, n = spec
            specs = mp.objectives
            if method == "chimera":
                specs = (
                    ObjectiveSpec(
                        specs[0].measurement, specs[0].goal, tolerance=0.1, reference=specs[0].reference
                    ),
                    *specs[1:],
                )
            if method == "weighted_sum":
                specs = tuple(
                    ObjectiveSpec(x.measurement, x.goal, x.target, w, reference=x.reference)
                    for x, w in zip(specs, mp.weighted_sum, strict=True)
                )
            objs = Objectives(specs, method)
            measure = mp.measure
        else:
            _, s, budget, n = spec
            method = "pareto"
            objs = Objectives((*mp.objectives, ObjectiveSpec("tau", "minimize", reference=2.0)), "pareto")

            def measure(r: dict[str, Any]) -> dict[str, float]:
                return {**mp.measure(r), "tau": float(r["tau"])}

        wsum = Objectives(
            tuple(
                ObjectiveSpec(x.measurement, x.goal, x.target, w, reference=x.reference)
                for x, w in zip(mp.objectives, mp.weighted_sum, strict=True)
            ),
            "weighted_sum",
        )
        opt = make_optimizer(mp.space, OptimizerSettings(seed=s), objs)
        hist: list[Observation] = []
        out = []
        while len(hist) < budget:
            props = opt.propose(hist, [], n)
            out.append([_record(p) for p in props])
            for p in props:
                m = measure(p.recipe)
                value = float(wsum.losses(m) @ np.array([x.weight for x in wsum.specs]))
                hist.append(Observation(p.recipe, value, None, m))
        return key, out
    raise ValueError(kind)


def record(path: Path, only: str, jobs: int) -> None:
    todo = [(k, v) for k, v in cases().items() if k.startswith(only)]
    out: dict[str, list[Any]] = {}
    with ProcessPoolExecutor(jobs) as pool:
        for key, proposals in pool.map(run_case, todo, chunksize=1):
            out[key] = proposals
            print(f"  {key}: {sum(len(p) for p in proposals)} proposals", file=sys.stderr, flush=True)
    path.write_text(json.dumps(out, sort_keys=True, indent=0))


def compare(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> bool:
    same, proposals, differ = 0, 0, 0
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            print(f"{key}: only in {'the first' if key in a else 'the second'}")
            differ += 1
        elif a[key] == b[key]:
            same += 1
            proposals += sum(len(call) for call in a[key])
        else:
            differ += 1
            calls = [i for i, (x, y) in enumerate(zip(a[key], b[key], strict=False)) if x != y]
            where = f"call {calls[0]}" if calls else f"lengths {len(a[key])} and {len(b[key])}"
            print(f"{key}: differs at {where}")
    print(f"{same} campaigns identical ({proposals} proposals), {differ} differ")
    return differ == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the campaigns and write their proposals")
    rec.add_argument("path", type=Path)
    rec.add_argument("--only", default="", help="campaigns whose name starts with this")
    rec.add_argument("--jobs", type=int, default=2)
    cmp = sub.add_parser("compare", help="exit 0 when two records are identical")
    cmp.add_argument("first", type=Path)
    cmp.add_argument("second", type=Path)
    args = ap.parse_args(argv)
    if args.command == "record":
        record(args.path, args.only, args.jobs)
        return 0
    first, second = (json.loads(p.read_text()) for p in (args.first, args.second))
    return 0 if compare(first, second) else 1


if __name__ == "__main__":
    raise SystemExit(main())
