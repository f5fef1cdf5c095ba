"""Does a warm start pay? A second colour-matching campaign seeded by a finished one, against a cold one.

For each seed: a *source* campaign runs its full budget from cold (seed s) and its best distance B is noted.
Then two new campaigns with another seed (100 + s) look for the same best: one cold, one warm-started from
the source (``warm_start: [{campaign: SOURCE}]``, every source experiment seeding its optimizer). Each counts
its *own* experiments until it measures a distance within the target (B times ``--tolerance``, since the
spectrometer's noise, about 0.004, makes B itself a lucky draw) and stops there (``stop_when``); a campaign
that never gets there counts as its budget + 1. Everything runs in-process through the real drivers against
the simulated bench.

    python benchmarks/warm_start.py                  # 5 seeds, ~6 minutes
    python benchmarks/warm_start.py --seeds 2 --source-budget 12 --budget 12

Exit status: 0 when the warm start needs fewer experiments than the cold one, 3 when it does not (the
comparison ran; its verdict is no), anything else when the script failed.
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
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from sdl.loop.foreground import run_campaign  # noqa: E402
from sdl.loop.lifecycle import start_campaign  # noqa: E402
from sdl.spec.campaign import Campaign  # noqa: E402
from sdl.spec.loading import LoadedCampaign, load_campaign  # noqa: E402
from sdl.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "experiments" / "color_matching" / "campaign.yaml"


@dataclass
class Run:
    distances: list[float | None]  # the campaign's own experiments, in order (None: no result)
    seconds: float

    @property
    def best(self) -> float:
        return min(d for d in self.distances if d is not None)

    def experiments_to(self, target: float) -> int:
        """How many of its own experiments it took to measure ``target`` or better (budget + 1: never)."""
        for n, distance in enumerate(self.distances, start=1):
            if distance is not None and distance <= target:
                return n
        return len(self.distances) + 1


def run(
    store: Store, seed: int, budget: int, target: float | None = None, warm_from: str | None = None
) -> tuple[str, Run]:
    loaded = load_campaign(CAMPAIGN)
    spec: dict[str, Any] = loaded.campaign.model_dump(mode="json", exclude_none=True)
    spec["optimizer"]["seed"] = seed
    spec["budget"].update(max_experiments=budget, stop_when={} if target is None else {"distance": target})
    spec["budget"].pop("max_wall_time", None)
    spec["warm_start"] = [{"campaign": warm_from}] if warm_from else []
    campaign = LoadedCampaign(Campaign.model_validate(spec), loaded.path, loaded.source)
    started = time.perf_counter()
    campaign_id = start_campaign(store, campaign)
    run_campaign(store, campaign_id)
    distances = [(e.measurements or {}).get("distance") for e in store.experiments(campaign_id)]
    return campaign_id, Run(distances, time.perf_counter() - started)


#: The exit status of a comparison that ran and found no gain (a failure of the script exits 1).
NOT_BETTER = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds (default 5)")
    parser.add_argument("--source-budget", type=int, default=30, help="the source campaign's experiments")
    # At most 30: the simulated bench's 10 mL dye syringes run dry a few experiments later.
    parser.add_argument("--budget", type=int, default=30, help="each new campaign's experiments at most")
    parser.add_argument(
        "--tolerance", type=float, default=1.5, help="target = the source's best times this (default 1.5)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    rows = []
    with tempfile.TemporaryDirectory() as scratch, Store(Path(scratch) / "data") as store:
        for seed in range(args.seeds):
            source_id, source = run(store, seed, args.source_budget)
            target = source.best * args.tolerance
            _, cold = run(store, 100 + seed, args.budget, target)
            _, warm = run(store, 100 + seed, args.budget, target, warm_from=source_id)
            rows.append((seed, source, target, cold, warm))
            print(
                f"  seed {seed}: source best {source.best:.4f}, target {target:.4f}: cold "
                f"{cold.experiments_to(target)}, warm {warm.experiments_to(target)} experiments",
                file=sys.stderr,
                flush=True,
            )

    def never(n: int) -> str:
        return f">{args.budget}" if n > args.budget else str(n)

    print(
        f"\ncolour matching: experiments a new campaign needs to measure the source's best "
        f"(x{args.tolerance}), {args.seeds} seeds"
    )
    print(f"{'seed':>4} | {'source best':>11} | {'target':>7} | {'cold':>5} | {'warm':>5}")
    print("-" * 44)
    cold_n, warm_n = [], []
    for seed, source, target, cold, warm in rows:
        c, w = cold.experiments_to(target), warm.experiments_to(target)
        cold_n.append(c)
        warm_n.append(w)
        print(f"{seed:>4} | {source.best:11.4f} | {target:7.4f} | {never(c):>5} | {never(w):>5}")
    cold_median, warm_median = statistics.median(cold_n), statistics.median(warm_n)
    print(
        f"median experiments to the target: cold {cold_median:g}, warm {warm_median:g} "
        f"({cold_median - warm_median:g} saved, {cold_median / warm_median:.1f}x fewer)"
    )
    for label, index in (("source", 1), ("cold", 3), ("warm", 4)):
        seconds = statistics.median(row[index].seconds for row in rows)
        print(f"{label:6} wall time per campaign (median): {seconds:.1f} s")
    print("(a campaign that never reached the target counts as its budget + 1)")
    return 0 if warm_median < cold_median else NOT_BETTER


if __name__ == "__main__":
    sys.exit(main())
