"""A campaign's life in the store: started, adopted by a runner, closed — written once for every runner.

`sdl run` (and `sdl run --resume`), the lab service at its start, and the service's ``resume`` and ``budget``
methods all go through these functions, so a campaign behaves the same whoever runs it:

- :func:`start_campaign` records a new campaign (with command-line overrides) and the warm-start observations
  it names, claimed by its runner;
- :func:`adopt` claims a campaign for a runner and makes it running; the experiments its previous runner left
  ``running`` become ``interrupted`` (cause crash) — never re-run silently, spending no budget;
- :func:`resume` is an operator's resume: adopt the campaign unless the runner holds it already, and let it
  run (a paused or stopping campaign runs again);
- :func:`close_campaign` ends it: whatever is still in flight is marked, proposals never started are dropped,
  the status and reason are written and the claim released.

Each function writes in the store's transactions; a caller that wants its own events committed with them (the
lab service) calls them inside its own transaction.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sdl.loop.warmstart import resolve
from sdl.spec.campaign import Campaign
from sdl.spec.loading import LoadedCampaign
from sdl.spec.status import CampaignStatus, Cause
from sdl.store import ExperimentRecord, Store, new_owner

log = logging.getLogger(__name__)

#: Why an experiment its runner left running is interrupted.
CRASH_REASON = "the process running this experiment stopped; its physical outcome is unknown"


def start_campaign(
    store: Store,
    loaded: LoadedCampaign,
    *,
    owner: str | None = None,
    seed: int | None = None,
    max_experiments: int | None = None,
    submitted_by: str | None = None,
) -> str:
    """Record a new campaign (with command-line overrides applied to its spec), claimed by ``owner``, and the
    warm-start observations it names (raises ``WarmStartError`` before writing anything if it cannot)."""
    campaign = with_overrides(loaded.campaign, seed=seed, max_experiments=max_experiments)
    warm = resolve(campaign, store, loaded.base_dir)
    for note in warm.notes:
        log.info("%s", note)
    with store.transaction():
        campaign_id = store.create_campaign(
            name=campaign.name,
            spec=campaign.model_dump(mode="json"),
            seed=campaign.optimizer.seed,
            max_experiments=campaign.budget.max_experiments,
            source_path=str(loaded.path),
            source_text=loaded.source,
            base_dir=str(loaded.base_dir),
            owner=owner,
            submitted_by=submitted_by,
            priority=campaign.scheduling.priority,
            weight=campaign.scheduling.weight,
        )
        if warm.rows:
            store.add_prior_observations(campaign_id, warm.rows)
    return campaign_id


def with_overrides(
    campaign: Campaign, *, seed: int | None = None, max_experiments: int | None = None
) -> Campaign:
    data = campaign.model_dump()
    if seed is not None:
        data["optimizer"]["seed"] = seed
    if max_experiments is not None:
        data["budget"]["max_experiments"] = max_experiments
    return Campaign.model_validate(data)


def campaign_of(store: Store, campaign_id: str) -> tuple[Campaign, Path | None]:
    """A stored campaign's spec and the folder its procedures import from."""
    record = store.campaign(campaign_id)
    return Campaign.model_validate(record.spec), Path(record.base_dir) if record.base_dir else None


def adopt(store: Store, campaign_id: str, owner: str, reason: str = CRASH_REASON) -> list[ExperimentRecord]:
    """Claim a campaign for ``owner`` and make it running; return the experiments its previous runner left
    running, now ``interrupted`` (cause crash) with ``reason``.

    A running campaign keeps its control (a paused one stays paused). Raises ``CampaignBusy`` if a live
    process holds it. Never call it for a campaign ``owner`` runs: its own experiments in flight would be
    marked interrupted.
    """
    store.claim_campaign(campaign_id, owner)
    recovered = store.recover(campaign_id, reason, Cause.CRASH)
    for experiment in recovered:
        log.warning(
            "campaign %s: experiment %d was left running; marked interrupted, not re-run",
            campaign_id,
            experiment.seq,
        )
    if store.campaign(campaign_id).status is not CampaignStatus.RUNNING:
        store.set_campaign_status(campaign_id, CampaignStatus.RUNNING)
    return recovered


def resume(store: Store, campaign_id: str, owner: str) -> list[ExperimentRecord]:
    """An operator's resume: adopt the campaign unless ``owner`` runs it already, then let it run (a paused or
    stopping campaign runs again). Returns the experiments recovered on the way (see :func:`adopt`)."""
    record = store.campaign(campaign_id)
    recovered = [] if record.owner == owner else adopt(store, campaign_id, owner)
    if store.campaign(campaign_id).status is CampaignStatus.RUNNING:
        store.set_control(campaign_id, "run")
    else:
        store.set_campaign_status(campaign_id, CampaignStatus.RUNNING)
    return recovered


def close_campaign(
    store: Store, campaign_id: str, owner: str, status: CampaignStatus, reason: str
) -> list[ExperimentRecord]:
    """End the campaign with ``status`` and ``reason`` and release ``owner``'s claim; return the experiments
    this closed: any still running (an abnormal exit, e.g. a second Ctrl-C: marked interrupted, never left
    running) and the proposals that never started (dropped)."""
    cause = Cause.OPERATOR if status is CampaignStatus.INTERRUPTED else Cause.CRASH
    closed = store.recover(campaign_id, reason, cause)
    closed += store.drop_proposals(campaign_id, f"never started: {reason}")
    store.set_campaign_status(campaign_id, status, reason)
    store.release_campaign(campaign_id, owner)
    return closed


def new_run_owner() -> str:
    """The claim owner of an `sdl run` process."""
    return new_owner("run")
