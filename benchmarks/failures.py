"""Unknown constraints: how often the optimizer keeps running into a region where experiments fail.

Branin on [-5, 10] x [0, 15] where every experiment with x > 5 fails (its third minimum, x = 9.42, lies in the
failing region), 8-point design, 30 evaluations. Prints the share of evaluations 16–30 that failed and the
median final regret over seeds, for the failure model's settings given on the command line.

    python benchmarks/failures.py                               # the adopted settings, 20 seeds
    python benchmarks/failures.py --widths 1 --prior-weight 1   # the estimate on the GP's length scales
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
from _problems import branin

import sdl.optimizer.acquisition as acquisition
from sdl.optimizer import Observation, OptimizerSettings, make_optimizer
from sdl.space import SearchSpace

SPACE = SearchSpace.model_validate(
    {
        "parameters": [
            {"type": "real", "name": "x", "low": -5.0, "high": 10.0},
            {"type": "real", "name": "y", "low": 0.0, "high": 15.0},
        ]
    }
)
BRANIN_MIN = 0.397887


def outcome(r: dict[str, Any]) -> Observation:
    return Observation(r, None, "failed") if r["x"] > 5 else Observation(r, branin(r["x"], r["y"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument(
        "--widths",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        default=acquisition.FEASIBILITY_WIDTHS,
        help="kernel widths in GP length scales, comma-separated (chosen by leave-one-out likelihood)",
    )
    ap.add_argument("--prior-weight", type=float, default=acquisition.FEASIBILITY_PRIOR_WEIGHT)
    args = ap.parse_args(argv)
    acquisition.FEASIBILITY_WIDTHS = args.widths
    acquisition.FEASIBILITY_PRIOR_WEIGHT = args.prior_weight
    late, regret = [], []
    for seed in range(args.seeds):
        opt = make_optimizer(SPACE, OptimizerSettings(seed=seed, initial_design=8))
        history: list[Observation] = []
        for _ in range(30):
            (p,) = opt.propose(history, [], 1)
            history.append(outcome(p.recipe))
        late.append(np.mean([o.value is None for o in history[15:]]))
        regret.append(min(o.value for o in history if o.value is not None) - BRANIN_MIN)
    print(
        f"widths {args.widths}, prior weight {args.prior_weight:g}, {args.seeds} seeds: "
        f"evaluations 16-30 failed {np.mean(late):.0%}, median final regret {np.median(regret):.3g}"
        + ("" if math.isfinite(np.median(regret)) else " (no success in some runs)")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
