"""The experiments table with its declared meaning: one row per experiment, one described column each.

`sdl export --format csv|jsonl|datapackage|parquet` all write this table; the data package and Parquet
also write each column's type, units, stage and description beside it (a Frictionless table schema).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sdl.api.models import ExperimentSummary
from sdl.exports import report
from sdl.space import CategoricalParameter, IntegerParameter
from sdl.space.units import Column, ColumnType
from sdl.spec.campaign import Campaign

#: What the bookkeeping columns mean (they are the record's own, not the campaign's).
RECORD_COLUMNS: dict[str, tuple[ColumnType, str]] = {
    "experiment": ("integer", "Number of the experiment within the campaign (1-based, in proposal order)."),
    "status": ("string", "done, failed (the recipe's doing), faulted (an instrument's) or interrupted."),
    "pareto": ("boolean", "Whether no other done experiment is at least as good on every objective."),
    "loss": ("number", "The scalar the optimizer minimises (the objectives' weighted losses)."),
    "scalar_loss": ("number", "The scalar the optimizer minimises (the objectives' weighted losses)."),
    "failure": ("string", "Why the experiment failed or was interrupted."),
    "cause": ("string", "What interrupted it: operator, crash, fault, timeout, estop, dropped."),
    "fault_instrument": ("string", "The instrument whose fault ended the experiment."),
    "model": ("string", "What proposed the recipe: the optimizer's model, its initial design, or a retry."),
    "acquisition_value": ("number", "The acquisition function's value at the proposed recipe."),
    "proposed_at": ("datetime", "When the recipe was proposed (UTC)."),
    "started_at": ("datetime", "When the experiment started (UTC)."),
    "finished_at": ("datetime", "When the experiment ended (UTC)."),
}


def described_columns(campaign: Campaign, history: Sequence[ExperimentSummary]) -> list[Column]:
    """Every column of the experiments table, in order, with what the campaign declares about it."""
    parameters = {p.name: p for p in campaign.parameters}
    out: list[Column] = []
    names = report.columns(campaign, history)
    # Conditions go right after the parameters: together they are the whole recipe.
    after = names.index(campaign.space.names[-1]) + 1
    names = [*names[:after], *campaign.conditions, *names[after:]]
    measured = {o.measurement for o in campaign.objectives} | {
        k for e in history for k in (e.measurements or {})
    }
    for name in names:
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
            out.append(Column(name=name, kind="record", type=kind, description=description))
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
    """report.rows with the fixed conditions' values in every row."""
    conditions = campaign.condition_values()
    return [{**row, **conditions} for row in report.rows(campaign, history)]


def header(column: Column) -> str:
    """A column's title for people: its name and, when declared, its units ('yellow [µL]')."""
    return f"{column.name} [{column.units}]" if column.units else column.name
