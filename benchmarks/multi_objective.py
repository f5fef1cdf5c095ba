"""Two objectives at once on the SnAr flow model: space-time yield (maximise) against E-factor (minimise).

Hypervolume after the budget, over seeds, against two reference points: (STY 5000 kg m^-3 h^-1, E-factor 12),
a little beyond the nadir of the model's true front (which runs from STY 7400 at E-factor 8.58 to STY 11900
at 9.7), so that covering the front counts; and a loose (1000, 40), where one good compromise point
dominates almost the whole box. Methods:

* `random` — our scrambled-Sobol' baseline;
* `weighted-sum` — our Bayesian optimizer minimising Summit's fixed scalarisation −STY/10⁴ + E-factor/100;
* `chimera` — our optimizer with the hierarchy STY first (tolerance 10 % of the range seen), then E-factor;
* `pareto` — our optimizer searching the front (a new random augmented-Chebyshev scalarisation per proposal).

    python benchmarks/multi_objective.py                   # 20 seeds, a few minutes
    python benchmarks/multi_objective.py --seeds 5 --no-readme

Prints the table and writes its section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _problems import make_multi_problems
from _report import machine, update_readme
from scipy.stats import mannwhitneyu

from sdl.optimizer import (
    Objectives,
    ObjectiveSpec,
    Observation,
    OptimizerSettings,
    hypervolume,
    make_optimizer,
)

HERE = Path(__file__).resolve().parent
METHODS = ("random", "weighted-sum", "chimera", "pareto")
MARK = ("<!-- multi-objective-results:start -->", "<!-- multi-objective-results:end -->")


def _objectives(method: str, specs: tuple[ObjectiveSpec, ...], weights: tuple[float, ...]) -> Objectives:
    if method == "weighted-sum":
        weighted = tuple(
            ObjectiveSpec(s.measurement, s.goal, s.target, w, reference=s.reference)
            for s, w in zip(specs, weights, strict=True)
        )
        return Objectives(weighted, "weighted_sum")
    if method == "chimera":
        first = ObjectiveSpec(
            specs[0].measurement, specs[0].goal, tolerance=0.1, reference=specs[0].reference
        )
        return Objectives((first, *specs[1:]), "chimera")
    return Objectives(specs, "pareto")


LOOSE = np.array([-1000.0, 40.0])  # the loose reference, as losses (-STY, E-factor)


def run(task: tuple[str, str, int]) -> tuple[str, str, int, list[float], float, float]:
    """One campaign: the hypervolume after every experiment, and the optimizer's CPU seconds."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    name, method, seed = task
    prob = make_multi_problems()[name]
    objectives = _objectives(method, prob.objectives, prob.weighted_sum)
    kind = "random" if method == "random" else "bayesian"
    opt = make_optimizer(prob.space, OptimizerSettings(kind=kind, seed=seed), objectives)
    truth = Objectives(prob.objectives, "pareto")
    reference = truth.references(np.zeros((0, len(prob.objectives))))
    history: list[Observation] = []
    curve, cpu = [], 0.0
    for _ in range(prob.budget):
        c0 = time.process_time()
        (p,) = opt.propose(history, [], 1)
        cpu += time.process_time() - c0
        m = prob.measure(p.recipe)
        scalar = sum(s.weight * s.loss(m[s.measurement]) for s in objectives.specs)
        history.append(Observation(p.recipe, scalar, measurements=m))
        curve.append(hypervolume(truth.loss_matrix(history), reference))
    return name, method, seed, curve, cpu, hypervolume(truth.loss_matrix(history), LOOSE)


Result = tuple[int, list[float], float, float]


def table(results: dict[tuple[str, str], list[Result]], budget: int) -> str:
    rows = [
        "| method | seeds | HV@10 | HV@20 | HV@final | pareto better: MW p | HV@final, loose reference "
        "| pareto better: MW p | CPU s/run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    finals = {m: np.array([c[-1] for _, c, _, _ in rs]) for (_, m), rs in results.items()}
    loose = {m: np.array([h for *_, h in rs]) for (_, m), rs in results.items()}
    for (_, method), rs in results.items():
        curves = np.array([c for _, c, _, _ in rs])

        def cell(k: int, curves: np.ndarray = curves) -> str:
            q1, med, q3 = np.percentile(curves[:, k - 1], [25, 50, 75])
            return f"{med:.4g} [{q1:.4g}, {q3:.4g}]"

        versus, versus_loose = "–", "–"
        if method != "pareto" and "pareto" in finals:
            p = mannwhitneyu(finals["pareto"], finals[method], alternative="greater").pvalue
            versus = f"{p:.2g}"
            p = mannwhitneyu(loose["pareto"], loose[method], alternative="greater").pvalue
            versus_loose = f"{p:.2g}"
        q1, med, q3 = np.percentile(loose[method], [25, 50, 75])
        cpu = np.median([c for _, _, c, _ in rs])
        rows.append(
            f"| {method} | {len(rs)} | {cell(10)} | {cell(20)} | {cell(budget)} | {versus} "
            f"| {med:.4g} [{q1:.4g}, {q3:.4g}] | {versus_loose} | {cpu:.2f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--seed-offset", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--readme", type=Path, default=HERE / "README.md")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    name = "snar2"
    prob = make_multi_problems()[name]
    tasks = [(name, m, s) for m in METHODS for s in range(args.seed_offset, args.seed_offset + args.seeds)]
    results: dict[tuple[str, str], list[Result]] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for n, method, seed, curve, cpu, loose in pool.map(run, tasks):
            results.setdefault((n, method), []).append((seed, curve, cpu, loose))
    body = "\n\n".join(
        [
            f"Machine: {machine()}",
            f"Command: `python benchmarks/multi_objective.py {' '.join(sys.argv[1:])}`",
            f"Total time {time.perf_counter() - started:.0f} s. Problem: {prob.notes}; "
            f"{prob.budget} experiments; hypervolume (STY × E-factor units) median [IQR] over seeds "
            f"{args.seed_offset}–{args.seed_offset + args.seeds - 1}.",
            table(results, prob.budget),
        ]
    )
    print(body)
    if not args.no_readme:
        update_readme(args.readme, body, MARK)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
