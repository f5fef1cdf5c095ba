"""Keeping every free workcell busy: choose a campaign, propose, lease, run; close campaigns that are done.

Each step is written before it is acted on: the proposal, the lease and ``running`` commit together (with
the events announcing them) before the worker is told to start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from sdl.crashpoints import crash_point
from sdl.daemon import protocol as p
from sdl.daemon.active import Tracked
from sdl.daemon.scheduler import Assignment, Candidate, plan_round
from sdl.loop.history import pending, stop_reason
from sdl.loop.proposing import NextExperiment
from sdl.optimizer import OptimizerExhausted
from sdl.spec.status import CampaignStatus, ExperimentStatus
from sdl.store import ExperimentRecord, LeaseConflict

if TYPE_CHECKING:
    from sdl.daemon.cells import Cell
    from sdl.daemon.service import LabService

log = logging.getLogger("sdl.daemon")


class Dispatching:
    async def _schedule_loop(self: LabService) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            try:
                await self._dispatch_round()
            except Exception:
                log.exception("scheduling failed; trying again")
                await asyncio.sleep(1.0)

    def estop_active(self: LabService) -> bool:
        assert self.store is not None
        return self.store.lab_state("estop") is not None

    def tracked(self: LabService, campaign_id: str) -> Tracked:
        assert self.active is not None
        tracked = self.active.get(campaign_id)
        return tracked if tracked is not None else self.active.track(campaign_id)

    def in_flight(self: LabService, campaign_id: str) -> list[Cell]:
        return [c for c in self.cells.values() if c.campaign_id == campaign_id]

    def unhealthy(self: LabService) -> dict[str, str]:
        """Instruments out of service, with why: quarantined, suspect, or being serviced."""
        assert self.store is not None
        out = {
            name: f"{r.state}: {r.reason}" for name, r in self.store.instruments().items() if r.state != "ok"
        }
        for cell in self.cells.values():
            out.update({name: "being made safe or checked" for name in cell.servicing})
        return out

    def unavailable(self: LabService) -> set[str]:
        """Instruments no experiment may lease now: leased, or out of service."""
        assert self.store is not None
        return set(self.store.leases()) | set(self.unhealthy())

    def grant_leases(self: LabService) -> None:
        """Grant plans' on-demand leases in the order they were asked: all of a request's instruments at once,
        never one that an earlier request still waits for; refuse those for instruments out of service."""
        assert self.store is not None
        leased, unhealthy = set(self.store.leases()), self.unhealthy()
        blocked: set[str] = set()
        for waiting in list(self.lease_waiting):
            cell, request = self.cells[waiting.workcell], waiting.request
            out = [n for n in request.instruments if n in unhealthy and "being made safe" not in unhealthy[n]]
            if out:
                self.lease_waiting.remove(waiting)
                reason = "; ".join(f"{n} is out of service ({unhealthy[n]})" for n in out)
                self.in_background(self.send(cell, p.LeaseRefused(request=request.request, reason=reason)))
                continue
            wanted = set(request.instruments)
            if wanted & (blocked | leased | set(unhealthy)):
                blocked |= wanted
                continue
            try:
                self.store.lease(request.experiment_id, request.instruments, waiting.workcell)
            except LeaseConflict:
                blocked |= wanted
                continue
            self.lease_waiting.remove(waiting)
            leased |= wanted
            self.in_background(self.send(cell, p.LeaseGranted(request=request.request)))

    async def _dispatch_round(self: LabService) -> None:
        assert self.health is not None
        if self.stopping:
            return
        self._close_finished_campaigns()
        if self.estop_active():
            return
        await self.health.service_suspects()
        idle = [c.name for c in self.cells.values() if c.ready]
        candidates = self._candidates() if idle else []
        if not candidates:
            return
        for assignment in plan_round(self.lab, idle, candidates, self.unavailable(), set(self.unhealthy())):
            if self.stopping or self.estop_active():
                return
            await self._start(assignment)

    def _candidates(self: LabService) -> list[Candidate]:
        assert self.active is not None
        out = []
        for tracked in self.active:
            record, campaign, tally = tracked.record, tracked.campaign, tracked.tally
            if (
                record.status is not CampaignStatus.RUNNING
                or record.control != "run"
                or record.id in self.exhausted
            ):
                continue
            if stop_reason(campaign, tracked.history, record.active_seconds, tally) is not None:
                continue
            slots = campaign.budget.max_experiments - tally.spent - tally.counts[ExperimentStatus.RUNNING]
            if slots > 0:
                out.append(Candidate(record.id, campaign, record.priority, record.weight, tally.used, slots))
        return out

    async def _start(self: LabService, assignment: Assignment) -> None:
        workcell, campaign_id = assignment.workcell, assignment.campaign_id
        tracked = self.tracked(campaign_id)
        leftover = next((e for e in pending(tracked.history) if e.status is ExperimentStatus.PROPOSED), None)
        proposal: NextExperiment | None = None
        if leftover is None:
            try:
                proposal = await self.proposer.decide(
                    campaign_id,
                    tracked.campaign,
                    lambda: self.store.prior_observations(campaign_id),
                    tracked.history,
                    tracked.tally.observations,
                    tracked.tally.pending,
                )
            except OptimizerExhausted:
                self.exhausted.add(campaign_id)
                return
        # Things may have changed while the optimizer thought; then the proposal waits for the next round.
        ready = self.cells[workcell].ready and not self.stopping and not self.estop_active()
        try:
            experiment = self._record_start(assignment, leftover, proposal, ready)
        except LeaseConflict as exc:
            log.info("an experiment of %s waits: %s", campaign_id, exc)
            return
        if ready:
            crash_point("service.after-start")  # running and leased on disk, the worker not told yet
            await self._run_on(assignment, experiment, tracked)

    def _record_start(
        self: LabService,
        assignment: Assignment,
        leftover: ExperimentRecord | None,
        proposal: NextExperiment | None,
        start: bool,
    ) -> ExperimentRecord:
        """The proposal (if new), then the lease and 'running' (if starting), with their events, in one
        transaction."""
        assert self.store is not None and self.active is not None
        workcell, campaign_id, instruments = (
            assignment.workcell,
            assignment.campaign_id,
            assignment.instruments,
        )
        with self.recording():
            if proposal is not None:
                experiment = self.store.add_proposal(
                    campaign_id,
                    proposal.recipe,
                    proposal.decision,
                    workcell=workcell,
                    retry_of=proposal.retry_of,
                )
                self.publish("experiment.proposed", self.experiment_body(experiment), campaign_id)
            else:
                assert leftover is not None
                experiment = leftover
            if start:
                assignments = {
                    role: {
                        "instrument": n,
                        "driver": self.lab.instruments[n].driver,
                        "address": self.addresses.get(n),
                    }
                    for role, n in instruments.items()
                }
                self.store.start_experiment(
                    experiment.id, assignments=assignments, workcell=workcell, instruments=assignment.up_front
                )
                experiment = self.store.experiment(experiment.id)
                self.publish("experiment.started", self.experiment_body(experiment), campaign_id)
        return self.active.refresh_experiment(campaign_id, experiment.id)

    async def _run_on(
        self: LabService, assignment: Assignment, experiment: ExperimentRecord, tracked: Tracked
    ) -> None:
        cell, instruments = self.cells[assignment.workcell], assignment.instruments
        cell.state = "busy"
        cell.experiment, cell.campaign_id = experiment.id, tracked.id
        cell.started_at = time.monotonic()
        cell.timeout = tracked.campaign.procedure.timeout
        await self.send(
            cell,
            p.RunExperiment(
                experiment_id=experiment.id,
                campaign_id=tracked.id,
                devices=instruments,
                options=cell.spec.options,
                release_after=[n for n in dict.fromkeys(instruments.values()) if self.lab.shared(n)],
                on_demand=sorted(assignment.on_demand),
            ),
        )

    def _close_finished_campaigns(self: LabService) -> None:
        assert self.active is not None
        for tracked in self.active:
            record, history = tracked.record, tracked.history
            if record.status is not CampaignStatus.RUNNING or self.in_flight(record.id):
                continue
            if tracked.tally.counts[ExperimentStatus.RUNNING]:
                continue  # a worker is about to report it
            if record.id in self.aborted:
                status, reason = CampaignStatus.INTERRUPTED, self.aborted.pop(record.id)
            elif record.control == "stop":
                status, reason = CampaignStatus.INTERRUPTED, "stopped by the operator"
            elif record.id in self.exhausted:
                done = tracked.tally.counts[ExperimentStatus.DONE] > 0
                status = CampaignStatus.COMPLETED if done else CampaignStatus.FAILED
                reason = "search space exhausted" + ("" if done else " without a successful experiment")
            else:
                stop = stop_reason(tracked.campaign, history, record.active_seconds, tracked.tally)
                if stop is None:
                    continue
                status, reason = stop.status, stop.reason
            self.close_campaign(record.id, status, reason)

    def close_campaign(self: LabService, campaign_id: str, status: CampaignStatus, reason: str) -> None:
        assert self.store is not None and self.active is not None
        crash_point("service.before-close")
        with self.recording():
            dropped = self.store.drop_proposals(campaign_id, f"never started: {reason}")
            self.store.set_campaign_status(campaign_id, status, reason)
            self.store.release_campaign(campaign_id, self.owner)
            for experiment in dropped:
                self.active.refresh_experiment(campaign_id, experiment.id)
            self.active.refresh_record(campaign_id)
            self.publish("campaign.finished", {"status": status.value, "reason": reason}, campaign_id)
            self.publish_progress(campaign_id)
        self.active.forget(campaign_id)
        self.in_background(self.proposer.forget(campaign_id))
        self.exhausted.discard(campaign_id)
        log.info("campaign %s %s: %s", campaign_id, status.value, reason)
