"""The durable record of every campaign: SQLite in WAL mode, the single source of truth.

Every status change is committed before the action it announces: an experiment is ``running`` on disk
before its first command leaves, so a crash can never hide a physical action.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sdl.status import CampaignStatus, ExperimentStatus, check_campaign_transition, check_transition
from sdl.store.migrations import LATEST, SchemaTooNew, migrate, schema_version
from sdl.store.schema import (
    DOCUMENT_ENCODING,
    CampaignRecord,
    Decision,
    ExperimentRecord,
    Transition,
    decode_documents,
    dumps,
    encode_documents,
    now_iso,
)

__all__ = [
    "DB_FILENAME",
    "LATEST",
    "CampaignRecord",
    "Decision",
    "ExperimentRecord",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "Transition",
    "UnknownCampaign",
]

DB_FILENAME = "sdl.sqlite3"


class StoreError(RuntimeError):
    """The store cannot do what was asked (unknown campaign, corrupt record...)."""


class UnknownCampaign(StoreError, LookupError):
    pass


class Store:
    """One SQLite database in a data directory. Thread-safe: one connection behind a lock."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_FILENAME
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed 'running' must survive power loss, not only a process crash.
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            migrate(self._conn)
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def exists(cls, data_dir: Path | str) -> bool:
        return (Path(data_dir) / DB_FILENAME).is_file()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return schema_version(self._conn)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- campaigns ---------------------------------------------------------------------------------

    def create_campaign(
        self,
        *,
        name: str,
        spec: Mapping[str, Any],
        seed: int,
        max_experiments: int,
        source_path: str | None = None,
        source_text: str | None = None,
        base_dir: str | None = None,
    ) -> str:
        """Record a new campaign as running by this process; return its id."""
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "campaign"
        campaign_id = f"{slug}-{secrets.token_hex(3)}"
        now = now_iso()
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO campaigns (id, name, status, spec_json, source_path, source_text, base_dir, "
                "seed, "
                "max_experiments, runner_pid, runner_host, created_at, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    campaign_id, name, CampaignStatus.RUNNING.value, dumps(spec), source_path, source_text,
                    base_dir, seed, max_experiments, os.getpid(), socket.gethostname(), now, now,
                ),
            )  # fmt: skip
        return campaign_id

    def campaign(self, campaign_id: str) -> CampaignRecord:
        with self._lock:
            row = self._conn.execute("SELECT * FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
        if row is None:
            raise UnknownCampaign(f"no campaign {campaign_id!r} in {self.path} (see `sdl campaigns`)")
        return _campaign(row)

    def campaigns(self) -> list[CampaignRecord]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM campaigns ORDER BY created_at, id").fetchall()
        return [_campaign(r) for r in rows]

    def set_campaign_status(
        self, campaign_id: str, status: CampaignStatus, reason: str | None = None
    ) -> None:
        with self._tx() as conn:
            row = conn.execute("SELECT status FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
            if row is None:
                raise UnknownCampaign(f"no campaign {campaign_id!r}")
            check_campaign_transition(CampaignStatus(row["status"]), status)
            if status is CampaignStatus.RUNNING:
                conn.execute(
                    "UPDATE campaigns SET status = ?, stop_reason = NULL, finished_at = NULL, "
                    "runner_pid = ?, "
                    "runner_host = ? WHERE id = ?",
                    (status.value, os.getpid(), socket.gethostname(), campaign_id),
                )
            else:
                conn.execute(
                    "UPDATE campaigns SET status = ?, stop_reason = ?, finished_at = ? WHERE id = ?",
                    (status.value, reason, now_iso(), campaign_id),
                )

    def set_budget(self, campaign_id: str, spec: Mapping[str, Any], max_experiments: int) -> None:
        """Replace the campaign's spec after an operator changed its budget (e.g. on resume)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE campaigns SET spec_json = ?, max_experiments = ? WHERE id = ?",
                (dumps(spec), max_experiments, campaign_id),
            )

    # -- experiments -------------------------------------------------------------------------------

    def add_proposal(
        self, campaign_id: str, recipe: Mapping[str, Any], decision: Decision
    ) -> ExperimentRecord:
        """Record an optimizer proposal (status ``proposed``) with its decision."""
        now = now_iso()
        with self._tx() as conn:
            seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM experiments WHERE campaign_id = ?", (campaign_id,)
            ).fetchone()[0]
            cur = conn.execute(
                "INSERT INTO experiments (campaign_id, seq, status, recipe_json, proposed_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (campaign_id, seq, ExperimentStatus.PROPOSED.value, dumps(recipe), now),
            )
            experiment_id = int(cur.lastrowid or 0)
            conn.execute(
                "INSERT INTO decisions (experiment_id, model, acquisition, acquisition_value, seconds, "
                "n_observations, n_pending) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    experiment_id, decision.model, decision.acquisition, _finite(decision.acquisition_value),
                    decision.seconds, decision.n_observations, decision.n_pending,
                ),
            )  # fmt: skip
            self._log(conn, experiment_id, None, ExperimentStatus.PROPOSED, now, None)
        return self.experiment(experiment_id)

    def mark_running(self, experiment_id: int, assignments: Mapping[str, Any] | None = None) -> None:
        self._transition(experiment_id, ExperimentStatus.RUNNING, started=True, assignments=assignments)

    def mark_done(self, experiment_id: int, measurements: Mapping[str, Any], objective: float) -> None:
        self._transition(experiment_id, ExperimentStatus.DONE, measurements=measurements, objective=objective)

    def mark_failed(
        self, experiment_id: int, reason: str, measurements: Mapping[str, Any] | None = None
    ) -> None:
        self._transition(experiment_id, ExperimentStatus.FAILED, failure=reason, measurements=measurements)

    def mark_interrupted(self, experiment_id: int, reason: str) -> None:
        self._transition(experiment_id, ExperimentStatus.INTERRUPTED, failure=reason)

    def _transition(
        self,
        experiment_id: int,
        new: ExperimentStatus,
        *,
        started: bool = False,
        assignments: Mapping[str, Any] | None = None,
        measurements: Mapping[str, Any] | None = None,
        objective: float | None = None,
        failure: str | None = None,
    ) -> None:
        now = now_iso()
        with self._tx() as conn:
            row = conn.execute("SELECT status FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
            if row is None:
                raise StoreError(f"no experiment with id {experiment_id}")
            current = ExperimentStatus(row["status"])
            check_transition(current, new)
            sets = {"status": new.value}
            if started:
                sets["started_at"] = now
                sets["assignments_json"] = dumps(assignments or {})
            if new.is_final:
                sets["finished_at"] = now
            if measurements is not None:
                sets["measurements_json"] = dumps(measurements)
            if objective is not None:
                sets["objective"] = _finite(objective)
            if failure is not None:
                sets["failure"] = failure
            assignments_sql = ", ".join(f"{k} = ?" for k in sets)
            conn.execute(
                f"UPDATE experiments SET {assignments_sql} WHERE id = ?", (*sets.values(), experiment_id)
            )
            self._log(conn, experiment_id, current, new, now, failure)

    @staticmethod
    def _log(
        conn: sqlite3.Connection,
        experiment_id: int,
        old: ExperimentStatus | None,
        new: ExperimentStatus,
        at: str,
        note: str | None,
    ) -> None:
        conn.execute(
            "INSERT INTO transitions (experiment_id, from_status, to_status, at, note) "
            "VALUES (?, ?, ?, ?, ?)",
            (experiment_id, old.value if old else None, new.value, at, note),
        )

    def experiment(self, experiment_id: int) -> ExperimentRecord:
        rows = self._experiments("e.id = ?", (experiment_id,))
        if not rows:
            raise StoreError(f"no experiment with id {experiment_id}")
        return rows[0]

    def experiments(self, campaign_id: str) -> list[ExperimentRecord]:
        """Every experiment of a campaign in proposal order, with its optimizer decision."""
        return self._experiments("e.campaign_id = ?", (campaign_id,))

    def _experiments(self, where: str, args: tuple[Any, ...]) -> list[ExperimentRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT e.*, d.model, d.acquisition, d.acquisition_value, d.seconds, d.n_observations, "
                "d.n_pending FROM experiments e LEFT JOIN decisions d ON d.experiment_id = e.id "
                f"WHERE {where} "
                "ORDER BY e.campaign_id, e.seq",
                args,
            ).fetchall()
        return [_experiment(r) for r in rows]

    def transitions(self, experiment_id: int) -> list[Transition]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM transitions WHERE experiment_id = ? ORDER BY id", (experiment_id,)
            ).fetchall()
        return [
            Transition(
                experiment_id=r["experiment_id"],
                from_status=ExperimentStatus(r["from_status"]) if r["from_status"] else None,
                to_status=ExperimentStatus(r["to_status"]),
                at=r["at"],
                note=r["note"],
            )
            for r in rows
        ]

    def recover(self, campaign_id: str, reason: str) -> list[ExperimentRecord]:
        """Mark experiments a dead process left unfinished as ``interrupted`` (never re-run them)."""
        unfinished = [e for e in self.experiments(campaign_id) if not e.status.is_final]
        for experiment in unfinished:
            self.mark_interrupted(experiment.id, reason)
        return unfinished

    # -- raw documents -----------------------------------------------------------------------------

    def save_documents(self, experiment_id: int, documents: list[tuple[str, Mapping[str, Any]]]) -> None:
        blob, raw_bytes = encode_documents(documents)
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO documents (experiment_id, encoding, n_documents, raw_bytes, blob) "
                "VALUES (?, ?, ?, ?, ?)",
                (experiment_id, DOCUMENT_ENCODING, len(documents), raw_bytes, blob),
            )

    def documents(self, experiment_id: int) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            row = self._conn.execute(
                "SELECT encoding, blob FROM documents WHERE experiment_id = ?", (experiment_id,)
            ).fetchone()
        return [] if row is None else decode_documents(row["blob"], row["encoding"])


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else float(value)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _campaign(row: sqlite3.Row) -> CampaignRecord:
    return CampaignRecord(
        id=row["id"],
        name=row["name"],
        status=CampaignStatus(row["status"]),
        stop_reason=row["stop_reason"],
        spec=json.loads(row["spec_json"]),
        source_path=row["source_path"],
        source_text=row["source_text"],
        base_dir=row["base_dir"],
        seed=row["seed"],
        max_experiments=row["max_experiments"],
        runner_pid=row["runner_pid"],
        runner_host=row["runner_host"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _experiment(row: sqlite3.Row) -> ExperimentRecord:
    decision = None
    if row["model"] is not None:
        decision = Decision(
            model=row["model"],
            acquisition=row["acquisition"],
            acquisition_value=row["acquisition_value"],
            seconds=row["seconds"],
            n_observations=row["n_observations"],
            n_pending=row["n_pending"],
        )
    return ExperimentRecord(
        id=row["id"],
        campaign_id=row["campaign_id"],
        seq=row["seq"],
        status=ExperimentStatus(row["status"]),
        recipe=json.loads(row["recipe_json"]),
        assignments=_loads(row["assignments_json"]),
        measurements=_loads(row["measurements_json"]),
        objective=row["objective"],
        failure=row["failure"],
        proposed_at=row["proposed_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        decision=decision,
    )
