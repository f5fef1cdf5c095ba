"""Proposals that wait for an operator's approval before they run: asked, then approved or rejected (a
rejected proposal ends failed, with who rejected it and why, and the optimizer learns it as a failure)."""

from __future__ import annotations

from typing import Any

from sdl.spec.status import ExperimentStatus
from sdl.store.experiments import ExperimentsMixin, Finish
from sdl.store.schema import ApprovalRecord, loads, now_iso

_SELECT = (
    "SELECT a.*, e.campaign_id, e.seq, e.recipe_json FROM approvals a "
    "JOIN experiments e ON e.id = a.experiment_id"
)


class ApprovalError(ValueError):
    """An approval the record refuses: no such proposal waiting, or decided already."""


class ApprovalsMixin(ExperimentsMixin):
    def ask_approval(self, experiment_id: int, why: str) -> ApprovalRecord:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO approvals (experiment_id, state, why, asked_at) VALUES (?, 'pending', ?, ?)",
                (experiment_id, why, now_iso()),
            )
        record = self.approval(experiment_id)
        assert record is not None
        return record

    def approval(self, experiment_id: int) -> ApprovalRecord | None:
        rows = self._read(f"{_SELECT} WHERE a.experiment_id = ?", (experiment_id,))
        return _approval(rows[0]) if rows else None

    def approvals(self, *, pending: bool = True, campaign_id: str | None = None) -> list[ApprovalRecord]:
        """Oldest first: those waiting (or all), of one campaign or every one."""
        where: list[str] = []
        args: list[object] = []
        if pending:
            where.append("a.state = 'pending'")
        if campaign_id is not None:
            where.append("e.campaign_id = ?")
            args.append(campaign_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return [_approval(r) for r in self._read(f"{_SELECT}{clause} ORDER BY a.experiment_id", tuple(args))]

    def decide_approval(
        self, experiment_id: int, approve: bool, who: str, reason: str | None = None
    ) -> ApprovalRecord:
        """Approve the waiting proposal (it runs on the next free workcell) or reject it (it ends failed)."""
        now = now_iso()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT state FROM approvals WHERE experiment_id = ?", (experiment_id,)
            ).fetchone()
            if row is None:
                raise ApprovalError(f"experiment id {experiment_id} is not a proposal waiting for approval")
            if row["state"] != "pending":
                raise ApprovalError(f"experiment id {experiment_id} was {row['state']} already")
            state = "approved" if approve else "rejected"
            conn.execute(
                "UPDATE approvals SET state = ?, decided_at = ?, decided_by = ?, reason = ? "
                "WHERE experiment_id = ?",
                (state, now, who, reason, experiment_id),
            )
            if not approve:  # in the same transaction: the decision and the failure it makes
                failure = f"rejected by {who}" + (f": {reason}" if reason else "")
                self.finish_experiment(experiment_id, Finish(ExperimentStatus.FAILED, failure=failure))
        record = self.approval(experiment_id)
        assert record is not None
        return record


def _approval(row: Any) -> ApprovalRecord:
    return ApprovalRecord(
        row["experiment_id"],
        row["campaign_id"],
        row["seq"],
        loads(row["recipe_json"]),
        row["state"],
        row["why"],
        row["asked_at"],
        row["decided_at"],
        row["decided_by"],
        row["reason"],
    )
