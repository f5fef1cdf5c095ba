"""How well the OPV model fits the authors' measured grid, and what it cannot say (its README's figures).

The grid is the authors' (aspuru-guzik-group/quaterny_opvs, ``emulators/details_ptb7_th/
photobleaching_mixture01_grid.csv``: four fractions and the measured degradation per row); it is not
redistributed here, since that repository states no licence. Given its path, this refits the
coefficients ``chemistry.COEFFICIENTS`` hold and prints the fit's statistics:

    python -m experiments.opv_stability.fit PATH/photobleaching_mixture01_grid.csv
"""

from __future__ import annotations

import argparse
import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np

from .chemistry import COEFFICIENTS, degradation

RIDGE = 1e-3
#: The campaign's constraint: at least this much donor polymer (PTB7-Th + P3HT).
DONORS_AT_LEAST = 0.3


def terms(x: np.ndarray) -> np.ndarray:
    """The cubic mixture polynomial's terms, in ``COEFFICIENTS``' order."""
    pairs = list(itertools.combinations(range(4), 2))
    return np.array(
        [*x, *(x[i] * x[j] for i, j in pairs), *(x[i] * x[j] * (x[i] - x[j]) for i, j in pairs),
         *(x[i] * x[j] * x[k] for i, j, k in itertools.combinations(range(4), 3))]
    )  # fmt: skip


def fit(design: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return np.linalg.solve(design.T @ design + RIDGE * np.eye(design.shape[1]), design.T @ measured)


def r_squared(measured: np.ndarray, predicted: np.ndarray) -> float:
    return float(1 - np.sum((measured - predicted) ** 2) / np.sum((measured - measured.mean()) ** 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("grid", type=Path, help="photobleaching_mixture01_grid.csv")
    args = parser.parse_args(argv)
    rows = np.loadtxt(args.grid, delimiter=",", encoding="utf-8-sig")
    x, measured = rows[:, :4], rows[:, 4]
    design = np.array([terms(row) for row in x])
    coefficients = fit(design, measured)
    model = np.array([degradation(row) for row in x])
    print(f"{len(measured)} blends; refit differs from COEFFICIENTS by at most "
          f"{np.abs(coefficients - COEFFICIENTS).max():.1e}")  # fmt: skip
    residual = np.sqrt(np.mean((measured - model) ** 2))
    print(f"R² {r_squared(measured, model):.3f} (in sample), RMS residual {residual:.3f} "
          f"on a {measured.min():.3f}-{measured.max():.3f} scale")  # fmt: skip

    folds = np.array_split(np.random.default_rng(0).permutation(len(measured)), 5)
    held_out = np.empty_like(measured)
    for fold in folds:
        train = np.setdiff1d(np.arange(len(measured)), fold)
        held_out[fold] = np.clip(design[fold] @ fit(design[train], measured[train]), 0.0, 0.95)
    print(f"R² {r_squared(measured, held_out):.3f} (five-fold cross-validation)")

    repeats = defaultdict(list)
    for row, value in zip(map(tuple, x), measured, strict=True):
        repeats[row].append(value)
    groups = [np.array(v) for v in repeats.values() if len(v) > 1]
    spread = np.sqrt(sum(np.sum((g - g.mean()) ** 2) for g in groups) / sum(len(g) - 1 for g in groups))
    print(f"replicates: {len(groups)} blends measured more than once, SD {spread:.3f}: "
          f"the best R² any model could reach is about {1 - spread**2 / measured.var():.2f}")  # fmt: skip

    feasible = x[:, 0] + x[:, 1] >= DONORS_AT_LEAST - 1e-9
    lowest = int(np.argmin(np.where(feasible, measured, np.inf)))
    print(f"lowest measured feasible blend {x[lowest].round(2).tolist()}: {measured[lowest]:.3f} measured, "
          f"{model[lowest]:.3f} modelled")  # fmt: skip
    step = np.linspace(0.0, 1.0, 51)
    simplex = np.array([(a, b, c, 1 - a - b - c) for a, b, c in itertools.product(step, repeat=3)
                        if a + b + c <= 1 + 1e-9 and a + b >= DONORS_AT_LEAST - 1e-9])  # fmt: skip
    values = np.array([degradation(row) for row in simplex])
    best = int(np.argmin(values))
    print(f"the model's optimum {np.abs(simplex[best]).round(2).tolist()}: {values[best]:.3f}")
    nearest = np.argsort(np.linalg.norm(x - simplex[best], axis=1))[:3]
    for i in nearest:
        print(f"  measured nearby {x[i].round(2).tolist()}: {measured[i]:.3f} (model {model[i]:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
