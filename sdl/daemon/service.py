"""The lab service: the process that holds the store and the schedule, and outlives the workers.

It owns the lab (one service per store, by claim), adopts the campaigns it ran before a crash and marks
what was in flight (`sdl.loop.lifecycle`), starts the simulated lab if the lab file names one, opens its
sockets, and runs its collaborators on one asyncio loop: the supervisor keeps one worker per workcell alive
(`sdl.daemon.supervision`), the dispatcher keeps every free workcell busy (`sdl.daemon.dispatch`), the API's
handlers answer requests (`sdl.daemon.handlers`); they share the lab's state (`sdl.daemon.state`). Whatever
else the caller wants served on the same loop — the dashboard, for `sdl daemon --http` — comes in as a
:class:`Frontend`.

Everything happens on that one loop (the store is written from here, or by a worker for the experiment it
runs), so the service has no locks; only the store's checkpoint runs in a thread, on a connection of its
own, so that API requests never wait for the log to be copied and synced. Its decision records:
docs/decisions/0004 to 0006.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol

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
from sdl.api.models import Request
from sdl.api.server import ApiServer, Execute, local_caller
from sdl.api.wire import limit_socket
from sdl.daemon.cells import WorkerLaunch
from sdl.daemon.dispatch import Dispatcher
from sdl.daemon.documents import CurveServer, DocumentProxy, bind_again
from sdl.daemon.handlers import Handlers
from sdl.daemon.health import HealthKeeper
from sdl.daemon.heap import fix_mmap_threshold, freeze_startup_heap, return_free_memory
from sdl.daemon.leases import LeaseGrants
from sdl.daemon.proposer import Proposer
from sdl.daemon.state import LabState
from sdl.daemon.subscribers import Guard, publisher
from sdl.daemon.supervision import Supervisor
from sdl.execution.bringup import SimulatedLab, simulator_command
from sdl.execution.provenance import lab_provenance
from sdl.loop.lifecycle import adopt
from sdl.spec.campaign import fill
from sdl.spec.lab import LabSpec
from sdl.spec.status import CampaignStatus, Cause
from sdl.store import HEARTBEAT_S, STALE_AFTER_S, Store, new_owner

log = logging.getLogger("sdl.daemon")

SERVICE_CRASHED = (
    "the lab service stopped while this experiment was in flight; its physical outcome is unknown"
)


class Frontend(Protocol):
    """Something served from inside the service's process, on its loop: the dashboard of `sdl daemon --http`
    (wired in by the CLI: the service does not know what it is)."""

    @property
    def url(self) -> str:
        """Where it is reached (written to daemon.json)."""
        ...

    def bind(self) -> None:
        """Take its address now, before daemon.json names it."""
        ...

    def serve(self, state: LabState, execute: Execute) -> Coroutine[Any, Any, None]:
        """Serve until cancelled."""
        ...


def is_daemon_owner(owner: str | None) -> bool:
    return owner is None or owner.startswith("daemon:")


class LabService:
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
        frontend: Frontend | None = None,
    ) -> None:
        self.lab = lab
        self.data_dir = Path(data_dir)
        self.api_address, self.events_address, self.documents_address = api, events, documents
        self.on_stop = self.stop_mode = on_stop
        self.stop_timeout = stop_timeout
        self.simulator_command = simulator
        self.worker_env = worker_env or {}
        self.keyring = KeyRing(keys or self.data_dir / KEYS_FILE)
        self.curve = curve
        self.frontend = frontend
        self.owner = new_owner("daemon")
        self.state: LabState | None = None
        self.supervisor: Supervisor | None = None
        self.proposer = Proposer()
        self.simulated: SimulatedLab | None = None
        self.addresses: dict[str, Any] = {}
        self.stop_requested = asyncio.Event()
        self._context = zmq.asyncio.Context()
        self._proxy: DocumentProxy | None = None
        self._authenticator: ServiceAuthenticator | None = None
        self._server_public: bytes | None = None
        self._server_secret: bytes | None = None
        self._allowed_keys: set[str] = set()
        self._refusals = RefusalThrottle()
        self._monitors: dict[str, zmq.asyncio.Socket] = {}
        self._events_guard: Guard | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- starting ------------------------------------------------------------------------------------------

    def open(self) -> tuple[LabState, HealthKeeper, LeaseGrants]:
        """Claim the lab, adopt the campaigns it ran, mark what was in flight, start the simulator."""
        store = Store(self.data_dir)
        store.claim_lab(self.owner, stale_after=STALE_AFTER_S)
        store.ensure_instruments(self.lab.instruments)
        state = self.state = LabState(self.lab, store, self.owner, self.keyring, curve=self.curve)
        leases = LeaseGrants(state)
        health = HealthKeeper(state, leases)
        suspects: dict[str, str] = {}
        for record in store.campaigns():
            if record.status is not CampaignStatus.RUNNING or not is_daemon_owner(record.owner):
                continue
            for experiment in adopt(store, record.id, self.owner, SERVICE_CRASHED):
                suspects.update(state.suspects_of(experiment, "the lab service stopped"))
                state.publish_experiment(store.experiment(experiment.id))
            state.active.track(record.id)
        for name, why in suspects.items():
            health.suspect(name, why)
        self._start_simulator()
        return state, health, leases

    def _start_simulator(self) -> None:
        if self.lab.simulated is None:
            self.addresses = {name: spec.address for name, spec in self.lab.instruments.items()}
            return
        needed = {f"{i}.{e}" for spec in self.lab.instruments.values() for i, e in spec.placeholders()}
        command = self.simulator_command or simulator_command(self.lab.simulated, self.lab.speed)
        self.simulated = SimulatedLab(command)
        endpoints = self.simulated.start(needed, self.lab.startup_timeout)
        self.addresses = {name: fill(spec.address, endpoints) for name, spec in self.lab.instruments.items()}

    def bind(self, state: LabState) -> tuple[zmq.asyncio.Socket, WorkerLaunch]:
        """Open the API, event, worker and document sockets; write where they are to daemon.json. Returns the
        API socket and how workers are started (they connect to the worker socket)."""
        proxy_curve = None
        if self.curve:
            public, secret, public_file = server_pair(self.data_dir)
            self._server_public, self._server_secret = public, secret
            self._allowed_keys = {e.public_key for e in self.keyring}
            self._authenticator = ServiceAuthenticator(self._context, self.keyring, self._refused)
            self._authenticator.start()
            proxy_curve = CurveServer(public, secret, self.keyring, self._refused_threadsafe)
            log.info("CurveZMQ on every socket; clients need the service's public key %s", public_file)
        api_socket = self._socket(zmq.ROUTER, API)
        limit_socket(api_socket)
        self.api_address = _bind(api_socket, self.api_address)
        events = self._open_events()
        if self.curve:
            self._monitors = {API: api_socket.get_monitor_socket(HANDSHAKE_FAILED)}
        workers = self._socket(zmq.ROUTER)
        worker_address = _bind(workers, "tcp://127.0.0.1:0")
        self._proxy = DocumentProxy(self.documents_address, proxy_curve).start()
        self.documents_address = self._proxy.out_address
        if self.frontend is not None:
            self.frontend.bind()  # before daemon.json names its address
        state.events, state.workers = events, workers
        state.events_address, state.documents_address = self.events_address, self.documents_address
        info = {"pid": os.getpid(), "api": self.api_address, "events": self.events_address,
                "documents": self.documents_address, "lab": self.lab.name, "curve": self.curve,
                "server_key": self._server_public.decode() if self._server_public else None,
                "http": self.frontend.url if self.frontend else None}  # fmt: skip
        (self.data_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        log.info(
            "API on %s, events on %s, documents on %s",
            self.api_address,
            self.events_address,
            self.documents_address,
        )
        launch = WorkerLaunch(
            manager=worker_address,
            data_dir=str(self.data_dir),
            lab=self.lab,
            addresses=self.addresses,
            documents=self._proxy.in_address,
            lab_provenance=lab_provenance(self.lab, self.lab.simulated, name=self.lab.name),
            parent_pid=os.getpid(),
            env=self.worker_env,
        )
        return api_socket, launch

    def _open_events(self, *, again: bool = False) -> zmq.asyncio.Socket:
        """The event publisher, bound (``again``: to the address its predecessor held), and the guard that
        bounds what its subscribers make it keep (whose ``watch()`` runs with the service's tasks)."""
        socket = self._socket(zmq.XPUB, EVENTS)
        publisher(socket)
        if again:
            bind_again(socket, self.events_address)
        else:
            self.events_address = _bind(socket, self.events_address)
        also = HANDSHAKE_FAILED if self.curve else 0
        self._events_guard = Guard(socket, also, self._events_handshake)
        return socket

    def _events_handshake(self, event: int, value: int) -> None:
        why = handshake_refusal(event, value)
        if why is not None:
            self._refused(EVENTS, "no key", why, None)

    def _socket(self, kind: int, domain: str | None = None) -> zmq.asyncio.Socket:
        """A socket; with CurveZMQ and a ZAP ``domain`` (a socket clients reach), a CURVE server."""
        socket = self._context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        if self.curve and domain is not None:
            assert self._server_public is not None and self._server_secret is not None
            make_server(socket, self._server_public, self._server_secret, domain)
        return socket

    # -- access ----------------------------------------------------------------------------------------------

    def _refused(self, domain: str, who: str, why: str, origin: str | None) -> None:
        """A connection refused at the handshake: to the audit log (repeats at most once a minute)."""
        if self.state is not None and self._refusals.due(domain, who, why, origin or ""):
            self.state.store.audit(who, f"connect.{domain}", why, origin=origin)

    def _refused_threadsafe(self, domain: str, who: str, why: str, origin: str | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._refused, domain, who, why, origin)

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
        if not self.curve or self.state is None:
            return
        allowed = {e.public_key for e in self.keyring}
        removed = self._allowed_keys - allowed
        self._allowed_keys = allowed
        if not removed:
            return
        log.info(
            "%d key(s) removed from the allow-list: dropping event and document subscribers", len(removed)
        )
        old, self.state.events = self.state.events, None
        if self._events_guard is not None:
            self._events_guard.close()
        if old is not None:
            old.close(linger=0)
        self.state.events = self._open_events(again=True)
        assert self._events_guard is not None
        self.state.in_background(self._events_guard.watch())
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

    def _audit(self, caller: Caller, request: Request, result: str) -> None:
        assert self.state is not None
        target = getattr(request, "campaign_id", None) or getattr(request, "name", None)
        arguments = request.model_dump(mode="json", exclude={"text"})
        self.state.store.audit(
            caller.name, request.method, result, origin=caller.origin, target=target, arguments=arguments
        )

    # -- running and stopping ------------------------------------------------------------------------------

    def run(self) -> int:
        crashpoints.role = "service"
        fix_mmap_threshold()
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        try:
            self._loop = loop
            state, health, leases = self.open()
            api_socket, launch = self.bind(state)
            supervisor = self.supervisor = Supervisor(state, health, leases, launch)
            dispatcher = Dispatcher(state, health, self.proposer, self.addresses)
            handlers = Handlers(
                state,
                health,
                supervisor,
                stop=lambda abort: self.request_stop(abort=abort),
                keys_changed=self.keys_changed,
            )
            authenticate = CurveCallers(self.keyring) if self.curve else local_caller
            server = ApiServer(api_socket, handlers.table(), authenticate=authenticate, audit=self._audit)
            supervisor.start_workers()
            await self.proposer.start()
            tasks = [
                asyncio.create_task(server.serve(), name="api"),
                asyncio.create_task(supervisor.serve_workers(), name="workers"),
                asyncio.create_task(supervisor.supervise(), name="supervise"),
                asyncio.create_task(dispatcher.schedule(), name="schedule"),
                asyncio.create_task(self._heartbeat(state), name="heartbeat"),
                asyncio.create_task(self._return_memory(server), name="memory"),
            ]
            assert self._events_guard is not None
            tasks.append(asyncio.create_task(self._events_guard.watch(), name="subscribers"))
            if self.curve:
                tasks += [
                    asyncio.create_task(self._watch_handshakes(api_socket, API), name="zap-api"),
                    asyncio.create_task(self._watch_keys(), name="keys"),
                ]
            if self.frontend is not None:
                tasks.append(asyncio.create_task(self.frontend.serve(state, server.execute), name="http"))
            freeze_startup_heap()
            state.publish("lab.started", {"lab": self.lab.name, "pid": os.getpid()})
            log.info(
                "lab %r is up: %d workcell(s), %d instrument(s)",
                self.lab.name,
                len(state.cells),
                len(self.lab.instruments),
            )
            await self.stop_requested.wait()
            state.stopping = True
            state.publish("lab.stopping", {"mode": self.stop_mode})
            await supervisor.stop_workers(self.stop_mode == "abort", self.stop_timeout)
            await self.proposer.close()
            background = state.background()
            for task in [*tasks, *background]:
                task.cancel()
            await asyncio.gather(*tasks, *background, return_exceptions=True)
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
            if self.supervisor is not None:
                self.supervisor.abort_all(Cause.SHUTDOWN, "the lab service is stopping")
        self.stop_requested.set()

    def _close(self) -> None:
        state = self.state
        if state is not None:
            for cell in state.cells.values():
                cell.kill()
        self.proposer.kill()
        if self._proxy is not None:
            self._proxy.stop()
        if self._authenticator is not None:
            self._authenticator.stop()
        self._context.destroy(linger=0)
        if self.simulated is not None:
            self.simulated.stop()
        if state is not None:
            (self.data_dir / INFO_FILE).unlink(missing_ok=True)
            state.store.set_lab_state("daemon", None)
            state.store.close()
            self.state = None
        log.info("lab service stopped")

    async def _return_memory(self, server: ApiServer) -> None:
        """After the API refused large messages or a subscriber was cut, give what they took back to the
        system (``sdl.daemon.heap``), at most once a second."""
        cuts = 0
        while True:
            await asyncio.sleep(1.0)
            guard = self._events_guard
            if server.discarded or (guard is not None and guard.cuts != cuts):
                server.discarded = 0
                cuts = guard.cuts if guard is not None else 0
                return_free_memory()

    async def _heartbeat(self, state: LabState) -> None:
        """Keep the claims alive, count the campaigns' wall time, and checkpoint the store on a schedule (so
        the main file alone is a whole store, however busy the lab)."""
        store = state.store
        while True:
            try:
                held = store.heartbeat(self.owner)
                store.lab_heartbeat(self.owner, pid=os.getpid())
                for tracked in state.active:
                    if tracked.id in held:
                        state.active.refresh_record(tracked.id)
                    else:
                        log.error(
                            "campaign %s was taken over by another process; no longer run here", tracked.id
                        )
                        state.active.forget(tracked.id)
                await asyncio.to_thread(store.checkpoint)  # off the loop: requests do not wait on it
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(HEARTBEAT_S)


def _bind(socket: zmq.asyncio.Socket, address: str) -> str:
    """Bind, choosing a free port for ':0'; return the address actually bound."""
    if address.endswith(":0"):
        port = socket.bind_to_random_port(address[: -len(":0")])
        return f"{address[: -len(':0')]}:{port}"
    socket.bind(address)
    return address
