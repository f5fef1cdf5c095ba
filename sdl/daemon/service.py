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
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol

import zmq
import zmq.asyncio

from sdl import crashpoints
from sdl.access.curve import API, ESTOP, CurveCallers
from sdl.access.keys import KEYS_FILE, SERVER_KEY_DIR, KeyRing, server_pair
from sdl.access.owner import owner_entry, owner_key_file
from sdl.api.client import INFO_FILE
from sdl.api.estop import EStopServer
from sdl.api.server import ApiServer, Execute
from sdl.daemon.agents import AgentHub
from sdl.daemon.cells import WorkerLaunch
from sdl.daemon.dispatch import Dispatcher
from sdl.daemon.gatekeeper import Gatekeeper, bind
from sdl.daemon.handlers import Handlers
from sdl.daemon.health import HealthKeeper
from sdl.daemon.heap import fix_mmap_threshold, freeze_startup_heap, return_free_memory
from sdl.daemon.leases import LeaseGrants
from sdl.daemon.metrics import TOKEN_FILE, LabMetrics, MetricsEndpoint, metrics_token
from sdl.daemon.proposer import Proposer
from sdl.daemon.state import LabState
from sdl.daemon.stock import StockKeeper
from sdl.daemon.storage import StorageKeeper
from sdl.daemon.supervision import Supervisor
from sdl.execution.bringup import SimulatedLab, simulator_command
from sdl.execution.provenance import lab_provenance
from sdl.loop.lifecycle import adopt
from sdl.spec.campaign import fill
from sdl.spec.lab import LabSpec
from sdl.spec.status import CampaignStatus, Cause
from sdl.store import HEARTBEAT_S, STALE_AFTER_S, CampaignBusy, Store, StoreFull, new_owner, owner_alive_here

log = logging.getLogger("sdl.daemon")

SERVICE_CRASHED = (
    "the lab service stopped while this experiment was in flight; its physical outcome is unknown"
)


#: How often a standby looks at the lab's claim.
STANDBY_POLL_S = 0.5
#: How long a standby that took the lab over waits before it starts anything: time for the workers of the
#: service it replaced (alive somewhere, but silent) to see the claim move and stop (worker.CLAIM_READ_S).
FENCE_S = 1.5


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
        frontend: Frontend | None = None,
        standby: bool = False,
        metrics: str | None = None,
        agents: str | None = None,
    ) -> None:
        self.lab = lab
        self.data_dir = Path(data_dir)
        self.api_address, self.events_address, self.documents_address = api, events, documents
        self.estop_address = ""  # bound beside the API (see bind)
        self.on_stop = self.stop_mode = on_stop
        self.stop_timeout = stop_timeout
        self.simulator_command = simulator
        self.worker_env = worker_env or {}
        self.keyring = KeyRing(keys or self.data_dir / KEYS_FILE)
        self.frontend = frontend
        self.standby = standby
        self.metrics_address = metrics
        remote = any(w.agent is not None for w in lab.workcells.values())
        self.agents_address = agents or ("tcp://127.0.0.1:0" if remote else None)
        self.agents: AgentHub | None = None
        self.metrics: MetricsEndpoint | None = None
        self.lab_metrics: LabMetrics | None = None
        self.owner = new_owner("daemon")
        self.state: LabState | None = None
        self.supervisor: Supervisor | None = None
        self.proposer = Proposer()
        self.simulated: SimulatedLab | None = None
        self.addresses: dict[str, Any] = {}
        self.stop_requested = asyncio.Event()
        self._context = zmq.asyncio.Context()
        self.gate: Gatekeeper | None = None  # built with the sockets, once the lab's state exists
        self.claimed = False  # whether this process took the lab's claim (only then may it release it)
        self._store: Store | None = None  # the store it claimed the lab in
        self.lost_claim = False

    # -- starting ------------------------------------------------------------------------------------------

    async def stand_by(self) -> bool:
        """Wait (`--standby`) until the lab's claim is free or its holder is gone, and take it; False if the
        service was told to stop first. The holder is gone when its process is seen dead on this machine, or
        when its heartbeat is older than the stale limit (a holder on another machine, or a dead one)."""
        store = Store(self.data_dir)
        host, told = socket.gethostname(), ""
        try:
            while not self.stop_requested.is_set():
                holder = (store.lab_state("daemon") or {}).get("owner")
                try:
                    store.claim_lab(self.owner, stale_after=STALE_AFTER_S)
                except CampaignBusy as exc:
                    if str(exc) != told:
                        told = str(exc)
                        log.info("standing by: %s; taking over once its heartbeat is %g s old", exc,
                                 STALE_AFTER_S)  # fmt: skip
                    store.stand_by(self.owner, host, os.getpid())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop_requested.wait(), STANDBY_POLL_S)
                    continue
                self.claimed, self._store = True, store
                store.stand_down(self.owner)
                log.warning("standby: took the lab over (%s)", told or "nobody held it")
                if holder and owner_alive_here(holder) is not False:
                    # Not seen dead: its workers may still run somewhere. They read the claim once a second
                    # and stop when it moved; nothing starts here before then.
                    await asyncio.sleep(FENCE_S)
                return True
            store.stand_down(self.owner)
        except BaseException:
            store.close()
            raise
        store.close()
        return False

    def open(self) -> tuple[LabState, HealthKeeper, LeaseGrants]:
        """Claim the lab (unless a standby took it already), adopt the campaigns it ran, mark what was in
        flight, start the simulator."""
        store = self._store or Store(self.data_dir)
        try:
            self.keyring.owner = owner_entry(self.data_dir)
            if not self.claimed:
                store.claim_lab(self.owner, stale_after=STALE_AFTER_S)
        except BaseException:
            store.close()
            self._store = None
            raise
        self.claimed, self._store = True, store
        if self.data_dir.stat().st_mode & 0o077:
            log.warning(
                "%s is open to other accounts on this machine: they cannot reach the lab without a key, but "
                "they can read its record directly (chmod 700 %s)",
                self.data_dir,
                self.data_dir,
            )
        store.ensure_instruments(self.lab.instruments)
        state = self.state = LabState(self.lab, store, self.owner, self.keyring, curve=True)
        leases = LeaseGrants(state)
        health = HealthKeeper(state, leases)
        state.start_announcing()
        # Outcomes workers held for want of space when the last service stopped: theirs, before anything
        # below takes the experiments they belong to for lost.
        store.write_spilled()
        suspects: dict[str, str] = {}
        for record in store.campaigns():
            if record.status is not CampaignStatus.RUNNING or not is_daemon_owner(record.owner):
                continue
            for experiment in adopt(store, record.id, self.owner, SERVICE_CRASHED):
                suspects.update(state.suspects_of(experiment, "the lab service stopped"))
            state.active.track(record.id)
        # What changed while no service was running (a worker it left behind recording its experiment as
        # interrupted, the adoption just now) reaches the event stream.
        state.caught_up(state.announce())
        for name, why in suspects.items():
            health.suspect(name, why)
        self._start_simulator()
        return state, health, leases

    def _serve_metrics(self) -> None:
        if self.metrics_address is None:
            return
        token = metrics_token(self.data_dir)
        self.metrics = MetricsEndpoint(self.metrics_address, token)
        self.metrics.start()
        where = self.data_dir / SERVER_KEY_DIR / TOKEN_FILE
        log.info("metrics on %s (bearer token in %s)", self.metrics.url, where)

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
        public, secret, public_file = server_pair(self.data_dir)
        gate = self.gate = Gatekeeper(self._context, state, self.keyring, public, secret)
        log.info(
            "CurveZMQ on every socket: clients need the service's public key %s and an allowed key (this "
            "account's is %s)",
            public_file,
            owner_key_file(self.data_dir),
        )
        api_socket, self.api_address = gate.open_api(self.api_address)
        # Beside the API, on the same interface: e-stops come in there, whatever floods the API.
        _, self.estop_address = gate.open_estop(f"{self.api_address.rpartition(':')[0]}:0")
        events = gate.open_events(self.events_address)
        self.events_address = gate.events_address
        workers = self._context.socket(zmq.ROUTER)
        workers.setsockopt(zmq.LINGER, 0)
        worker_address = bind(workers, "tcp://127.0.0.1:0")
        proxy = gate.open_documents(self.documents_address)
        self.documents_address = proxy.out_address
        if self.agents_address is not None:
            agents_socket, self.agents_address = gate.open_agents(self.agents_address)
            self.agents = state.agents = AgentHub(state, agents_socket, self.keyring)
            log.info("agents connect on %s", self.agents_address)
        if self.frontend is not None:
            self.frontend.bind()  # before daemon.json names its address
            state.http_address = self.frontend.url
        if self.metrics is not None:
            self.lab_metrics = LabMetrics(state, self.metrics.registry)
            self.metrics.serving.set(1)
        state.events, state.workers = events, workers
        state.events_address, state.documents_address = self.events_address, self.documents_address
        info = {"pid": os.getpid(), "host": socket.gethostname(), "owner": self.owner,
                "api": self.api_address, "events": self.events_address, "documents": self.documents_address,
                "estop": self.estop_address, "lab": self.lab.name,
                "curve": True, "server_key": public.decode(),
                "http": self.frontend.url if self.frontend else None, "agents": self.agents_address,
                "metrics": self.metrics.url if self.metrics else None}  # fmt: skip
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
            documents=proxy.in_address,
            lab_provenance=lab_provenance(self.lab, self.lab.simulated, name=self.lab.name),
            parent_pid=os.getpid(),
            owner=self.owner,
            env=self.worker_env,
            agents=self.agents,
        )
        return api_socket, launch

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
            self._serve_metrics()  # a standby's too: Prometheus sees it waiting (sdl_serving 0)
            if self.standby and not await self.stand_by():
                return 0
            state, health, leases = self.open()
            api_socket, launch = self.bind(state)
            stock = StockKeeper(state)
            stock.declare()
            supervisor = self.supervisor = Supervisor(state, health, leases, launch, stock)
            storage = StorageKeeper(state)
            dispatcher = Dispatcher(state, health, self.proposer, self.addresses, stock)
            handlers = Handlers(
                state,
                health,
                supervisor,
                stop=lambda abort: self.request_stop(abort=abort),
                stock=stock,
            )
            authenticate = CurveCallers(self.keyring)
            gate = self.gate
            assert gate is not None and gate.events_guard is not None and gate.estop_socket is not None
            server = ApiServer(api_socket, handlers.table(), authenticate=authenticate, audit=gate.audit,
                               timed=lambda what, seconds: state.timed(what, seconds))  # fmt: skip
            estop = EStopServer(gate.estop_socket, server.estop)
            supervisor.start_workers()
            await self.proposer.start()
            tasks = [
                asyncio.create_task(server.serve(), name="api"),
                asyncio.create_task(estop.serve(), name="estop"),
                asyncio.create_task(supervisor.serve_workers(), name="workers"),
                asyncio.create_task(supervisor.supervise(), name="supervise"),
                asyncio.create_task(dispatcher.schedule(), name="schedule"),
                asyncio.create_task(self._heartbeat(state), name="heartbeat"),
                asyncio.create_task(storage.watch(), name="storage"),
                asyncio.create_task(self._return_memory(server), name="memory"),
            ]
            tasks += [
                asyncio.create_task(gate.events_guard.watch(), name="subscribers"),
                asyncio.create_task(gate.watch_handshakes(API), name="zap-api"),
                asyncio.create_task(gate.watch_handshakes(ESTOP), name="zap-estop"),
                asyncio.create_task(gate.watch_keys(), name="keys"),
            ]
            if self.frontend is not None:
                tasks.append(asyncio.create_task(self.frontend.serve(state, server.execute), name="http"))
            if self.lab_metrics is not None:
                tasks.append(asyncio.create_task(self.lab_metrics.watch(), name="metrics"))
            if self.agents is not None:
                tasks.append(asyncio.create_task(self.agents.serve(supervisor.on_message), name="agents"))
                tasks.append(asyncio.create_task(self.agents.beat(), name="agents-beat"))
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
        return 1 if self.lost_claim else 0

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
        if self.metrics is not None:
            self.metrics.stop()
        gate = self.gate
        if gate is not None:
            gate.stop()
        self._context.destroy(linger=0)
        if self.simulated is not None:
            self.simulated.stop()
        store, self._store = self._store, None
        if store is not None:
            if gate is not None:
                gate.close()  # the refusals counted but not yet written
            if self.claimed:
                self._remove_record()
                try:
                    store.release_lab(self.owner)
                except StoreFull:  # the claim goes stale instead; the next service takes it over
                    log.error("the disk is full: the lab's claim is left to go stale")
            if state is not None and state.owed:
                log.error("stopping with %d write(s) the disk had no room for: %s", len(state.owed),
                          "; ".join(what for what, _ in state.owed))  # fmt: skip
            store.close()
            self.state = None
        log.info("lab service stopped")

    def _remove_record(self) -> None:
        """Remove daemon.json if it is this service's: another service may have written its own since."""
        path = self.data_dir / INFO_FILE
        try:
            ours = json.loads(path.read_text()).get("owner") == self.owner
        except (OSError, ValueError, AttributeError):
            return
        if ours:
            path.unlink(missing_ok=True)

    def _lose_claim(self) -> None:
        """Another process holds the lab now (this one was silent too long, and not on this machine): stop
        driving it at once, leaving its claim and its daemon.json alone."""
        log.error("the lab's claim was taken by another process: aborting work in flight and stopping")
        self.lost_claim = True
        self.claimed = False
        self.request_stop(abort=True)

    async def _return_memory(self, server: ApiServer) -> None:
        """After the API refused large messages or a subscriber was cut, give what they took back to the
        system (``sdl.daemon.heap``), at most once a second."""
        cuts = 0
        while True:
            await asyncio.sleep(1.0)
            guard = self.gate.events_guard if self.gate is not None else None
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
                # Status changes nobody told this service of (a worker's write whose report was lost, a
                # campaign run by `sdl run` beside it) reach the event stream within a heartbeat.
                state.caught_up(state.announce())
                held = store.heartbeat(self.owner)
                started = time.perf_counter()
                ours = store.lab_heartbeat(self.owner, pid=os.getpid())
                state.timed("store_write", time.perf_counter() - started)
                if not ours:
                    self._lose_claim()
                    return
                for tracked in state.active:
                    if tracked.id in held:
                        state.active.refresh_record(tracked.id)
                    else:
                        log.error(
                            "campaign %s was taken over by another process; no longer run here", tracked.id
                        )
                        state.active.forget(tracked.id)
                if self.gate is not None:
                    self.gate.refusals.flush()
                await asyncio.to_thread(store.checkpoint)  # off the loop: requests do not wait on it
            except StoreFull as exc:
                state.storage_failed(str(exc))
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(HEARTBEAT_S)
