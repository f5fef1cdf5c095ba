"""The experiments table as Parquet, for data science: typed columns whose field metadata carry units,
stage and description, and the same Frictionless table schema as the data package in the file's
metadata (key ``sdl:schema``), with the campaign's materials (``sdl:materials``)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdl.api.models import ExperimentSummary
from sdl.exports.datapackage import experiments_schema
from sdl.exports.table import described_columns, table_rows
from sdl.spec.campaign import Campaign


def write_parquet(
    campaign: Campaign, history: Sequence[ExperimentSummary], path: Path, campaign_id: str
) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = {
        "number": pa.float64(),
        "integer": pa.int64(),
        "string": pa.string(),
        "boolean": pa.bool_(),
        "datetime": pa.timestamp("us", tz="UTC"),
    }
    columns = described_columns(campaign, history)
    rows = table_rows(campaign, history)
    fields, arrays = [], []
    for c in columns:
        metadata = {
            k: v
            for k, v in (
                ("units", c.units),
                ("stage", c.stage or ""),
                ("description", c.description),
                ("material", c.material or ""),
                ("sdl:kind", c.kind),
            )
            if v
        }
        fields.append(pa.field(c.name, kinds[c.type], nullable=True, metadata=metadata))
        arrays.append(pa.array([_value(row.get(c.name), c.type) for row in rows], type=kinds[c.type]))
    metadata = {
        "sdl:schema": json.dumps(experiments_schema(campaign, history)),
        "sdl:campaign": campaign_id,
        "sdl:materials": json.dumps({k: v.model_dump(mode="json") for k, v in campaign.materials.items()}),
        "sdl:conditions": json.dumps({k: v.model_dump(mode="json") for k, v in campaign.conditions.items()}),
    }
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata))
    pq.write_table(table, path)
    return path


def _value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "string" and not isinstance(value, str):
        return json.dumps(value) if isinstance(value, list | dict) else str(value)
    if kind == "number":
        return float(value)
    return value
