"""`sdl agent`: run the workers of the workcells cabled to this PC, for a lab service on another."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from typing import Any

from sdl.api.local import service_info
from sdl.cli.common import BadInput, data_dir_of, host_and_port

SYSTEMD_UNIT = """\
[Unit]
Description=sdl agent (this PC's workcells)
After=network-online.target

[Service]
WorkingDirectory=/srv/lab
ExecStart=/srv/lab/.venv/bin/sdl agent --name pc-b --connect tcp://10.0.0.10:60718 \\
    --connect tcp://10.0.0.11:60718 --key /srv/lab/pc-b.key_secret --server-key /srv/lab/server.key \\
    --data-dir /srv/lab/sdl-data
# SIGTERM to the agent only: it aborts its workers' experiments and they make the instruments safe.
KillMode=mixed
TimeoutStopSec=120
Restart=always

[Install]
WantedBy=multi-user.target
"""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "agent",
        parents=[common],
        help="run this PC's workcells for a lab service on another PC",
        description="Run the workers of the workcells whose instruments are cabled to this PC (the lab "
        "file names their agent: `agent: NAME` under the workcell) for a lab service on another PC. The "
        "agent connects to the service's agents socket (`sdl daemon --agents ADDRESS`) with its key, "
        "which the lab's allow-list gives the role agent under the agent's name (`sdl keys add NAME "
        "NAME.key --role agent`). Its workers write to the lab's store themselves: give --data-dir a data "
        "directory bound to the lab's PostgreSQL database (`--store postgresql://...` once), or the "
        "service's own directory on the same PC. When the network drops, experiments in flight run on "
        "and their messages wait; past the lab's workers.agent_limit they are aborted and the instruments "
        "made safe. SIGTERM stops the workers the same way.",
        epilog="A systemd unit:\n\n" + SYSTEMD_UNIT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--name", required=True, help="this agent's name: its key's name on the allow-list")
    p.add_argument(
        "--connect",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="the service's agents socket, e.g. tcp://lab-pc:60718; give a standby's too, tried in turn "
        "(default: the address in DATA_DIR/daemon.json)",
    )
    p.add_argument("--key", type=Path, help="this agent's secret key file (NAME.key_secret)")
    p.add_argument(
        "--server-key",
        type=Path,
        help="the lab service's public key (its keys/server.key; default: DATA_DIR/daemon.json's)",
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (partitions, reconnects, the outbox, workers) at "
        "http://HOST:PORT/metrics, for the bearer token in DATA_DIR/keys/metrics.token",
    )
    p.set_defaults(handler=cmd_agent)


def cmd_agent(args: argparse.Namespace) -> int:
    from sdl.api.client import ApiError, Credentials
    from sdl.daemon.agent import Agent  # ~0.1 s: not for its --help

    data_dir = data_dir_of(args)
    endpoints = list(args.connect) or [a for a in [service_info(data_dir).get("agents")] if a]
    if not endpoints:
        raise BadInput("--connect: give the lab service's agents address (sdl daemon --agents ADDRESS)")
    for address in endpoints:
        if not address.startswith("tcp://") or not address.rpartition(":")[2].isdigit():
            raise BadInput(f"--connect {address}: expected tcp://HOST:PORT")
    if args.metrics:
        host_and_port("--metrics", args.metrics, "127.0.0.1:9465")
    try:
        credentials = Credentials.load(args.key, args.server_key, data_dir=data_dir)
    except ApiError as exc:
        raise BadInput(f"--key/--server-key: {exc}") from None
    if credentials is None:
        raise BadInput("--key: give this agent's secret key file (sdl keys generate NAME)")
    metrics = None
    if args.metrics:
        from sdl.daemon.metrics import AgentMetrics, MetricsEndpoint, metrics_token

        try:
            endpoint = MetricsEndpoint(args.metrics, metrics_token(data_dir))
        except OSError as exc:
            raise BadInput(f"--metrics {args.metrics}: cannot listen there: {exc.strerror or exc}") from None
        metrics = AgentMetrics(endpoint)
        endpoint.start()
    if getattr(args, "verbose", 0) == 0:
        logging.getLogger().setLevel(logging.INFO)  # an agent's log says what its workcells are doing
    if metrics is not None:
        logging.getLogger("sdl.agent").info(
            "metrics on %s (bearer token in %s)", metrics.url, data_dir / "keys" / "metrics.token"
        )
    agent = Agent(args.name, endpoints, credentials, data_dir, metrics=metrics)
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    return agent.run()
