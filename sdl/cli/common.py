"""What every `sdl` command shares: exit codes, the bad-input error, and where the store is."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sdl.store import Store, bind_store

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_DATA_DIR = "sdl-data"


class BadInput(Exception):
    """The user asked for something that cannot be (exit 2, nothing written)."""


def data_dir_of(args: argparse.Namespace) -> Path:
    given = getattr(args, "data_dir", None)
    return Path(given or os.environ.get("SDL_DATA_DIR") or DEFAULT_DATA_DIR)


def bind_data_dir(args: argparse.Namespace) -> None:
    """With --store URL: the data directory keeps its store in that PostgreSQL database from now on (every
    process that opens the data directory, the lab service's workers too, finds it there)."""
    url = getattr(args, "store", None)
    if url:
        bind_store(data_dir_of(args), url)


def open_store(args: argparse.Namespace, *, create: bool = False, read_only: bool = False) -> Store:
    """The store under --data-dir: created if ``create``; read-only commands never write to it."""
    data_dir = data_dir_of(args)
    if not create and not Store.exists(data_dir):
        raise BadInput(f"no store in {data_dir} (give --data-dir, or run a campaign first)")
    return Store(data_dir, read_only=read_only)
