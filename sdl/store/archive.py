"""What makes a record outlive its campaign: each experiment's provenance, the observations a campaign was
warm-started with, and the whole record as plain rows (for `sdl export` and, back in, `sdl import`).

A campaign's record as rows (:class:`CampaignRows`) holds every stored column of every table that belongs
to it, so writing it to another store and reading it back gives the same rows: only the experiments'
integer ids change (they are the new store's), and every reference to them is mapped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdl.store.campaigns import UnknownCampaign
from sdl.store.connection import StoreError
from sdl.store.db import Db
from sdl.store.experiments import put_provenance
from sdl.store.records import RecordsMixin
from sdl.store.schema import dumps, encode_document

#: Tables whose rows belong to one experiment, with the columns a record carries (``experiment_id`` first).
EXPERIMENT_TABLES: dict[str, tuple[str, ...]] = {
    "decisions": (
        "experiment_id", "model", "acquisition", "acquisition_value", "seconds", "n_observations",
        "n_pending",
    ),
    "transitions": ("experiment_id", "id", "from_status", "to_status", "at", "note"),
    "journal": ("experiment_id", "id", "at", "entry", "command", "instrument", "device", "detail", "ref"),
    "provenance": ("experiment_id", "body", "updated_at"),
}  # fmt: skip
EXPERIMENT_COLUMNS = (
    "id", "seq", "status", "recipe_json", "assignments_json", "measurements_json", "objective", "failure",
    "proposed_at", "started_at", "finished_at", "workcell", "retry_of", "cause", "fault_kind",
    "fault_instrument",
)  # fmt: skip
CAMPAIGN_COLUMNS = (
    "id", "name", "status", "stop_reason", "spec_json", "source_path", "source_text", "base_dir", "seed",
    "max_experiments", "created_at", "started_at", "finished_at", "active_seconds", "control", "priority",
    "weight", "submitted_by", "imported_from",
)  # fmt: skip
PRIOR_COLUMNS = ("seq", "source", "status", "recipe_json", "measurements_json", "failure")


class ImportConflict(StoreError):
    """The store already holds a campaign with the imported campaign's id."""


@dataclass
class CampaignRows:
    """One campaign's whole record as rows of plain values (dicts keyed by column)."""

    campaign: dict[str, Any]
    experiments: list[dict[str, Any]]
    #: table name -> rows (see EXPERIMENT_TABLES)
    tables: dict[str, list[dict[str, Any]]]
    #: experiment id -> its documents, in order, as (name, document) stored
    documents: dict[int, list[tuple[str, dict[str, Any]]]]
    prior: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])


class ArchiveMixin(RecordsMixin):
    """Whole campaigns as rows: read out for an export, written in for an import (it reads the records'
    documents, hence the base)."""

    # -- provenance --------------------------------------------------------------------------------------

    def save_provenance(self, experiment_id: int, body: Mapping[str, Any]) -> None:
        """Record (or complete) an experiment's provenance now."""
        with self._tx() as conn:
            put_provenance(conn, experiment_id, body)

    def provenance(self, experiment_id: int) -> dict[str, Any] | None:
        rows = self._read("SELECT body FROM provenance WHERE experiment_id = ?", (experiment_id,))
        return json.loads(rows[0]["body"]) if rows else None

    def provenances(self, campaign_id: str) -> dict[int, dict[str, Any]]:
        """Experiment id -> provenance, for the campaign's experiments that have one."""
        rows = self._read(
            "SELECT p.experiment_id, p.body FROM provenance p JOIN experiments e ON e.id = p.experiment_id "
            "WHERE e.campaign_id = ?",
            (campaign_id,),
        )
        return {r["experiment_id"]: json.loads(r["body"]) for r in rows}

    # -- warm starts -------------------------------------------------------------------------------------

    def add_prior_observations(self, campaign_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Copy warm-start observations into the campaign's record (``source``, ``status``, ``recipe``,
        ``measurements``, ``failure`` each)."""
        with self._tx() as conn:
            start = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM prior_observations WHERE campaign_id = ?", (campaign_id,)
            ).fetchone()[0]
            conn.executemany(
                "INSERT INTO prior_observations (campaign_id, seq, source, status, recipe_json, "
                "measurements_json, failure) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        campaign_id, start + i, r["source"], r["status"], dumps(r["recipe"]),
                        None if r.get("measurements") is None else dumps(r["measurements"]), r.get("failure"),
                    )
                    for i, r in enumerate(rows, start=1)
                ],
            )  # fmt: skip

    def prior_observations(self, campaign_id: str) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT * FROM prior_observations WHERE campaign_id = ? ORDER BY seq", (campaign_id,)
        )
        return [
            {
                "seq": r["seq"],
                "source": r["source"],
                "status": r["status"],
                "recipe": json.loads(r["recipe_json"]),
                "measurements": json.loads(r["measurements_json"]) if r["measurements_json"] else None,
                "failure": r["failure"],
            }
            for r in rows
        ]

    # -- the whole record as rows ------------------------------------------------------------------------

    def campaign_rows(self, campaign_id: str) -> CampaignRows:
        """Every stored row of the campaign, as plain values."""
        found = self._read(
            f"SELECT {', '.join(CAMPAIGN_COLUMNS)} FROM campaigns WHERE id = ?", (campaign_id,)
        )
        if not found:
            raise UnknownCampaign(f"no campaign {campaign_id!r} in {self.where} (see `sdl campaigns`)")
        experiments = [
            dict(r)
            for r in self._read(
                f"SELECT {', '.join(EXPERIMENT_COLUMNS)} FROM experiments WHERE campaign_id = ? ORDER BY seq",
                (campaign_id,),
            )
        ]
        ids = "SELECT id FROM experiments WHERE campaign_id = ?"
        tables: dict[str, list[dict[str, Any]]] = {}
        for table, columns in EXPERIMENT_TABLES.items():
            order = "experiment_id, id" if "id" in columns else "experiment_id"
            rows = self._read(
                f"SELECT {', '.join(columns)} FROM {table} WHERE experiment_id IN ({ids}) ORDER BY {order}",
                (campaign_id,),
            )
            tables[table] = [dict(r) for r in rows]
        documents = {e["id"]: self.documents(e["id"]) for e in experiments}
        prior = [
            dict(r)
            for r in self._read(
                f"SELECT {', '.join(PRIOR_COLUMNS)} FROM prior_observations "
                "WHERE campaign_id = ? ORDER BY seq",
                (campaign_id,),
            )
        ]
        return CampaignRows(dict(found[0]), experiments, tables, documents, prior)

    def import_rows(self, rows: CampaignRows, *, campaign_id: str | None = None) -> dict[int, int]:
        """Write a campaign's rows (from another store) into this one, all in one transaction; return the
        map from the rows' experiment ids to this store's. The campaign arrives unclaimed."""
        campaign = dict(rows.campaign)
        campaign["id"] = campaign_id or campaign["id"]
        if campaign.get("status") == "running":  # nobody runs it here: it is as a crash left it
            campaign["status"] = "interrupted"
            campaign["stop_reason"] = campaign.get("stop_reason") or "imported while it was running"
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM campaigns WHERE id = ?", (campaign["id"],)).fetchone():
                raise ImportConflict(
                    f"this store already holds a campaign {campaign['id']!r}; import it under another id "
                    "(--as NEW_ID) or into another --data-dir"
                )
            _insert(conn, "campaigns", {k: campaign.get(k) for k in CAMPAIGN_COLUMNS})
            id_map: dict[int, int] = {}
            for e in rows.experiments:
                values = {k: e.get(k) for k in EXPERIMENT_COLUMNS if k not in ("id", "retry_of")}
                values["campaign_id"] = campaign["id"]
                id_map[int(e["id"])] = _insert(conn, "experiments", values, "id")
            for e in rows.experiments:
                if e.get("retry_of") is not None:
                    conn.execute(
                        "UPDATE experiments SET retry_of = ? WHERE id = ?",
                        (id_map[int(e["retry_of"])], id_map[int(e["id"])]),
                    )
            journal_ids: dict[int, int] = {}
            for table, columns in EXPERIMENT_TABLES.items():
                for row in rows.tables.get(table, []):
                    values = {k: row.get(k) for k in columns if k != "id"}
                    values["experiment_id"] = id_map[int(row["experiment_id"])]
                    if table == "journal" and row.get("ref") is not None:
                        values["ref"] = journal_ids[int(row["ref"])]
                    if table == "journal":
                        journal_ids[int(row["id"])] = _insert(conn, table, values, "id")
                    else:
                        _insert(conn, table, values)
            for old_id, documents in rows.documents.items():
                conn.executemany(
                    "INSERT INTO run_documents (experiment_id, seq, name, body) VALUES (?, ?, ?, ?)",
                    [(id_map[old_id], i, n, encode_document(d)) for i, (n, d) in enumerate(documents, 1)],
                )
            for prior in rows.prior:
                _insert(conn, "prior_observations", {"campaign_id": campaign["id"], **prior})
        return id_map


def _insert(conn: Db, table: str, values: Mapping[str, Any], key: str | None = None) -> int:
    """Insert one row; return its ``key`` column (the number the database gave it), 0 without one."""
    columns = ", ".join(values)
    marks = ", ".join("?" * len(values))
    returning = f" RETURNING {key}" if key else ""
    cur = conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks}){returning}", tuple(values.values()))
    return int(cur.fetchone()[0]) if key else 0
