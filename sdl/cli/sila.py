"""`sdl sila serve --lab LAB.yaml`: every instrument of a lab as a SiLA 2 server.

The core knows no driver, so the serving code is found like a driver is: through the
``sdl.sila`` entry point ``serve`` (``drivers.sila2.serve:serve_devices`` in this package). This
command brings the lab up (its simulator, if it has one, then each device connected), hands the
devices over, prints ``NAME HOST:PORT UUID [CERTIFICATE]`` per served instrument, and serves until
SIGTERM or Ctrl-C, when it stops the servers, then every device, then the simulator.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from sdl.cli.common import EXIT_OK, BadInput
from sdl.execution.bringup import LabError, LabSession
from sdl.spec.campaign import Lab
from sdl.spec.lab import load_lab
from sdl.spec.loading import load_campaign

ENTRY_POINTS = "sdl.sila"


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    sila = commands.add_parser(
        "sila",
        parents=[common],
        help="SiLA 2: serve a lab's instruments to other orchestrators",
        description="SiLA 2, the lab-automation standard over gRPC. Drive a SiLA 2 device from a lab file "
        "with `driver: sila2`; serve our instruments to another orchestrator with `sdl sila serve`.",
    )
    actions = sila.add_subparsers(dest="sila_command", metavar="ACTION", required=True)
    serve = actions.add_parser(
        "serve",
        parents=[common],
        help="serve each instrument of a lab as a SiLA 2 server",
        description="Bring up the lab of LAB (a lab file, or a campaign file with a lab:), real or "
        "simulated, and serve each pump, arm and spectrometer as a SiLA 2 server of its own, with TLS "
        "(a self-signed certificate per server, carrying its UUID, kept in --certs) and SiLA Server "
        "Discovery. Prints 'NAME HOST:PORT UUID CERTIFICATE' per served instrument, then 'ready', and "
        "serves until SIGTERM or Ctrl-C.",
    )
    serve.add_argument(
        "--lab", type=Path, required=True, metavar="LAB.yaml", help="lab file or campaign file"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="first port (default: a free port per server)")
    serve.add_argument(
        "--certs",
        type=Path,
        default=Path("sila-certs"),
        help="where each server's key and certificate are kept (default ./sila-certs)",
    )
    serve.add_argument("--insecure", action="store_true", help="no TLS (violates SiLA 2; tests only)")
    serve.add_argument("--no-discovery", action="store_true", help="do not announce the servers (mDNS)")
    serve.set_defaults(handler=cmd_serve)


def _server() -> Any:
    found = [ep for ep in entry_points(group=ENTRY_POINTS) if ep.name == "serve"]
    if not found:
        raise BadInput("no SiLA 2 server installed (pip install 'sdl[sila]')")
    try:
        return found[0].load()
    except ImportError as exc:
        raise BadInput(f"the SiLA 2 server cannot load ({exc}); pip install 'sdl[sila]'") from None


def _lab(path: Path) -> tuple[Any, str, Path]:
    """(campaign.Lab, name, base directory) of a lab file or a campaign file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BadInput(f"{path}: cannot read: {exc}") from None
    if isinstance(data, dict) and "lab" in data and "workcells" not in data:
        loaded = load_campaign(path, check_imports=False)
        return loaded.campaign.lab, loaded.campaign.name, loaded.base_dir
    spec = load_lab(path)
    lab = Lab(
        simulated=spec.simulated,
        speed=spec.speed,
        startup_timeout=spec.startup_timeout,
        instruments=spec.instruments,
    )
    return lab, spec.name, path.parent


def cmd_serve(args: argparse.Namespace) -> int:
    serve = _server()
    lab, name, base_dir = _lab(args.lab)
    if not lab.instruments:
        raise BadInput(f"{args.lab}: the lab has no instruments")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with LabSession(lab, base_dir) as session:
            served = serve(
                session.devices,
                host=args.host,
                port=args.port,
                certs=args.certs,
                insecure=args.insecure,
                discovery=not args.no_discovery,
                lab=name,
            )
            for server in served:
                parts = [server.name, server.address, server.uuid]
                if server.certificate is not None:
                    parts.append(str(server.certificate))
                print(" ".join(parts), flush=True)
            print("ready", flush=True)
            stop.wait()
            for server in reversed(served):
                server.stop()
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return EXIT_OK
