"""An agent: the process on an instrument PC that runs the workers of the workcells cabled to it.

    sdl agent --name pc-b --connect tcp://lab-pc:60718 --key pc-b.key_secret --server-key server.key

It connects to the lab service over CurveZMQ (its key on the allow-list with the role ``agent``, the
service's public key pinned), says which agent it is, and starts each worker the service asks for here,
where the instruments' serial ports and sockets are. The workers are today's workers, unchanged: they
connect to the agent's loopback socket as they would to the service's, and write their journal, documents
and outcome to the store themselves. The agent relays their messages over the link (`sdl.daemon.link`),
which delivers each exactly once and in order, whatever the network does in between.

When the service cannot be heard (a partition), experiments in flight run on and what they say waits in
the outbox. Past the lab's ``agent_limit`` the agent aborts them and stops its workers, which make their
instruments safe: no hardware runs long unsupervised. It keeps trying the service's endpoints in turn,
with a growing pause, and a service that took over (a standby) is a new session: the old workers fence
themselves by the store's claim, and the agent starts what the new service asks for.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from sdl.api.client import Credentials
from sdl.daemon import link
from sdl.daemon import protocol as p
from sdl.daemon.cells import kill_group, start_worker
from sdl.daemon.metrics import AgentMetrics
from sdl.spec.status import Cause

log = logging.getLogger("sdl.agent")

BEAT_S = 0.5
#: The service unheard this long: the link is taken for down (counted as a partition), Hello is sent
#: again, and after a few of these the next endpoint is tried.
SILENT_S = 3.0
RESEND_S = 2.0
MAX_PAUSE_S = 30.0
#: How long a stopped worker has to exit before it is killed.
STOP_S = 60.0
AGENT_LOST = "the agent lost the lab service for {limit:g} s; aborted, its instruments made safe"


@dataclass
class LocalWorker:
    workcell: str
    process: subprocess.Popen[bytes]
    token: str
    identity: bytes | None = None
    experiment: int | None = None
    stopping_at: float | None = None
    why: str = ""  # why the agent stopped it


class Agent:
    def __init__(
        self,
        name: str,
        endpoints: list[str],
        credentials: Credentials,
        data_dir: Path,
        env: dict[str, str] | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.name = name
        self.endpoints = endpoints
        self.credentials = credentials
        self.data_dir = data_dir
        self.env = env or {}
        self.metrics = metrics
        self.session = secrets.token_hex(8)
        self.context = zmq.Context()
        self.local = self.context.socket(zmq.ROUTER)
        self.local.setsockopt(zmq.LINGER, 0)
        port = self.local.bind_to_random_port("tcp://127.0.0.1")
        self.local_address = f"tcp://127.0.0.1:{port}"
        self.socket: zmq.Socket[bytes] | None = None
        self.endpoint = -1
        self.pause = 1.0
        self.patience = SILENT_S * 2
        self.service_session: str | None = None
        self.channel: link.Channel | None = None
        self.limit = 90.0
        self.welcomed = False
        self.heard = self.hello_at = self.beat_at = self.sent_at = 0.0
        self.connected_at = 0.0
        self.down = False
        self.stopped_for_silence = False
        self.workers: dict[str, LocalWorker] = {}
        self.old: list[LocalWorker] = []  # an earlier pairing's, fencing themselves; waited for
        self.waiting: dict[str, p.WorkerConfig] = {}  # spawns waiting for an old worker to exit
        self.stop = False
        self.refused = False

    # -- the link ------------------------------------------------------------------------------------------

    def _connect_next(self, now: float) -> None:
        """Connect to the next endpoint and say hello; wait for a welcome a little longer each round (never
        by sleeping: the loop goes on relaying, reaping and keeping the limit meanwhile)."""
        if self.socket is not None:
            self.socket.close(linger=0)
        self.endpoint = (self.endpoint + 1) % len(self.endpoints)
        address = self.endpoints[self.endpoint]
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)  # 0MQ's own reconnects: 0.1 s, doubling to 2 s
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.MAXMSGSIZE, link.MAX_FRAME)
        sock.setsockopt(zmq.ROUTING_ID, f"{self.name}:{self.session}".encode())
        self.credentials.apply(sock)
        sock.connect(address)
        self.socket = sock
        self.connected_at = now
        self.patience = SILENT_S * 2 + self.pause
        if self.endpoint == len(self.endpoints) - 1:  # a round of every endpoint: a longer wait next time
            self.pause = min(self.pause * 2, MAX_PAUSE_S)
        self.welcomed = False
        log.info("connecting to the lab service at %s", address)
        self._hello(now)

    def _hello(self, now: float) -> None:
        hello = link.Hello(
            agent=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            session=self.session,
            service_session=self.service_session,
            received=self.channel.received if self.channel is not None else 0,
            workcells=sorted(self.workers),
        )
        self._send(hello)
        self.hello_at = now

    def _send(self, frame: Any) -> None:
        if self.socket is None:
            return
        with suppress(zmq.ZMQError):
            self.socket.send(link.encode(frame), zmq.NOBLOCK)
        if isinstance(frame, link.Carry):
            self.sent_at = time.monotonic()

    def _carry(self, item: Any) -> None:
        """Into the outbox, and sent now if the link is up."""
        if self.channel is None:
            log.warning("not paired with a lab service: %s dropped", item.kind)
            return
        self._send(self.channel.carry(item))

    def _on_frame(self, frame: Any, now: float) -> None:
        if isinstance(frame, link.Refusal):
            log.error("the lab service refused this agent: %s", frame.reason)
            self.stop = self.refused = True
            return
        self.heard = now
        self.stopped_for_silence = False
        if self.down:
            self.down = False
            log.warning("the lab service is heard again")
        if isinstance(frame, link.Welcome):
            self._welcomed(frame)
        elif self.channel is None or frame.session != self.channel.session:
            return
        elif isinstance(frame, link.Beat):
            self.channel.acknowledged(frame.received)
        elif isinstance(frame, link.Carry) and self.channel.accept(frame):
            self._deliver(frame.item, now)

    def _welcomed(self, welcome: link.Welcome) -> None:
        if self.welcomed and self.channel is not None and welcome.pairing == self.channel.session:
            return  # an answer to a Hello sent again while the link was quiet
        if self.channel is None or welcome.pairing != self.channel.session:
            if self.channel is not None:
                log.warning("a new lab service session: workers of the last one stop by themselves")
            self.old += self.workers.values()
            self.workers = {}
            self.waiting = {}
            self.channel = link.Channel(welcome.pairing)
        else:
            if self.metrics is not None:
                self.metrics.reconnects.inc()
            self.channel.acknowledged(welcome.received)
            for frame in self.channel.outbox():
                self._send(frame)
        self.service_session, self.limit, self.welcomed = welcome.session, welcome.limit_s, True
        self.pause = 1.0
        self.stopped_for_silence = False
        log.info("serving workcells %s for the lab service", ", ".join(welcome.workcells))

    def _deliver(self, item: Any, now: float) -> None:
        if isinstance(item, link.Spawn):
            if any(w.workcell == item.workcell for w in self.old) or item.workcell in self.workers:
                self._stop_worker(item.workcell, "a new worker is asked for", now)
                self.waiting[item.workcell] = item.config
            else:
                self._spawn(item.workcell, item.config)
        elif isinstance(item, link.Kill):
            self.waiting.pop(item.workcell, None)
            worker = self.workers.get(item.workcell)
            if worker is not None:
                log.warning("workcell %s: killing its worker, as the lab service asks", item.workcell)
                kill_group(worker.process.pid)
        elif isinstance(item, link.ToCell):
            worker = self.workers.get(item.workcell)
            if worker is None or worker.identity is None:
                log.warning("workcell %s: no worker here for the lab service's message", item.workcell)
                return
            with suppress(zmq.ZMQError):
                self.local.send_multipart([worker.identity, item.message.encode()], zmq.NOBLOCK)

    # -- workers -------------------------------------------------------------------------------------------

    def _spawn(self, workcell: str, config: p.WorkerConfig) -> None:
        config = config.model_copy(
            update={
                "manager": self.local_address,
                "data_dir": str(self.data_dir),
                "parent_pid": os.getpid(),
                "documents": None,
            }
        )
        process = start_worker(config, self.env)
        self.workers[workcell] = LocalWorker(workcell, process, config.token)
        log.info("workcell %s: worker started (process %d)", workcell, process.pid)
        self._carry(link.Spawned(workcell=workcell, pid=process.pid))

    def _on_local(self, identity: bytes, raw: bytes) -> None:
        worker = next((w for w in self.workers.values() if w.identity == identity), None)
        try:
            message = p.FROM_WORKER.validate_json(raw)
        except ValueError:
            return
        if worker is None:
            if isinstance(message, p.Hello):
                worker = self.workers.get(message.workcell)
                if worker is None or worker.token != message.token:
                    return  # an old pairing's worker, or not one of ours: never relayed
                worker.identity = identity
            else:
                return
        if isinstance(message, (p.Heartbeat, p.Started)):
            worker.experiment = message.experiment_id
        elif isinstance(message, p.Finished):
            worker.experiment = None
        self._carry(link.FromCell(workcell=worker.workcell, message=raw.decode()))

    def _stop_worker(self, workcell: str, why: str, now: float) -> None:
        worker = self.workers.get(workcell)
        if worker is None or worker.stopping_at is not None:
            return
        worker.stopping_at, worker.why = now, f"stopped by agent {self.name}: {why}"
        if worker.identity is None:  # still starting: it has touched no hardware
            kill_group(worker.process.pid)
            return
        log.warning("workcell %s: stopping its worker (%s)", workcell, why)
        if worker.experiment is not None:
            abort = p.Abort(experiment_id=worker.experiment, reason=why, cause=Cause.CRASH)
            self.local.send_multipart([worker.identity, p.encode(abort)])
        self.local.send_multipart([worker.identity, p.encode(p.Shutdown())])

    def _reap(self, now: float) -> None:
        for workcell, worker in list(self.workers.items()):
            code = worker.process.poll()
            if code is None:
                if worker.stopping_at is not None and now - worker.stopping_at > STOP_S:
                    log.error("workcell %s: its worker did not stop; killing it", workcell)
                    kill_group(worker.process.pid)
                continue
            del self.workers[workcell]
            log.info("workcell %s: worker %d exited with code %d", workcell, worker.process.pid, code)
            self._carry(link.Exited(workcell=workcell, pid=worker.process.pid, code=code, reason=worker.why))
        for worker in list(self.old):
            if worker.process.poll() is not None:
                self.old.remove(worker)
            elif now - (worker.stopping_at or now) > STOP_S:
                kill_group(worker.process.pid)
            elif worker.stopping_at is None:
                worker.stopping_at = now  # it reads the claim and stops; killed if it does not
        for workcell, config in list(self.waiting.items()):
            if workcell not in self.workers and not any(w.workcell == workcell for w in self.old):
                del self.waiting[workcell]
                self._spawn(workcell, config)

    # -- the loop ------------------------------------------------------------------------------------------

    def run(self) -> int:
        poller = zmq.Poller()
        poller.register(self.local, zmq.POLLIN)
        registered: zmq.Socket[bytes] | None = None
        self._connect_next(time.monotonic())
        while not self.stop:
            now = time.monotonic()
            self._tick(now)
            if registered is not self.socket:
                if registered is not None:
                    with suppress(KeyError):
                        poller.unregister(registered)
                assert self.socket is not None
                poller.register(self.socket, zmq.POLLIN)
                registered = self.socket
            events = dict(poller.poll(timeout=100))
            if registered is not None and registered in events:
                while True:
                    try:
                        raw = registered.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        frame = link.decode(raw)
                    except ValueError:
                        log.warning("a malformed frame from the lab service was ignored")
                        continue
                    self._on_frame(frame, time.monotonic())
            if self.local in events:
                while True:
                    try:
                        frames = self.local.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if len(frames) == 2:
                        self._on_local(frames[0], frames[1])
            self._reap(time.monotonic())
        self._shutdown()
        return 1 if self.refused else 0

    def _tick(self, now: float) -> None:
        if self.metrics is not None:
            self.metrics.serving.set(1 if self.welcomed and not self.down else 0)
            self.metrics.outbox.set(len(self.channel.unacked) if self.channel is not None else 0)
            self.metrics.workers.set(len(self.workers))
        # The limit first, whatever the link is doing: no hardware runs long without a service.
        silent = now - self.heard
        if self.workers and silent > self.limit and not self.stopped_for_silence:
            self.stopped_for_silence = True
            why = AGENT_LOST.format(limit=self.limit)
            log.error("the lab service has not been heard for %.0f s: stopping every worker", silent)
            for workcell in list(self.workers):
                self._stop_worker(workcell, why, now)
        if not self.welcomed:
            if now - self.connected_at > self.patience:
                self._connect_next(now)  # no answer here: the next endpoint (a standby, maybe)
            elif now - self.hello_at > 1.0:
                self._hello(now)
            return
        if silent > SILENT_S and not self.down:
            self.down = True
            if self.metrics is not None:
                self.metrics.partitions.inc()
            log.warning("the lab service has not been heard for %.0f s; experiments run on", silent)
        if self.down and now - self.hello_at > SILENT_S:
            self._hello(now)  # for a service that does not know this agent (a standby that took over)
        if self.down and len(self.endpoints) > 1 and silent > SILENT_S * 2:
            self._connect_next(now)
        if now - self.beat_at > BEAT_S and self.channel is not None:
            self._send(link.Beat(session=self.channel.session, received=self.channel.received))
            self.beat_at = now
        if self.channel is not None and self.channel.unacked and now - self.sent_at > RESEND_S:
            for frame in self.channel.outbox():
                self._send(frame)

    def _shutdown(self) -> None:
        """Stop every worker (each aborts what it runs and makes its instruments safe), wait, close."""
        now = time.monotonic()
        for workcell in list(self.workers):
            self._stop_worker(workcell, "the agent is stopping", now)
        deadline = now + STOP_S
        while self.workers and time.monotonic() < deadline:
            self._reap(time.monotonic())
            if self.socket is not None:  # let the outcomes' messages reach the service if they can
                with suppress(zmq.ZMQError):
                    while True:
                        frames = self.local.recv_multipart(zmq.NOBLOCK)
                        if len(frames) == 2:
                            self._on_local(frames[0], frames[1])
            time.sleep(0.05)
        for worker in [*self.workers.values(), *self.old]:
            kill_group(worker.process.pid)
        if self.socket is not None:
            self.socket.close(linger=1000)
        self.local.close(linger=0)
        self.context.term()

    def request_stop(self, *_: Any) -> None:
        self.stop = True
