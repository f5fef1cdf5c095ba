"""A campaign as a Frictionless Data Package: self-describing tables for people and tools, plus the whole
record, so that `sdl import` brings it back into another store with nothing lost.

    DIR/datapackage.json                  the descriptor: every resource, each table's schema (type, units,
                                          stage, description of every column), the campaign's name
    DIR/experiments.csv                   one row per experiment (the table `sdl export --format csv` writes)
    DIR/transitions.csv                   every status change of every experiment, with its time
    DIR/instruments.csv                   per experiment and instrument: driver, version, model, serial,
                                          firmware, as the instrument reported them
    DIR/record.json                       every stored row of the campaign (the lossless record)
    DIR/documents/experiment-NNNN.jsonl   each run's bluesky documents, one [name, doc] per line

The record's files carry a sha256 in the descriptor, so validation proves they are whole.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdl.api.convert import experiment_summaries
from sdl.api.models import ExperimentSummary
from sdl.exports.documents import document_file, read_documents, write_documents
from sdl.exports.table import described_columns, table_rows
from sdl.space.units import Column
from sdl.spec.campaign import Campaign
from sdl.store import CampaignRows, Store
from sdl.store.schema import now_iso

RECORD_FORMAT = "sdl-campaign-record"
RECORD_VERSION = 1
DESCRIPTOR = "datapackage.json"


class PackageError(ValueError):
    """A directory that is not a data package `sdl export` wrote, or one that is damaged."""


def field_of(column: Column) -> dict[str, Any]:
    """A Frictionless table-schema field; units, stage and material are extra properties of the field."""
    out: dict[str, Any] = {"name": column.name, "type": column.type}
    if column.description:
        out["description"] = column.description
    for key in ("units", "stage", "material"):
        value = getattr(column, key)
        if value:
            out[key] = value
    out["sdl:kind"] = column.kind
    return out


def experiments_schema(campaign: Campaign, history: Sequence[ExperimentSummary]) -> dict[str, Any]:
    return {
        "fields": [field_of(c) for c in described_columns(campaign, history)],
        "primaryKey": ["experiment"],
    }


def write_package(store: Store, campaign_id: str, directory: Path) -> Path:
    """Write the campaign's data package into ``directory`` (created; it must not hold a package yet)."""
    if (directory / DESCRIPTOR).exists():
        raise PackageError(f"{directory} already holds a data package; choose a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    record = store.campaign(campaign_id)
    campaign = Campaign.model_validate(record.spec)
    history = store.experiments(campaign_id)
    rows = store.campaign_rows(campaign_id)
    seq_of = {e.id: e.seq for e in history}

    shown = experiment_summaries(history)
    columns = described_columns(campaign, shown)
    _write_csv(directory / "experiments.csv", [c.name for c in columns], table_rows(campaign, shown))
    _write_csv(
        directory / "transitions.csv",
        ["experiment", "from_status", "to_status", "at", "note"],
        [
            {
                "experiment": seq_of[t["experiment_id"]],
                **{k: t[k] for k in ("from_status", "to_status", "at", "note")},
            }
            for t in rows.tables["transitions"]
        ],
    )
    _write_csv(directory / "instruments.csv", list(INSTRUMENT_FIELDS), instrument_rows(rows, seq_of))
    document_files = write_documents(store, history, directory / "documents")
    record_path = directory / "record.json"
    record_path.write_text(
        json.dumps(_record(store, rows, seq_of), indent=1, allow_nan=False), encoding="utf-8"
    )

    resources: list[dict[str, Any]] = [
        {
            "name": "experiments",
            "path": "experiments.csv",
            "title": f"Experiments of {record.name}",
            "description": "One row per experiment: the recipe, the fixed conditions, the measurements, the "
            "outcome and the optimizer's decision.",
            "format": "csv",
            "mediatype": "text/csv",
            "encoding": "utf-8",
            "schema": experiments_schema(campaign, shown),
        },
        {
            "name": "transitions",
            "path": "transitions.csv",
            "description": "Every status change of every experiment, in order.",
            "format": "csv",
            "mediatype": "text/csv",
            "encoding": "utf-8",
            "schema": {
                "fields": [
                    {"name": "experiment", "type": "integer"},
                    {"name": "from_status", "type": "string"},
                    {"name": "to_status", "type": "string"},
                    {"name": "at", "type": "datetime"},
                    {"name": "note", "type": "string"},
                ]
            },
        },
        {
            "name": "instruments",
            "path": "instruments.csv",
            "description": "The instruments each experiment used, as they identified themselves.",
            "format": "csv",
            "mediatype": "text/csv",
            "encoding": "utf-8",
            "schema": {"fields": [{"name": k, "type": t} for k, t in INSTRUMENT_FIELDS.items()]},
        },
        _file_resource(
            directory,
            record_path,
            "record",
            "json",
            "application/json",
            "Every stored row of the campaign, for `sdl import` (lossless).",
        ),
    ]
    for path in document_files:
        resources.append(
            _file_resource(
                directory,
                path,
                path.stem,
                "jsonl",
                "application/jsonl",
                "A run's bluesky (event-model) documents, one [name, document] per line.",
            )
        )
    descriptor = {
        "name": _package_name(record.name),
        "title": record.name,
        "description": campaign.description or f"Campaign {record.id}",
        "created": now_iso(),
        "sdl:campaign": record.id,
        "sdl:materials": {k: v.model_dump(mode="json") for k, v in campaign.materials.items()},
        "resources": resources,
    }
    (directory / DESCRIPTOR).write_text(json.dumps(descriptor, indent=1, allow_nan=False), encoding="utf-8")
    return directory / DESCRIPTOR


INSTRUMENT_FIELDS = {
    "experiment": "integer",
    "instrument": "string",
    "driver": "string",
    "driver_version": "string",
    "model": "string",
    "serial": "string",
    "firmware": "string",
    "address": "string",
}


def instrument_rows(rows: CampaignRows, seq_of: dict[int, int]) -> list[dict[str, Any]]:
    out = []
    for p in rows.tables["provenance"]:
        body = json.loads(p["body"])
        for name, inst in (body.get("instruments") or {}).items():
            identity = inst.get("identity") or {}
            address = inst.get("address")
            out.append(
                {
                    "experiment": seq_of[p["experiment_id"]],
                    "instrument": name,
                    "driver": inst.get("driver"),
                    "driver_version": inst.get("driver_version"),
                    "model": identity.get("model"),
                    "serial": identity.get("serial"),
                    "firmware": identity.get("firmware"),
                    "address": address
                    if isinstance(address, str) or address is None
                    else json.dumps(address),
                }
            )
    out.sort(key=lambda r: (r["experiment"], r["instrument"]))
    return out


def _record(store: Store, rows: CampaignRows, seq_of: dict[int, int]) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "exported": {"at": now_iso(), "store": str(store.path), "schema_version": store.schema_version},
        "campaign": rows.campaign,
        "experiments": rows.experiments,
        "tables": rows.tables,
        "prior_observations": rows.prior,
        "documents": {
            str(e_id): document_file(seq_of[e_id]) for e_id, docs in rows.documents.items() if docs
        },
    }


def read_package(path: Path) -> tuple[CampaignRows, dict[str, Any]]:
    """The campaign's rows from a data package directory (or its datapackage.json), and the record's
    export facts. Raises :class:`PackageError` naming what is wrong."""
    directory = path.parent if path.name == DESCRIPTOR else path
    record_path = directory / "record.json"
    if not (directory / DESCRIPTOR).is_file():
        raise PackageError(f"{directory} is not a data package (no {DESCRIPTOR})")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PackageError(f"{record_path}: cannot read the campaign's record: {exc}") from None
    if record.get("format") != RECORD_FORMAT or record.get("version") != RECORD_VERSION:
        raise PackageError(
            f"{record_path} is not an sdl campaign record of version {RECORD_VERSION} "
            f"(format {record.get('format')!r}, version {record.get('version')!r})"
        )
    documents = {
        int(e_id): read_documents(directory / name) for e_id, name in record.get("documents", {}).items()
    }
    for e in record["experiments"]:
        documents.setdefault(int(e["id"]), [])
    rows = CampaignRows(
        campaign=record["campaign"],
        experiments=record["experiments"],
        tables=record["tables"],
        documents=documents,
        prior=record.get("prior_observations", []),
    )
    return rows, record.get("exported", {})


def _file_resource(
    directory: Path, path: Path, name: str, fmt: str, mediatype: str, description: str
) -> dict[str, Any]:
    data = path.read_bytes()
    return {
        "name": _package_name(name),
        "path": path.relative_to(directory).as_posix(),
        "type": "json" if fmt == "json" else "file",
        "format": fmt,
        "mediatype": mediatype,
        "description": description,
        "bytes": len(data),
        "hash": "sha256:" + hashlib.sha256(data).hexdigest(),
    }


def _package_name(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-") or "campaign"


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return value


def _write_csv(path: Path, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in fieldnames})


def import_package(store: Store, path: Path, *, campaign_id: str | None = None) -> str:
    """Load a data package's campaign into ``store`` (under ``campaign_id`` if given); return its id."""
    rows, exported = read_package(path)
    directory = path.parent if path.name == DESCRIPTOR else path
    earlier = rows.campaign.get("imported_from")
    origin = {
        "package": str(directory.resolve()),
        "campaign": rows.campaign["id"],
        "exported": exported,
        "imported_at": now_iso(),
        "previously": json.loads(earlier) if earlier else None,
    }
    rows.campaign = {**rows.campaign, "imported_from": json.dumps(origin)}
    store.import_rows(rows, campaign_id=campaign_id)
    return campaign_id or rows.campaign["id"]
