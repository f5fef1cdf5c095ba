"""`sdl daemon`: run the lab service in the foreground (systemd-friendly: stderr logs, exit 0 on SIGTERM)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import sys
from pathlib import Path
from typing import Any

from sdl.access.keys import KEYS_FILE, KeyFileError, KeyRing
from sdl.api.client import DEFAULT_API
from sdl.cli.common import EXIT_FAILURE, BadInput, check_free, data_dir_of, host_and_port
from sdl.spec.lab import load_lab
from sdl.store import CampaignBusy

DEFAULT_EVENTS = "tcp://127.0.0.1:60716"
DEFAULT_DOCUMENTS = "tcp://127.0.0.1:60717"

SYSTEMD_UNIT = """\
[Unit]
Description=sdl lab service
After=network-online.target

[Service]
WorkingDirectory=/srv/lab
ExecStart=/srv/lab/.venv/bin/sdl daemon --lab /srv/lab/lab.yaml --data-dir /srv/lab/sdl-data
# SIGTERM to the service only: it finishes (or aborts) work in flight and stops its workers itself.
KillMode=mixed
TimeoutStopSec=120
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "daemon",
        parents=[common],
        help="run the lab service: it owns the lab and runs submitted campaigns",
        description="Run the lab service in the foreground. It owns the lab in LAB.yaml (one service per "
        "data directory), keeps one worker process per workcell, runs submitted campaigns on every free "
        "workcell that fits, and serves the API (`sdl submit`, `sdl status`, `sdl watch`...). After a crash "
        "or kill -9, start it again: it adopts its campaigns, marks the experiments that were in flight "
        "interrupted with their command journal, and makes instruments they were moving safe before reuse. "
        "SIGTERM (or Ctrl-C) stops it cleanly: work in flight is finished (--on-stop finish) or aborted, "
        "instruments are brought to a safe state, exit code 0. The addresses it listens on are written to "
        "DATA_DIR/daemon.json, where the other commands find them. Every socket is CurveZMQ, on loopback "
        "too: this account's own key (DATA_DIR/keys/owner.key_secret, readable by it alone) is an admin "
        "that the other commands find by themselves; other clients need a key on the allow-list (`sdl "
        "keys`). With --http it prints a sign-in URL for the dashboard.",
        epilog="Under systemd, use KillMode=mixed so SIGTERM reaches the service, not its workers:\n\n"
        + SYSTEMD_UNIT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--lab", type=Path, required=True, help="lab file: instruments and workcells (YAML)")
    p.add_argument(
        "--api", default=DEFAULT_API, help=f"API address (default {DEFAULT_API}; port 0: any free port)"
    )
    p.add_argument(
        "--events", default=DEFAULT_EVENTS, help=f"event publisher address (default {DEFAULT_EVENTS})"
    )
    p.add_argument(
        "--documents",
        default=DEFAULT_DOCUMENTS,
        help=f"where bluesky consumers subscribe to every run's documents (default {DEFAULT_DOCUMENTS})",
    )
    # CurveZMQ is always on (docs/access.md); the flag is still accepted so that older scripts keep working.
    p.add_argument("--curve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--keys",
        type=Path,
        metavar="FILE",
        help="the allow-list of client keys and roles (default DATA_DIR/keys.yaml; `sdl keys add`)",
    )
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="also serve the web dashboard here (e.g. 127.0.0.1:8080); operators sign in with a token",
    )
    p.add_argument(
        "--tokens",
        type=Path,
        metavar="FILE",
        help="the dashboard's sign-in tokens (default DATA_DIR/tokens.yaml; `sdl keys token`)",
    )
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve the dashboard over HTTPS with this")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="... and this private key")
    p.add_argument(
        "--anonymous-viewers",
        action="store_true",
        help="let visitors without a sign-in token see the dashboard as viewers (a wall screen); by default "
        "everyone signs in",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name the dashboard answers to besides its address (and localhost on loopback), e.g. the "
        "name of your HTTPS proxy; other Host headers are refused (DNS rebinding). Repeat for more",
    )
    p.add_argument(
        "--on-stop",
        choices=("finish", "abort"),
        default="finish",
        help="on SIGTERM: let experiments in flight finish (up to --stop-timeout), or abort them now",
    )
    p.add_argument(
        "--stop-timeout", type=float, default=60.0, metavar="S", help="seconds to wait (default 60)"
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, for the bearer token in "
        "DATA_DIR/keys/metrics.token (docs/deployment.md has the scrape configuration)",
    )
    p.add_argument(
        "--agents",
        metavar="ADDRESS",
        help="where agents on instrument PCs connect (`sdl agent`), e.g. tcp://0.0.0.0:60718, for the "
        "workcells the lab file gives an agent (default, when it gives any: a free port on loopback, for "
        "agents on this PC)",
    )
    p.add_argument(
        "--standby",
        action="store_true",
        help="stand by for the lab: wait while another service holds it, and take it over when that one "
        "is gone (its process dead on this machine, or its heartbeat older than "
        "$SDL_CLAIM_STALE_S, 10 s by default). Run it on a second machine with the same data directory's "
        "keys and the same --store (docs/deployment.md)",
    )
    p.set_defaults(handler=cmd_daemon)


def cmd_daemon(args: argparse.Namespace) -> int:
    from sdl.daemon.service import LabService  # ~0.1 s: not for its --help

    lab = load_lab(args.lab)
    data_dir = data_dir_of(args)
    listen = {"--api": args.api, "--events": args.events, "--documents": args.documents}
    if args.http:
        listen["--http"] = args.http.removeprefix("http://").removeprefix("https://")
    if args.metrics:
        listen["--metrics"] = host_and_port("--metrics", args.metrics, "127.0.0.1:9464")
    keyring = KeyRing(args.keys or data_dir / KEYS_FILE)
    try:
        allowed = len(keyring)
    except KeyFileError as exc:
        raise BadInput(str(exc)) from None
    if args.agents:
        listen["--agents"] = args.agents
    exposed = [a for a in (args.api, args.events, args.documents, args.agents) if a and not loopback(a)]
    if exposed and not allowed:
        raise BadInput(
            f"{exposed[0]}: not a loopback address, and {keyring.path} allows no client keys, so nobody "
            "on another machine could reach the lab; allow one with `sdl keys generate NAME` and "
            "`sdl keys add NAME NAME.key --role admin`"
        )
    # The ports last: a mistake in the command line or key files is named whatever else runs here.
    if not args.standby:  # a standby's addresses are held by the service it stands by for, maybe
        check_free(listen)  # before anything starts: simulators, workers, the store's claim
    with contextlib.suppress(OSError):  # if it cannot be made, the store says why
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new record: its owner's alone
    dashboard = None
    if args.http:  # the dashboard, served by the service's own process on its loop
        from sdl.dashboard.serve import HttpError, HttpOptions, InService  # ~0.15 s: only with --http

        try:
            http = HttpOptions.parse(
                args.http,
                tokens=args.tokens or data_dir / "tokens.yaml",
                cert=args.tls_cert,
                key=args.tls_key,
                allowed_hosts=args.allowed_host,
                anonymous=args.anonymous_viewers,
            )
        except HttpError as exc:
            raise BadInput(str(exc)) from None
        dashboard = InService(http)
    if getattr(args, "verbose", 0) == 0:
        logging.getLogger().setLevel(logging.INFO)  # a service's log says what the lab is doing
        for name in ("bluesky", "ophyd", "matplotlib", "caproto"):
            logging.getLogger(name).setLevel(logging.WARNING)
    service = LabService(
        lab,
        data_dir,
        api=args.api,
        events=args.events,
        documents=args.documents,
        on_stop=args.on_stop,
        stop_timeout=args.stop_timeout,
        keys=keyring.path,
        frontend=dashboard,
        standby=args.standby,
        metrics=args.metrics,
        agents=args.agents,
    )
    try:
        return service.run()
    except CampaignBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyFileError as exc:
        raise BadInput(str(exc)) from None


def loopback(address: str) -> bool:
    """An address only this machine reaches: 127.0.0.0/8, localhost, [::1], ipc:// or inproc://."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    host = address.removeprefix("tcp://").rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
