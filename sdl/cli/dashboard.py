"""`sdl dashboard`: the web dashboard as a process of its own, a client of a lab service."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from sdl.access.keys import read_public
from sdl.access.tokens import TOKENS_FILE, TokenFile
from sdl.api.client import Client, Credentials, local_service, service_info
from sdl.api.models import WhoAmI
from sdl.cli.common import EXIT_OK, BadInput, check_free, data_dir_of
from sdl.cli.control import client_options


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "dashboard",
        parents=[common, client_options()],
        help="serve the web dashboard of a lab service (a separate process)",
        description="Serve the live web dashboard of the lab service at --connect (default: the one of "
        "--data-dir) as a process of its own. Anonymous visitors see the lab as viewers when --http is a "
        "loopback address; elsewhere everyone signs in with a token (`sdl keys token NAME --key "
        "NAME.key_secret`) and acts on the lab service with that key, so the service checks its role and "
        "writes its name to the audit log. `sdl daemon --http` serves the same page from the service itself.",
    )
    p.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT", help="default 127.0.0.1:8080")
    p.add_argument(
        "--tokens", type=Path, metavar="FILE", help="sign-in tokens (default DATA_DIR/tokens.yaml)"
    )
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve over HTTPS with this certificate")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="... and this private key")
    p.set_defaults(handler=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    # uvicorn and Starlette, ~0.15 s: not for its --help
    from sdl.dashboard.backend import RemoteBackend
    from sdl.dashboard.serve import HttpError, HttpOptions, run_dashboard

    data_dir = data_dir_of(args)
    try:
        http = HttpOptions.parse(
            args.http, tokens=args.tokens or data_dir / TOKENS_FILE, cert=args.tls_cert, key=args.tls_key
        )
    except HttpError as exc:
        raise BadInput(str(exc)) from None
    check_free({"--http": args.http.removeprefix("http://").removeprefix("https://")})
    address = args.connect or local_service(data_dir)
    credentials = Credentials.load(args.key, args.server_key, data_dir=data_dir)
    if not http.loopback and credentials is None:
        raise BadInput(
            f"--http {args.http}: a dashboard others can reach must itself reach the lab service with a "
            "CurveZMQ key (--key, --server-key): the service's loopback trust must not leak to the network"
        )
    with Client(address, credentials=credentials) as probe:
        probe.call(WhoAmI())  # an unreachable service or a refused key: say so now, not on every page
    server_key = credentials.server if credentials else _server_key(args, data_dir, service_info)
    backend = RemoteBackend(address, credentials, TokenFile(http.tokens), http.loopback, server_key)
    logging.getLogger("sdl.dashboard").setLevel(logging.INFO)
    run_dashboard(backend, http)
    return EXIT_OK


def _server_key(args: argparse.Namespace, data_dir: Path, service_info: Any) -> bytes | None:
    if args.server_key:
        return read_public(args.server_key).encode()
    known = service_info(data_dir).get("server_key")
    return known.encode() if known else None
