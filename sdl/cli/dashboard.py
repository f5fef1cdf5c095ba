"""`sdl dashboard`: the web dashboard as a process of its own, a client of a lab service."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from sdl.access.keys import KeyFileError
from sdl.access.owner import owner_token
from sdl.access.tokens import TOKENS_FILE, TokenFile
from sdl.api.client import Client, Credentials, local_service
from sdl.api.models import WhoAmI
from sdl.cli.common import EXIT_OK, BadInput, check_free, data_dir_of
from sdl.cli.control import client_options


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "dashboard",
        parents=[common, client_options()],
        help="serve the web dashboard of a lab service (a separate process)",
        description="Serve the live web dashboard of the lab service at --connect (default: the one of "
        "--data-dir) as a process of its own, reaching it with --key (default: the data directory owner's "
        "key). Everyone signs in: with the sign-in URL it prints (acting with its own key), or with a token "
        "(`sdl keys token NAME --key NAME.key_secret`), acting on the lab service with that token's key, "
        "so the service checks its role and writes its name to the audit log; anonymous visitors only with "
        "--anonymous-viewers. `sdl daemon --http` serves the same page from the service itself.",
    )
    p.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT", help="default 127.0.0.1:8080")
    p.add_argument(
        "--tokens", type=Path, metavar="FILE", help="sign-in tokens (default DATA_DIR/tokens.yaml)"
    )
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve over HTTPS with this certificate")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="... and this private key")
    p.add_argument(
        "--anonymous-viewers",
        action="store_true",
        help="let visitors without a sign-in token see the lab as viewers (with the dashboard's own key, "
        "capped at viewer); by default everyone signs in",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name the dashboard answers to besides its address (and localhost on loopback), e.g. the "
        "name of your HTTPS proxy; other Host headers are refused (DNS rebinding). Repeat for more",
    )
    p.set_defaults(handler=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    # uvicorn and Starlette, ~0.15 s: not for its --help
    from sdl.dashboard.backend import RemoteBackend
    from sdl.dashboard.serve import HttpError, HttpOptions, run_dashboard

    data_dir = data_dir_of(args)
    try:
        http = HttpOptions.parse(
            args.http,
            tokens=args.tokens or data_dir / TOKENS_FILE,
            cert=args.tls_cert,
            key=args.tls_key,
            allowed_hosts=args.allowed_host,
            anonymous=args.anonymous_viewers,
        )
    except HttpError as exc:
        raise BadInput(str(exc)) from None
    check_free({"--http": args.http.removeprefix("http://").removeprefix("https://")})
    address = args.connect or local_service(data_dir)
    credentials = Credentials.load(args.key, args.server_key, data_dir=data_dir)
    if credentials is None:
        raise BadInput(
            "no key to reach the lab service with: give --key FILE (and --server-key FILE), or run this as "
            f"the account that owns {data_dir}"
        )
    with Client(address, credentials=credentials) as probe:
        identity = probe.call(WhoAmI())  # an unreachable service or a refused key: say so now
    try:
        token = owner_token(data_dir)
    except KeyFileError as exc:
        raise BadInput(str(exc)) from None
    backend = RemoteBackend(
        address, credentials, TokenFile(http.tokens), anonymous=http.anonymous, owner_token=token,
        identity=identity,
    )  # fmt: skip
    logging.getLogger("sdl.dashboard").setLevel(logging.INFO)
    run_dashboard(backend, http, token)
    return EXIT_OK
