"""Keeping every free workcell busy: choose a campaign, propose, lease, run; close campaigns that are done.

Each step is written before it is acted on: the proposal, the lease and ``running`` commit together (with
the events announcing them) before the worker is told to start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdl.crashpoints import crash_point
from sdl.daemon import protocol as p
from sdl.daemon.active import Tracked
from sdl.daemon.health import HealthKeeper
from sdl.daemon.proposer import Proposer
from sdl.daemon.scheduler import Assignment, Candidate, plan_round
from sdl.daemon.state import LabState
from sdl.daemon.stock import NeedsError, StockKeeper, approval_body, needs_of
from sdl.loop.history import pending, stop_reason
from sdl.loop.lifecycle import close_campaign
from sdl.loop.proposing import NextExperiment
from sdl.optimizer import OptimizerExhausted
from sdl.spec.status import CampaignStatus, ExperimentStatus, WorkcellState
from sdl.store import ExperimentRecord, Finish, LeaseConflict, StoreFull

log = logging.getLogger("sdl.daemon")


class Dispatcher:
    """``addresses``: each instrument's resolved address, recorded with the experiments that use it."""

    def __init__(
        self,
        state: LabState,
        health: HealthKeeper,
        proposer: Proposer,
        addresses: Mapping[str, Any],
        stock: StockKeeper | None = None,
    ) -> None:
        self.state = state
        self.health = health
        self.proposer = proposer
        self.addresses = addresses
        self.stock = stock if stock is not None else StockKeeper(state)
        #: By campaign: the workcells whose plan options its plan does not take (see `LabSpec.why_not`).
        self._unfit: dict[str, frozenset[str]] = {}

    async def schedule(self) -> None:
        """Run a dispatch round whenever something may have freed a workcell (the state's ``wake``)."""
        while True:
            await self.state.wake.wait()
            self.state.wake.clear()
            try:
                await self._round()
            except StoreFull as exc:  # nothing of the step was written; the storage keeper wakes us
                self.state.storage_failed(str(exc))
            except Exception:
                log.exception("scheduling failed; trying again")
                await asyncio.sleep(1.0)

    async def _round(self) -> None:
        state = self.state
        if state.stopping or state.storage_full():  # a full disk: nothing starts, nothing closes
            return
        if not state.holds_lab():  # replaced while silent: the heartbeat stops this service
            return
        self._close_finished_campaigns()
        if state.estop_active():
            return
        await self.health.service_suspects()
        idle = [c.name for c in state.cells.values() if c.ready]
        candidates = self._candidates() if idle else []
        if not candidates:
            return
        # An instrument waiting for a person (a refill) takes no new experiment, up front or on demand.
        unhealthy = set(state.unhealthy()) | set(self.stock.waiting())
        for assignment in plan_round(state.lab, idle, candidates, state.unavailable() | unhealthy, unhealthy):
            if state.stopping or state.estop_active() or state.storage_full():
                return
            await self._start(assignment)

    def _candidates(self) -> list[Candidate]:
        state = self.state
        out: list[Candidate] = []
        # Only a campaign with an approval rule has proposals waiting: no query on every round otherwise.
        gated = any(t.campaign.approval.require != "none" for t in state.active)
        awaiting = {a.experiment_id: a.campaign_id for a in state.store.approvals()} if gated else {}
        waiting = Counter(awaiting.values())
        for tracked in state.active:
            record, campaign, tally = tracked.record, tracked.campaign, tracked.tally
            if (
                record.status is not CampaignStatus.RUNNING
                or record.control != "run"
                or record.id in state.exhausted
                or record.id in state.aborted
            ):
                continue
            if stop_reason(campaign, tracked.history, record.active_seconds, tally) is not None:
                continue
            slots = campaign.budget.max_experiments - tally.spent - tally.counts[ExperimentStatus.RUNNING]
            held = waiting.get(record.id, 0)
            if held:
                # Proposals waiting for an operator hold their share of the budget. Each slot starts a
                # proposal that may run, or proposes one more to wait, while fewer wait than it has workcells.
                ready = sum(
                    e.status is ExperimentStatus.PROPOSED and e.id not in awaiting
                    for e in tally.in_flight.values()
                )
                slots = min(slots - held, ready + max(0, len(state.cells) - held))
            if slots > 0:
                out.append(
                    Candidate(
                        record.id,
                        campaign,
                        record.priority,
                        record.weight,
                        tally.used,
                        slots,
                        self._unfit_of(tracked),
                    )
                )
        return out

    def _unfit_of(self, tracked: Tracked) -> frozenset[str]:
        """The workcells that provide what the campaign requires but whose plan options its plan does not
        take: it never runs there (its experiments would all fail). Worked out once per campaign."""
        known = self._unfit.get(tracked.id)
        if known is None:
            lab, campaign = self.state.lab, tracked.campaign
            base_dir = Path(tracked.record.base_dir) if tracked.record.base_dir else None
            why = {w: lab.why_not(w, campaign, base_dir) for w in lab.workcells if not lab.fits(w, campaign)}
            for workcell, reasons in why.items():
                if reasons:
                    log.warning("campaign %s never runs on %s: %s", tracked.id, workcell, "; ".join(reasons))
            known = self._unfit[tracked.id] = frozenset(w for w, reasons in why.items() if reasons)
        return known

    async def _start(self, assignment: Assignment) -> None:
        state = self.state
        workcell, campaign_id = assignment.workcell, assignment.campaign_id
        tracked = state.tracked(campaign_id)
        gated = tracked.campaign.approval.require != "none"
        awaiting: set[int] = (
            {a.experiment_id for a in state.store.approvals(campaign_id=campaign_id)} if gated else set()
        )
        leftover = next(
            (
                e
                for e in pending(tracked.history)
                if e.status is ExperimentStatus.PROPOSED and e.id not in awaiting
            ),
            None,
        )
        proposal: NextExperiment | None = None
        if leftover is None:
            started = time.perf_counter()
            try:
                proposal = await self.proposer.decide(
                    campaign_id,
                    tracked.campaign,
                    lambda: state.store.prior_observations(campaign_id),
                    tracked.history,
                    tracked.tally.observations,
                    tracked.tally.pending,
                )
            except OptimizerExhausted:
                state.exhausted.add(campaign_id)
                return
            state.timed("proposal", time.perf_counter() - started)
            if tracked.campaign.approval.require != "none":  # recorded first: its number decides, maybe
                leftover, proposal = self._record_start(assignment, None, proposal, False), None
        if leftover is not None and not self._approved(tracked, leftover):
            return
        # What it will use up must be there (else a person is asked, and the proposal waits for a workcell
        # that has it).
        recipe = leftover.recipe if leftover is not None else proposal.recipe if proposal is not None else {}
        cell = state.cells[workcell]
        options = cell.spec.options if tracked.campaign.procedure.plan is not None else {}
        base_dir = Path(tracked.record.base_dir) if tracked.record.base_dir else None
        try:
            needs = needs_of(tracked.campaign, recipe, assignment.instruments, options, base_dir)
        except NeedsError as exc:
            log.error("campaign %s ends: %s", campaign_id, exc)
            state.aborted[campaign_id] = str(exc)
            return
        short = self.stock.check(needs, workcell, campaign_id) if needs else []
        never = [s for s in short if s.never is not None]
        if never:  # no refill covers it: the recipe fails, and the optimizer learns so
            self._unfillable(assignment, leftover, proposal, "; ".join(s.describe() for s in never))
            return
        # Things may have changed while the optimizer thought; then the proposal waits for the next round.
        ready = (
            cell.ready
            and not short
            and not state.stopping
            and not state.estop_active()
            and not state.storage_full()
        )
        try:
            experiment = self._record_start(assignment, leftover, proposal, ready)
        except LeaseConflict as exc:
            log.info("an experiment of %s waits: %s", campaign_id, exc)
            return
        if ready:
            self.stock.started(experiment.id, needs)
            crash_point("service.after-start")  # running and leased on disk, the worker not told yet
            await self._run_on(assignment, experiment, tracked)

    def _approved(self, tracked: Tracked, experiment: ExperimentRecord) -> bool:
        """Whether ``experiment`` may run as far as its campaign's approval rule goes; a proposal that needs
        an approval it does not have yet is put in the queue (once) and announced."""
        rule = tracked.campaign.approval
        if rule.require == "none":
            return True
        state = self.state
        record = state.store.approval(experiment.id)
        if record is not None:
            return record.state == "approved"
        why = rule.why(experiment.recipe, experiment.seq)
        if why is None:
            return True
        with state.recording():
            record = state.store.ask_approval(experiment.id, why)
            state.publish("approval.requested", approval_body(record), tracked.id)
        log.info("campaign %s: proposal %d waits for approval (%s)", tracked.id, experiment.seq, why)
        return False

    def _unfillable(
        self,
        assignment: Assignment,
        leftover: ExperimentRecord | None,
        proposal: NextExperiment | None,
        why: str,
    ) -> None:
        state = self.state
        experiment = leftover or self._record_start(assignment, None, proposal, False)
        failure = f"the lab cannot hold what it needs: {why}"
        with state.recording():
            state.store.finish_experiment(experiment.id, Finish(ExperimentStatus.FAILED, failure=failure))
            state.announce()
        state.active.refresh_experiment(assignment.campaign_id, experiment.id)
        log.warning("campaign %s: proposal %d failed: %s", assignment.campaign_id, experiment.seq, failure)

    def _record_start(
        self,
        assignment: Assignment,
        leftover: ExperimentRecord | None,
        proposal: NextExperiment | None,
        start: bool,
    ) -> ExperimentRecord:
        """The proposal (if new), then the lease and 'running' (if starting), with their events, in one
        transaction."""
        state = self.state
        workcell, campaign_id, instruments = (
            assignment.workcell,
            assignment.campaign_id,
            assignment.instruments,
        )
        with state.recording():
            if proposal is not None:
                experiment = state.store.add_proposal(
                    campaign_id,
                    proposal.recipe,
                    proposal.decision,
                    workcell=workcell,
                    retry_of=proposal.retry_of,
                )
            else:
                assert leftover is not None
                experiment = leftover
            if start:
                assignments = {
                    role: {
                        "instrument": n,
                        "driver": state.lab.instruments[n].driver,
                        "address": self.addresses.get(n),
                    }
                    for role, n in instruments.items()
                }
                state.store.start_experiment(
                    experiment.id, assignments=assignments, workcell=workcell, instruments=assignment.up_front
                )
            state.announce()
            crash_point("service.mid-start")  # written, not committed: all of it must vanish
        return state.active.refresh_experiment(campaign_id, experiment.id)

    async def _run_on(self, assignment: Assignment, experiment: ExperimentRecord, tracked: Tracked) -> None:
        state = self.state
        cell, instruments = state.cells[assignment.workcell], assignment.instruments
        cell.state = WorkcellState.BUSY
        cell.experiment, cell.campaign_id = experiment.id, tracked.id
        cell.started_at = time.monotonic()
        cell.timeout = tracked.campaign.procedure.timeout
        await state.send(
            cell,
            p.RunExperiment(
                experiment_id=experiment.id,
                campaign_id=tracked.id,
                devices=instruments,
                # A workcell's options say where its instruments are: a plan's business, not a function's.
                options=cell.spec.options if tracked.campaign.procedure.plan is not None else {},
                release_after=[n for n in dict.fromkeys(instruments.values()) if state.lab.shared(n)],
                on_demand=sorted(assignment.on_demand),
            ),
        )

    def _close_finished_campaigns(self) -> None:
        state = self.state
        for tracked in state.active:
            record, history = tracked.record, tracked.history
            if record.status is not CampaignStatus.RUNNING or state.in_flight(record.id):
                continue
            if tracked.tally.counts[ExperimentStatus.RUNNING]:
                continue  # a worker is about to report it
            if record.id in state.aborted:
                status, reason = CampaignStatus.INTERRUPTED, state.aborted.pop(record.id)
            elif record.control in ("stop", "abort"):
                done = "aborted" if record.control == "abort" else "stopped"
                status, reason = CampaignStatus.INTERRUPTED, f"{done} by the operator"
            elif record.id in state.exhausted:
                done = tracked.tally.counts[ExperimentStatus.DONE] > 0
                status = CampaignStatus.COMPLETED if done else CampaignStatus.FAILED
                reason = "search space exhausted" + ("" if done else " without a successful experiment")
            else:
                stop = stop_reason(tracked.campaign, history, record.active_seconds, tracked.tally)
                if stop is None:
                    continue
                status, reason = stop.status, stop.reason
            self.close(record.id, status, reason)

    def close(self, campaign_id: str, status: CampaignStatus, reason: str) -> None:
        """Close a campaign (``sdl.loop.lifecycle``) with the events announcing it, in one transaction."""
        state = self.state
        crash_point("service.before-close")
        with state.recording():
            closed = close_campaign(state.store, campaign_id, state.owner, status, reason)
            for experiment in closed:
                state.active.refresh_experiment(campaign_id, experiment.id)
            state.announce()  # the proposals it dropped
            state.active.refresh_record(campaign_id)
            state.publish("campaign.finished", {"status": status.value, "reason": reason}, campaign_id)
            state.publish_progress(campaign_id)
        state.active.forget(campaign_id)
        self._unfit.pop(campaign_id, None)
        state.in_background(self.proposer.forget(campaign_id))
        state.exhausted.discard(campaign_id)
        log.info("campaign %s %s: %s", campaign_id, status.value, reason)
