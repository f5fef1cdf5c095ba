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

Every file carries its size and sha256 in the descriptor, so validation proves it whole, and `sdl import`
refuses a package whose files do not match (`sdl.exports.integrity`). A package is written into a
temporary folder beside its target and renamed into place when complete (`sdl.exports.atomic`): a failed
export leaves nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdl.api.convert import experiment_summaries
from sdl.api.models import ExperimentSummary
from sdl.exports.atomic import TargetTaken, new_directory
from sdl.exports.documents import document_file, write_documents
from sdl.exports.integrity import (
    DESCRIPTOR,
    PACKAGE_KEY,
    PACKAGE_VERSION,
    PackageError,
    check_record,
    document_files,
    read_descriptor,
    read_document_lines,
    verify_resources,
)
from sdl.exports.table import described_columns, table_rows, write_csv
from sdl.space.units import Column
from sdl.spec.campaign import Campaign
from sdl.store import CampaignRows, Store
from sdl.store.schema import now_iso

RECORD_FORMAT = "sdl-campaign-record"
RECORD_VERSION = 1


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
    """Write the campaign's data package as ``directory`` (which must not exist, or be an empty directory);
    return its descriptor's path. Nothing is left behind if it fails."""
    try:
        with new_directory(directory) as partial:
            _write_package(store, campaign_id, partial)
    except TargetTaken as exc:
        raise PackageError(str(exc)) from None
    return Path(directory) / DESCRIPTOR


def _write_package(store: Store, campaign_id: str, directory: Path) -> None:
    record = store.campaign(campaign_id)
    campaign = Campaign.model_validate(record.spec)
    history = store.experiments(campaign_id)
    rows = store.campaign_rows(campaign_id)
    seq_of = {e.id: e.seq for e in history}

    shown = experiment_summaries(history, store.consumption(campaign_id))
    columns = described_columns(campaign, shown)
    names = [c.name for c in columns]
    _write_table(directory / "experiments.csv", names, table_rows(campaign, shown))
    _write_table(
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
    _write_table(directory / "instruments.csv", list(INSTRUMENT_FIELDS), instrument_rows(rows, seq_of))
    document_files = write_documents(store, history, directory / "documents")
    record_path = directory / "record.json"
    record_path.write_text(
        json.dumps(_record(store, rows, seq_of), indent=1, allow_nan=False), encoding="utf-8"
    )

    def table(
        name: str, description: str, schema: dict[str, Any], title: str | None = None
    ) -> dict[str, Any]:
        resource = _file_resource(directory, directory / f"{name}.csv", name, "csv", "text/csv", description)
        del resource["type"]  # a table (frictionless reads its schema), not a plain file
        resource.update(encoding="utf-8", schema=schema)
        return {**resource, "title": title} if title else resource

    resources: list[dict[str, Any]] = [
        table(
            "experiments",
            "One row per experiment: the recipe, the fixed conditions, the measurements, the outcome and "
            "the optimizer's decision.",
            experiments_schema(campaign, shown),
            f"Experiments of {record.name}",
        ),
        table(
            "transitions",
            "Every status change of every experiment, in order.",
            {
                "fields": [
                    {"name": "experiment", "type": "integer"},
                    {"name": "from_status", "type": "string"},
                    {"name": "to_status", "type": "string"},
                    {"name": "at", "type": "datetime"},
                    {"name": "note", "type": "string"},
                ]
            },
        ),
        table(
            "instruments",
            "The instruments each experiment used, as they identified themselves.",
            {"fields": [{"name": k, "type": t} for k, t in INSTRUMENT_FIELDS.items()]},
        ),
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
        PACKAGE_KEY: PACKAGE_VERSION,
        "sdl:materials": {k: v.model_dump(mode="json") for k, v in campaign.materials.items()},
        "resources": resources,
    }
    (directory / DESCRIPTOR).write_text(json.dumps(descriptor, indent=1, allow_nan=False), encoding="utf-8")


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
        "exported": {"at": now_iso(), "store": store.where, "schema_version": store.schema_version},
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
    export facts. Every file is checked against its recorded sha256 and the record against itself first;
    raises :class:`PackageError` naming the file and what is wrong."""
    directory = path.parent if path.name == DESCRIPTOR else path
    descriptor = read_descriptor(directory)
    listed = verify_resources(directory, descriptor)
    record_path = directory / "record.json"
    if "record.json" not in listed:
        raise PackageError(f"{directory / DESCRIPTOR} does not list record.json (the campaign's record)")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{record_path}: cannot read the campaign's record: {exc}") from None
    found = record if isinstance(record, dict) else {}
    if found.get("format") != RECORD_FORMAT or found.get("version") != RECORD_VERSION:
        raise PackageError(
            f"{record_path} is not an sdl campaign record of version {RECORD_VERSION} "
            f"(format {found.get('format')!r}, version {found.get('version')!r})"
        )
    check_record(record, str(record_path))
    documents: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for e_id, name in document_files(record, str(record_path)).items():
        if Path(name).as_posix() not in listed:
            raise PackageError(
                f"{record_path} names {name} for experiment id {e_id}, which {DESCRIPTOR} does not list"
            )
        documents[e_id] = read_document_lines(directory / name, str(directory / name))
    for e in record["experiments"]:
        documents.setdefault(int(e["id"]), [])
    rows = CampaignRows(
        campaign=record["campaign"],
        experiments=record["experiments"],
        tables=record["tables"],
        documents=documents,
        prior=record.get("prior_observations", []),
    )
    exported = record.get("exported", {})
    return rows, exported if isinstance(exported, dict) else {}


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


def _write_table(path: Path, names: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        write_csv(handle, names, names, rows)


def import_package(store: Store, path: Path, *, campaign_id: str | None = None) -> str:
    """Load a data package's campaign into ``store`` (under ``campaign_id`` if given); return its id. The
    package is checked whole first (:func:`read_package`); the rows go in in one transaction."""
    return import_rows(store, path, read_package(path), campaign_id=campaign_id)


def import_rows(
    store: Store,
    path: Path,
    package: tuple[CampaignRows, dict[str, Any]],
    *,
    campaign_id: str | None = None,
) -> str:
    """Write a package already read by :func:`read_package` into ``store``."""
    rows, exported = package
    directory = path.parent if path.name == DESCRIPTOR else path
    earlier = rows.campaign.get("imported_from")
    try:
        previously = json.loads(earlier) if earlier else None
    except (TypeError, json.JSONDecodeError):
        previously = earlier
    origin = {
        "package": str(directory.resolve()),
        "campaign": rows.campaign["id"],
        "exported": exported,
        "imported_at": now_iso(),
        "previously": previously,
    }
    rows.campaign = {**rows.campaign, "imported_from": json.dumps(origin)}
    try:
        store.import_rows(rows, campaign_id=campaign_id)
    except (*store.refusals, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, PackageError):
            raise
        # The checks above should leave nothing for the store to refuse; if it does, say where it came from.
        raise PackageError(
            f"{directory / 'record.json'}: the store refused the record ({type(exc).__name__}: {exc}); "
            "nothing was imported"
        ) from None
    return campaign_id or rows.campaign["id"]
