"""Which campaign a free workcell serves next: pure functions of the lab, the campaigns and what is busy.

Rules (docs/decisions/0006-leases-and-scheduling.md):
- an experiment leases every instrument it uses at once, in one transaction, or none (no deadlock: nothing
  is ever held while waiting for another instrument) — except those its plan leases itself, step by step
  (``procedure.lease_on_demand``), which need only be in service;
- an instrument that is leased, quarantined, suspect or being serviced is not available;
- among the campaigns a workcell can serve, the highest priority wins; among equals, the one that has
  used the least in proportion to its weight (so weights 1 and 3 share a workcell 1:3).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sdl.spec.campaign import Campaign
from sdl.spec.lab import LabSpec


@dataclass(frozen=True)
class Candidate:
    """A campaign that may start an experiment now."""

    id: str
    campaign: Campaign
    priority: int
    weight: float
    used: int  # experiments it has started (or that are waiting to start)
    slots: int = 1  # experiments it may still start now (its budget left, minus those in flight)
    unfit: frozenset[str] = frozenset()  # workcells it may not run on though they have what it requires


@dataclass(frozen=True)
class Assignment:
    workcell: str
    campaign_id: str
    instruments: dict[str, str]  # device name -> instrument
    on_demand: frozenset[str] = frozenset()  # instruments the plan leases itself

    @property
    def up_front(self) -> list[str]:
        """The instruments leased with 'running', for the whole experiment."""
        return [n for n in dict.fromkeys(self.instruments.values()) if n not in self.on_demand]


def split(lab: LabSpec, workcell: str, campaign: Campaign) -> tuple[dict[str, str], frozenset[str]]:
    """Device name -> instrument on ``workcell``, and the instruments the plan leases on demand."""
    instruments = lab.instruments_for(workcell, campaign)
    on_demand = frozenset(instruments[d] for d in campaign.procedure.lease_on_demand if d in instruments)
    return instruments, on_demand


def blocked_by(
    lab: LabSpec,
    workcell: str,
    campaign: Campaign,
    unavailable: Collection[str],
    unhealthy: Collection[str] = (),
) -> list[str]:
    """The instruments that keep ``campaign`` off ``workcell`` now (empty: none do): those it leases up front
    must be available; those it leases on demand need only be in service."""
    instruments, on_demand = split(lab, workcell, campaign)
    up_front = {n for n in instruments.values() if n not in on_demand}
    return sorted((up_front & set(unavailable)) | (set(instruments.values()) & set(unhealthy)))


def choose(
    lab: LabSpec,
    workcell: str,
    candidates: Sequence[Candidate],
    unavailable: Collection[str],
    unhealthy: Collection[str] = (),
) -> Assignment | None:
    """The campaign ``workcell`` should run next, with the instruments to lease, or None."""
    fitting = [
        c
        for c in candidates
        if workcell not in c.unfit
        and not lab.fits(workcell, c.campaign)
        and not blocked_by(lab, workcell, c.campaign, unavailable, unhealthy)
    ]
    if not fitting:
        return None
    top = max(c.priority for c in fitting)
    best = min((c for c in fitting if c.priority == top), key=lambda c: (c.used / c.weight, c.id))
    instruments, on_demand = split(lab, workcell, best.campaign)
    return Assignment(workcell, best.id, instruments, on_demand)


def plan_round(
    lab: LabSpec,
    idle: Sequence[str],
    candidates: Sequence[Candidate],
    unavailable: Collection[str],
    unhealthy: Collection[str] = (),
) -> list[Assignment]:
    """Assignments for every idle workcell that can take work now, without two sharing an instrument."""
    taken = set(unavailable)
    used = {c.id: c.used for c in candidates}
    slots = {c.id: c.slots for c in candidates}
    out: list[Assignment] = []
    for workcell in idle:
        current = [
            Candidate(c.id, c.campaign, c.priority, c.weight, used[c.id], slots[c.id], c.unfit)
            for c in candidates
            if slots[c.id] > 0
        ]
        assignment = choose(lab, workcell, current, taken, unhealthy)
        if assignment is None:
            continue
        out.append(assignment)
        taken |= set(assignment.up_front)
        used[assignment.campaign_id] += 1
        slots[assignment.campaign_id] -= 1
    return out
