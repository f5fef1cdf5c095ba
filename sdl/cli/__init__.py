"""The `sdl` command: run campaigns in the foreground and inspect, export and plot their record.

Exit codes: 0 ok, 1 failure (one-line error; -v for the traceback), 2 bad input (nothing written),
130 interrupted (Ctrl-C; the experiment in flight is marked interrupted).

A command imports only its own module: `sdl --help` lists the commands from :data:`COMMANDS` and imports
none of them, and the errors are told apart by the modules already loaded (an exception of a class whose
module was never imported cannot have been raised). Importing every command module costs 0.6-0.9 s of CPU
(bluesky, numpy, pydantic's models, rich), which `sdl --help` and `sdl status` without a lab service
would pay for nothing (`benchmarks/cli.py`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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

__all__ = [
    "COMMANDS",
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

#: Every command, in the order `sdl --help` lists them: the module of sdl.cli that registers and runs it,
#: and its line in the list (tests/test_cli.py checks these against what the modules register).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run a campaign in the foreground"),
    "demo": ("run", "run the packaged colour-matching demo on the simulated lab"),
    "schema": ("inspect", "print the campaign file's (or the lab file's) JSON Schema"),
    "validate": ("inspect", "check a campaign file or a lab file"),
    "campaigns": ("inspect", "list the campaigns in the store"),
    "show": ("inspect", "show one campaign and its experiments"),
    "export": (
        "inspect",
        "export a campaign: CSV, JSON lines, a data package, Parquet, or its bluesky documents",
    ),
    "plot": ("inspect", "plot a campaign's progress to a PNG"),
    "delete": ("inspect", "delete a campaign and everything recorded for it"),
    "backup": ("inspect", "copy the whole store, safely, even while campaigns run"),
    "daemon": ("daemon", "run the lab service: it owns the lab and runs submitted campaigns"),
    "agent": ("agent", "run this PC's workcells for a lab service on another PC"),
    "submit": ("control", "submit a campaign to the lab service"),
    "status": ("control", "the lab at a glance"),
    "watch": ("control", "follow a campaign (or the whole lab) live"),
    "pause": ("control", "finish the experiments in flight, start no new ones"),
    "resume": ("control", "start experiments again (a paused, stopped or stale campaign)"),
    "stop": ("control", "stop after the experiments in flight (the campaign ends interrupted)"),
    "abort": ("control", "abort the campaign's experiments now: every moving device is stopped"),
    "budget": ("control", "change a campaign's budget"),
    "estop": ("control", "emergency stop: stop every instrument now"),
    "instruments": ("control", "instruments and their health"),
    "quarantine": ("control", "take an instrument out of service"),
    "release": ("control", "put an instrument back in service"),
    "inventory": ("inventory", "the lab's stocks: what each holds, its lot, what is claimed, refills to do"),
    "restock": ("inventory", "record a refill, a new lot or a count of a stock"),
    "tasks": ("inventory", "what people are asked to do (refills), newest first"),
    "task": ("inventory", "acknowledge, complete or cancel a task"),
    "approvals": ("approvals", "proposals waiting for an operator's approval"),
    "approve": ("approvals", "let a waiting proposal run"),
    "reject": ("approvals", "refuse a waiting proposal (recorded as a failure)"),
    "keys": ("access", "CurveZMQ keys: generate pairs, allow client keys with a role, dashboard tokens"),
    "audit": ("access", "the audit log: every control command and every refusal"),
    "dashboard": ("dashboard", "serve the web dashboard of a lab service (a separate process)"),
    "import": ("records", "load a campaign's data package into this store"),
    "publish": ("records", "publish a campaign's runs to a Tiled server"),
    "sila": ("sila", "SiLA 2: serve a lab's instruments to other orchestrators"),
}

#: The errors a command reports in one line, by where users import them from; the exit code each gives.
#: Those with ``problems`` (a file's mistakes) print one line per problem.
REPORTED: dict[str, int] = {
    "sdl.spec.loading:CampaignError": EXIT_BAD_INPUT,
    "sdl.spec.lab:LabFileError": EXIT_BAD_INPUT,
    "sdl.api.local:ServiceUnavailable": EXIT_FAILURE,
    "sdl.cli.common:BadInput": EXIT_BAD_INPUT,
    "sdl.store:UnknownCampaign": EXIT_BAD_INPUT,
    "sdl.store:SchemaTooNew": EXIT_BAD_INPUT,
    "sdl.store:StoreUnavailable": EXIT_BAD_INPUT,
    "sdl.store:ImportConflict": EXIT_BAD_INPUT,
    "sdl.loop.warmstart:WarmStartError": EXIT_BAD_INPUT,
    "sdl.exports:PackageError": EXIT_BAD_INPUT,
}
#: The API's typed error: exit 2 for the user's own mistakes (:data:`USER_MISTAKES`), 1 for the lab's state.
API_ERROR = "sdl.api.models:ApiError"
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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `sdl` parser; with ``command``, only that command's module is imported and registers its commands
    in full (the others are listed by name)."""
    return _parser(None if command is None else {COMMANDS[command][0]})


def _parser(modules: set[str] | None) -> argparse.ArgumentParser:
    """The parser with the commands of ``modules`` (None: all) registered in full, the others listed."""
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
    registered: set[str] = set()
    for name, (module, summary) in COMMANDS.items():
        if modules is None or module in modules:
            if module not in registered:
                registered.add(module)
                importlib.import_module(f"sdl.cli.{module}").register(commands, common)
        else:  # listed, not imported: a stub that takes whatever follows it
            commands.add_parser(name, help=summary, add_help=False)
    return parser


def _command(argv: Sequence[str]) -> str:
    """The command ``argv`` names (`sdl --help`, no command or an unknown one end here, as argparse does)."""
    known, _ = _parser(set()).parse_known_args(argv)
    return str(known.command)


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.console import Console  # rich: only for a terminal (0.15 s)
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command(argv)).parse_args(argv)
    verbosity = getattr(args, "verbose", 0) or 0
    _setup_logging(verbosity)
    try:
        bind_data_dir(args)
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        _error("interrupted", plain=True)
        return EXIT_INTERRUPTED
    except Exception as exc:
        return _report(exc, args, verbosity)


def _report(exc: Exception, args: argparse.Namespace, verbosity: int) -> int:
    """Say what went wrong in one line (a file's mistakes one per line); the exit code."""
    api_error = _loaded(API_ERROR)
    if api_error is not None and isinstance(exc, api_error):
        error: Any = exc
        _error(str(error))
        for detail in error.error.details:
            _error(detail)
        return EXIT_BAD_INPUT if error.error.type in USER_MISTAKES else EXIT_FAILURE
    for path, code in REPORTED.items():
        known = _loaded(path)
        if known is not None and isinstance(exc, known):
            problems: list[str] | None = getattr(exc, "problems", None)
            for line in problems if problems is not None else [str(exc)]:
                _error(line)
            return code
    if verbosity:
        log.exception("sdl %s failed", args.command)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    _error(f"{type(exc).__name__}: {first}")
    return EXIT_FAILURE


def _loaded(path: str) -> type[BaseException] | None:
    """The exception class at ``path`` ('module:Name') if its module is loaded; None if it is not, for then
    nothing can have raised it."""
    module, _, name = path.partition(":")
    found: Any = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _error(message: str, *, plain: bool = False) -> None:
    if sys.stderr.isatty():
        from rich.console import Console  # rich: only for a terminal (0.15 s)

        text = message if plain else f"[red]error:[/] {message}"
        Console(stderr=True).print(text, markup=not plain, highlight=False, soft_wrap=True)
    else:
        print(message if plain else f"error: {message}", file=sys.stderr)
