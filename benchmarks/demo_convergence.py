"""Does the demo campaign converge? Bayesian optimisation against random search on the simulated bench.

Runs ``experiments/color_matching/campaign.yaml`` in-process through the real drivers against the
simulated lab, for each seed and each optimizer kind, with the early stop rule removed so every
run spends its full budget. Prints the best distance after 10/20/30 experiments (median and IQR
over seeds, with the random/bayesian ratio) and writes the convergence plot the README shows.

    python benchmarks/demo_convergence.py                # 5 seeds x 30 experiments, ~4 minutes
    python benchmarks/demo_convergence.py --seeds 2 --budget 12

Exit status: 0 when Bayesian optimisation ends closer than random search, 3 when it does not (the comparison
ran; its verdict is no), anything else when the script failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and benchmarks/drivers.py would hide the
# `drivers` package the campaign's instruments are loaded from.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sdl.loop.foreground import run_campaign  # noqa: E402
from sdl.loop.lifecycle import start_campaign  # noqa: E402
from sdl.spec.campaign import Campaign  # noqa: E402
from sdl.spec.loading import LoadedCampaign, load_campaign  # noqa: E402
from sdl.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "experiments" / "color_matching" / "campaign.yaml"
KINDS = ("bayesian", "random")


def best_so_far(store_dir: Path, kind: str, seed: int, budget: int) -> list[float]:
    loaded = load_campaign(CAMPAIGN)
    spec = loaded.campaign.model_dump()
    spec["optimizer"].update(kind=kind, seed=seed)
    spec["budget"].update(max_experiments=budget, stop_when={}, max_wall_time=None)
    campaign = LoadedCampaign(Campaign.model_validate(spec), loaded.path, loaded.source)
    with Store(store_dir / f"{kind}-{seed}") as store:
        campaign_id = start_campaign(store, campaign)
        run_campaign(store, campaign_id)
        values = [e.objective for e in store.experiments(campaign_id) if e.objective is not None]
    if len(values) != budget:
        raise RuntimeError(f"{kind} seed {seed}: {len(values)} of {budget} experiments succeeded")
    return list(np.minimum.accumulate(values))


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float(median), float(q1), float(q3)


#: The exit status of a comparison that ran and found no gain (a failure of the script exits 1).
NOT_BETTER = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds per optimizer kind (default 5)")
    parser.add_argument("--budget", type=int, default=30, help="experiments per run (default 30)")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "images" / "demo-convergence.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    curves: dict[str, list[list[float]]] = {kind: [] for kind in KINDS}
    seconds: dict[str, float] = dict.fromkeys(KINDS, 0.0)
    with tempfile.TemporaryDirectory() as scratch:
        for seed in range(args.seeds):
            for kind in KINDS:
                start = time.perf_counter()
                curves[kind].append(best_so_far(Path(scratch), kind, seed, args.budget))
                seconds[kind] += time.perf_counter() - start
                print(f"  {kind:8} seed {seed}: best {curves[kind][-1][-1]:.4f}", file=sys.stderr, flush=True)

    checkpoints = sorted({n for n in (10, 20, 30, args.budget) if n <= args.budget})
    print(f"\ncolour matching, best RMS spectral distance (absorbance) over {args.seeds} seeds")
    print(f"{'experiments':>11} | {'bayesian median [IQR]':>26} | {'random median [IQR]':>26} | random/bayes")
    print("-" * 86)
    for n in checkpoints:
        cells = {kind: quartiles([curve[n - 1] for curve in curves[kind]]) for kind in KINDS}
        (bm, bq1, bq3), (rm, rq1, rq3) = cells["bayesian"], cells["random"]
        bayes_cell, random_cell = f"{bm:8.4f} [{bq1:.4f}, {bq3:.4f}]", f"{rm:8.4f} [{rq1:.4f}, {rq3:.4f}]"
        print(f"{n:>11} | {bayes_cell:>26} | {random_cell:>26} | {rm / bm:11.2f}x")
    for kind in KINDS:
        per_run = seconds[kind] / args.seeds
        per_experiment = per_run / args.budget
        print(f"{kind:8} wall time per campaign: {per_run:.1f} s ({per_experiment:.2f} s per experiment)")

    figure, axis = plt.subplots(figsize=(7, 4.2))
    x = np.arange(1, args.budget + 1)
    for kind, colour in zip(KINDS, ("tab:blue", "tab:orange"), strict=True):
        data = np.array(curves[kind])
        q1, median, q3 = np.percentile(data, [25, 50, 75], axis=0)
        axis.plot(x, median, color=colour, label=f"{kind} (median of {args.seeds} seeds)")
        axis.fill_between(x, q1, q3, color=colour, alpha=0.2)
    axis.set_yscale("log")
    axis.set_xlabel("experiment")
    axis.set_ylabel("best RMS distance to target spectrum")
    axis.set_title("Colour matching on the simulated bench: best so far (IQR shaded)")
    axis.legend()
    axis.grid(alpha=0.3, which="both")
    figure.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=110)
    print(f"plot: {args.plot}")
    final = {kind: statistics.median(curve[-1] for curve in curves[kind]) for kind in KINDS}
    return 0 if final["bayesian"] < final["random"] else NOT_BETTER


if __name__ == "__main__":
    sys.exit(main())
