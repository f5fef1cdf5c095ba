"""Experiment records: proposals, leases and status changes, each committed before the action it announces.

An experiment is ``running`` on disk, with the instruments it holds leased to it, before its first command
leaves; its outcome, its last documents and the release of its leases are one transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sdl.crashpoints import crash_point
from sdl.spec.status import Cause, ExperimentStatus, check_transition
from sdl.store.connection import Connection, StoreError, row_dict
from sdl.store.db import Db
from sdl.store.schema import (
    Decision,
    ExperimentRecord,
    Transition,
    dumps,
    encode_document,
    loads,
    now_iso,
)


class LeaseConflict(StoreError):
    """An instrument the experiment needs is leased to another experiment."""


@dataclass(frozen=True)
class Finish:
    """How an experiment ended, as the store records it."""

    status: ExperimentStatus
    measurements: Mapping[str, Any] | None = None
    objective: float | None = None
    failure: str | None = None
    cause: Cause | None = None
    fault_kind: str | None = None
    fault_instrument: str | None = None


class ExperimentsMixin(Connection):
    def add_proposal(
        self,
        campaign_id: str,
        recipe: Mapping[str, Any],
        decision: Decision,
        *,
        workcell: str | None = None,
        retry_of: int | None = None,
    ) -> ExperimentRecord:
        """Record an optimizer proposal (status ``proposed``) with its decision."""
        now = now_iso()
        with self._tx() as conn:
            seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM experiments WHERE campaign_id = ?", (campaign_id,)
            ).fetchone()[0]
            cur = conn.execute(
                "INSERT INTO experiments (campaign_id, seq, status, recipe_json, proposed_at, workcell, "
                "retry_of) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (campaign_id, seq, ExperimentStatus.PROPOSED.value, dumps(recipe), now, workcell, retry_of),
            )
            experiment_id = int(cur.fetchone()[0])
            conn.execute(
                "INSERT INTO decisions (experiment_id, model, acquisition, acquisition_value, seconds, "
                "n_observations, n_pending) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    experiment_id, decision.model, decision.acquisition, _finite(decision.acquisition_value),
                    decision.seconds, decision.n_observations, decision.n_pending,
                ),
            )  # fmt: skip
            _log(conn, experiment_id, None, ExperimentStatus.PROPOSED, now, None)
        return self.experiment(experiment_id)

    def start_experiment(
        self,
        experiment_id: int,
        *,
        assignments: Mapping[str, Any] | None = None,
        workcell: str | None = None,
        instruments: Collection[str] = (),
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        """Mark the experiment running and lease it ``instruments``, in one transaction (with its
        provenance, when given).

        Raises :class:`LeaseConflict` (and changes nothing) if another experiment holds one of them.
        """
        now = now_iso()
        with self._tx() as conn:
            current = _status(conn, experiment_id)
            check_transition(current, ExperimentStatus.RUNNING)
            if instruments:
                _take_leases(conn, experiment_id, instruments, workcell, now)
            conn.execute(
                "UPDATE experiments SET status = ?, started_at = ?, assignments_json = ?, "
                "workcell = COALESCE(?, workcell) WHERE id = ?",
                (ExperimentStatus.RUNNING.value, now, dumps(assignments or {}), workcell, experiment_id),
            )
            _log(conn, experiment_id, current, ExperimentStatus.RUNNING, now, None)
            if provenance is not None:
                put_provenance(conn, experiment_id, provenance)

    def mark_running(self, experiment_id: int, assignments: Mapping[str, Any] | None = None) -> None:
        self.start_experiment(experiment_id, assignments=assignments)

    def finish_experiment(
        self,
        experiment_id: int,
        finish: Finish,
        documents: Sequence[tuple[int, str, Mapping[str, Any]]] = (),
        *,
        provenance: Mapping[str, Any] | None = None,
        only_from: ExperimentStatus | None = None,
    ) -> bool:
        """Record the outcome with the run's last ``(seq, name, doc)`` documents (and its completed
        provenance) and release the leases, in one transaction.

        With ``only_from``, an experiment no longer in that status is left as it is and False returned: a
        dead service's orphaned worker may record its own outcome between a recovery's read and its write.
        """
        now = now_iso()
        with self._tx() as conn:
            current = _status(conn, experiment_id)
            if only_from is not None and current is not only_from:
                return False
            check_transition(current, finish.status)
            insert_documents(conn, experiment_id, documents)
            if provenance is not None:
                put_provenance(conn, experiment_id, provenance)
            sets: dict[str, Any] = {"status": finish.status.value, "finished_at": now}
            if finish.measurements is not None:
                sets["measurements_json"] = dumps(finish.measurements)
            if finish.objective is not None:
                sets["objective"] = _finite(finish.objective)
            for column in ("failure", "fault_kind", "fault_instrument"):
                if getattr(finish, column) is not None:
                    sets[column] = getattr(finish, column)
            if finish.cause is not None:
                sets["cause"] = finish.cause.value
            assignments_sql = ", ".join(f"{k} = ?" for k in sets)
            conn.execute(
                f"UPDATE experiments SET {assignments_sql} WHERE id = ?", (*sets.values(), experiment_id)
            )
            conn.execute("DELETE FROM leases WHERE experiment_id = ?", (experiment_id,))
            _log(conn, experiment_id, current, finish.status, now, finish.failure)
        crash_point("store.outcome")
        return True

    def mark_done(self, experiment_id: int, measurements: Mapping[str, Any], objective: float) -> None:
        self.finish_experiment(experiment_id, Finish(ExperimentStatus.DONE, measurements, objective))

    def mark_failed(
        self, experiment_id: int, reason: str, measurements: Mapping[str, Any] | None = None
    ) -> None:
        self.finish_experiment(experiment_id, Finish(ExperimentStatus.FAILED, measurements, failure=reason))

    def mark_interrupted(self, experiment_id: int, reason: str, cause: Cause = Cause.OPERATOR) -> None:
        self.finish_experiment(
            experiment_id, Finish(ExperimentStatus.INTERRUPTED, failure=reason, cause=cause)
        )

    def recover(self, campaign_id: str, reason: str, cause: Cause = Cause.CRASH) -> list[ExperimentRecord]:
        """Mark experiments a dead process left running as ``interrupted`` (never re-run them silently).

        Proposals that never started are left as they are: the next run starts them first.
        """
        interrupted = Finish(ExperimentStatus.INTERRUPTED, failure=reason, cause=cause)
        running = self.experiments_with_status(campaign_id, ExperimentStatus.RUNNING)
        return [
            e
            for e in running
            if self.finish_experiment(e.id, interrupted, only_from=ExperimentStatus.RUNNING)
        ]

    def drop_proposals(self, campaign_id: str, reason: str) -> list[ExperimentRecord]:
        """Close proposals that will never start (their campaign stopped) as interrupted, cause dropped."""
        dropped = Finish(ExperimentStatus.INTERRUPTED, failure=reason, cause=Cause.DROPPED)
        proposed = self.experiments_with_status(campaign_id, ExperimentStatus.PROPOSED)
        return [
            e for e in proposed if self.finish_experiment(e.id, dropped, only_from=ExperimentStatus.PROPOSED)
        ]

    # -- leases ------------------------------------------------------------------------------------------

    def lease(self, experiment_id: int, instruments: Collection[str], workcell: str | None = None) -> None:
        """Lease more instruments to a running experiment (a plan's on-demand lease), all or none."""
        now = now_iso()
        with self._tx() as conn:
            if _status(conn, experiment_id) is not ExperimentStatus.RUNNING:
                raise LeaseConflict(f"experiment id {experiment_id} is not running")
            _take_leases(conn, experiment_id, instruments, workcell, now)

    def release(self, experiment_id: int, instruments: Collection[str]) -> None:
        """Give back instruments an experiment leased on demand (its other leases end with it)."""
        with self._tx() as conn:
            conn.executemany(
                "DELETE FROM leases WHERE experiment_id = ? AND instrument = ?",
                [(experiment_id, name) for name in instruments],
            )

    def leases(self) -> dict[str, tuple[int, str | None]]:
        """Instrument -> (experiment id, workcell) for every instrument leased now."""
        rows = self._read("SELECT instrument, experiment_id, workcell FROM leases")
        return {r["instrument"]: (r["experiment_id"], r["workcell"]) for r in rows}

    # -- reading -----------------------------------------------------------------------------------------

    def experiment(self, experiment_id: int) -> ExperimentRecord:
        rows = self._experiments("e.id = ?", (experiment_id,))
        if not rows:
            raise StoreError(f"no experiment with id {experiment_id}")
        return rows[0]

    def experiment_counts(self) -> dict[str, int]:
        """How many experiments of every campaign are in each status."""
        rows = self._read("SELECT status, COUNT(*) AS n FROM experiments GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    def experiments(self, campaign_id: str) -> list[ExperimentRecord]:
        """Every experiment of a campaign in proposal order, with its optimizer decision."""
        return self._experiments("e.campaign_id = ?", (campaign_id,))

    def experiments_after(self, campaign_id: str, after_seq: int, limit: int) -> list[ExperimentRecord]:
        """One page of a campaign's experiments: those after ``after_seq``, at most ``limit`` of them."""
        return self._experiments("e.campaign_id = ? AND e.seq > ?", (campaign_id, after_seq), limit)

    def experiments_with_status(
        self, campaign_id: str, *statuses: ExperimentStatus
    ) -> list[ExperimentRecord]:
        """A campaign's experiments in any of ``statuses``, in proposal order."""
        marks = ",".join("?" * len(statuses))
        return self._experiments(
            f"e.campaign_id = ? AND e.status IN ({marks})", (campaign_id, *(s.value for s in statuses))
        )

    def status_counts(self, campaign_id: str) -> dict[ExperimentStatus, int]:
        """How many of a campaign's experiments are in each status (every status present, zeros too)."""
        rows = self._read(
            "SELECT status, COUNT(*) FROM experiments WHERE campaign_id = ? GROUP BY status", (campaign_id,)
        )
        counted = dict.fromkeys(ExperimentStatus, 0)
        counted.update({ExperimentStatus(status): n for status, n in rows})
        return counted

    def lowest_objective(self, campaign_id: str) -> ExperimentRecord | None:
        """The done experiment with the lowest stored objective (the earliest of equals), by the index: for a
        campaign of one objective, its best (what a campaign calls best is `sdl.spec.best`)."""
        found = self._experiments(
            "e.campaign_id = ? AND e.status = ? AND e.objective IS NOT NULL",
            (campaign_id, ExperimentStatus.DONE.value),
            1,
            order="e.objective, e.seq",
        )
        return found[0] if found else None

    def _experiments(
        self,
        where: str,
        args: tuple[Any, ...],
        limit: int | None = None,
        order: str = "e.campaign_id, e.seq",
    ) -> list[ExperimentRecord]:
        rows = self._read(
            "SELECT e.*, d.model, d.acquisition, d.acquisition_value, d.seconds, d.n_observations, "
            "d.n_pending FROM experiments e LEFT JOIN decisions d ON d.experiment_id = e.id "
            f"WHERE {where} ORDER BY {order}" + ("" if limit is None else " LIMIT ?"),
            args if limit is None else (*args, limit),
        )
        return [_experiment(r) for r in rows]

    def transitions(self, experiment_id: int) -> list[Transition]:
        rows = self._read("SELECT * FROM transitions WHERE experiment_id = ? ORDER BY id", (experiment_id,))
        return [_transition(r) for r in rows]

    def transitions_after(self, after_id: int, limit: int = 1000) -> list[tuple[int, Transition]]:
        """Status changes of every experiment, in the order they were committed, after the one numbered
        ``after_id``, each with its number. Writers are serialised, so a change is never committed
        behind one already read: a reader that has seen number N has seen every change before it."""
        rows = self._read("SELECT * FROM transitions WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
        return [(int(r["id"]), _transition(r)) for r in rows]

    def last_transition_id(self) -> int:
        return int(self._read("SELECT COALESCE(MAX(id), 0) FROM transitions")[0][0])


def _transition(r: Any) -> Transition:
    return Transition(
        experiment_id=r["experiment_id"],
        from_status=ExperimentStatus(r["from_status"]) if r["from_status"] else None,
        to_status=ExperimentStatus(r["to_status"]),
        at=r["at"],
        note=r["note"],
    )


def _take_leases(
    conn: Db, experiment_id: int, instruments: Collection[str], workcell: str | None, now: str
) -> None:
    """Lease ``instruments`` to the experiment, all or none: LeaseConflict names any already held."""
    marks = ",".join("?" * len(instruments))
    held = conn.execute(
        f"SELECT instrument, experiment_id FROM leases WHERE instrument IN ({marks})", tuple(instruments)
    ).fetchall()
    if held:
        taken = ", ".join(f"{r['instrument']} (experiment id {r['experiment_id']})" for r in held)
        raise LeaseConflict(f"already leased: {taken}")
    conn.executemany(
        "INSERT INTO leases (instrument, experiment_id, workcell, since) VALUES (?, ?, ?, ?)",
        [(name, experiment_id, workcell, now) for name in instruments],
    )


def _status(conn: Db, experiment_id: int) -> ExperimentStatus:
    row = conn.execute("SELECT status FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
    if row is None:
        raise StoreError(f"no experiment with id {experiment_id}")
    return ExperimentStatus(row["status"])


def insert_documents(
    conn: Db, experiment_id: int, documents: Sequence[tuple[int, str, Mapping[str, Any]]]
) -> None:
    if documents:
        conn.executemany(
            "INSERT INTO run_documents (experiment_id, seq, name, body) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (experiment_id, seq) DO UPDATE SET name = excluded.name, body = excluded.body",
            [(experiment_id, seq, name, encode_document(doc)) for seq, name, doc in documents],
        )


def _log(
    conn: Db,
    experiment_id: int,
    old: ExperimentStatus | None,
    new: ExperimentStatus,
    at: str,
    note: str | None,
) -> None:
    conn.execute(
        "INSERT INTO transitions (experiment_id, from_status, to_status, at, note) VALUES (?, ?, ?, ?, ?)",
        (experiment_id, old.value if old else None, new.value, at, note),
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else float(value)


def _loads(text: str | None) -> Any:
    return None if text is None else loads(text)


_STATUSES = {s.value: s for s in ExperimentStatus}
_CAUSES = {c.value: c for c in Cause}


def _experiment(row: Any) -> ExperimentRecord:
    r = row_dict(row)
    decision = None
    if r["model"] is not None:
        decision = Decision(
            model=r["model"],
            acquisition=r["acquisition"],
            acquisition_value=r["acquisition_value"],
            seconds=r["seconds"],
            n_observations=r["n_observations"],
            n_pending=r["n_pending"],
        )
    return ExperimentRecord(
        id=r["id"],
        campaign_id=r["campaign_id"],
        seq=r["seq"],
        status=_STATUSES[r["status"]],
        recipe=loads(r["recipe_json"]),
        assignments=_loads(r["assignments_json"]),
        measurements=_loads(r["measurements_json"]),
        objective=r["objective"],
        failure=r["failure"],
        proposed_at=r["proposed_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        decision=decision,
        workcell=r["workcell"],
        retry_of=r["retry_of"],
        cause=_CAUSES[r["cause"]] if r["cause"] else None,
        fault_kind=r["fault_kind"],
        fault_instrument=r["fault_instrument"],
    )


def put_provenance(conn: Db, experiment_id: int, body: Mapping[str, Any]) -> None:
    conn.execute(
        "INSERT INTO provenance (experiment_id, body, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(experiment_id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        (experiment_id, dumps(body), now_iso()),
    )
