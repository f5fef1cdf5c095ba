"""The service's side of its agents: one CurveZMQ socket that agents on instrument PCs connect to, and the
link (`sdl.daemon.link`) to each.

An agent is known by its key: the allow-list names it and gives it the ``agent`` role, and the lab file
names the agent of each remote workcell. An agent may serve only the workcells the lab file gives it. The
hub starts and kills their workers through the agent, relays the worker protocol both ways, and tells the
supervisor when an agent has been silent (`silent_for`): its workcells are then unreachable, nothing new
starts there, and after the lab's ``agent_grace`` their experiments are recorded interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio
from pydantic import BaseModel

from sdl.access.keys import KeyRing
from sdl.access.roles import Role
from sdl.api import models as m
from sdl.api.wire import send_frames
from sdl.daemon import link
from sdl.daemon import protocol as p
from sdl.daemon.cells import Cell, RemoteWorker
from sdl.daemon.protocol import WorkerConfig
from sdl.daemon.state import LabState

log = logging.getLogger("sdl.daemon")

BEAT_S = 0.5
#: An unacknowledged message is sent again after this long (and at once when its agent reconnects).
RESEND_S = 2.0


@dataclass
class AgentLink:
    name: str
    identity: bytes
    session: str  # the agent's
    channel: link.Channel
    host: str = ""
    pid: int = 0
    heard: float = field(default_factory=time.monotonic)
    sent_at: float = field(default_factory=time.monotonic)
    silent: bool = False


class AgentHub:
    def __init__(
        self,
        state: LabState,
        socket: zmq.asyncio.Socket,
        keyring: KeyRing,
    ) -> None:
        self.state = state
        self.socket = socket
        self.keyring = keyring
        self.on_message: Callable[[bytes, Any], None] = lambda identity, message: None  # see serve
        self.timeout = state.lab.workers.heartbeat_timeout
        self.session = secrets.token_hex(8)
        self.links: dict[str, AgentLink] = {}
        self.limit = state.lab.workers.agent_limit

    # -- what cells and the supervisor ask ----------------------------------------------------------------

    def reachable(self, agent: str) -> bool:
        return agent in self.links and self.silent_for(agent) <= self.timeout

    def silent_for(self, agent: str) -> float:
        """Seconds since the agent was last heard (infinite before it ever connected)."""
        held = self.links.get(agent)
        return float("inf") if held is None else time.monotonic() - held.heard

    def report(self) -> list[m.AgentStatus]:
        """Every agent the lab file names, as the service hears it now."""
        names = sorted({c.spec.agent for c in self.state.cells.values() if c.spec.agent is not None})
        out: list[m.AgentStatus] = []
        for name in names:
            held = self.links.get(name)
            out.append(
                m.AgentStatus(
                    name=name,
                    host=held.host if held else "",
                    pid=held.pid if held else None,
                    reachable=self.reachable(name),
                    silent_s=round(self.silent_for(name), 1) if held else None,
                    unacknowledged=len(held.channel.unacked) if held else 0,
                    workcells=[c.name for c in self.state.cells.values() if c.spec.agent == name],
                )
            )
        return out

    def spawn(self, cell: Cell, config: WorkerConfig) -> None:
        self._carry(cell, link.Spawn(workcell=cell.name, config=config))

    def kill(self, cell: Cell) -> None:
        self._carry(cell, link.Kill(workcell=cell.name))

    def to_cell(self, cell: Cell, message: BaseModel) -> None:
        self._carry(cell, link.ToCell(workcell=cell.name, message=p.encode(message).decode()))

    def _carry(self, cell: Cell, item: Any) -> None:
        held = self.links.get(cell.spec.agent or "")
        if held is None:  # never connected: the cell is unreachable, and nothing was started there
            log.warning("workcell %s: its agent is not connected; %s not sent", cell.name, item.kind)
            return
        self._send(held, held.channel.carry(item))

    # -- the socket ----------------------------------------------------------------------------------------

    async def serve(self, on_message: Callable[[bytes, Any], None]) -> None:
        """Receive from the agents until cancelled; each worker message relayed goes to ``on_message`` (the
        supervisor's, as a local worker's would)."""
        self.on_message = on_message
        while True:
            frames = await self.socket.recv_multipart(copy=False)
            if len(frames) != 2:
                continue
            identity, raw = frames[0].bytes, frames[1]
            try:
                frame = link.decode(raw.bytes)
            except ValueError:
                log.warning("a malformed frame on the agents' socket was ignored")
                continue
            try:
                self._on_frame(identity, str(raw.get("User-Id")), frame)
            except Exception:
                log.exception("handling %s from an agent failed", type(frame).__name__)

    async def beat(self) -> None:
        """Tell every agent the service is alive and how far it has received; send again what is not
        acknowledged; notice agents that went silent."""
        while True:
            await asyncio.sleep(BEAT_S)
            now = time.monotonic()
            for held in self.links.values():
                self._send(held, link.Beat(session=held.channel.session, received=held.channel.received))
                if held.channel.unacked and now - held.sent_at > RESEND_S:
                    self._resend(held)
                silent = now - held.heard > self.timeout
                if silent and not held.silent:
                    log.warning("agent %s (%s): silent for %.0f s", held.name, held.host, now - held.heard)
                    self.state.publish("agent.state", {"agent": held.name, "state": "unreachable"})
                held.silent = silent

    def _send(self, held: AgentLink, frame: BaseModel) -> None:
        self._send_frames([held.identity, link.encode(frame)])
        if isinstance(frame, link.Carry):
            held.sent_at = time.monotonic()

    def _resend(self, held: AgentLink) -> None:
        for frame in held.channel.outbox():
            self._send(held, frame)

    def _on_frame(self, identity: bytes, user: str, frame: Any) -> None:
        if isinstance(frame, link.Hello):
            self._hello(identity, user, frame)
            return
        held = next((a for a in self.links.values() if a.identity == identity), None)
        if held is None:
            return
        held.heard = time.monotonic()
        if held.silent:
            held.silent = False
            log.warning("agent %s (%s): heard again", held.name, held.host)
            self.state.publish("agent.state", {"agent": held.name, "state": "connected"})
        if isinstance(frame, link.Beat) and frame.session == held.channel.session:
            held.channel.acknowledged(frame.received)
        elif (
            isinstance(frame, link.Carry)
            and frame.session == held.channel.session
            and held.channel.accept(frame)
        ):
            self._deliver(held, frame.item)

    def _hello(self, identity: bytes, user: str, hello: link.Hello) -> None:
        entry = self.keyring.by_public_key(user)
        if entry is None or entry.role is not Role.AGENT or entry.name != hello.agent:
            who = entry.name if entry is not None else "an unknown key"
            log.warning("agents' socket: %s said it is agent %r; refused", who, hello.agent)
            reason = "the key's name on the allow-list must be the agent's name, with role agent"
            self._reply(identity, link.Refusal(reason=reason))
            return
        cells = [c for c in self.state.cells.values() if c.spec.agent == hello.agent]
        if not cells:
            self._reply(
                identity, link.Refusal(reason=f"the lab file gives agent {hello.agent!r} no workcell")
            )
            return
        held = self.links.get(hello.agent)
        resumed = held is not None and held.session == hello.session and hello.service_session == self.session
        if held is not None and resumed:
            if held.silent or held.identity != identity:  # else a Hello it sent while it heard nothing
                log.info("agent %s (%s): reconnected; %d message(s) to send again", held.name, held.host,
                         len(held.channel.unacked))  # fmt: skip
            held.identity, held.heard, held.silent = identity, time.monotonic(), False
        else:
            pairing = f"{hello.session}:{self.session}"
            held = AgentLink(
                hello.agent, identity, hello.session, link.Channel(pairing), hello.host, hello.pid
            )
            self.links[hello.agent] = held
            for cell in cells:  # workers of an earlier pairing are not this service's (or are gone)
                if isinstance(cell.process, RemoteWorker) and cell.process.returncode is None:
                    cell.process.returncode = -1
                    cell.process.reason = f"its agent {hello.agent} came back as a new process"
            log.info("agent %s connected from %s (process %d): workcells %s", hello.agent, hello.host,
                     hello.pid, ", ".join(c.name for c in cells))  # fmt: skip
        self.state.publish("agent.state", {"agent": held.name, "state": "connected", "host": held.host})
        welcome = link.Welcome(
            session=self.session,
            pairing=held.channel.session,
            workcells=[c.name for c in cells],
            received=held.channel.received,
            limit_s=self.limit,
        )
        self._send(held, welcome)
        self._resend(held)

    def _reply(self, identity: bytes, frame: BaseModel) -> None:
        self._send_frames([identity, link.encode(frame)])

    def _send_frames(self, frames: list[bytes]) -> None:
        """Send now or not at all (an agent not connected now: the outbox is for that). Through the asyncio
        socket itself, not a shadow of it: a send behind its back can take the edge that would have woken
        the pending receive, and the agents would go unheard."""
        sent = send_frames(self.socket, frames, zmq.NOBLOCK)
        if isinstance(sent, asyncio.Future) and sent.done():
            sent.exception()  # retrieved, so that asyncio does not report it

    def _deliver(self, held: AgentLink, item: Any) -> None:
        cell = self.state.cells.get(item.workcell)
        if cell is None or cell.spec.agent != held.name:
            log.warning("agent %s spoke for workcell %r, not its own; ignored", held.name, item.workcell)
            return
        process = cell.process
        if isinstance(item, link.FromCell):
            try:
                message = p.FROM_WORKER.validate_json(item.message)
            except ValueError:
                log.warning("workcell %s: a malformed worker message was ignored", cell.name)
                return
            self.on_message(identity_of(cell), message)
        elif isinstance(item, link.Spawned) and isinstance(process, RemoteWorker) and process.pid is None:
            process.pid = item.pid
            log.info("workcell %s: worker started on %s (process %d)", cell.name, held.host, item.pid)
        elif isinstance(item, link.Exited) and isinstance(process, RemoteWorker) and process.pid == item.pid:
            process.returncode, process.reason = item.code, item.reason


def identity_of(cell: Cell) -> bytes:
    """The identity under which a remote cell's worker is known (a local one's is its 0MQ routing id)."""
    return f"agent:{cell.spec.agent}/{cell.name}".encode()
