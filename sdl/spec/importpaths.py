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


#: The entry-point group through which installed packages offer drivers (name -> make_device).
DRIVER_ENTRY_POINTS = "sdl.drivers"


def driver_names() -> list[str]:
    """Names of the drivers installed packages offer (the built-in ones among them)."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=DRIVER_ENTRY_POINTS)})


def resolve_driver(name_or_path: str, base_dir: Path | None = None) -> Any:
    """A driver's ``make_device`` from its entry-point name (``ne1000``) or its import path.

    A name without ``:`` is looked up in the ``sdl.drivers`` entry points of the installed
    packages; ``package.module:attribute`` is imported as :func:`resolve` does. Raises
    :class:`UnresolvedImport` naming the installed drivers when neither works.
    """
    if ":" in name_or_path:
        return resolve(name_or_path, base_dir)
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=DRIVER_ENTRY_POINTS) if ep.name == name_or_path]
    if not found:
        installed = ", ".join(driver_names()) or "none"
        raise UnresolvedImport(
            f"no driver named {name_or_path!r}; installed drivers: {installed} "
            "(or give an import path 'package.module:make_device')"
        )
    entry = found[0]
    try:
        factory = entry.load()
    except Exception as exc:
        raise UnresolvedImport(
            f"driver {name_or_path!r} ({entry.value}) failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(factory):
        raise UnresolvedImport(f"driver {name_or_path!r} ({entry.value}) is not callable")
    return factory
