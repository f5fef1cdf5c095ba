"""The campaigns the lab service runs, with their records and histories held in memory.

The store stays the single source of truth: a campaign's history is read from it when the service takes the
campaign up (at start, on submit, on resume), and afterwards every change is read back row by row — the
service's own writes, and a worker's outcome when it says it has finished. Scheduling then costs what the
decision needs, not a re-read of thousands of experiments every time a workcell frees up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sdl.campaign import Campaign
from sdl.history import Tally
from sdl.store import CampaignRecord, ExperimentRecord, Store


@dataclass
class Tracked:
    record: CampaignRecord
    campaign: Campaign
    history: list[ExperimentRecord]
    positions: dict[int, int] = field(default_factory=dict)
    tally: Tally = field(init=False)

    def __post_init__(self) -> None:
        self.positions = {e.id: i for i, e in enumerate(self.history)}
        self.tally = Tally(self.campaign, self.history)

    @property
    def id(self) -> str:
        return self.record.id


class ActiveCampaigns:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._by_id: dict[str, Tracked] = {}

    def track(self, campaign_id: str) -> Tracked:
        record = self.store.campaign(campaign_id)
        tracked = Tracked(record, Campaign.model_validate(record.spec), self.store.experiments(campaign_id))
        self._by_id[campaign_id] = tracked
        return tracked

    def forget(self, campaign_id: str) -> None:
        self._by_id.pop(campaign_id, None)

    def get(self, campaign_id: str) -> Tracked | None:
        return self._by_id.get(campaign_id)

    def __iter__(self) -> Iterator[Tracked]:
        return iter(list(self._by_id.values()))

    def __contains__(self, campaign_id: object) -> bool:
        return campaign_id in self._by_id

    def refresh_record(self, campaign_id: str) -> None:
        tracked = self._by_id.get(campaign_id)
        if tracked is not None:
            tracked.record = self.store.campaign(campaign_id)
            if tracked.record.spec != tracked.campaign.model_dump(mode="json"):  # the budget changed
                tracked.campaign = Campaign.model_validate(tracked.record.spec)
                tracked.tally = Tally(tracked.campaign, tracked.history)

    def refresh_experiment(self, campaign_id: str, experiment_id: int) -> ExperimentRecord:
        """Read one experiment back from the store into its campaign's history."""
        experiment = self.store.experiment(experiment_id)
        tracked = self._by_id.get(campaign_id)
        if tracked is not None:
            at = tracked.positions.get(experiment_id)
            if at is None:
                tracked.positions[experiment_id] = len(tracked.history)
                tracked.history.append(experiment)
                tracked.tally.add(experiment)
            else:
                tracked.tally.replace(tracked.history[at], experiment)
                tracked.history[at] = experiment
        return experiment
