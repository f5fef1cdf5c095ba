"""Export a campaign's history (CSV, JSON lines) and plot its progress (best so far, parameter coverage)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from sdl.campaign import Campaign, MissingMeasurement
from sdl.status import ExperimentStatus
from sdl.store import ExperimentRecord

FIXED_COLUMNS = ("experiment", "status")
TRAILING_COLUMNS = (
    "loss",
    "failure",
    "cause",
    "fault_instrument",
    "model",
    "acquisition_value",
    "proposed_at",
    "started_at",
    "finished_at",
)


def columns(campaign: Campaign, history: list[ExperimentRecord]) -> list[str]:
    """Recipe columns in search-space order, then measurements (objectives first), then bookkeeping."""
    objectives = [o.measurement for o in campaign.objectives]
    measured = sorted({k for e in history for k in (e.measurements or {})} - set(objectives))
    return [*FIXED_COLUMNS, *campaign.space.names, *objectives, *measured, *TRAILING_COLUMNS]


def rows(campaign: Campaign, history: list[ExperimentRecord]) -> list[dict[str, Any]]:
    """One row per experiment: recipe, measurements, status and the optimizer's decision."""
    out = []
    for e in history:
        row: dict[str, Any] = {"experiment": e.seq, "status": e.status.value}
        row.update(e.recipe)
        row.update(e.measurements or {})
        row.update(
            loss=e.objective,  # the scalar the optimizer minimises; the objectives' own values are above
            failure=e.failure,
            cause=e.cause.value if e.cause else None,
            fault_instrument=e.fault_instrument,
            model=e.decision.model if e.decision else None,
            acquisition_value=e.decision.acquisition_value if e.decision else None,
            proposed_at=e.proposed_at,
            started_at=e.started_at,
            finished_at=e.finished_at,
        )
        out.append(row)
    return out


def export_text(campaign: Campaign, history: list[ExperimentRecord], fmt: str) -> str:
    table = rows(campaign, history)
    if fmt == "jsonl":
        return "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in table)
    if fmt != "csv":
        raise ValueError(f"unknown export format {fmt!r} (allowed: csv, jsonl)")
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=columns(campaign, history), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in table:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def best_so_far(campaign: Campaign, history: list[ExperimentRecord]) -> dict[str, list[float]]:
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


def plot(campaign: Campaign, history: list[ExperimentRecord], path: Path | str, title: str = "") -> Path:
    """Write a PNG: best so far vs experiment (one panel per objective) and parameter coverage."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    objectives = campaign.objectives
    parameters = campaign.parameters
    ncols = max(len(objectives), len(parameters), 1)
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
        if objective.goal == "target":
            ax.axhline(objective.target, color="C2", linestyle="--", label="target")
        numbers = [v for _, v in points]
        if numbers and min(numbers) > 0 and max(numbers) / min(numbers) > 100:
            ax.set_yscale("log")  # otherwise the first poor experiments flatten the convergence
        units = f" [{objective.units}]" if objective.units else ""
        ax.set_title(f"{objective.measurement} ({objective.goal})")
        ax.set_xlabel("experiment")
        ax.set_ylabel(objective.measurement + units)
        ax.legend(fontsize="small")
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
            fig.colorbar(artist, ax=ax, label=colour_by)
        if bad:
            xs2, ys2 = zip(*bad, strict=True)
            ax.scatter(xs2, [_plottable(y) for y in ys2], marker="x", color="grey", s=16, label="not done")
            ax.legend(fontsize="small")
        units = f" [{parameter.units}]" if getattr(parameter, "units", "") else ""
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


def _plottable(value: Any) -> Any:
    # Categorical choices plot as their labels on a category axis; numbers as numbers.
    return value if isinstance(value, int | float) else str(value)
