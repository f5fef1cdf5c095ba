"""The `sdl` command: run campaigns in the foreground and inspect, export and plot their record.

Exit codes: 0 ok, 1 failure (one-line error; -v for the traceback), 2 bad input (nothing written),
130 interrupted (Ctrl-C; the experiment in flight is marked interrupted).

Every command module is imported to build the parser, so their imports are at their tops; two are imported
only by the commands that need them, for what they cost every other command (measured after `sdl --help`
on a loaded two-core machine): the lab service (`sdl.daemon.service`, about 0.1 s) for `sdl daemon`, and
the dashboard (`sdl.dashboard`, uvicorn and Starlette, about 0.15 s) for `sdl daemon --http` and
`sdl dashboard`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from sdl.api.client import ServiceUnavailable
from sdl.api.models import ApiError
from sdl.cli import access, control, daemon, dashboard, inspect, records, run, sila
from sdl.cli.common import (
    DEFAULT_DATA_DIR,
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BadInput,
    bind_data_dir,
    data_dir_of,
    open_store,
)
from sdl.exports import PackageError
from sdl.loop.warmstart import WarmStartError
from sdl.spec.lab import LabFileError
from sdl.spec.loading import CampaignError
from sdl.store import ImportConflict, SchemaTooNew, StoreUnavailable, UnknownCampaign

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "BadInput",
    "build_parser",
    "data_dir_of",
    "main",
    "open_store",
]

#: API errors that are the user's own mistake (exit 2) rather than the lab's state or a failure (exit 1).
USER_MISTAKES = frozenset({"invalid_campaign", "invalid_params", "not_found", "forbidden", "unauthenticated"})
log = logging.getLogger("sdl")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"directory holding the store (default: $SDL_DATA_DIR or ./{DEFAULT_DATA_DIR})",
    )
    common.add_argument(
        "--store",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="keep the data directory's store in this PostgreSQL database (postgresql://USER@HOST:PORT/DB), "
        "recorded in DATA_DIR/store.url for every later command (default: SQLite's file in the data dir)",
    )
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="log what happens (-vv: debug)"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="sdl",
        description="Self-driving-lab orchestration: run closed-loop optimisation campaigns over lab "
        "instruments (or plain functions) and keep a durable record of every experiment.",
        parents=[common],
        epilog="Run `sdl COMMAND --help` for a command's options. Exit codes: 0 ok, 1 failure, 2 bad input, "
        "130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run.register(commands, common)
    inspect.register(commands, common)
    daemon.register(commands, common)
    control.register(commands, common)
    access.register(commands, common)
    dashboard.register(commands, common)
    records.register(commands, common)
    sila.register(commands, common)
    return parser


def _setup_logging(verbosity: int, console: Console) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_quiet_operator_abort)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Our own loggers carry the story (a failed experiment's reason included); the libraries' own
    # tracebacks for the same failure only with -vv.
    for name in ("bluesky", "ophyd", "matplotlib", "caproto"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity >= 2 else logging.CRITICAL)


def _quiet_operator_abort(record: logging.LogRecord) -> bool:
    """Drop bluesky's traceback for an abort the operator asked for (Ctrl-C): it is not an error."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (record.name.startswith("bluesky") and type(exc).__name__ in ("RequestAbort", "RequestStop"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sdl` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = getattr(args, "verbose", 0) or 0
    err = Console(stderr=True)
    _setup_logging(verbosity, err)
    try:
        bind_data_dir(args)
        return int(args.handler(args) or 0)
    except (CampaignError, LabFileError) as exc:
        for problem in exc.problems:
            err.print(f"[red]error:[/] {problem}", markup=True, highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except ApiError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        for detail in exc.error.details:
            err.print(f"[red]error:[/] {detail}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT if exc.error.type in USER_MISTAKES else EXIT_FAILURE
    except ServiceUnavailable as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_FAILURE
    except (
        BadInput,
        UnknownCampaign,
        SchemaTooNew,
        StoreUnavailable,
        WarmStartError,
        PackageError,
        ImportConflict,
    ) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if verbosity:
            log.exception("sdl %s failed", args.command)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        err.print(f"[red]error:[/] {type(exc).__name__}: {first}", highlight=False, soft_wrap=True)
        return EXIT_FAILURE
