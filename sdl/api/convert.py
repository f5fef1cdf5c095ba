"""The one place the store's records become the API's models.

An experiment shown to anyone — an API reply, the body of an ``experiment.*`` event, the CLI's displays, the
dashboard, a report or an export — is an :class:`~sdl.api.models.ExperimentSummary` made here from the
store's :class:`~sdl.store.ExperimentRecord`. The optimizer's scalar is called ``loss`` in the API (the
store's column is ``objective``); nothing else is renamed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sdl.access.keys import KeyEntry
from sdl.api import models as m
from sdl.spec.best import Leaders
from sdl.spec.campaign import Campaign
from sdl.spec.status import CampaignStatus, ExperimentStatus
from sdl.store import (
    STALE_AFTER_S,
    ApprovalRecord,
    AuditRecord,
    CampaignRecord,
    EventRecord,
    ExperimentRecord,
    JournalEntry,
    StockChange,
    StockRecord,
    Store,
    TaskRecord,
    claim_is_stale,
    describe_owner,
)

#: The experiment fields an ``experiment.*`` event carries (its id as ``experiment_id``).
EVENT_FIELDS = frozenset(
    {"seq", "status", "workcell", "recipe", "measurements", "loss", "failure", "cause", "fault_kind",
     "fault_instrument", "decision"}
)  # fmt: skip


#: What each experiment used, by experiment id: (stock, amount, unit, lot) (`Store.consumption`).
Consumption = Mapping[int, Sequence[tuple[str, float, str, str | None]]]


def experiment_summary(e: ExperimentRecord, used: Consumption | None = None) -> m.ExperimentSummary:
    d = e.decision
    return m.ExperimentSummary(
        id=e.id,
        campaign_id=e.campaign_id,
        seq=e.seq,
        status=e.status,
        recipe=e.recipe,
        measurements=e.measurements,
        loss=e.objective,
        failure=e.failure,
        cause=e.cause,
        fault_kind=e.fault_kind,
        fault_instrument=e.fault_instrument,
        workcell=e.workcell,
        retry_of=e.retry_of,
        proposed_at=e.proposed_at,
        started_at=e.started_at,
        finished_at=e.finished_at,
        decision=None if d is None else m.DecisionRecord(**d.__dict__),
        used=[
            m.Usage(stock=stock, amount=amount, unit=unit, lot=lot)
            for stock, amount, unit, lot in (used or {}).get(e.id, ())
        ],
    )


def experiment_summaries(
    history: list[ExperimentRecord], used: Consumption | None = None
) -> list[m.ExperimentSummary]:
    return [experiment_summary(e, used) for e in history]


def recorded_history(store: Store, campaign_id: str) -> list[m.ExperimentSummary]:
    """A campaign's experiments as the record has them, with what each used."""
    return experiment_summaries(store.experiments(campaign_id), store.consumption(campaign_id))


def experiment_event(e: ExperimentRecord) -> dict[str, Any]:
    """The body of an ``experiment.<status>`` event: the experiment's summary, its id as ``experiment_id``."""
    body = experiment_summary(e).model_dump(mode="json", include=set(EVENT_FIELDS))
    return {"experiment_id": e.id, **body}


def campaign_state(record: CampaignRecord, now: float | None = None, *, held: bool = False) -> str:
    """What a campaign is doing, in one word or phrase — the one answer every command gives.

    A running campaign whose owner stopped heartbeating (killed, crashed, machine gone) is ``stale``; one
    that would run but its lab is e-stopped (``held``) is ``held``.
    """
    if record.status is not CampaignStatus.RUNNING:
        return record.status.value
    now = time.time() if now is None else now
    if claim_is_stale(record.owner, record.heartbeat_at, now, STALE_AFTER_S):
        if record.owner is not None and record.owner.startswith("daemon:"):
            return "stale: waiting for the lab service (`sdl daemon` resumes it when it starts)"
        was = f" (was run by {describe_owner(record.owner)})" if record.owner else ""
        return f"stale: nothing is running it{was}; resume it with `sdl run --resume`"
    if record.control == "run":
        return "held" if held else "running"
    return {"pause": "paused", "stop": "stopping", "abort": "aborting"}.get(record.control, record.control)


def campaign_summary(
    record: CampaignRecord,
    campaign: Campaign | None,
    counted: Mapping[ExperimentStatus, int],
    leaders: Leaders[ExperimentRecord],
    *,
    held: bool = False,
) -> m.CampaignSummary:
    """``campaign``: the record's spec validated (None for a record an older sdl wrote that no longer
    validates: no objectives shown); ``leaders``: its best and front (`sdl.spec.best`); ``held``: its lab is
    e-stopped."""
    objectives = [o.measurement for o in campaign.objectives] if campaign is not None else []

    def shown(e: ExperimentRecord, loss: float | None) -> m.Best:
        measured = e.measurements or {}
        return m.Best(experiment=e.seq, objectives={k: measured.get(k) for k in objectives}, loss=loss)

    best = leaders.best
    return m.CampaignSummary(
        id=record.id,
        name=record.name,
        status=record.status,
        state=campaign_state(record, held=held),
        stop_reason=record.stop_reason,
        budget=record.max_experiments,
        spent=sum(n for s, n in counted.items() if s.spends_budget),
        counts={s: n for s, n in counted.items() if n},
        best=None if best is None else shown(best, leaders.score),
        front=[shown(e, None) for e in leaders.front],
        priority=record.priority,
        weight=record.weight,
        submitted_by=record.submitted_by,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        active_seconds=record.active_seconds,
        max_wall_time=campaign.budget.max_wall_time if campaign is not None else None,
    )


def journal_line(entry: JournalEntry) -> m.JournalLine:
    return m.JournalLine(**{k: v for k, v in entry.__dict__.items() if k != "experiment_id"})


def event_record(event: EventRecord) -> m.EventRecord:
    return m.EventRecord(
        seq=event.seq, at=event.at, topic=event.topic, campaign_id=event.campaign_id, body=event.body
    )


def audit_entry(entry: AuditRecord) -> m.AuditEntry:
    return m.AuditEntry(**entry.__dict__)


def key_info(entry: KeyEntry) -> m.KeyInfo:
    return m.KeyInfo(
        name=entry.name,
        public_key=entry.public_key,
        role=entry.role,
        added_at=entry.added_at,
        added_by=entry.added_by,
    )


def stock_status(record: StockRecord, claimed: float = 0.0, task: int | None = None) -> m.Stock:
    return m.Stock(**record.__dict__, low=record.low, claimed=claimed, task=task)


def stock_change(change: StockChange) -> m.StockChange:
    return m.StockChange(**change.__dict__)


def task_status(task: TaskRecord) -> m.Task:
    return m.Task(**task.__dict__)


def proposal_status(record: ApprovalRecord) -> m.Proposal:
    return m.Proposal(**record.__dict__)
