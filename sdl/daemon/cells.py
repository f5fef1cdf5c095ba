"""A workcell as the lab service sees it: its worker process, what it is doing, and when it last spoke.

Each worker is started in a session of its own (a terminal's Ctrl-C reaches the service only, which
decides what the hardware does) and watches for the service's death itself. A remote workcell's worker
runs on its agent's PC (`sdl.daemon.agents`): the cell holds a :class:`RemoteWorker` in place of the
process, which the agent's reports keep current.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from sdl.daemon.protocol import WorkerConfig
from sdl.spec.lab import LabSpec, Workcell
from sdl.spec.status import WorkcellState

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


def start_worker(config: WorkerConfig, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """A worker process for ``config``, in a session of its own (a terminal's Ctrl-C reaches its parent, the
    service or an agent, which decides what the hardware does)."""
    environment = {**os.environ, **env, "SDL_WORKER_CONFIG": config.model_dump_json()}
    return subprocess.Popen(
        [sys.executable, "-m", "sdl.daemon.worker"],
        env=environment,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_group(pid: int) -> None:
    """SIGKILL a worker and whatever it started (its session's group), if it still runs."""
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@dataclass
class RemoteWorker:
    """A worker on an agent's PC, as far as its agent has told: its pid once started, its exit code once
    it ended. ``kill`` asks the agent to kill it."""

    kill: Callable[[], None]
    pid: int | None = None
    returncode: int | None = None
    reason: str = ""  # why its agent stopped it, if it did

    def poll(self) -> int | None:
        return self.returncode


@dataclass
class Cell:
    name: str
    spec: Workcell
    state: WorkcellState = WorkcellState.DOWN  # starting, idle, busy or down
    process: subprocess.Popen[bytes] | RemoteWorker | None = None
    identity: bytes | None = None
    token: str = ""
    last_seen: float = 0.0
    experiment: int | None = None
    campaign_id: str | None = None
    started_at: float | None = None
    timeout: float | None = None
    abort_sent_at: float | None = None
    servicing: set[str] = field(default_factory=set[str])
    connected: list[str] = field(default_factory=list[str])
    restarts: int = 0
    backoff: float = 1.0
    restart_at: float = 0.0
    up_since: float | None = None
    #: The worker holds its experiment's outcome for want of space: where it spilled it (or "memory").
    holding: str | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def ready(self) -> bool:
        """Idle, said hello, and not servicing an instrument."""
        return self.state is WorkcellState.IDLE and self.identity is not None and not self.servicing

    def spawn(self, config: WorkerConfig, env: dict[str, str] | None = None) -> None:
        self.process = start_worker(self._starting(config), env or {})
        log.info("workcell %s: worker started (process %d)", self.name, self.process.pid)

    def spawn_remote(self, config: WorkerConfig, agent: Agents) -> None:
        """Ask the workcell's agent to start its worker."""
        config = self._starting(config)
        self.process = RemoteWorker(kill=lambda: agent.kill(self))
        agent.spawn(self, config)
        log.info("workcell %s: worker asked of agent %s", self.name, self.spec.agent)

    def _starting(self, config: WorkerConfig) -> WorkerConfig:
        self.token = secrets.token_hex(16)
        self.identity = None
        self.state = WorkcellState.STARTING
        self.last_seen = time.monotonic()
        self.up_since = None
        return config.model_copy(update={"token": self.token})

    def kill(self) -> None:
        """Stop the worker now (it stopped answering): SIGKILL, then reap it."""
        process = self.process
        if isinstance(process, RemoteWorker):
            if process.returncode is None:
                process.kill()
            return
        if process is not None and process.poll() is None:
            kill_group(process.pid)
        if process is not None:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.error("workcell %s: worker %d did not die", self.name, process.pid)

    def stopped(self) -> None:
        """The worker process has ended: forget it."""
        self.process = None
        self.identity = None
        self.state = WorkcellState.DOWN
        self.connected = []

    def lost(self, now: float, backoff_floor: float) -> None:
        """The worker is gone: forget it and schedule its replacement with a growing delay."""
        self.kill()
        self.stopped()
        if self.up_since is not None and now - self.up_since > 60:
            self.backoff = backoff_floor  # it had been fine for a while: start the delays afresh
        self.restart_at = now + self.backoff
        self.backoff = min(max(self.backoff, backoff_floor) * 2, MAX_BACKOFF_S)
        self.restarts += 1
        self.clear_experiment()

    def clear_experiment(self) -> None:
        self.holding = None
        self.experiment = None
        self.campaign_id = None
        self.started_at = None
        self.timeout = None
        self.abort_sent_at = None


class Agents(Protocol):
    """The agents' side of the service (`sdl.daemon.agents.AgentHub`), as cells use it."""

    def reachable(self, agent: str) -> bool:
        """Whether the agent is connected and was heard from lately."""
        ...

    def silent_for(self, agent: str) -> float:
        """Seconds since the agent was last heard (infinite before it ever connected)."""
        ...

    def spawn(self, cell: Cell, config: WorkerConfig) -> None: ...

    def kill(self, cell: Cell) -> None: ...

    def report(self) -> list[Any]:
        """Every agent the lab file names, as the service hears it (`sdl.api.models.AgentStatus`)."""
        ...

    def to_cell(self, cell: Cell, message: Any) -> None:
        """Send a worker protocol message to the cell's worker (kept until its agent has it)."""
        ...


@dataclass(frozen=True)
class WorkerLaunch:
    """What every worker of the lab is started with, known once the service has bound its sockets and
    brought up the simulated lab; :meth:`config` adds a workcell's own part."""

    manager: str  # the service's worker socket
    data_dir: str
    lab: LabSpec
    addresses: Mapping[str, Any]  # instrument -> resolved address
    documents: str | None  # where the RunEngines publish their documents
    lab_provenance: dict[str, Any]
    parent_pid: int
    owner: str | None = None
    env: Mapping[str, str] = field(default_factory=dict[str, str])
    agents: Agents | None = None

    def config(self, cell: Cell) -> WorkerConfig:
        names = cell.spec.instruments
        return WorkerConfig(
            workcell=cell.name,
            manager=self.manager,
            token="",
            data_dir=self.data_dir,
            instruments={n: self.lab.instruments[n] for n in names},
            addresses={n: self.addresses.get(n) for n in names},
            documents=self.documents,
            parent_pid=self.parent_pid,
            owner=self.owner,
            lab_provenance=self.lab_provenance,
        )

    def spawn(self, cell: Cell) -> None:
        """Start the cell's worker: here, or by its agent once that is reachable (until then the cell is
        unreachable, and this is tried again in a second)."""
        agent = cell.spec.agent
        if agent is None:
            cell.spawn(self.config(cell), dict(self.env))
        elif self.agents is not None and self.agents.reachable(agent):
            # On its PC: no document proxy to publish to (the store has every document).
            cell.spawn_remote(self.config(cell).model_copy(update={"documents": None}), self.agents)
        else:
            cell.state = WorkcellState.UNREACHABLE
            cell.restart_at = time.monotonic() + 1.0
