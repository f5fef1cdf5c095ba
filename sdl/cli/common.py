"""What every `sdl` command shares: exit codes, the bad-input error, where the store is, and whether an
address to listen on is free."""

from __future__ import annotations

import argparse
import errno
import os
import socket
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


def bind_data_dir(args: argparse.Namespace) -> None:
    """With --store URL: the data directory keeps its store in that PostgreSQL database from now on (every
    process that opens the data directory, the lab service's workers too, finds it there)."""
    url = getattr(args, "store", None)
    if url:
        from sdl.store import bind_store  # see open_store

        bind_store(data_dir_of(args), url)


def open_store(args: argparse.Namespace, *, create: bool = False, read_only: bool = False) -> Store:
    """The store under --data-dir: created if ``create``; read-only commands never write to it."""
    from sdl.store import Store  # jsonschema and more (0.06 s): not for `sdl --help`, nor for a client

    data_dir = data_dir_of(args)
    if not create and not Store.exists(data_dir):
        raise BadInput(f"no store in {data_dir} (give --data-dir, or run a campaign first)")
    return Store(data_dir, read_only=read_only)


def check_free(addresses: dict[str, str]) -> None:
    """Each TCP address (``tcp://HOST:PORT`` or ``HOST:PORT``, by the flag that sets it) can be listened on
    now, and no two share a port: raise :class:`BadInput` naming the port and the flag. Port 0 (any free
    port) and ipc:// are always fine."""
    taken: dict[tuple[str, int], str] = {}
    for flag, address in addresses.items():
        if "://" in address and not address.startswith("tcp://"):
            continue
        host, _, port_text = address.removeprefix("tcp://").rpartition(":")
        host = host.strip("[]")
        if not port_text.isdigit() or int(port_text) == 0:
            continue
        port = int(port_text)
        bind_host = "" if host == "*" else host
        if (bind_host, port) in taken:
            raise BadInput(f"{flag} {address}: port {port} is also given to {taken[bind_host, port]}")
        taken[bind_host, port] = flag
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as 0MQ and uvicorn bind
            try:
                probe.bind((bind_host, port))
            except socket.gaierror:
                continue  # an interface name 0MQ understands and the socket module does not: 0MQ decides
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise BadInput(
                        f"{flag} {address}: port {port} is already in use by another program; give another "
                        f"with {flag} (port 0: any free one)"
                    ) from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise BadInput(f"{flag} {address}: {host} is not an address of this machine") from None
                raise BadInput(f"{flag} {address}: cannot listen there: {exc.strerror or exc}") from None


def host_and_port(flag: str, value: str, example: str) -> str:
    """``value`` if it is HOST:PORT, else a clear error naming ``flag`` (exit 2)."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise BadInput(f"{flag} {value}: expected HOST:PORT, e.g. {example}")
    return value
