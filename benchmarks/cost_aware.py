"""A scarce stock: cost-aware acquisition (`optimizer.cost`) against the same optimizer blind to the cost.

Each problem has one parameter that is the volume of a scarce stock (a red dye, say), drawn from one 10 mL
syringe; every experiment also flushes 20 µL of it through the line, so a recipe costs 20 µL plus its volume,
and the cost-aware runs are told exactly that (`cost: {per_unit: {<stock>: 1}, fixed: 20}`). All methods run
one experiment at a time until they reach the target or the experiment cap; the two Bayesian runs of a seed
share their space-filling design. Reported per problem, over seeds (median [IQR]; ratio of medians to the
cost-blind runs; one-sided Mann-Whitney p):

* stock used to reach the target (up to and including the experiment that reached it; a run that never
  reaches it ranks after every run that does): p that the cost-aware runs use less;
* best regret once 4 mL of the stock are used (a quality at a fixed consumed budget; at or below the
  target's threshold counts as the threshold, since runs stop there): p that the cost-aware runs are lower;
* experiments to reach the target: p that the cost-aware runs need more (what the saving costs in time).

Problems:

* `colour-light` and `colour-heavy`: match a target absorbance spectrum by three dye volumes (0-500 µL of
  yellow, red and blue stock in a 1.5 mL vial, Beer-Lambert, RMS distance over 400-700 nm); red is scarce.
  The light target needs 120 µL of red, the heavy one 420 µL: a cost-aware search must still go where the
  stock is spent when the optimum is there.
* `branin-volume`: Branin with its first coordinate a stock volume (0-300 µL); its three equal minima need
  37, 163 and 288 µL.

    python benchmarks/cost_aware.py              # holdout seeds 0-29 and the README table, ~5 min on 1 core
    python benchmarks/cost_aware.py --seed-offset 100 --seeds 40 --no-readme   # development seeds

The form of the cost-aware acquisition (the acquisition divided by the cost) was chosen on development
seeds 100-139 among four others; their figures are in docs/optimizer-history.md. Prints the table and writes
its section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _problems import branin
from _report import machine, update_readme
from scipy.stats import mannwhitneyu

from sdl.optimizer import CostSettings, Observation, OptimizerSettings, make_optimizer
from sdl.space import SearchSpace

HERE = Path(__file__).resolve().parent
MARK = ("<!-- cost-aware-results:start -->", "<!-- cost-aware-results:end -->")
SYRINGE_UL = 10_000.0
DEAD_UL = 20.0
METHODS = ("cost-blind", "cost-aware", "random")
#: the seeds the variant was chosen on; the reported ones are never among them
DEVELOPMENT = range(100, 140)
#: the fixed amount of scarce stock used at which the best regret is compared (µL)
AT_STOCK = 4000.0
#: stands for "never reached" in ranks and quantiles
NEVER = 1e12

# -- the colour model ------------------------------------------------------------------------------------

WAVELENGTHS = np.arange(400.0, 701.0, 2.0)
VIAL_UL = 1500.0
DYES = ("yellow", "red", "blue")
#: absorbance of each dye's stock at 1 cm, undiluted: a main band and a weaker shoulder (centre nm, width nm,
#: height)
BANDS = {
    "yellow": ((430.0, 35.0, 4.0), (470.0, 30.0, 1.2)),
    "red": ((520.0, 32.0, 4.5), (555.0, 28.0, 1.8)),
    "blue": ((625.0, 40.0, 3.5), (580.0, 35.0, 1.0)),
}
SPECTRA = np.array(
    [sum(h * np.exp(-0.5 * ((WAVELENGTHS - c) / w) ** 2) for c, w, h in BANDS[d]) for d in DYES]
)


def absorbance(volumes: np.ndarray) -> np.ndarray:
    return (volumes / VIAL_UL) @ SPECTRA


def colour_distance(recipe: dict[str, Any], target: np.ndarray) -> float:
    """RMS distance between the mixture's spectrum and the target's."""
    a = absorbance(np.array([recipe[d] for d in DYES], dtype=float))
    return float(np.sqrt(np.mean((a - target) ** 2)))


# -- problems --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostProblem:
    name: str
    space: SearchSpace
    value: Callable[[dict[str, Any]], float]
    optimum: float
    threshold: float  # regret at or below which the target is reached
    max_experiments: int
    stock: str  # the parameter that is the scarce stock's volume
    notes: str

    @property
    def cost(self) -> CostSettings:
        return CostSettings(per_unit={self.stock: 1.0}, fixed=DEAD_UL)

    def used(self, recipe: dict[str, Any]) -> float:
        """µL of the scarce stock an experiment draws (what the optimizer is told it costs)."""
        return DEAD_UL + float(recipe[self.stock])


def _colour(name: str, target: tuple[float, float, float]) -> CostProblem:
    space = SearchSpace.model_validate(
        {"parameters": [{"type": "real", "name": d, "low": 0.0, "high": 500.0, "units": "uL"} for d in DYES]}
    )
    spectrum = absorbance(np.array(target))
    return CostProblem(
        name,
        space,
        lambda r: colour_distance(r, spectrum),
        0.0,
        0.01,
        60,
        "red",
        f"target {target[0]:g} / {target[1]:g} / {target[2]:g} µL yellow / red / blue; distance ≤ 0.01",
    )


def _branin_volume(r: dict[str, Any]) -> float:
    return branin(-5.0 + r["volume"] / 20.0, r["x2"])


def make_cost_problems() -> dict[str, CostProblem]:
    branin_space = SearchSpace.model_validate(
        {
            "parameters": [
                {"type": "real", "name": "volume", "low": 0.0, "high": 300.0, "units": "uL"},
                {"type": "real", "name": "x2", "low": 0.0, "high": 15.0},
            ]
        }
    )
    return {
        "colour-light": _colour("colour-light", (300.0, 120.0, 200.0)),
        "colour-heavy": _colour("colour-heavy", (150.0, 420.0, 250.0)),
        "branin-volume": CostProblem(
            "branin-volume",
            branin_space,
            _branin_volume,
            0.397887,
            0.05,
            50,
            "volume",
            "x1 = volume / 20 - 5; minima at 37, 163 and 288 µL; regret ≤ 0.05",
        ),
    }


# -- runs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    problem: str
    method: str
    seed: int
    experiments: float  # to reach the target (inf: never, within the cap)
    stock: float  # µL used up to then (inf: never)
    stock_spent: float  # µL used by the whole run
    cpu: float
    #: (µL used, best regret so far) after each result, in the order results came in
    trace: tuple[tuple[float, float], ...] = ()

    def regret_at(self, stock: float) -> float:
        """Best regret once ``stock`` µL are used: of the experiments started within it. A run that
        stopped at the target before using that much keeps its final regret (at or below the threshold)."""
        best = math.inf
        for used, regret in self.trace:
            if used > stock:
                break
            best = regret
        return best


def run(task: tuple[str, str, int, int]) -> Outcome:
    """One campaign until the target or the cap: one recipe at a time (``workers`` 1), or ``workers`` at
    once with lognormal durations, a pending-aware proposal whenever one finishes. Stock is drawn when an
    experiment starts, so what is running when the target is reached counts as used."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    name, method, seed, workers = task
    prob = make_cost_problems()[name]
    settings = {
        "cost-blind": OptimizerSettings(seed=seed),
        "cost-aware": OptimizerSettings(seed=seed, cost=prob.cost),
        "random": OptimizerSettings(kind="random", seed=seed),
    }[method]
    opt = make_optimizer(prob.space, settings)
    durations = np.random.default_rng([seed, 77]).lognormal(0.0, 0.5, size=prob.max_experiments)
    history: list[Observation] = []
    running: list[tuple[float, int, dict[str, Any]]] = []
    spent, cpu, started = 0.0, 0.0, 0
    now, best = 0.0, math.inf
    trace: list[tuple[float, float]] = []
    while True:
        free = min(workers - len(running), prob.max_experiments - started)
        if free > 0:
            c0 = time.process_time()
            props = opt.propose(history, [r for _, _, r in running], free)
            cpu += time.process_time() - c0
            for p in props:
                heapq.heappush(running, (now + float(durations[started]), started, p.recipe))
                spent += prob.used(p.recipe)
                started += 1
        if not running:
            return Outcome(name, method, seed, math.inf, math.inf, spent, cpu, tuple(trace))
        now, _, recipe = heapq.heappop(running)
        value = prob.value(recipe)
        history.append(Observation(recipe, value))
        best = min(best, value - prob.optimum)
        trace.append((spent, best))
        if value - prob.optimum <= prob.threshold:
            return Outcome(name, method, seed, started, spent, spent, cpu, tuple(trace))


def _miqr(a: np.ndarray, fmt: str) -> str:
    """Median [IQR]; "never" for a run that did not reach the target (ranked last)."""
    q = np.percentile(np.minimum(a, NEVER), [25, 50, 75])
    q1, med, q3 = (fmt.format(v) if v < NEVER / 2 else "never" for v in q)
    return f"{med} [{q1}, {q3}]"


def _ratio(a: np.ndarray, b: np.ndarray) -> str:
    """Ratio of medians, against the cost-blind runs."""
    ma, mb = float(np.median(np.minimum(a, NEVER))), float(np.median(np.minimum(b, NEVER)))
    return f"{ma / mb:.2f}" if ma < NEVER / 2 and mb < NEVER / 2 else "–"


def table(outcomes: list[Outcome], problems: dict[str, CostProblem]) -> str:
    rows = [
        f"| problem | method | reached | stock to target, µL | ratio | uses less: p | best regret after "
        f"{AT_STOCK / 1000:g} mL | ratio | lower: p | experiments to target | ratio | needs more: p "
        "| µL per experiment | CPU s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    methods = [m for m in METHODS if any(o.method == m for o in outcomes)]
    for name, prob in problems.items():
        by = {m: [o for o in outcomes if o.problem == name and o.method == m] for m in methods}
        base = by["cost-blind"]
        b_stock = np.array([o.stock for o in base])
        b_regret = np.array([max(o.regret_at(AT_STOCK), prob.threshold) for o in base])
        b_ex = np.array([o.experiments for o in base])
        for method, rs in by.items():
            if not rs:
                continue
            stock = np.array([o.stock for o in rs])
            # at or below the threshold is the target: runs stop there, so lower is not measured
            regret = np.array([max(o.regret_at(AT_STOCK), prob.threshold) for o in rs])
            ex = np.array([o.experiments for o in rs])
            cells = ["–"] * 6
            if method != "cost-blind":
                cells = [
                    _ratio(stock, b_stock),
                    f"{_p(stock, b_stock, 'less'):.2g}",
                    _ratio(regret, b_regret),
                    f"{_p(regret, b_regret, 'less'):.2g}",
                    _ratio(ex, b_ex),
                    f"{_p(ex, b_ex, 'greater'):.2g}",
                ]
            per = np.array([o.stock_spent / min(o.experiments, prob.max_experiments) for o in rs])
            rows.append(
                f"| {name} (≤ {prob.max_experiments}) | {method} | {int(np.isfinite(ex).sum())}/{len(rs)} "
                f"| {_miqr(stock, '{:.0f}')} | {cells[0]} | {cells[1]} "
                f"| {_miqr(regret, '{:.3g}')} | {cells[2]} | {cells[3]} "
                f"| {_miqr(ex, '{:.0f}')} | {cells[4]} | {cells[5]} "
                f"| {_miqr(per, '{:.0f}')} | {np.median([o.cpu for o in rs]):.2f} |"
            )
    return "\n".join(rows)


def _p(a: np.ndarray, b: np.ndarray, alternative: str) -> float:
    """One-sided Mann-Whitney p; a run that never reached the target ranks after every run that did."""
    return float(mannwhitneyu(np.minimum(a, NEVER), np.minimum(b, NEVER), alternative=alternative).pvalue)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--seed-offset", type=int, default=0, help="first seed (0: the reported holdout seeds)")
    ap.add_argument("--problems", type=lambda s: s.split(","), default=list(make_cost_problems()))
    ap.add_argument("--workers", type=int, default=1, help="experiments at once (default 1: sequential)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1: a shared machine)")
    ap.add_argument("--readme", type=Path, default=HERE / "README.md")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args(argv)
    problems = {k: v for k, v in make_cost_problems().items() if k in args.problems}
    started = time.perf_counter()
    seeds = range(args.seed_offset, args.seed_offset + args.seeds)
    w = args.workers
    tasks = [(n, m, s, w) for n in problems for m in METHODS for s in seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        outcomes = list(pool.map(run, tasks, chunksize=1))
    chosen_on = set(seeds) & set(DEVELOPMENT)
    kind = (
        f"development seeds {seeds.start}–{seeds.stop - 1} (the variant was chosen on these)"
        if chosen_on
        else f"holdout seeds {seeds.start}–{seeds.stop - 1}, never used to choose (chosen on "
        f"{DEVELOPMENT.start}–{DEVELOPMENT.stop - 1})"
    )
    body = "\n\n".join(
        [
            f"Machine: {machine()}",
            f"Command: `python benchmarks/cost_aware.py {' '.join(sys.argv[1:])}`",
            f"Total time {time.perf_counter() - started:.0f} s with {args.jobs} worker process(es); "
            f"{args.workers} experiment(s) at once.",
            f"**{kind}**; ratios and p against the cost-blind runs of the same seeds (same design, same "
            "optimizer, `cost` unset).",
            table(outcomes, problems),
        ]
    )
    print(body)
    if not args.no_readme:
        update_readme(args.readme, body, MARK)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
