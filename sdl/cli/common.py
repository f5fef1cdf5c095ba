"""What every `sdl` command shares: exit codes, the bad-input error, and where the store is."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sdl.api.local import DEFAULT_DATA_DIR

if TYPE_CHECKING:
    from sdl.store import Store

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
__all__ = ["DEFAULT_DATA_DIR", "EXIT_BAD_INPUT", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "BadInput"]


class BadInput(Exception):
    """The user asked for something that cannot be (exit 2, nothing written)."""


def data_dir_of(args: argparse.Namespace) -> Path:
    given = getattr(args, "data_dir", None)
    return Path(given or os.environ.get("SDL_DATA_DIR") or DEFAULT_DATA_DIR)


def open_store(args: argparse.Namespace, *, create: bool = False, read_only: bool = False) -> Store:
    """The store under --data-dir: created if ``create``; read-only commands never write to it."""
    from sdl.store import Store  # jsonschema and more (0.06 s): not for `sdl --help`, nor for a client

    data_dir = data_dir_of(args)
    if not create and not Store.exists(data_dir):
        raise BadInput(f"no store in {data_dir} (give --data-dir, or run a campaign first)")
    return Store(data_dir, read_only=read_only)
