"""The campaigns the lab service runs, with what deciding their next step needs held in memory.

The store stays the single source of truth: a campaign's history is read from it when the service takes the
campaign up (at start, on submit, on resume), and afterwards every change is read back row by row — the
service's own writes, and a worker's outcome when it says it has finished. Scheduling then costs what the
decision needs, not a re-read of thousands of experiments every time a workcell frees up.

Memory does not grow with the record: a :class:`~sdl.loop.history.Tally` counts every experiment once, and
only the experiments the history functions can still ask about stay (:func:`sdl.loop.history.still_needed`)
— those in flight, interrupted or faulted, and the tail since the latest result. What does grow is the
optimizer's input, one observation per result, which a model of the whole history needs anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sdl.loop.history import Tally, still_needed
from sdl.spec.campaign import Campaign
from sdl.spec.status import ExperimentStatus
from sdl.store import CampaignRecord, ExperimentRecord, Store


@dataclass
class Tracked:
    record: CampaignRecord
    campaign: Campaign
    tally: Tally = field(init=False)
    #: By id, in proposal order: the experiments still needed (see the module's docstring).
    rows: dict[int, ExperimentRecord] = field(init=False, default_factory=dict[int, ExperimentRecord])
    newest_id: int = field(init=False, default=0)
    latest_done_seq: int = field(init=False, default=0)

    @classmethod
    def of(cls, record: CampaignRecord, campaign: Campaign, history: list[ExperimentRecord]) -> Tracked:
        tracked = cls(record, campaign)
        tracked.recount(record, campaign, history)
        return tracked

    def recount(self, record: CampaignRecord, campaign: Campaign, history: list[ExperimentRecord]) -> None:
        """Count the whole history afresh (in place: the scheduler may hold this object across an await)."""
        self.record, self.campaign = record, campaign
        self.tally = Tally(campaign, history)
        self.rows, self.newest_id, self.latest_done_seq = {}, 0, 0
        for experiment in history:
            self._keep(experiment)
        self._forget_unneeded()

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def history(self) -> list[ExperimentRecord]:
        """The record as the history functions need it; the tally has counted the rest."""
        return list(self.rows.values())

    def update(self, experiment: ExperimentRecord) -> None:
        """A new experiment, or a new state of one already known."""
        old = self.rows.get(experiment.id)
        if old is not None:
            self.tally.replace(old, experiment)
        elif experiment.id <= self.newest_id:
            return  # counted when it became final (a final state never changes), and no longer needed
        else:
            self.tally.add(experiment)
        self._keep(experiment)
        self._forget_unneeded()

    def _keep(self, experiment: ExperimentRecord) -> None:
        self.rows[experiment.id] = experiment
        self.newest_id = max(self.newest_id, experiment.id)
        if experiment.status is ExperimentStatus.DONE and experiment.seq > self.latest_done_seq:
            self.latest_done_seq = experiment.seq

    def _forget_unneeded(self) -> None:
        unneeded = [i for i, e in self.rows.items() if not still_needed(e, self.latest_done_seq)]
        for experiment_id in unneeded:
            del self.rows[experiment_id]


class ActiveCampaigns:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._by_id: dict[str, Tracked] = {}

    def track(self, campaign_id: str) -> Tracked:
        record = self.store.campaign(campaign_id)
        tracked = Tracked.of(
            record, Campaign.model_validate(record.spec), self.store.experiments(campaign_id)
        )
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
            record = self.store.campaign(campaign_id)
            if record.spec != tracked.campaign.model_dump(mode="json"):  # the budget changed: count afresh
                campaign = Campaign.model_validate(record.spec)
                tracked.recount(record, campaign, self.store.experiments(campaign_id))
            else:
                tracked.record = record

    def refresh_experiment(self, campaign_id: str, experiment_id: int) -> ExperimentRecord:
        """Read one experiment back from the store into its campaign's tally."""
        experiment = self.store.experiment(experiment_id)
        tracked = self._by_id.get(campaign_id)
        if tracked is not None:
            tracked.update(experiment)
        return experiment
