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
from sdl.api.convert import campaign_summary, event_record, experiment_event
from sdl.api.wire import send_frames
from sdl.daemon import protocol as p
from sdl.daemon.active import ActiveCampaigns, Tracked
from sdl.daemon.cells import Agents, Cell
from sdl.execution.experiment import MOTION
from sdl.spec.best import Leaders, leaders
from sdl.spec.campaign import Campaign
from sdl.spec.lab import LabSpec
from sdl.spec.status import CampaignStatus, ExperimentStatus, InstrumentState
from sdl.store import CampaignRecord, ExperimentRecord, Store, StoreFull, unacknowledged
from sdl.store.schema import now_iso

log = logging.getLogger("sdl.daemon")

EventListener = Callable[[m.EventRecord], None]

#: The lab-state key under which the store keeps the number of the last status change the stream carried.
ANNOUNCED = "announced"
#: The key of the alert a full disk raises.
STORAGE = "storage"


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
        self.agents: Agents | None = None  # remote workcells' agents, when the lab has any
        #: Called with every event as it goes out (the dashboard served in this process, the metrics).
        self.event_listeners: set[EventListener] = set()
        #: Told how long something took: "proposal", "lease_wait", "store_write" or "api" (the metrics).
        self.timed: Callable[[str, float], None] = _untimed
        #: What needs a person now (the disk is full, recovery gave up on an instrument), by key.
        self.alerts: dict[str, m.Alert] = {}
        #: Store writes the disk had no room for, made in this order once it has (see :meth:`write`).
        self.owed: list[tuple[str, Callable[[], object]]] = []
        self._deferred: list[list[m.EventRecord]] = []
        #: Events sent while the disk was full, recorded (with these numbers) once it is not.
        self._unwritten: list[m.EventRecord] = []
        self._background: set[asyncio.Task[object]] = set()

    # -- events ----------------------------------------------------------------------------------------------

    def publish(self, topic: str, body: dict[str, Any], campaign_id: str | None = None) -> None:
        """Record an event in the store, then publish it (a subscriber that misses it catches up).

        Inside :meth:`recording`, the event commits with the state change it announces and goes out after.
        Outside, if the disk is full, it goes out now with the next number and is recorded under that
        number once there is room (``events.since`` serves it from memory meanwhile).
        """
        if not self._deferred:
            try:
                with self.recording():
                    self.publish(topic, body, campaign_id)
            except StoreFull as exc:
                record = m.EventRecord(
                    seq=self.last_event_seq() + 1,
                    at=now_iso(),
                    topic=topic,
                    campaign_id=campaign_id,
                    body=body,
                )
                self._unwritten.append(record)
                self._send_event(record)
                self.storage_failed(str(exc))
            return
        event = self.store.append_event(topic, body, campaign_id)
        self._deferred[-1].append(
            m.EventRecord(seq=event.seq, at=event.at, topic=topic, campaign_id=campaign_id, body=event.body)
        )

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
        """Store writes and the events announcing them in one transaction; the events go out after it.

        Events sent while the disk was full are recorded first, in the same transaction, so the store's
        numbering stays the stream's."""
        self._deferred.append([])
        unwritten = list(self._unwritten) if len(self._deferred) == 1 else []
        try:
            with self.store.transaction():
                for record in unwritten:
                    self.store.append_event(
                        record.topic, record.body, record.campaign_id, seq=record.seq, at=record.at
                    )
                yield
        except BaseException:
            self._deferred.pop()
            raise
        del self._unwritten[: len(unwritten)]
        for record in self._deferred.pop():
            self._send_event(record)

    def last_event_seq(self) -> int:
        """The number of the latest event, recorded or not yet."""
        return self._unwritten[-1].seq if self._unwritten else self.store.last_event_seq()

    def events_since(
        self, seq: int, limit: int, campaign_id: str | None = None
    ) -> tuple[list[m.EventRecord], int]:
        """Events after ``seq`` (the store's, then those not yet recorded), and the latest number."""
        events = [event_record(e) for e in self.store.events_since(seq, limit, campaign_id)]
        events += [
            e
            for e in self._unwritten
            if e.seq > seq and (campaign_id is None or e.campaign_id == campaign_id)
        ]
        return events[:limit], self.last_event_seq()

    def announce(self, *, postpone: bool = True) -> list[tuple[str, int]]:
        """Publish ``experiment.<status>`` for every status change in the store the event stream has not
        carried, in the order they were committed, whoever made them — this service, a worker, a worker
        orphaned by a service that was killed, `sdl run`. Returns the experiments concerned (campaign id,
        experiment id).

        The store's numbering of status changes is the source; how far the stream has got is kept in the
        store with the events, so a restarted service publishes exactly what was not. Inside
        :meth:`recording`, the events commit with the changes; outside, a full disk postpones them (or,
        without ``postpone``, raises :class:`StoreFull`)."""
        touched: list[tuple[str, int]] = []
        try:
            with self.recording():
                held = self.store.lab_state(ANNOUNCED)
                last = int(held["transition"]) if held else 0
                while changes := self.store.transitions_after(last, 500):
                    for number, change in changes:
                        experiment = self.store.experiment(change.experiment_id)
                        body = {**experiment_event(experiment), "status": change.to_status.value}
                        self.publish(f"experiment.{_word(change.to_status)}", body, experiment.campaign_id)
                        touched.append((experiment.campaign_id, experiment.id))
                        last = number
                    self.store.set_lab_state(ANNOUNCED, {"transition": last})
        except StoreFull as exc:
            if self._deferred or not postpone:  # part of a larger transaction: it fails as a whole
                raise
            self.storage_failed(str(exc))
            return []
        return touched

    def caught_up(self, changes: list[tuple[str, int]]) -> None:
        """After :meth:`announce` found changes nobody told this service of (outside any transaction): read
        them into the campaigns' tallies and announce their progress."""
        for campaign_id, experiment_id in changes:
            self.active.refresh_experiment(campaign_id, experiment_id)
        for campaign_id in dict.fromkeys(c for c, _ in changes):
            self.publish_progress(campaign_id)

    def start_announcing(self) -> None:
        """A store no lab service has announced from (new, or only ever run by `sdl run`): its history is
        not news; the stream starts with the changes made from now on."""
        if self.store.lab_state(ANNOUNCED) is None:
            self.store.set_lab_state(ANNOUNCED, {"transition": self.store.last_transition_id()})

    # -- alerts and a full disk ------------------------------------------------------------------------------

    def raise_alert(self, key: str, kind: str, message: str, subject: str | None = None) -> None:
        """Tell people something needs them (``lab.alert``, and ``status`` while it lasts)."""
        current = self.alerts.get(key)
        if current is not None and current.message == message:
            return
        log.error("ALERT: %s", message)
        alert = m.Alert.model_validate(
            {"key": key, "kind": kind, "subject": subject, "message": message,
             "since": current.since if current else now_iso()}
        )  # fmt: skip
        self.alerts[key] = alert
        self.publish("lab.alert", {**alert.model_dump(mode="json"), "active": True})

    def clear_alert(self, key: str, message: str) -> None:
        alert = self.alerts.pop(key, None)
        if alert is None:
            return
        log.warning("alert cleared: %s", message)
        self.publish("lab.alert", {**alert.model_dump(mode="json"), "message": message, "active": False})

    def storage_full(self) -> bool:
        """Whether the disk holding the store is full (then no experiment starts)."""
        return STORAGE in self.alerts

    def storage_failed(self, detail: str) -> None:
        if not self.storage_full():
            self.raise_alert(
                STORAGE,
                "storage",
                f"{detail}. No experiment starts until there is room; results already measured are held "
                "until they can be written, and work resumes by itself",
                str(self.store.data_dir),
            )

    def write(self, what: str, action: Callable[[], object]) -> bool:
        """Make a store write now or, if the disk is full, once there is room, in the order owed (then
        False). For writes that must not be lost: an experiment's end, an audit entry."""
        if not self.owed:
            try:
                action()
                return True
            except StoreFull as exc:
                self.storage_failed(str(exc))
        log.warning("owed to the store until there is room: %s", what)
        self.owed.append((what, action))
        return False

    def pay(self) -> None:
        """Make the writes owed, in order; raises :class:`StoreFull` (keeping the rest) if there is still no
        room."""
        while self.owed:
            what, action = self.owed[0]
            action()
            self.owed.pop(0)
            log.info("written: %s", what)

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
            return campaign_summary(tracked.record, tally.campaign, tally.counts, tally.leaders, held=held)
        try:
            campaign: Campaign | None = Campaign.model_validate(record.spec)
        except ValueError:
            campaign = None
        found: Leaders[ExperimentRecord] = Leaders()
        if campaign is not None and len(campaign.objectives) == 1:
            # One objective: its best is the lowest stored scalar, which the store finds by its index.
            lowest = self.store.lowest_objective(record.id)
            found = leaders(campaign, [lowest] if lowest is not None else [])
        elif campaign is not None:
            found = leaders(campaign, self.store.experiments_with_status(record.id, ExperimentStatus.DONE))
        return campaign_summary(record, campaign, self.store.status_counts(record.id), found, held=held)

    # -- workers ---------------------------------------------------------------------------------------------

    def in_background(self, coroutine: Coroutine[Any, Any, object]) -> None:
        """Run a short coroutine (a message to a worker) owned by the service: cancelled at shutdown."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def background(self) -> list[asyncio.Task[object]]:
        return list(self._background)

    async def send(self, cell: Cell, message: BaseModel) -> None:
        if cell.identity is None:
            return
        if cell.spec.agent is not None:  # through its agent's link, which keeps it until delivered
            if self.agents is not None:
                self.agents.to_cell(cell, message)
            return
        if self.workers is None:
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

    def holds_lab(self) -> bool:
        """Whether the record still names this service as the lab's holder. A service that was silent (hung,
        cut off) may have been replaced by a standby; it must start nothing more, even before its heartbeat
        notices."""
        return (self.store.lab_state("daemon") or {}).get("owner") == self.owner

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


def _word(status: ExperimentStatus) -> str:
    """The topic's word for an experiment's status (``experiment.started`` when it is running)."""
    return "started" if status is ExperimentStatus.RUNNING else status.value


def _untimed(what: str, seconds: float) -> None:
    """Nobody keeps the timings (no metrics are served)."""
