"""The lab service's API handlers: one per method of `sdl.api.models`, each writing to the store before it
acts, and each control command going to the audit log (the server does that for every non-read method)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdl.access.keys import KeyEntry, KeyFileError
from sdl.access.roles import Caller
from sdl.api import models as m
from sdl.api.models import ApiError
from sdl.daemon import protocol as p
from sdl.loop.history import campaign_state, spent_of
from sdl.loop.lifecycle import start_campaign, with_overrides
from sdl.loop.warmstart import WarmStartError
from sdl.spec.campaign import Campaign
from sdl.spec.loading import CampaignError, load_campaign_text
from sdl.spec.status import CampaignStatus, Cause, ExperimentStatus
from sdl.store import CampaignRecord, ExperimentRecord, Store, StoreError, UnknownCampaign
from sdl.store.schema import now_iso

if TYPE_CHECKING:
    from sdl.daemon.active import ActiveCampaigns
    from sdl.daemon.service import LabService


def summary(
    record: CampaignRecord,
    campaign: Campaign | None,
    counted: dict[ExperimentStatus, int],
    best: ExperimentRecord | None,
) -> m.CampaignSummary:
    """``campaign``: the record's spec validated (None for a record an older sdl wrote that no longer
    validates: no objectives shown)."""
    objectives = [o.measurement for o in campaign.objectives] if campaign is not None else []
    return m.CampaignSummary(
        id=record.id,
        name=record.name,
        status=record.status.value,
        state=campaign_state(record),
        stop_reason=record.stop_reason,
        budget=record.max_experiments,
        spent=spent_of(counted),
        counts={s.value: n for s, n in counted.items() if n},
        best=None
        if best is None
        else m.Best(
            experiment=best.seq,
            objectives={k: (best.measurements or {}).get(k) for k in objectives},
            loss=best.objective,
        ),
        priority=record.priority,
        weight=record.weight,
        submitted_by=record.submitted_by,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        active_seconds=record.active_seconds,
        max_wall_time=campaign.budget.max_wall_time if campaign is not None else None,
    )


def summarize(store: Store, active: ActiveCampaigns, record: CampaignRecord) -> m.CampaignSummary:
    """A campaign's summary: from its tally while the service runs it, otherwise counted by the store —
    a finished campaign of 10,000 experiments costs two indexed queries, not a read of its history."""
    tracked = active.get(record.id)
    if tracked is not None:
        tally = tracked.tally
        return summary(tracked.record, tally.campaign, tally.counts, tally.best)
    try:
        campaign: Campaign | None = Campaign.model_validate(record.spec)
    except ValueError:
        campaign = None
    return summary(record, campaign, store.status_counts(record.id), store.best_experiment(record.id))


def key_info(entry: KeyEntry) -> m.KeyInfo:
    return m.KeyInfo(
        name=entry.name,
        public_key=entry.public_key,
        role=entry.role,
        added_at=entry.added_at,
        added_by=entry.added_by,
    )


def experiment_summary(e: ExperimentRecord) -> m.ExperimentSummary:
    d = e.decision
    return m.ExperimentSummary(
        id=e.id,
        campaign_id=e.campaign_id,
        seq=e.seq,
        status=e.status.value,
        recipe=e.recipe,
        measurements=e.measurements,
        loss=e.objective,
        failure=e.failure,
        cause=e.cause.value if e.cause else None,
        fault_kind=e.fault_kind,
        fault_instrument=e.fault_instrument,
        workcell=e.workcell,
        retry_of=e.retry_of,
        proposed_at=e.proposed_at,
        started_at=e.started_at,
        finished_at=e.finished_at,
        decision=None if d is None else m.DecisionRecord(**d.__dict__),
    )


class Handlers:
    def __init__(self, service: LabService) -> None:
        self.service = service

    @property
    def store(self) -> Store:
        assert self.service.store is not None
        return self.service.store

    def table(self) -> dict[str, Callable[[Any, Caller], Awaitable[Any]]]:
        """Method name -> handler, one per request model (the server checks none is missing)."""
        by_model: dict[type[m.Request], Callable[[Any, Caller], Awaitable[Any]]] = {
            m.Status: self.status,
            m.SubmitCampaign: self.submit,
            m.ListCampaigns: self.list_campaigns,
            m.ShowCampaign: self.show_campaign,
            m.PauseCampaign: self.pause,
            m.ResumeCampaign: self.resume,
            m.StopCampaign: self.stop,
            m.AbortCampaign: self.abort,
            m.SetBudget: self.budget,
            m.ListExperiments: self.list_experiments,
            m.ShowExperiment: self.show_experiment,
            m.ListInstruments: self.instruments,
            m.ListWorkcells: self.workcells,
            m.QuarantineInstrument: self.quarantine,
            m.ReleaseInstrument: self.release,
            m.EStop: self.estop,
            m.ClearEStop: self.clear_estop,
            m.EventsSince: self.events_since,
            m.Shutdown: self.shutdown,
            m.WhoAmI: self.whoami,
            m.ListKeys: self.list_keys,
            m.AddKey: self.add_key,
            m.RemoveKey: self.remove_key,
            m.ListAudit: self.audit_log,
        }
        return {model.method: handler for model, handler in by_model.items()}

    def _summary(self, record: CampaignRecord) -> m.CampaignSummary:
        assert self.service.active is not None
        return summarize(self.store, self.service.active, record)

    def _record(self, campaign_id: str) -> CampaignRecord:
        try:
            return self.store.campaign(campaign_id)
        except UnknownCampaign as exc:
            raise ApiError("not_found", str(exc)) from None

    # -- reading -------------------------------------------------------------------------------------------

    async def status(self, request: m.Status, caller: Caller) -> m.StatusReply:
        service = self.service
        estop = self.store.lab_state("estop")
        return m.StatusReply(
            lab=service.lab.name,
            pid=os.getpid(),
            started_at=service.started_at,
            estop=m.EStopState(active=estop is not None, **(estop or {})),
            workcells=(await self.workcells(m.ListWorkcells(), caller)).workcells,
            instruments=(await self.instruments(m.ListInstruments(), caller)).instruments,
            campaigns=[
                self._summary(r) for r in self.store.campaigns() if r.status is CampaignStatus.RUNNING
            ],
            last_event=self.store.last_event_seq(),
            events_address=service.events_address,
            documents_address=service.documents_address,
        )

    async def list_campaigns(self, request: m.ListCampaigns, caller: Caller) -> m.CampaignList:
        records = self.store.campaigns()
        if request.active_only:
            records = [r for r in records if r.status is CampaignStatus.RUNNING]
        return m.CampaignList(campaigns=[self._summary(r) for r in records])

    async def show_campaign(self, request: m.ShowCampaign, caller: Caller) -> m.CampaignDetail:
        record = self._record(request.campaign_id)
        return m.CampaignDetail(campaign=self._summary(record), spec=record.spec)

    async def list_experiments(self, request: m.ListExperiments, caller: Caller) -> m.ExperimentList:
        self._record(request.campaign_id)
        page = self.store.experiments_after(request.campaign_id, request.after_seq, request.limit)
        return m.ExperimentList(experiments=[experiment_summary(e) for e in page])

    async def show_experiment(self, request: m.ShowExperiment, caller: Caller) -> m.ExperimentDetail:
        try:
            experiment = self.store.experiment(request.experiment_id)
        except StoreError as exc:
            raise ApiError("not_found", str(exc)) from None
        journal = [
            m.JournalLine(**{k: v for k, v in entry.__dict__.items() if k != "experiment_id"})
            for entry in self.store.journal(experiment.id)
        ]
        documents = self.store.documents(experiment.id) if request.documents else None
        return m.ExperimentDetail(
            experiment=experiment_summary(experiment), journal=journal, documents=documents
        )

    async def instruments(self, request: m.ListInstruments, caller: Caller) -> m.InstrumentList:
        lab = self.service.lab
        health = self.store.instruments()
        leases = self.store.leases()
        out = []
        for name, spec in lab.instruments.items():
            record = health.get(name)
            lease = leases.get(name)
            out.append(
                m.InstrumentStatus(
                    name=name,
                    driver=spec.driver,
                    state=record.state if record else "ok",
                    reason=record.reason if record else None,
                    connected_in=[c.name for c in self.service.cells.values() if name in c.connected],
                    leased_to=lease[0] if lease else None,
                    leased_by=lease[1] if lease else None,
                    consecutive_faults=record.consecutive_faults if record else 0,
                    faults=record.faults if record else 0,
                    retries=record.retries if record else 0,
                    workcells=lab.workcells_of(name),
                )
            )
        return m.InstrumentList(instruments=out)

    async def workcells(self, request: m.ListWorkcells, caller: Caller) -> m.WorkcellList:
        unavailable = {n for n, r in self.store.instruments().items() if r.state == "quarantined"}
        out = []
        for cell in self.service.cells.values():
            blocked = sorted(set(cell.spec.instruments) & unavailable)
            state = cell.state if not (blocked and cell.state == "idle") else "blocked"
            if cell.servicing and cell.state == "idle":
                state = "recovering"
            out.append(
                m.WorkcellStatus(
                    name=cell.name,
                    state=state,
                    capabilities=cell.spec.capabilities,
                    devices=cell.spec.devices,
                    experiment=cell.experiment,
                    campaign_id=cell.campaign_id,
                    worker_pid=cell.pid,
                    restarts=cell.restarts,
                    blocked_by=blocked,
                )
            )
        return m.WorkcellList(workcells=out)

    async def events_since(self, request: m.EventsSince, caller: Caller) -> m.EventList:
        events = self.store.events_since(request.seq, request.limit, request.campaign_id)
        return m.EventList(
            events=[m.EventRecord(**e.__dict__) for e in events], last=self.store.last_event_seq()
        )

    # -- campaigns -----------------------------------------------------------------------------------------

    async def submit(self, request: m.SubmitCampaign, caller: Caller) -> m.SubmitReply:
        path = Path(request.path)
        try:
            loaded = await asyncio.to_thread(load_campaign_text, request.text, path)
        except CampaignError as exc:
            raise ApiError(
                "invalid_campaign", f"{path}: the campaign file has mistakes", exc.problems
            ) from None
        campaign = with_overrides(loaded.campaign, seed=request.seed, max_experiments=request.budget)
        reasons = {w: self.service.lab.fits(w, campaign) for w in self.service.lab.workcells}
        if all(reasons.values()):
            details = [f"workcell {w}: {'; '.join(r)}" for w, r in reasons.items()]
            raise ApiError(
                "invalid_campaign", f"no workcell of lab {self.service.lab.name!r} can run it", details
            )
        try:
            campaign_id = start_campaign(
                self.store,
                loaded,
                owner=self.service.owner,
                seed=request.seed,
                max_experiments=request.budget,
                submitted_by=caller.name,
            )
        except WarmStartError as exc:
            raise ApiError("invalid_campaign", f"{path}: {exc}") from None
        assert self.service.active is not None
        self.service.active.track(campaign_id)
        with self.service.recording():
            self.service.publish(
                "campaign.submitted", {"name": campaign.name, "by": caller.name}, campaign_id
            )
            self.service.publish_progress(campaign_id)
        self.service.wake.set()
        return m.SubmitReply(campaign_id=campaign_id)

    def _running(self, campaign_id: str) -> CampaignRecord:
        record = self._record(campaign_id)
        if record.status is not CampaignStatus.RUNNING:
            raise ApiError("conflict", f"campaign {campaign_id} is {record.status.value}, not running")
        if record.owner != self.service.owner:
            raise ApiError("busy", f"campaign {campaign_id} is run by another process ({record.owner})")
        return record

    def _state(self, campaign_id: str) -> m.CampaignStateReply:
        assert self.service.active is not None
        if self.store.campaign(campaign_id).owner == self.service.owner:
            if campaign_id in self.service.active:
                self.service.active.refresh_record(campaign_id)
            else:
                self.service.active.track(campaign_id)
        self.service.publish_progress(campaign_id)
        self.service.wake.set()
        return m.CampaignStateReply(
            campaign_id=campaign_id, state=campaign_state(self.store.campaign(campaign_id))
        )

    async def pause(self, request: m.PauseCampaign, caller: Caller) -> m.CampaignStateReply:
        self._running(request.campaign_id)
        self.store.set_control(request.campaign_id, "pause")
        return self._state(request.campaign_id)

    async def resume(self, request: m.ResumeCampaign, caller: Caller) -> m.CampaignStateReply:
        record = self._record(request.campaign_id)
        if record.status is CampaignStatus.RUNNING:
            if record.owner != self.service.owner:
                self.store.claim_campaign(record.id, self.service.owner)  # a stale foreground run, adopted
            self.store.set_control(record.id, "run")
        else:
            self.store.claim_campaign(record.id, self.service.owner)
            self.store.set_campaign_status(record.id, CampaignStatus.RUNNING)
        return self._state(record.id)

    async def stop(self, request: m.StopCampaign, caller: Caller) -> m.CampaignStateReply:
        self._running(request.campaign_id)
        self.store.set_control(request.campaign_id, "stop")
        return self._state(request.campaign_id)

    async def abort(self, request: m.AbortCampaign, caller: Caller) -> m.CampaignStateReply:
        self._running(request.campaign_id)
        self.store.set_control(request.campaign_id, "stop")
        self.service.aborted[request.campaign_id] = f"{request.reason} ({caller.name})"
        self.service.abort_all(Cause.OPERATOR, request.reason, request.campaign_id)
        return self._state(request.campaign_id)

    async def budget(self, request: m.SetBudget, caller: Caller) -> m.CampaignStateReply:
        record = self._record(request.campaign_id)
        changed = with_overrides(
            Campaign.model_validate(record.spec), max_experiments=request.max_experiments
        )
        self.store.set_budget(record.id, changed.model_dump(mode="json"), request.max_experiments)
        used = spent_of(self.store.status_counts(record.id))
        if record.status is CampaignStatus.COMPLETED and request.max_experiments > used:
            self.store.claim_campaign(record.id, self.service.owner)
            self.store.set_campaign_status(record.id, CampaignStatus.RUNNING)
        return self._state(record.id)

    # -- the lab -------------------------------------------------------------------------------------------

    def _instrument(self, name: str) -> None:
        if name not in self.service.lab.instruments:
            known = ", ".join(sorted(self.service.lab.instruments))
            raise ApiError("not_found", f"no instrument {name!r} in lab {self.service.lab.name!r} ({known})")

    async def quarantine(self, request: m.QuarantineInstrument, caller: Caller) -> m.Ok:
        self._instrument(request.name)
        assert self.service.health is not None
        self.service.health.quarantine(request.name, f"{request.reason} ({caller.name})")
        return m.Ok(message=f"{request.name} quarantined")

    async def release(self, request: m.ReleaseInstrument, caller: Caller) -> m.Ok:
        self._instrument(request.name)
        assert self.service.health is not None
        record = self.store.instrument(request.name)
        if record is None or record.state == "ok":
            return m.Ok(message=f"{request.name} is in service")
        if not request.check:
            self.service.health.release(request.name)
            return m.Ok(message=f"{request.name} released without a check")
        if not await self.service.health.check(request.name):
            raise ApiError(
                "conflict",
                f"no worker can check {request.name} now (busy or down); retry, or pass check=false",
            )
        return m.Ok(message=f"checking {request.name}; it is released if its recovery and health check pass")

    async def estop(self, request: m.EStop, caller: Caller) -> m.Ok:
        service = self.service
        self.store.set_lab_state("estop", {"reason": request.reason, "by": caller.name, "at": now_iso()})
        service.publish("lab.estop", {"active": True, "reason": request.reason, "by": caller.name})
        told = []
        for cell in service.cells.values():
            if cell.identity is not None and cell.alive:
                await service.send(cell, p.EStop(reason=request.reason))
                told.append(cell.name)
        open_somewhere = {n for c in service.cells.values() for n in c.connected}
        for name in service.lab.instruments:
            if name in open_somewhere:
                continue
            cell = next(
                (c for c in service.cells.values() if c.identity and name in c.spec.instruments), None
            )
            if cell is not None:
                release = [name] if service.lab.shared(name) else []
                await service.send(cell, p.MakeSafe(instruments=[name], check=False, release_after=release))
        return m.Ok(message=f"e-stop: every instrument told to stop ({len(told)} worker(s)); the lab holds")

    async def clear_estop(self, request: m.ClearEStop, caller: Caller) -> m.Ok:
        if self.store.lab_state("estop") is None:
            return m.Ok(message="no e-stop to clear")
        self.store.set_lab_state("estop", None)
        self.service.publish("lab.estop", {"active": False, "by": caller.name})
        self.service.wake.set()
        return m.Ok(message="e-stop cleared; the lab takes work again")

    # -- access ----------------------------------------------------------------------------------------------

    async def whoami(self, request: m.WhoAmI, caller: Caller) -> m.Identity:
        return m.Identity(name=caller.name, role=caller.role, origin=caller.origin, curve=self.service.curve)

    async def list_keys(self, request: m.ListKeys, caller: Caller) -> m.KeyList:
        keyring = self.service.keyring
        return m.KeyList(keys=[key_info(e) for e in keyring], path=str(keyring.path))

    async def add_key(self, request: m.AddKey, caller: Caller) -> m.KeyInfo:
        try:
            entry = self.service.keyring.add(
                request.name, request.public_key, request.key_role, by=caller.name
            )
        except KeyFileError as exc:
            raise ApiError("invalid_params", str(exc)) from None
        self.service.keys_changed()  # its subscriptions must be dropped if it is removed later
        return key_info(entry)

    async def remove_key(self, request: m.RemoveKey, caller: Caller) -> m.KeyInfo:
        try:
            entry = self.service.keyring.remove(request.name)
        except KeyFileError as exc:
            raise ApiError("not_found", str(exc)) from None
        self.service.keys_changed()
        return key_info(entry)

    async def audit_log(self, request: m.ListAudit, caller: Caller) -> m.AuditList:
        entries = self.store.audit_log(
            since_id=request.after_id,
            limit=request.limit,
            who=request.who,
            action=request.action,
            refused=request.refused,
            since=request.since,
            newest_first=request.newest_first,
        )
        return m.AuditList(entries=[m.AuditEntry(**e.__dict__) for e in entries])

    async def shutdown(self, request: m.Shutdown, caller: Caller) -> m.Ok:
        self.service.request_stop(abort=request.abort)
        return m.Ok(message="the lab service is stopping")
