"""The experiments table: one row per experiment, one described column each — the one table every export
writes.

`sdl export --format csv|jsonl|datapackage|parquet` (and the dashboard's downloads) write the same columns
in the same order with the same values: the recipe, the fixed conditions, the measurements, the outcome
and the optimizer's decision. Each format carries each column's units where it can: the data package in
its table schema (with type, stage and description), Parquet in the field's metadata, and a lone CSV or
JSON-lines file — which has nowhere else to put them — in the column's label (``yellow [µL]``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from sdl.api.models import ExperimentSummary
from sdl.optimizer import pareto_mask
from sdl.space import CategoricalParameter, IntegerParameter
from sdl.space.units import Column, ColumnType
from sdl.spec.best import losses, scores
from sdl.spec.campaign import Campaign

FORMATS = ("csv", "jsonl")
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

#: What the bookkeeping columns mean (they are the record's own, not the campaign's).
RECORD_COLUMNS: dict[str, tuple[ColumnType, str]] = {
    "experiment": ("integer", "Number of the experiment within the campaign (1-based, in proposal order)."),
    "status": ("string", "done, failed (the recipe's doing), faulted (an instrument's) or interrupted."),
    "pareto": ("boolean", "Whether no other done experiment is at least as good on every objective."),
    "loss": ("number", "The scalar the optimizer minimises."),
    "scalar_loss": ("number", "The scalar the optimizer minimises."),
    "failure": ("string", "Why the experiment failed or was interrupted."),
    "cause": ("string", "What interrupted it: operator, crash, fault, timeout, estop, dropped."),
    "fault_instrument": ("string", "The instrument whose fault ended the experiment."),
    "raw_materials": (
        "string",
        "What the experiment's instruments reported using, with the lot each came from: "
        "'instrument.consumable amount unit (lot)', separated by '; '.",
    ),
    "model": ("string", "What proposed the recipe: the optimizer's model, its initial design, or a retry."),
    "acquisition_value": ("number", "The acquisition function's value at the proposed recipe."),
    "proposed_at": ("datetime", "When the recipe was proposed (UTC)."),
    "started_at": ("datetime", "When the experiment started (UTC)."),
    "finished_at": ("datetime", "When the experiment ended (UTC)."),
}


#: What the scalar column holds, by how the campaign combines its objectives (`sdl.spec.best`).
SCALARS = {
    "one": "The objective's loss, which the optimizer minimises (the value; minus it when maximised; the "
    "distance to a target), times its weight. The lowest is the best experiment.",
    "weighted_sum": "The objectives' weighted sum of losses, which the optimizer minimises. The lowest is "
    "the best experiment.",
    "chimera": "The chimera hierarchy's score over this record (an experiment within every tolerance scores "
    "below one that misses a tolerance); the optimizer minimises it. The lowest is the best experiment.",
}


def column_names(campaign: Campaign, history: Sequence[ExperimentSummary]) -> list[str]:
    """Recipe columns in search-space order, then the fixed conditions (together they are the whole
    recipe), then measurements (objectives first), then bookkeeping; with several objectives a ``pareto``
    column marks the non-dominated experiments."""
    objectives = [o.measurement for o in campaign.objectives]
    measured = sorted({k for e in history for k in (e.measurements or {})} - set(objectives))
    marks = ["pareto"] if len(objectives) > 1 else []
    # A Pareto campaign has no one scalar: its `pareto` column says which experiments are best.
    ranked = campaign.multi_objective != "pareto"
    trailing = [
        loss_column(campaign, history) if c == "loss" else c
        for c in TRAILING_COLUMNS
        if c != "loss" or ranked
    ]
    recipe = [*campaign.space.names, *campaign.conditions]
    # Present when the lab keeps an inventory: the raw-material stage of each experiment's record.
    materials = ["raw_materials"] if any(e.used for e in history) else []
    return [*FIXED_COLUMNS, *recipe, *materials, *objectives, *measured, *marks, *trailing]


def loss_column(campaign: Campaign, history: Sequence[ExperimentSummary]) -> str:
    """The scalar's column: ``loss``, or ``scalar_loss`` when a measurement is itself called loss."""
    return "scalar_loss" if "loss" in _measured(campaign, history) else "loss"


def _measured(campaign: Campaign, history: Sequence[ExperimentSummary]) -> set[str]:
    return {o.measurement for o in campaign.objectives} | {k for e in history for k in (e.measurements or {})}


def described_columns(campaign: Campaign, history: Sequence[ExperimentSummary]) -> list[Column]:
    """Every column of the experiments table, in order, with what the campaign declares about it."""
    parameters = {p.name: p for p in campaign.parameters}
    measured = _measured(campaign, history)
    out: list[Column] = []
    for name in column_names(campaign, history):
        if name in parameters:
            p = parameters[name]
            kind: ColumnType = (
                "integer"
                if isinstance(p, IntegerParameter)
                else _choices_type(p)
                if isinstance(p, CategoricalParameter)
                else "number"
            )
            out.append(
                Column(
                    name=name,
                    kind="parameter",
                    type=kind,
                    units=getattr(p, "units", ""),
                    stage=p.stage,
                    description=p.description,
                    material=getattr(p, "material", None),
                )
            )
        elif name in campaign.conditions:
            c = campaign.conditions[name]
            value = campaign.condition_values()[name]
            kind = "string" if isinstance(value, str) else "integer" if isinstance(value, int) else "number"
            out.append(
                Column(
                    name=name,
                    kind="condition",
                    type=kind,
                    units=c.units,
                    stage=c.stage,
                    description=c.description,
                )
            )
        elif name in RECORD_COLUMNS and name not in measured:
            kind, description = RECORD_COLUMNS[name]
            if name in ("loss", "scalar_loss"):
                description = SCALARS[campaign.multi_objective if len(campaign.objectives) > 1 else "one"]
            stage = "raw_material" if name == "raw_materials" else None
            out.append(Column(name=name, kind="record", type=kind, stage=stage, description=description))
        else:
            meaning = campaign.measurement_meaning(name)
            values = [(e.measurements or {}).get(name) for e in history]
            numeric = all(
                v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
            )
            out.append(
                Column(
                    name=name,
                    kind="measurement",
                    type="number" if numeric else "string",
                    units=meaning.units,
                    stage=meaning.stage,
                    description=meaning.description,
                )
            )
    return out


def _choices_type(p: CategoricalParameter) -> ColumnType:
    if all(isinstance(c, int) and not isinstance(c, bool) for c in p.choices):
        return "integer"
    if all(isinstance(c, int | float) and not isinstance(c, bool) for c in p.choices):
        return "number"
    return "string"


def table_rows(campaign: Campaign, history: Sequence[ExperimentSummary]) -> list[dict[str, Any]]:
    """One row per experiment: recipe, fixed conditions, measurements, status and the optimizer's decision
    (keyed by column name; a column an experiment has no value for is absent or None)."""
    out = []
    mask = pareto_mask(losses(campaign, history)) if len(campaign.objectives) > 1 else None
    ranked = scores(campaign, history)
    scalar = loss_column(campaign, history)
    conditions = campaign.condition_values()
    for i, e in enumerate(history):
        row: dict[str, Any] = {"experiment": e.seq, "status": e.status.value}
        row.update(e.recipe)
        row.update(conditions)
        if e.used:
            row["raw_materials"] = "; ".join(
                f"{u.stock} {u.amount:g} {u.unit} ({u.lot or 'no lot'})".replace("  ", " ") for u in e.used
            )
        row.update(e.measurements or {})
        if mask is not None:
            row["pareto"] = bool(mask[i])
        if ranked is not None:  # the campaign's own scalar (`sdl.spec.best`); the objectives' are above
            row[scalar] = float(ranked[i]) if math.isfinite(ranked[i]) else None
        row.update(
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


def header(column: Column) -> str:
    """A column's label where the format has no schema: its name and, when declared, its units
    ('yellow [µL]')."""
    return f"{column.name} [{column.units}]" if column.units else column.name


def cell(value: Any) -> Any:
    """A value as a CSV cell: empty for none, true/false, JSON for lists and objects, numbers as they are."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return value


def write_csv(
    handle: Any, labels: Sequence[str], names: Sequence[str], rows: Sequence[dict[str, Any]]
) -> None:
    """The table as CSV: a header of ``labels``, then each row's cells in the order of ``names``."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(labels)
    for row in rows:
        writer.writerow([cell(row.get(name)) for name in names])


def export_text(campaign: Campaign, history: Sequence[ExperimentSummary], fmt: str) -> str:
    """The table as CSV or JSON lines, each column labelled with its units."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (allowed: {', '.join(FORMATS)})")
    columns = described_columns(campaign, history)
    names = [c.name for c in columns]
    labels = [header(c) for c in columns]
    rows = table_rows(campaign, history)
    if fmt == "jsonl":
        return "".join(
            json.dumps({label: row.get(name) for label, name in zip(labels, names, strict=True)},
                       separators=(",", ":"), ensure_ascii=False) + "\n"
            for row in rows
        )  # fmt: skip
    buffer = io.StringIO()
    write_csv(buffer, labels, names, rows)
    return buffer.getvalue()
