"""The lab service's Prometheus metrics (`sdl daemon --metrics HOST:PORT`), served with prometheus-client.

What is counted as it happens: every event the lab publishes, by topic (experiments started, done, faulted;
instruments quarantined; tasks; e-stops...), and how long things take — a proposal, a wait for a lease, an API
request, a store write. What is read from the record every few seconds, on the service's loop (the store is
not touched from the HTTP thread): experiments by status, in flight, workcells and instruments by state, open
tasks, waiting approvals, stock levels, standbys. A standby serves ``sdl_serving 0`` alone. docs/deployment.md
has the scrape configuration, and docs/grafana-dashboard.json a dashboard over these names.

The endpoint wants the bearer token in DATA_DIR/keys/metrics.token (made on first use, readable by the
service's account alone), on loopback too: Prometheus sends it with ``authorization: {credentials_file: …}``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import make_wsgi_app  # pyright: ignore[reportUnknownVariableType]

from sdl.access.keys import SERVER_KEY_DIR, check_private, keys_directory, write_private
from sdl.access.owner import same_token
from sdl.api import models as m
from sdl.daemon.state import LabState
from sdl.spec.status import ExperimentStatus, InstrumentState, WorkcellState
from sdl.store import STALE_AFTER_S

log = logging.getLogger("sdl.daemon")

TOKEN_FILE = "metrics.token"
#: How often the figures read from the record are refreshed.
REFRESH_S = 2.0
#: What the service times (``LabState.timed``), each with its histogram's name and help.
TIMED = {
    "proposal": ("sdl_proposal_seconds", "Time the optimizer took to propose an experiment."),
    "lease_wait": ("sdl_lease_wait_seconds", "Time a plan waited for instruments it asked for."),
    "store_write": ("sdl_store_write_seconds", "Time of the service's heartbeat write to the store."),
    "api": ("sdl_api_request_seconds", "Time the service took to answer an API request."),
}
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def metrics_token(data_dir: Path) -> str:
    """The scrape token (made on first use)."""
    path = Path(data_dir) / SERVER_KEY_DIR / TOKEN_FILE
    if not path.exists():
        keys_directory(data_dir)
        write_private(path, secrets.token_urlsafe(32) + "\n")
    check_private(path, "the metrics token")
    return path.read_text(encoding="utf-8").strip()


class LabMetrics:
    """The metrics of one lab service, in a registry of its own."""

    def __init__(self, state: LabState, registry: CollectorRegistry) -> None:
        self.state = state
        r = self.registry = registry
        self.events = Counter("sdl_events", "Events the lab published, by topic.", ["topic"], registry=r)
        self.experiments = Gauge(
            "sdl_experiments", "Experiments in the record, by status.", ["status"], registry=r
        )
        self.in_flight = Gauge("sdl_experiments_in_flight", "Experiments running on a workcell.", registry=r)
        self.workcells = Gauge("sdl_workcells", "Workcells, by state.", ["state"], registry=r)
        self.instruments = Gauge("sdl_instruments", "Instruments, by health.", ["state"], registry=r)
        self.tasks = Gauge("sdl_tasks_open", "Tasks for people not yet done or cancelled.", registry=r)
        self.approvals = Gauge("sdl_approvals_waiting", "Proposals waiting for an operator.", registry=r)
        self.stock = Gauge(
            "sdl_stock_amount",
            "What the record says a stock holds (a waste: how full it is).",
            ["instrument", "consumable", "unit", "kind"],
            registry=r,
        )
        self.standbys = Gauge("sdl_standbys", "Services standing by to take the lab over.", registry=r)
        self.worker_losses = Counter(
            "sdl_worker_losses",
            "Workers lost (died, or silent too long), by workcell.",
            ["workcell"],
            registry=r,
        )
        self.reports = Counter(
            "sdl_instrument_reports",
            "What the drivers reported: a retry, a reconnect, a fault... by instrument and event.",
            ["instrument", "event"],
            registry=r,
        )
        self.quarantines = Counter(
            "sdl_quarantines", "Times an instrument was taken out of service.", ["instrument"], registry=r
        )
        self.agent_partitions = Counter(
            "sdl_agent_partitions",
            "Times an agent went silent longer than the heartbeat timeout (its workcells unreachable).",
            ["agent"],
            registry=r,
        )
        self.agent_connects = Counter(
            "sdl_agent_connects", "An agent's connections and reconnections.", ["agent"], registry=r
        )
        self.timings = {
            what: Histogram(name, text, buckets=_BUCKETS, registry=r) for what, (name, text) in TIMED.items()
        }
        state.event_listeners.add(self._on_event)
        state.timed = self.observe

    def observe(self, what: str, seconds: float) -> None:
        histogram = self.timings.get(what)
        if histogram is not None:
            histogram.observe(seconds)

    def _on_event(self, event: m.EventRecord) -> None:
        self.events.labels(event.topic).inc()
        body = event.body
        if event.topic == "workcell.state" and body.get("state") == "down":
            self.worker_losses.labels(str(body.get("workcell"))).inc()
        elif event.topic == "instrument.health":
            self.reports.labels(str(body.get("instrument")), str(body.get("event"))).inc()
        elif event.topic == "instrument.state" and body.get("state") == InstrumentState.QUARANTINED.value:
            self.quarantines.labels(str(body.get("instrument"))).inc()
        elif event.topic == "agent.state":
            counter = self.agent_partitions if body.get("state") == "unreachable" else self.agent_connects
            counter.labels(str(body.get("agent"))).inc()

    def refresh(self) -> None:
        """Read the figures that live in the record and in the workcells (on the service's loop)."""
        state, store = self.state, self.state.store
        counts = store.experiment_counts()
        for status in ExperimentStatus:
            self.experiments.labels(status.value).set(counts.get(status.value, 0))
        cells = list(state.cells.values())
        self.in_flight.set(sum(c.experiment is not None for c in cells))
        for cell_state in WorkcellState:
            self.workcells.labels(cell_state.value).set(sum(c.state is cell_state for c in cells))
        health = [r.state for r in store.instruments().values()]
        for instrument_state in InstrumentState:
            self.instruments.labels(instrument_state.value).set(health.count(instrument_state))
        self.tasks.set(len(store.tasks(pending=True)))
        self.approvals.set(len(store.approvals()))
        for (instrument, consumable), stock in store.stocks().items():
            self.stock.labels(instrument, consumable, stock.unit, stock.kind).set(stock.amount)
        self.standbys.set(len(store.standbys(stale_after=STALE_AFTER_S)))

    async def watch(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:
                log.exception("reading the metrics failed")
            await asyncio.sleep(REFRESH_S)


class AgentMetrics:
    """An agent's own figures (`sdl agent --metrics HOST:PORT`), on the endpoint's registry; ``sdl_serving``
    is 1 while the agent hears its lab service."""

    def __init__(self, endpoint: MetricsEndpoint) -> None:
        r = endpoint.registry
        self.url = endpoint.url
        self.serving = endpoint.serving
        self.partitions = Counter(
            "sdl_agent_partitions", "Times this agent stopped hearing its lab service.", registry=r
        )
        self.reconnects = Counter(
            "sdl_agent_reconnects", "Times the link came back to the same service session.", registry=r
        )
        self.outbox = Gauge(
            "sdl_agent_outbox", "Messages sent to the service and not yet acknowledged.", registry=r
        )
        self.workers = Gauge("sdl_agent_workers", "Workers running under this agent.", registry=r)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: " + format, *args)


class MetricsEndpoint:
    """``/metrics`` on ``host:port``, for a bearer token, on a thread of its own. It serves from the start,
    a standby's too: ``sdl_serving`` is 0 until the service serves the lab (then :class:`LabMetrics` adds the
    lab's figures to the same registry)."""

    def __init__(self, address: str, token: str) -> None:
        host, _, port = address.rpartition(":")
        self.registry = CollectorRegistry()
        self.serving = Gauge(
            "sdl_serving", "1 once this service serves the lab; 0 while it stands by.", registry=self.registry
        )
        self._app: Callable[..., Iterable[bytes]] = make_wsgi_app(self.registry)
        self._token = token
        self._server = make_server(
            host.strip("[]") or "127.0.0.1", int(port), self._guarded, _Server, _QuietHandler
        )
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}/metrics"
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _guarded(self, environ: dict[str, Any], respond: Callable[..., Any]) -> Iterable[bytes]:
        given = str(environ.get("HTTP_AUTHORIZATION", ""))
        if not (given.startswith("Bearer ") and same_token(given.removeprefix("Bearer "), self._token)):
            respond("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"a bearer token is needed (DATA_DIR/keys/metrics.token)\n"]
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("PATH_INFO") != "/metrics":
            respond("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only GET /metrics is served here\n"]
        return self._app(environ, respond)
