"""The lab service: the process that holds the store and the schedule, and outlives the workers.

It owns the lab (one service per store, by claim), adopts the campaigns it ran before a crash and marks
what was in flight, starts the simulated lab if the lab file names one, keeps one worker per workcell
alive (`sdl.daemon.supervision`), and keeps every free workcell busy (`sdl.daemon.dispatch`).

Everything happens on one asyncio loop (the store is written from here, or by a worker for the experiment
it runs), so the service itself has no locks; only the store's checkpoint runs in a thread, on a connection
of its own, so that API requests never wait for the log to be copied and synced. Its decision records:
docs/decisions/0004 to 0006.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from sdl import crashpoints
from sdl.access.curve import (
    API,
    EVENTS,
    HANDSHAKE_FAILED,
    CurveCallers,
    RefusalThrottle,
    ServiceAuthenticator,
    handshake_refusal,
    make_server,
)
from sdl.access.keys import KEYS_FILE, KeyRing, server_pair
from sdl.access.roles import Caller
from sdl.api.client import INFO_FILE
from sdl.api.models import EventRecord
from sdl.api.server import ApiServer, local_caller
from sdl.crashpoints import crash_point
from sdl.daemon import protocol as p
from sdl.daemon.active import ActiveCampaigns
from sdl.daemon.cells import Cell
from sdl.daemon.dispatch import Dispatching
from sdl.daemon.documents import CurveServer, DocumentProxy, _bind_again
from sdl.daemon.health import HealthKeeper
from sdl.daemon.heap import freeze_startup_heap
from sdl.daemon.proposer import Proposer
from sdl.daemon.supervision import ABORT_GRACE_S, Supervision, Waiting
from sdl.execution.bringup import SimulatedLab, simulator_command
from sdl.execution.provenance import lab_provenance
from sdl.spec.campaign import fill
from sdl.spec.lab import LabSpec
from sdl.spec.status import CampaignStatus, Cause, ExperimentStatus
from sdl.store import HEARTBEAT_S, STALE_AFTER_S, ExperimentRecord, Store, new_owner

if TYPE_CHECKING:
    from sdl.dashboard.serve import HttpOptions

log = logging.getLogger("sdl.daemon")

SERVICE_CRASHED = (
    "the lab service stopped while this experiment was in flight; its physical outcome is unknown"
)


def is_daemon_owner(owner: str | None) -> bool:
    return owner is None or owner.startswith("daemon:")


class LabService(Dispatching, Supervision):
    def __init__(
        self,
        lab: LabSpec,
        data_dir: Path,
        *,
        api: str,
        events: str,
        documents: str,
        on_stop: str = "finish",
        stop_timeout: float = 60.0,
        simulator: list[str] | None = None,
        worker_env: dict[str, str] | None = None,
        keys: Path | None = None,
        curve: bool = False,
        http: HttpOptions | None = None,
    ) -> None:
        self.lab = lab
        self.data_dir = Path(data_dir)
        self.api_address, self.events_address, self.documents_address = api, events, documents
        self.on_stop = self.stop_mode = on_stop
        self.stop_timeout = stop_timeout
        self.simulator_command = simulator
        self.worker_env = worker_env or {}
        self.owner = new_owner("daemon")
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.store: Store | None = None
        self.active: ActiveCampaigns | None = None
        self.health: HealthKeeper | None = None
        self.cells = {name: Cell(name, spec) for name, spec in lab.workcells.items()}
        self.addresses: dict[str, Any] = {}
        self.proposer = Proposer()
        self.exhausted: set[str] = set()
        self.aborted: dict[str, str] = {}
        self.wake = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.stopping = False
        self.simulated: SimulatedLab | None = None
        self.documents_in: str | None = None
        self._context = zmq.asyncio.Context()
        self._proxy: DocumentProxy | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._deferred: list[list[EventRecord]] = []
        self.lease_waiting: list[Waiting] = []
        self.keyring = KeyRing(keys or self.data_dir / KEYS_FILE)
        self.curve = curve
        self.http = http
        self.server_public: bytes | None = None
        self.api: ApiServer | None = None
        self.event_listeners: set[Callable[[EventRecord], None]] = set()
        self._allowed_keys: set[str] = set()
        self._refusals = RefusalThrottle()
        self._monitors: dict[str, zmq.asyncio.Socket] = {}

    # -- starting ------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Claim the lab, adopt the campaigns it ran, mark what was in flight, start the simulator."""
        self.store = store = Store(self.data_dir)
        store.claim_lab(self.owner, stale_after=STALE_AFTER_S)
        store.ensure_instruments(self.lab.instruments)
        self.health = HealthKeeper(self)
        self.active = ActiveCampaigns(store)
        suspects: dict[str, str] = {}
        for record in store.campaigns():
            if record.status is not CampaignStatus.RUNNING or not is_daemon_owner(record.owner):
                continue
            store.claim_campaign(record.id, self.owner)
            for experiment in store.recover(record.id, SERVICE_CRASHED, Cause.CRASH):
                log.warning(
                    "campaign %s: experiment %d was in flight; interrupted", record.id, experiment.seq
                )
                suspects.update(self.suspects_of(experiment, "the lab service stopped"))
                self.publish(
                    "experiment.interrupted", self.experiment_body(store.experiment(experiment.id)), record.id
                )
            self.active.track(record.id)
        for name, why in suspects.items():
            self.health.suspect(name, why)
        self._start_simulator()

    def _start_simulator(self) -> None:
        if self.lab.simulated is None:
            self.addresses = {name: spec.address for name, spec in self.lab.instruments.items()}
            return
        needed = {f"{i}.{e}" for spec in self.lab.instruments.values() for i, e in spec.placeholders()}
        command = self.simulator_command or simulator_command(self.lab.simulated, self.lab.speed)
        self.simulated = SimulatedLab(command)
        endpoints = self.simulated.start(needed, self.lab.startup_timeout)
        self.addresses = {name: fill(spec.address, endpoints) for name, spec in self.lab.instruments.items()}

    def bind(self) -> None:
        """Open the API, event and document sockets; write where they are to daemon.json."""
        proxy_curve = None
        if self.curve:
            public, secret, public_file = server_pair(self.data_dir)
            self.server_public, self._server_secret = public, secret
            self._allowed_keys = {e.public_key for e in self.keyring}
            self._authenticator = ServiceAuthenticator(self._context, self.keyring, self._refused)
            self._authenticator.start()
            proxy_curve = CurveServer(public, secret, self.keyring, self._refused_threadsafe)
            log.info("CurveZMQ on every socket; clients need the service's public key %s", public_file)
        self.api_socket = self._socket(zmq.ROUTER, API)
        self.api_socket.setsockopt(zmq.MAXMSGSIZE, 16 << 20)
        self.api_address = _bind(self.api_socket, self.api_address)
        self.events_socket = self._socket(zmq.PUB, EVENTS)
        self.events_address = _bind(self.events_socket, self.events_address)
        if self.curve:
            self._monitors = {
                API: self.api_socket.get_monitor_socket(HANDSHAKE_FAILED),
                EVENTS: self.events_socket.get_monitor_socket(HANDSHAKE_FAILED),
            }
        self.worker_socket = self._socket(zmq.ROUTER)
        self.worker_address = _bind(self.worker_socket, "tcp://127.0.0.1:0")
        self._proxy = DocumentProxy(self.documents_address, proxy_curve).start()
        self.documents_in, self.documents_address = self._proxy.in_address, self._proxy.out_address
        if self.http is not None:
            self._http_socket = self.http.bind()  # before daemon.json names its port
        info = {"pid": os.getpid(), "api": self.api_address, "events": self.events_address,
                "documents": self.documents_address, "lab": self.lab.name, "curve": self.curve,
                "server_key": self.server_public.decode() if self.server_public else None,
                "http": self.http.url if self.http else None}  # fmt: skip
        (self.data_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        log.info(
            "API on %s, events on %s, documents on %s",
            self.api_address,
            self.events_address,
            self.documents_address,
        )

    def _socket(self, kind: int, domain: str | None = None) -> zmq.asyncio.Socket:
        """A socket; with CurveZMQ and a ZAP ``domain`` (a socket clients reach), a CURVE server."""
        socket = self._context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        if self.curve and domain is not None:
            assert self.server_public is not None
            make_server(socket, self.server_public, self._server_secret, domain)
        return socket

    # -- access ----------------------------------------------------------------------------------------------

    def _refused(self, domain: str, who: str, why: str, origin: str | None) -> None:
        """A connection refused at the handshake: to the audit log (repeats at most once a minute)."""
        if self.store is not None and self._refusals.due(domain, who, why, origin or ""):
            self.store.audit(who, f"connect.{domain}", why, origin=origin)

    def _refused_threadsafe(self, domain: str, who: str, why: str, origin: str | None) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(self._refused, domain, who, why, origin)

    async def _watch_handshakes(self, socket: zmq.asyncio.Socket, domain: str) -> None:
        """Audit clients that could not even start a CURVE handshake (no key, or not CurveZMQ at all).
        The monitor is opened in :meth:`bind`, before daemon.json tells clients where to connect."""
        monitor = self._monitors[domain]
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                why = handshake_refusal(event["event"], event["value"])
                if why is not None:
                    self._refused(domain, "no key", why, None)
        except zmq.ZMQError:
            pass  # the socket was replaced (see keys_changed); its successor has a watcher of its own
        finally:
            monitor.close(linger=0)

    def keys_changed(self) -> None:
        """After the allow-list changed: if a key went, drop every subscriber of the events and documents so
        the removed key cannot keep listening (the others reconnect, pass the handshake again and catch up
        on the events they missed through ``events.since``). Requests are checked one by one anyway."""
        if not self.curve:
            return
        allowed = {e.public_key for e in self.keyring}
        removed = self._allowed_keys - allowed
        self._allowed_keys = allowed
        if not removed:
            return
        log.info(
            "%d key(s) removed from the allow-list: dropping event and document subscribers", len(removed)
        )
        old = self.events_socket
        self.events_socket = None
        old.disable_monitor()
        old.close(linger=0)
        socket = self._socket(zmq.PUB, EVENTS)
        self._monitors[EVENTS] = socket.get_monitor_socket(HANDSHAKE_FAILED)
        _bind_again(socket, self.events_address)
        self.events_socket = socket
        self.in_background(self._watch_handshakes(socket, EVENTS))
        if self._proxy is not None:
            self._proxy.reopen_output()

    async def _watch_keys(self) -> None:
        """The allow-list may be edited on disk (`sdl keys remove`): notice it within a second."""
        while True:
            await asyncio.sleep(1.0)
            try:
                if self.keyring.refresh():
                    self.keys_changed()
            except Exception:
                log.exception("could not read the allow-list %s", self.keyring.path)

    def worker_config(self, cell: Cell) -> p.WorkerConfig:
        names = cell.spec.instruments
        return p.WorkerConfig(
            workcell=cell.name,
            manager=self.worker_address,
            token="",
            data_dir=str(self.data_dir),
            instruments={n: self.lab.instruments[n] for n in names},
            addresses={n: self.addresses.get(n) for n in names},
            documents=self.documents_in,
            parent_pid=os.getpid(),
            lab_provenance=lab_provenance(self.lab, self.lab.simulated, name=self.lab.name),
        )

    # -- running and stopping ------------------------------------------------------------------------------

    def run(self) -> int:
        crashpoints.role = "service"
        return asyncio.run(self._main())

    async def _main(self) -> int:
        from sdl.daemon.handlers import Handlers

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        try:
            self._loop = loop
            self.open()
            self.bind()
            authenticate = CurveCallers(self.keyring) if self.curve else local_caller
            server = self.api = ApiServer(
                self.api_socket, Handlers(self).table(), authenticate=authenticate, audit=self._audit
            )
            for cell in self.cells.values():
                cell.spawn(self.worker_config(cell), self.worker_env)
            await self.proposer.start()
            tasks = [
                asyncio.create_task(server.serve(), name="api"),
                asyncio.create_task(self._serve_workers(), name="workers"),
                asyncio.create_task(self._supervise(), name="supervise"),
                asyncio.create_task(self._schedule_loop(), name="schedule"),
                asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            ]
            if self.curve:
                tasks += [
                    asyncio.create_task(self._watch_handshakes(self.api_socket, API), name="zap-api"),
                    asyncio.create_task(self._watch_handshakes(self.events_socket, EVENTS), name="zap-ev"),
                    asyncio.create_task(self._watch_keys(), name="keys"),
                ]
            if self.http is not None:
                from sdl.dashboard.serve import serve_in_service

                serving = serve_in_service(self, self.http, self._http_socket)
                tasks.append(asyncio.create_task(serving, name="http"))
            freeze_startup_heap()
            self.publish("lab.started", {"lab": self.lab.name, "pid": os.getpid()})
            log.info(
                "lab %r is up: %d workcell(s), %d instrument(s)",
                self.lab.name,
                len(self.cells),
                len(self.lab.instruments),
            )
            await self.stop_requested.wait()
            await self._shut_down()
            for task in [*tasks, *self._background]:
                task.cancel()
            await asyncio.gather(*tasks, *self._background, return_exceptions=True)
        finally:
            self._close()
        return 0

    def request_stop(self, sig: int | None = None, *, abort: bool | None = None) -> None:
        if sig is not None:
            log.warning(
                "%s: stopping the lab service (%s work in flight)", signal.Signals(sig).name, self.on_stop
            )
        if abort is not None:
            self.stop_mode = "abort" if abort else self.on_stop
        if self.stop_requested.is_set() and sig is not None:  # a second signal: abort whatever still runs
            self.stop_mode = "abort"
            self.abort_all(Cause.SHUTDOWN, "the lab service is stopping")
        self.stop_requested.set()

    async def _wait_idle(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while any(c.state == "busy" for c in self.cells.values()):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _shut_down(self) -> None:
        self.stopping = True
        self.publish("lab.stopping", {"mode": self.stop_mode})
        if self.stop_mode == "abort":
            self.abort_all(Cause.SHUTDOWN, "the lab service is stopping")
        if not await self._wait_idle(self.stop_timeout):
            log.warning("work still in flight after %g s: aborting it", self.stop_timeout)
            self.abort_all(Cause.SHUTDOWN, "the lab service is stopping")
            await self._wait_idle(ABORT_GRACE_S)
        for cell in self.cells.values():
            if cell.identity is not None and cell.alive:
                await self.send(cell, p.Shutdown())
            elif cell.alive:  # still starting: it has touched no hardware, nothing to finish
                cell.kill()
        # Until supervision has accounted for every worker (a clean exit is logged as stopped, anything
        # else as lost), not merely until the processes are gone.
        deadline = time.monotonic() + 20
        while any(c.process is not None for c in self.cells.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for cell in self.cells.values():
            if cell.alive:
                log.error("workcell %s: worker did not exit; killing it", cell.name)
            cell.kill()
        await self.proposer.close()

    def _close(self) -> None:
        for cell in self.cells.values():
            cell.kill()
        self.proposer.kill()
        if self._proxy is not None:
            self._proxy.stop()
        authenticator = getattr(self, "_authenticator", None)
        if authenticator is not None:
            authenticator.stop()
        self._context.destroy(linger=0)
        if self.simulated is not None:
            self.simulated.stop()
        if self.store is not None:
            (self.data_dir / INFO_FILE).unlink(missing_ok=True)
            self.store.set_lab_state("daemon", None)
            self.store.close()
            self.store = None
        log.info("lab service stopped")

    async def _heartbeat_loop(self) -> None:
        """Keep the claims alive, count the campaigns' wall time, and checkpoint the store on a schedule (so
        the main file alone is a whole store, however busy the lab)."""
        assert self.store is not None and self.active is not None
        while True:
            try:
                held = self.store.heartbeat(self.owner)
                self.store.lab_heartbeat(self.owner, pid=os.getpid())
                for tracked in self.active:
                    if tracked.id in held:
                        self.active.refresh_record(tracked.id)
                    else:
                        log.error(
                            "campaign %s was taken over by another process; no longer run here", tracked.id
                        )
                        self.active.forget(tracked.id)
                await asyncio.to_thread(self.store.checkpoint)  # off the loop: requests do not wait on it
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(HEARTBEAT_S)

    # -- events and audit ----------------------------------------------------------------------------------

    def publish(self, topic: str, body: dict[str, Any], campaign_id: str | None = None) -> None:
        """Record an event in the store, then publish it (a subscriber that misses it catches up).

        Inside :meth:`recording`, the event commits with the state change it announces and goes out after.
        """
        assert self.store is not None
        event = self.store.append_event(topic, body, campaign_id)
        record = EventRecord(
            seq=event.seq, at=event.at, topic=topic, campaign_id=campaign_id, body=event.body
        )
        if self._deferred:
            self._deferred[-1].append(record)
        else:
            self._send_event(record)

    def _send_event(self, record: EventRecord) -> None:
        for listener in list(self.event_listeners):
            try:
                listener(record)
            except Exception:
                log.exception("an event listener failed")
        socket = getattr(self, "events_socket", None)
        if socket is None:
            return
        try:
            socket.send_multipart([record.topic.encode(), record.model_dump_json().encode()], zmq.NOBLOCK)
        except zmq.ZMQError:
            log.debug("event %d not published", record.seq)

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Store writes and the events announcing them in one transaction; the events go out after it."""
        assert self.store is not None
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

    def publish_progress(self, campaign_id: str) -> None:
        from sdl.daemon.handlers import summarize

        assert self.store is not None and self.active is not None
        tracked = self.active.get(campaign_id)
        record = tracked.record if tracked else self.store.campaign(campaign_id)
        progress = summarize(self.store, self.active, record)
        self.publish("campaign.progress", progress.model_dump(mode="json"), campaign_id)

    def experiment_body(self, e: ExperimentRecord) -> dict[str, Any]:
        return {
            "experiment_id": e.id,
            "seq": e.seq,
            "status": e.status.value,
            "workcell": e.workcell,
            "recipe": e.recipe,
            "measurements": e.measurements,
            "loss": e.objective,
            "failure": e.failure,
            "cause": e.cause.value if e.cause else None,
            "fault_kind": e.fault_kind,
            "fault_instrument": e.fault_instrument,
            "decision": None if e.decision is None else dict(e.decision.__dict__),
        }

    def _audit(self, caller: Caller, request: Any, result: str) -> None:
        assert self.store is not None
        target = getattr(request, "campaign_id", None) or getattr(request, "name", None)
        arguments = request.model_dump(mode="json", exclude={"text"})
        self.store.audit(
            caller.name, request.method, result, origin=caller.origin, target=target, arguments=arguments
        )


def _bind(socket: zmq.asyncio.Socket, address: str) -> str:
    """Bind, choosing a free port for ':0'; return the address actually bound."""
    if address.endswith(":0"):
        port = socket.bind_to_random_port(address[: -len(":0")])
        return f"{address[: -len(':0')]}:{port}"
    socket.bind(address)
    return address


__all__ = ["ExperimentStatus", "LabService"]
