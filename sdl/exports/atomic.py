"""Exports land whole or not at all: each is written beside its target under a temporary name and renamed
into place once complete, so a failed export (a full disk, an error half-way) leaves nothing behind — not
a folder without its descriptor, not a truncated file."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class TargetTaken(ValueError):
    """The target exists and is not an empty directory: an export never overwrites anything."""


@contextmanager
def new_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh directory to write into; on success it becomes ``target`` (which must be absent or an
    empty directory), on failure it is removed."""
    target = Path(os.path.abspath(target))
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise TargetTaken(f"{target} exists and is not an empty directory; choose a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(target)
    partial.mkdir()
    try:
        yield partial
        os.rename(partial, target)  # atomic; replaces an empty directory, refuses a non-empty one
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


@contextmanager
def new_file(target: Path) -> Iterator[Path]:
    """Yield a path to write a file at; on success it replaces ``target``, on failure it is removed."""
    target = Path(os.path.abspath(target))
    partial = _partial(target)
    try:
        yield partial
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _partial(target: Path) -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
