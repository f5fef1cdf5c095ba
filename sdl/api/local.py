"""Where the local lab service is: the record it keeps in its data directory (``daemon.json``) while it runs.

Kept free of 0MQ and pydantic on purpose: a command that finds no lab service says so before it has
imported the client (`sdl status` without a service answers in a fraction of a second).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, cast

DEFAULT_API = "tcp://127.0.0.1:60715"
INFO_FILE = "daemon.json"
DEFAULT_DATA_DIR = "sdl-data"


class ServiceUnavailable(ConnectionError):
    """Nothing answered at the address (the lab service is not running there)."""


def data_directory(data_dir: Path | str | None = None) -> Path:
    """The data directory meant: the one given, else $SDL_DATA_DIR, else ./sdl-data (as the CLI's default)."""
    return Path(data_dir or os.environ.get("SDL_DATA_DIR") or DEFAULT_DATA_DIR)


def service_info(data_dir: Path | str | None = None) -> dict[str, Any]:
    """What the local lab service wrote to the data directory's daemon.json (empty if it is not running)."""
    try:
        info: object = json.loads((data_directory(data_dir) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return cast(dict[str, Any], info) if isinstance(info, dict) else {}


def address_for(data_dir: Path | str | None = None) -> str:
    """Where the local lab service listens: from the data directory's daemon.json, else the default."""
    return str(service_info(data_dir).get("api") or DEFAULT_API)


def local_service(data_dir: Path | str | None = None) -> str:
    """The API address of the lab service that keeps ``data_dir``. Raises :class:`ServiceUnavailable` at once,
    saying how to start one, when the directory has no record of a running service, or when its record names
    a process of this machine that is no longer running."""
    directory = data_directory(data_dir)
    start = f"start one with `sdl daemon --lab LAB.yaml --data-dir {directory}`, or give --connect URL"
    info = service_info(directory)
    if not info.get("api"):
        raise ServiceUnavailable(
            f"no lab service runs with data directory {directory} (it has no {INFO_FILE}): {start}"
        )
    pid = info.get("pid")
    same_host = info.get("host") in (None, socket.gethostname())
    if same_host and isinstance(pid, int) and not _running(pid):
        raise ServiceUnavailable(
            f"the lab service recorded in {directory / INFO_FILE} (process {pid}) is not running: it "
            f"stopped without removing its record; {start}"
        )
    return str(info["api"])


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:  # a zombie is as good as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
