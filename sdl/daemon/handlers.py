"""The lab service's API handlers: one per method of `sdl.api.models`, each writing to the store before it
acts, and each control command going to the audit log (the server does that for every non-read method)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sdl.access.keys import KeyFileError
from sdl.access.roles import Caller
from sdl.api import models as m
from sdl.api.convert import (
    audit_entry,
    experiment_summary,
    journal_line,
    key_info,
)
from sdl.api.models import ApiError
from sdl.daemon import protocol as p
from sdl.daemon.health import HealthKeeper, NoWorker
from sdl.daemon.people import PeopleHandlers
from sdl.daemon.state import LabState
from sdl.daemon.stock import NeedsError, StockKeeper, outlook
from sdl.daemon.supervision import Supervisor
from sdl.loop import lifecycle
from sdl.loop.history import spent_of
from sdl.loop.lifecycle import start_campaign, with_overrides
from sdl.loop.warmstart import WarmStartError
from sdl.spec.campaign import Campaign
from sdl.spec.loading import CampaignError, load_campaign_text
from sdl.spec.status import CampaignStatus, Cause, InstrumentState, WorkcellState
from sdl.store import (
    STALE_AFTER_S,
    CampaignRecord,
    ExperimentRecord,
    Store,
    StoreError,
    StoreFull,
    UnknownCampaign,
)
from sdl.store.schema import now_iso

log = logging.getLogger("sdl.daemon")


class Handlers:
    """``stop(abort)`` asks the service to stop (``abort``: None keeps its --on-stop). Keys added or removed
    here reach the service through the key ring, like any other change of the allow-list."""

    def __init__(
        self,
        state: LabState,
        health: HealthKeeper,
        supervisor: Supervisor,
        *,
        stop: Callable[[bool | None], None],
        stock: StockKeeper | None = None,
    ) -> None:
        self.state = state
        self.health = health
        self.supervisor = supervisor
        self._stop = stop
        self.stock = stock if stock is not None else StockKeeper(state)
        self.people = PeopleHandlers(state, self.stock)

    @property
    def store(self) -> Store:
        return self.state.store

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
            **self.people.table(),
        }
        return {model.method: self._storing(handler) for model, handler in by_model.items()}

    def _storing(
        self, handler: Callable[[Any, Caller], Awaitable[Any]]
    ) -> Callable[[Any, Caller], Awaitable[Any]]:
        """A request that needed a write the disk had no room for is refused with why (nothing of it was
        written), and the lab's storage alert raised."""

        async def call(request: Any, caller: Caller) -> Any:
            try:
                return await handler(request, caller)
            except StoreFull as exc:
                self.state.storage_failed(str(exc))
                raise ApiError("refused", f"{exc}; try again once there is room") from None

        return call

    def _summary(self, record: CampaignRecord) -> m.CampaignSummary:
        return self.state.summary(record)

    def _record(self, campaign_id: str) -> CampaignRecord:
        try:
            return self.store.campaign(campaign_id)
        except UnknownCampaign as exc:
            raise ApiError("not_found", str(exc)) from None

    # -- reading -------------------------------------------------------------------------------------------

    async def status(self, request: m.Status, caller: Caller) -> m.StatusReply:
        state = self.state
        estop = self.store.lab_state("estop")
        return m.StatusReply(
            lab=state.lab.name,
            pid=state.pid,
            started_at=state.started_at,
            estop=m.EStopState(active=estop is not None, **(estop or {})),
            workcells=(await self.workcells(m.ListWorkcells(), caller)).workcells,
            instruments=(await self.instruments(m.ListInstruments(), caller)).instruments,
            campaigns=[
                self._summary(r) for r in self.store.campaigns() if r.status is CampaignStatus.RUNNING
            ],
            last_event=state.last_event_seq(),
            events_address=state.events_address,
            documents_address=state.documents_address,
            alerts=list(state.alerts.values()),
            http_address=state.http_address,
            host=socket.gethostname(),
            standbys=[
                m.Standby(host=s["host"], pid=s["pid"], seen_at=_iso(s["seen_at"]))
                for s in self.store.standbys(stale_after=STALE_AFTER_S)
            ],
            agents=state.agents.report() if state.agents is not None else [],
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
        used = self.store.consumption(request.campaign_id) if page else {}
        return m.ExperimentList(experiments=[experiment_summary(e, used) for e in page])

    async def show_experiment(self, request: m.ShowExperiment, caller: Caller) -> m.ExperimentDetail:
        try:
            experiment = self.store.experiment(request.experiment_id)
        except StoreError as exc:
            raise ApiError("not_found", str(exc)) from None
        journal = [journal_line(entry) for entry in self.store.journal(experiment.id)]
        documents = self.store.documents(experiment.id) if request.documents else None
        used = self.store.consumption(experiment.campaign_id)
        return m.ExperimentDetail(
            experiment=experiment_summary(experiment, used), journal=journal, documents=documents
        )

    async def instruments(self, request: m.ListInstruments, caller: Caller) -> m.InstrumentList:
        lab = self.state.lab
        health = self.store.instruments()
        leases = self.store.leases()
        out: list[m.InstrumentStatus] = []
        for name, spec in lab.instruments.items():
            record = health.get(name)
            lease = leases.get(name)
            out.append(
                m.InstrumentStatus(
                    name=name,
                    driver=spec.driver,
                    state=record.state if record else InstrumentState.OK,
                    reason=record.reason if record else None,
                    connected_in=[c.name for c in self.state.cells.values() if name in c.connected],
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
        unavailable = {
            n for n, r in self.store.instruments().items() if r.state is InstrumentState.QUARANTINED
        }
        estop = self.state.estop_active()
        out: list[m.WorkcellStatus] = []
        for cell in self.state.cells.values():
            blocked = sorted(set(cell.spec.instruments) & unavailable)
            idle = cell.state is WorkcellState.IDLE
            state = WorkcellState.BLOCKED if blocked and idle else cell.state
            if cell.servicing and idle:
                state = WorkcellState.RECOVERING
            elif estop and idle:
                state = WorkcellState.HELD
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
                    agent=cell.spec.agent,
                )
            )
        return m.WorkcellList(workcells=out)

    async def events_since(self, request: m.EventsSince, caller: Caller) -> m.EventList:
        events, last = self.state.events_since(request.seq, request.limit, request.campaign_id)
        return m.EventList(events=events, last=last)

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
        lab = self.state.lab
        reasons = {w: lab.why_not(w, campaign, loaded.base_dir) for w in lab.workcells}
        if all(reasons.values()):
            details = [f"workcell {w}: {'; '.join(r)}" for w, r in reasons.items()]
            raise ApiError("invalid_campaign", f"no workcell of lab {lab.name!r} can run it", details)
        fitting = [w for w, r in reasons.items() if not r]
        try:
            notes = await asyncio.to_thread(
                outlook, campaign, lab, fitting, self.store.stocks(), loaded.base_dir
            )
        except NeedsError as exc:
            raise ApiError("invalid_campaign", f"{path}: {exc}") from None
        try:
            campaign_id = start_campaign(
                self.store,
                loaded,
                owner=self.state.owner,
                seed=request.seed,
                max_experiments=request.budget,
                submitted_by=caller.name,
            )
        except WarmStartError as exc:
            raise ApiError("invalid_campaign", f"{path}: {exc}") from None
        self.state.active.track(campaign_id)
        with self.state.recording():
            self.state.publish("campaign.submitted", {"name": campaign.name, "by": caller.name}, campaign_id)
            self.state.publish_progress(campaign_id)
        self.state.wake.set()
        for note in notes:
            log.warning("campaign %s: %s", campaign_id, note)
        return m.SubmitReply(campaign_id=campaign_id, notes=notes)

    def _running(self, campaign_id: str) -> CampaignRecord:
        record = self._record(campaign_id)
        if record.status is not CampaignStatus.RUNNING:
            raise ApiError("conflict", f"campaign {campaign_id} is {record.status.value}, not running")
        if record.owner != self.state.owner:
            raise ApiError("busy", f"campaign {campaign_id} is run by another process ({record.owner})")
        return record

    def _state(self, campaign_id: str) -> m.CampaignStateReply:
        state = self.state
        if self.store.campaign(campaign_id).owner == state.owner:
            if campaign_id in state.active:
                state.active.refresh_record(campaign_id)
            else:
                state.active.track(campaign_id)
        state.publish_progress(campaign_id)
        state.wake.set()
        return m.CampaignStateReply(
            campaign_id=campaign_id, state=self._summary(self.store.campaign(campaign_id)).state
        )

    async def pause(self, request: m.PauseCampaign, caller: Caller) -> m.CampaignStateReply:
        self._running(request.campaign_id)
        self.store.set_control(request.campaign_id, "pause")
        return self._state(request.campaign_id)

    async def resume(self, request: m.ResumeCampaign, caller: Caller) -> m.CampaignStateReply:
        record = self._record(request.campaign_id)
        recovered = lifecycle.resume(self.store, record.id, self.state.owner)  # e.g. a killed `sdl run`'s
        self.adopted(recovered, "the process running it stopped")
        return self._state(record.id)

    def adopted(self, recovered: list[ExperimentRecord], why: str) -> None:
        """Announce the experiments an adopted campaign's previous runner left running (now interrupted) and
        have the instruments they were moving made safe before anything uses them."""
        self.state.announce()
        for experiment in recovered:
            for name, reason in self.state.suspects_of(experiment, why).items():
                self.health.suspect(name, reason)

    async def stop(self, request: m.StopCampaign, caller: Caller) -> m.CampaignStateReply:
        self._running(request.campaign_id)
        self.store.set_control(request.campaign_id, "stop")
        return self._state(request.campaign_id)

    async def abort(self, request: m.AbortCampaign, caller: Caller) -> m.CampaignStateReply:
        self._running(request.campaign_id)
        self.store.set_control(request.campaign_id, "abort")
        self.state.aborted[request.campaign_id] = f"{request.reason} ({caller.name})"
        self.supervisor.abort_all(Cause.OPERATOR, request.reason, request.campaign_id)
        return self._state(request.campaign_id)

    async def budget(self, request: m.SetBudget, caller: Caller) -> m.CampaignStateReply:
        record = self._record(request.campaign_id)
        changed = with_overrides(
            Campaign.model_validate(record.spec), max_experiments=request.max_experiments
        )
        self.store.set_budget(record.id, changed.model_dump(mode="json"), request.max_experiments)
        used = spent_of(self.store.status_counts(record.id))
        if record.status is CampaignStatus.COMPLETED and request.max_experiments > used:
            self.adopted(
                lifecycle.adopt(self.store, record.id, self.state.owner), "the process running it stopped"
            )
        return self._state(record.id)

    # -- the lab -------------------------------------------------------------------------------------------

    def _instrument(self, name: str) -> None:
        lab = self.state.lab
        if name not in lab.instruments:
            known = ", ".join(sorted(lab.instruments))
            raise ApiError("not_found", f"no instrument {name!r} in lab {lab.name!r} ({known})")

    async def quarantine(self, request: m.QuarantineInstrument, caller: Caller) -> m.Ok:
        self._instrument(request.name)
        self.health.quarantine(request.name, f"{request.reason} ({caller.name})", by_operator=True)
        return m.Ok(message=f"{request.name} quarantined")

    async def release(self, request: m.ReleaseInstrument, caller: Caller) -> m.Ok:
        self._instrument(request.name)
        record = self.store.instrument(request.name)
        if record is None or record.state is InstrumentState.OK:
            return m.Ok(message=f"{request.name} is in service")
        if not request.check:
            self.health.release(request.name)
            return m.Ok(message=f"{request.name} released without a check")
        try:
            result = await self.health.check_and_wait(request.name, m.RELEASE_CHECK_S)
        except NoWorker:
            raise ApiError(
                "conflict",
                f"no worker can check {request.name} now (busy or down); retry, or pass check=false",
            ) from None
        except TimeoutError:
            raise ApiError(
                "refused",
                f"{request.name} is still being checked after {m.RELEASE_CHECK_S:g} s; it stays "
                f"{record.state.value} until its recovery and health check pass (see `sdl instruments`)",
            ) from None
        if not result.ok:
            now = self.store.instrument(request.name)
            state = now.state.value if now is not None else record.state.value
            raise ApiError("refused", f"{request.name} stays {state}: {result.detail}")
        return m.Ok(message=f"{request.name} released: its recovery and health check passed")

    async def estop(self, request: m.EStop, caller: Caller) -> m.Ok:
        state = self.state
        with state.recording():  # one commit, one disk flush: an e-stop waits for no more than it must
            self.store.set_lab_state("estop", {"reason": request.reason, "by": caller.name, "at": now_iso()})
            state.publish("lab.estop", {"active": True, "reason": request.reason, "by": caller.name})
        told: list[str] = []
        for cell in state.cells.values():
            if cell.identity is not None and cell.alive:
                await state.send(cell, p.EStop(reason=request.reason))
                told.append(cell.name)
        open_somewhere = {n for c in state.cells.values() for n in c.connected}
        for name in state.lab.instruments:
            if name in open_somewhere:
                continue
            cell = next((c for c in state.cells.values() if c.identity and name in c.spec.instruments), None)
            if cell is not None:
                release = [name] if state.lab.shared(name) else []
                await state.send(cell, p.MakeSafe(instruments=[name], check=False, release_after=release))
        return m.Ok(message=f"e-stop: every instrument told to stop ({len(told)} worker(s)); the lab holds")

    async def clear_estop(self, request: m.ClearEStop, caller: Caller) -> m.Ok:
        if self.store.lab_state("estop") is None:
            return m.Ok(message="no e-stop to clear")
        self.store.set_lab_state("estop", None)
        self.state.publish("lab.estop", {"active": False, "by": caller.name})
        self.state.wake.set()
        return m.Ok(message="e-stop cleared; the lab takes work again")

    # -- access ----------------------------------------------------------------------------------------------

    async def whoami(self, request: m.WhoAmI, caller: Caller) -> m.Identity:
        return m.Identity(name=caller.name, role=caller.role, origin=caller.origin, curve=self.state.curve)

    async def list_keys(self, request: m.ListKeys, caller: Caller) -> m.KeyList:
        keyring = self.state.keyring
        return m.KeyList(keys=[key_info(e) for e in keyring], path=str(keyring.path))

    async def add_key(self, request: m.AddKey, caller: Caller) -> m.KeyInfo:
        try:
            entry = self.state.keyring.add(request.name, request.public_key, request.key_role, by=caller.name)
        except KeyFileError as exc:
            raise ApiError("invalid_params", str(exc)) from None
        return key_info(entry)

    async def remove_key(self, request: m.RemoveKey, caller: Caller) -> m.KeyInfo:
        try:
            entry = self.state.keyring.remove(request.name)
        except KeyFileError as exc:
            raise ApiError("not_found", str(exc)) from None
        return key_info(entry)  # the key ring tells the service, which drops its subscriptions

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
        return m.AuditList(entries=[audit_entry(e) for e in entries])

    async def shutdown(self, request: m.Shutdown, caller: Caller) -> m.Ok:
        self._stop(request.abort)
        return m.Ok(message="the lab service is stopping")


def _iso(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat(timespec="seconds")
