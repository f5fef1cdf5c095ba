"""Resolve 'package.module:attribute' import paths, the way a campaign names its code and drivers."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class UnresolvedImport(ImportError):
    """An import path that does not lead to an object."""


@contextmanager
def importable(directory: Path | None) -> Iterator[None]:
    """Let modules in ``directory`` (the campaign file's folder) be imported, without shadowing packages."""
    if directory is None or str(directory) in sys.path:
        yield
        return
    sys.path.append(str(directory))
    try:
        yield
    finally:
        if str(directory) in sys.path:
            sys.path.remove(str(directory))


def resolve(path: str, base_dir: Path | None = None) -> Any:
    """Import ``package.module:attr.sub`` and return the attribute, or raise :class:`UnresolvedImport`."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UnresolvedImport(f"{path!r} is not of the form 'package.module:attribute'")
    with importable(base_dir):
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise UnresolvedImport(f"cannot import module {module_name!r} ({exc})") from exc
        except Exception as exc:  # user code failing at import time is still a bad import path
            raise UnresolvedImport(
                f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise UnresolvedImport(f"module {module_name!r} has no attribute {attribute!r}") from exc
    if not callable(obj):
        raise UnresolvedImport(f"{path!r} is not callable")
    return obj
