"""The published-lab campaigns: our optimizer against random search at the same budget.

Each campaign's measurement is run as a plain function (its ``simulate``: the same chemistry, spectrometer
model and analysis the closed-loop runs read through the drivers), so thousands of experiments take
minutes. For every lab and seed, the campaign's own optimizer settings (bayesian) and a random search
propose recipes until the campaign's budget is spent; the mobile chemist proposes in batches, as the robot
filled a rack at a time. Prints each lab's figure of merit at checkpoints (median [IQR] over seeds, and
the ratio to random), and writes each lab's convergence plot into its folder (``convergence.png``).

    python benchmarks/published_labs.py                          # every lab, 5 seeds, ~15 minutes
    python benchmarks/published_labs.py --labs reactivity_search --seeds 2 --budget 20
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and benchmarks/drivers.py would hide the
# `drivers` package the campaigns' modules import.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import importlib  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sdl.optimizer import make_optimizer  # noqa: E402
from sdl.optimizer.api import Observation  # noqa: E402
from sdl.spec.campaign import Campaign  # noqa: E402
from sdl.spec.loading import load_campaign  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("bayesian", "random")
Measurements = Mapping[str, float]


@dataclass(frozen=True)
class Figure:
    """A lab's figure of merit over its record so far (the paper's kind of result)."""

    label: str
    of: Callable[[Sequence[tuple[Mapping[str, Any], Measurements]]], float]
    higher_is_better: bool


def best(measurement: str, higher: bool) -> Figure:
    def of(record):
        values = [m[measurement] for _, m in record]
        return max(values) if higher else min(values)

    return Figure(f"best {measurement}", of, higher)


def best_plqy_on_target(record) -> float:
    """Epps et al.'s hierarchy: the brightest sample whose emission is within 20 meV of 2.10 eV."""
    on_target = [m["plqy"] for _, m in record if abs(m["peak_ev"] - 2.10) <= 0.02]
    return max(on_target, default=0.0)


def reactive_found(record) -> float:
    """Granda et al.'s measure: distinct reactive combinations (two or more reagents) discovered."""
    combination = importlib.import_module("experiments.reactivity_search.procedure").combination
    return float(len({combination(r) for r, m in record if m["reactive"] > 0.5 and len(combination(r)) >= 2}))


FIGURES: dict[str, Figure] = {
    "au_nanoparticles": best("distance", higher=False),
    "mobile_chemist": best("activity", higher=True),
    "opv_stability": best("degradation", higher=False),
    "quantum_dots": Figure("best PLQY at 2.10±0.02 eV", best_plqy_on_target, True),
    "reactivity_search": Figure("reactive combinations found", reactive_found, True),
    "robotic_flow": best("yield", higher=True),
    "thin_film_ada": best("pseudo_mobility", higher=True),
}
#: Proposals per round (the robot's rack); every other lab proposes one at a time.
BATCHES = {"mobile_chemist": 8}


def run(folder: str, kind: str, seed: int, budget: int | None) -> list[float]:
    campaign: Campaign = load_campaign(ROOT / "experiments" / folder / "campaign.yaml").campaign
    settings = campaign.optimizer.model_copy(update={"kind": kind, "seed": seed})
    optimizer = make_optimizer(campaign.space, settings, campaign.objective_set())
    simulate = importlib.import_module(f"experiments.{folder}.procedure").simulate
    budget = budget or campaign.budget.max_experiments
    batch = BATCHES.get(folder, 1)
    figure = FIGURES[folder]
    observed: list[Observation] = []
    record: list[tuple[Mapping[str, Any], Measurements]] = []
    curve: list[float] = []
    while len(record) < budget:
        proposals = optimizer.propose(observed, [], n=min(batch, budget - len(record)))
        for proposal in proposals:
            measurements = simulate(proposal.recipe, seed=10_000 * seed + len(record))
            observed.append(Observation(dict(proposal.recipe), campaign.scalarise(dict(measurements)),
                                        measurements=measurements))  # fmt: skip
            record.append((proposal.recipe, measurements))
            curve.append(figure.of(record))
    return curve


def cell(values: Sequence[float]) -> str:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return f"{median:.3g} [{q1:.3g}, {q3:.3g}]"


def plot(folder: str, curves: Mapping[str, np.ndarray], seeds: int, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6.5, 4.0))
    for kind, colour in zip(KINDS, ("tab:blue", "tab:orange"), strict=True):
        data = curves[kind]
        x = np.arange(1, data.shape[1] + 1)
        q1, median, q3 = np.percentile(data, [25, 50, 75], axis=0)
        axis.plot(x, median, color=colour, label=f"{kind} (median of {seeds} seeds)")
        axis.fill_between(x, q1, q3, color=colour, alpha=0.2)
    axis.set_xlabel("experiment")
    axis.set_ylabel(FIGURES[folder].label)
    axis.set_title(f"{folder}: {FIGURES[folder].label} (IQR shaded)")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labs", nargs="+", choices=sorted(FIGURES), default=sorted(FIGURES))
    parser.add_argument("--seeds", type=int, default=5, help="seeds per optimizer kind (default 5)")
    parser.add_argument("--budget", type=int, default=None, help="experiments per run (default: campaign's)")
    parser.add_argument("--no-plots", action="store_true", help="do not write the convergence plots")
    args = parser.parse_args(argv)

    print("| lab | figure | experiments | bayesian median [IQR] | random median [IQR] | bayesian/random "
          "| s per bayesian run |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for folder in args.labs:
        curves: dict[str, np.ndarray] = {}
        seconds: dict[str, float] = {}
        for kind in KINDS:
            start = time.perf_counter()
            curves[kind] = np.array([run(folder, kind, seed, args.budget) for seed in range(args.seeds)])
            seconds[kind] = (time.perf_counter() - start) / args.seeds
        budget = curves["bayesian"].shape[1]
        figure = FIGURES[folder]
        for n in sorted({n for n in (budget // 4, budget // 2, budget) if n >= 1}):
            ours, baseline = curves["bayesian"][:, n - 1], curves["random"][:, n - 1]
            ratio = np.median(ours) / np.median(baseline) if np.median(baseline) != 0 else float("inf")
            print(f"| {folder} | {figure.label} | {n} | {cell(ours)} | {cell(baseline)} | ×{ratio:.3g} "
                  f"| {seconds['bayesian']:.1f} |")  # fmt: skip
        if not args.no_plots:
            plot(folder, curves, args.seeds, ROOT / "experiments" / folder / "convergence.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
