"""What the lab service's collaborators share: the lab, the store, the workcells, the campaigns it runs, and
publishing events with the writes they announce.

The dispatcher, the supervisor, the health keeper, the lease grants and the API's handlers each take this
object (and each other) as typed dependencies; none of them knows the service, which builds them, owns the
sockets and processes, and hands the state the two sockets it speaks through (events out, workers in and
out). Everything runs on the service's one asyncio loop, so none of it needs a lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine, Generator
from contextlib import contextmanager
from typing import Any

import zmq
import zmq.asyncio
from pydantic import BaseModel

from sdl.access.keys import KeyRing
from sdl.api import models as m
from sdl.api.convert import campaign_summary, experiment_event
from sdl.api.wire import send_frames
from sdl.crashpoints import crash_point
from sdl.daemon import protocol as p
from sdl.daemon.active import ActiveCampaigns, Tracked
from sdl.daemon.cells import Cell
from sdl.execution.experiment import MOTION
from sdl.spec.campaign import Campaign
from sdl.spec.lab import LabSpec
from sdl.spec.status import CampaignStatus, InstrumentState
from sdl.store import CampaignRecord, ExperimentRecord, Store, unacknowledged

log = logging.getLogger("sdl.daemon")

EventListener = Callable[[m.EventRecord], None]


class LabState:
    """One lab service's state. ``events`` and ``workers`` are the service's sockets, set once they are bound
    (events published before that are in the store: subscribers catch up from it)."""

    def __init__(self, lab: LabSpec, store: Store, owner: str, keyring: KeyRing, *, curve: bool) -> None:
        self.lab = lab
        self.store = store
        self.owner = owner
        self.keyring = keyring
        self.curve = curve
        self.pid = os.getpid()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.cells = {name: Cell(name, spec) for name, spec in lab.workcells.items()}
        self.active = ActiveCampaigns(store)
        #: Set when something may let a workcell start an experiment: the dispatcher then looks.
        self.wake = asyncio.Event()
        self.stopping = False
        #: Campaigns whose optimizer found nothing left to propose.
        self.exhausted: set[str] = set()
        #: Campaigns an operator aborted, with the reason they end with.
        self.aborted: dict[str, str] = {}
        self.events_address = ""
        self.documents_address = ""
        #: Where the service's own dashboard is served (`sdl daemon --http`), if it is.
        self.http_address: str | None = None
        self.events: zmq.asyncio.Socket | None = None
        self.workers: zmq.asyncio.Socket | None = None
        #: Called with every event as it goes out (the dashboard served in this process).
        self.event_listeners: set[EventListener] = set()
        self._deferred: list[list[m.EventRecord]] = []
        self._background: set[asyncio.Task[object]] = set()

    # -- events ----------------------------------------------------------------------------------------------

    def publish(self, topic: str, body: dict[str, Any], campaign_id: str | None = None) -> None:
        """Record an event in the store, then publish it (a subscriber that misses it catches up).

        Inside :meth:`recording`, the event commits with the state change it announces and goes out after.
        """
        event = self.store.append_event(topic, body, campaign_id)
        record = m.EventRecord(
            seq=event.seq, at=event.at, topic=topic, campaign_id=campaign_id, body=event.body
        )
        if self._deferred:
            self._deferred[-1].append(record)
        else:
            self._send_event(record)

    def _send_event(self, record: m.EventRecord) -> None:
        for listener in list(self.event_listeners):
            try:
                listener(record)
            except Exception:
                log.exception("an event listener failed")
        if self.events is None:
            return
        try:
            send_frames(self.events, [record.topic.encode(), record.model_dump_json().encode()], zmq.NOBLOCK)
        except zmq.ZMQError:
            log.debug("event %d not published", record.seq)

    @contextmanager
    def recording(self) -> Generator[None, None, None]:
        """Store writes and the events announcing them in one transaction; the events go out after it."""
        self._deferred.append([])
        try:
            with self.store.transaction():
                yield
                crash_point("service.mid-transaction")  # written, not committed: all of it must vanish
        except BaseException:
            self._deferred.pop()
            raise
        for record in self._deferred.pop():
            self._send_event(record)

    def publish_experiment(self, experiment: ExperimentRecord) -> None:
        """``experiment.<its status>`` with its summary."""
        self.publish(
            f"experiment.{experiment.status.value}", experiment_event(experiment), experiment.campaign_id
        )

    def publish_progress(self, campaign_id: str) -> None:
        tracked = self.active.get(campaign_id)
        record = tracked.record if tracked else self.store.campaign(campaign_id)
        self.publish("campaign.progress", self.summary(record).model_dump(mode="json"), campaign_id)

    def summary(self, record: CampaignRecord) -> m.CampaignSummary:
        """A campaign's summary: from its tally while the service runs it, otherwise counted by the store —
        a finished campaign of 10,000 experiments costs two indexed queries, not a read of its history."""
        tracked = self.active.get(record.id)
        held = record.status is CampaignStatus.RUNNING and self.estop_active()
        if tracked is not None:
            tally = tracked.tally
            return campaign_summary(tracked.record, tally.campaign, tally.counts, tally.best, held=held)
        try:
            campaign: Campaign | None = Campaign.model_validate(record.spec)
        except ValueError:
            campaign = None
        return campaign_summary(
            record,
            campaign,
            self.store.status_counts(record.id),
            self.store.best_experiment(record.id),
            held=held,
        )

    # -- workers ---------------------------------------------------------------------------------------------

    def in_background(self, coroutine: Coroutine[Any, Any, object]) -> None:
        """Run a short coroutine (a message to a worker) owned by the service: cancelled at shutdown."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def background(self) -> list[asyncio.Task[object]]:
        return list(self._background)

    async def send(self, cell: Cell, message: BaseModel) -> None:
        if cell.identity is None or self.workers is None:
            return
        try:
            await send_frames(self.workers, [cell.identity, p.encode(message)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("workcell %s: could not send %s: %s", cell.name, type(message).__name__, exc)

    # -- what the lab can do now -----------------------------------------------------------------------------

    def tracked(self, campaign_id: str) -> Tracked:
        tracked = self.active.get(campaign_id)
        return tracked if tracked is not None else self.active.track(campaign_id)

    def in_flight(self, campaign_id: str) -> list[Cell]:
        return [c for c in self.cells.values() if c.campaign_id == campaign_id]

    def estop_active(self) -> bool:
        return self.store.lab_state("estop") is not None

    def unhealthy(self) -> dict[str, str]:
        """Instruments out of service, with why: quarantined, suspect, or being serviced."""
        out = {
            name: f"{r.state.value}: {r.reason}"
            for name, r in self.store.instruments().items()
            if r.state is not InstrumentState.OK
        }
        for cell in self.cells.values():
            out.update({name: "being made safe or checked" for name in cell.servicing})
        return out

    def unavailable(self) -> set[str]:
        """Instruments no experiment may lease now: leased, or out of service."""
        return set(self.store.leases()) | set(self.unhealthy())

    def suspects_of(self, experiment: ExperimentRecord, why: str) -> dict[str, str]:
        """Instruments the experiment was moving (a motion sent, never acknowledged) when it was cut off."""
        out: dict[str, str] = {}
        for entry in unacknowledged(self.store.journal(experiment.id)):
            if entry.command in MOTION and entry.instrument:
                out[entry.instrument] = (
                    f"{why} while it ran {entry.command} on {entry.device or entry.instrument}"
                )
        return out
