"""A campaign's progress read from its history: the budget spent, the Pareto front, and a plot of it (best
so far, parameter coverage, and with several objectives the front). The table of its experiments is
`sdl.exports.table`.

A history here is the API's experiments (:class:`~sdl.api.models.ExperimentSummary`, made from the store's
rows by `sdl.api.convert`): the CLI reading its store, the dashboard reading the lab service, and the data
package all report the same records the same way."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdl.api.models import ExperimentSummary
from sdl.optimizer import hypervolume
from sdl.spec.best import leaders, losses
from sdl.spec.campaign import Campaign, MissingMeasurement
from sdl.spec.status import ExperimentStatus


@dataclass(frozen=True)
class Front:
    """The non-dominated experiments of a campaign with several objectives, and the hypervolume they span."""

    experiments: list[ExperimentSummary]
    hypervolume: float
    #: per objective, the worst value counted (declared `reference`, else the worst seen), in its own units
    reference: dict[str, float]


def spent(history: Sequence[ExperimentSummary]) -> int:
    """Experiments that spent the budget (done or failed)."""
    return sum(e.status.spends_budget for e in history)


def front(campaign: Campaign, history: Sequence[ExperimentSummary]) -> Front | None:
    """The Pareto front of a campaign with two or more objectives (None with one objective)."""
    if len(campaign.objectives) < 2:
        return None
    objectives = campaign.objective_set()
    L = losses(campaign, history)
    ref = objectives.references(L)
    reference = {}
    for spec, r in zip(objectives.specs, ref, strict=True):
        value = spec.reference if spec.reference is not None else (-r if spec.goal == "maximize" else r)
        reference[spec.measurement] = float(value)
    hv = hypervolume(L, ref) if np.isfinite(ref).all() else 0.0
    return Front(leaders(campaign, history).front, hv, reference)


def best_so_far(campaign: Campaign, history: Sequence[ExperimentSummary]) -> dict[str, list[float]]:
    """Per objective, the best raw measurement among done experiments so far (NaN before the first)."""
    curves: dict[str, list[float]] = {}
    for objective in campaign.objectives:
        best = math.nan
        curve = []
        for e in history:
            if e.status is ExperimentStatus.DONE:
                try:
                    value = campaign.value_of(objective, e.measurements or {})
                except MissingMeasurement:
                    value = math.nan
                if math.isnan(best) or objective.better(value, best):
                    best = value
            curve.append(best)
        curves[objective.measurement] = curve
    return curves


def plot(campaign: Campaign, history: Sequence[ExperimentSummary], path: Path | str, title: str = "") -> Path:
    """Write a PNG: best so far vs experiment (one panel per objective) and parameter coverage."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    objectives = campaign.objectives
    parameters = campaign.parameters
    pareto = front(campaign, history)
    ncols = max(len(objectives) + (pareto is not None), len(parameters), 1)
    fig: Figure = plt.figure(figsize=(max(4.0 * ncols, 8.0), 7.0), layout="constrained")
    grid = fig.add_gridspec(2, ncols)
    index = [e.seq for e in history]
    curves = best_so_far(campaign, history)
    for i, objective in enumerate(objectives):
        ax = fig.add_subplot(grid[0, i])
        ax.step(index, curves[objective.measurement], where="post", color="C0", label="best so far")
        done = [e for e in history if e.status is ExperimentStatus.DONE]
        values = [(e.measurements or {}).get(objective.measurement) for e in done]
        points = [(e.seq, v) for e, v in zip(done, values, strict=True) if isinstance(v, int | float)]
        if points:
            ax.scatter(*zip(*points, strict=True), s=12, color="C0", alpha=0.35, label="measured")
        if objective.goal == "target" and objective.target is not None:
            ax.axhline(objective.target, color="C2", linestyle="--", label="target")
        numbers = [v for _, v in points]
        if numbers and min(numbers) > 0 and max(numbers) / min(numbers) > 100:
            ax.set_yscale("log")  # otherwise the first poor experiments flatten the convergence
        declared = campaign.measurement_meaning(objective.measurement).units
        units = f" [{declared}]" if declared else ""
        ax.set_title(f"{objective.measurement} ({objective.goal})")
        ax.set_xlabel("experiment")
        ax.set_ylabel(objective.measurement + units)
        ax.legend(fontsize="small")
    if pareto is not None:
        _plot_front(fig.add_subplot(grid[0, len(objectives)]), campaign, history, pareto)
    colour_by = objectives[0].measurement
    colours = [(e.measurements or {}).get(colour_by) for e in history]
    for i, parameter in enumerate(parameters):
        ax = fig.add_subplot(grid[1, i])
        ok = [(e.seq, e.recipe.get(parameter.name), c) for e, c in zip(history, colours, strict=True)
              if e.status is ExperimentStatus.DONE and isinstance(c, int | float)]  # fmt: skip
        bad = [
            (e.seq, e.recipe.get(parameter.name)) for e in history if e.status is not ExperimentStatus.DONE
        ]
        if ok:
            xs, ys, cs = zip(*ok, strict=True)
            norm = LogNorm() if min(cs) > 0 and max(cs) / min(cs) > 100 else None
            artist = ax.scatter(xs, [_plottable(y) for y in ys], c=cs, cmap="viridis", norm=norm, s=16)
            colour_units = campaign.measurement_meaning(colour_by).units
            fig.colorbar(artist, ax=ax, label=colour_by + (f" [{colour_units}]" if colour_units else ""))
        if bad:
            xs2, ys2 = zip(*bad, strict=True)
            ax.scatter(xs2, [_plottable(y) for y in ys2], marker="x", color="grey", s=16, label="not done")
            ax.legend(fontsize="small")
        declared: str = getattr(parameter, "units", "")
        units = f" [{declared}]" if declared else ""
        ax.set_title(f"coverage: {parameter.name}")
        ax.set_xlabel("experiment")
        ax.set_ylabel(parameter.name + units)
        if getattr(parameter, "log", False):
            ax.set_yscale("log")
    fig.suptitle(title or campaign.name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_front(ax: Any, campaign: Campaign, history: Sequence[ExperimentSummary], pareto: Front) -> None:
    """The first two objectives of every done experiment, the non-dominated ones joined as a staircase."""
    a, b = campaign.objectives[0], campaign.objectives[1]
    done = [e for e in history if e.status is ExperimentStatus.DONE]
    points = []
    for e in done:
        m = e.measurements or {}
        if all(isinstance(m.get(o.measurement), int | float) for o in (a, b)):
            points.append((float(m[a.measurement]), float(m[b.measurement])))
    if points:
        ax.scatter(*zip(*points, strict=True), s=14, color="C7", alpha=0.5, label="experiments")
    best = sorted(
        (float((e.measurements or {})[a.measurement]), float((e.measurements or {})[b.measurement]), e.seq)
        for e in pareto.experiments
    )
    if best:
        xs, ys, _ = zip(*best, strict=True)
        ax.plot(xs, ys, color="C3", lw=1.0)
        ax.scatter(xs, ys, s=28, color="C3", zorder=3, label=f"non-dominated ({len(best)})")
        for x, y, seq in best:
            ax.annotate(str(seq), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    more = " (projection)" if len(campaign.objectives) > 2 else ""
    ax.set_title(f"Pareto front{more}: hypervolume {pareto.hypervolume:.4g}")
    ua, ub = (campaign.measurement_meaning(o.measurement).units for o in (a, b))
    ax.set_xlabel(f"{a.measurement} ({a.goal})" + (f" [{ua}]" if ua else ""))
    ax.set_ylabel(f"{b.measurement} ({b.goal})" + (f" [{ub}]" if ub else ""))
    ax.legend(fontsize="small")


def _plottable(value: Any) -> Any:
    # Categorical choices plot as their labels on a category axis; numbers as numbers.
    return value if isinstance(value, int | float) else str(value)
