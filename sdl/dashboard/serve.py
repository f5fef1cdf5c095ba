"""Serving the dashboard with uvicorn: inside the lab service (`sdl daemon --http`, wired in by the CLI as
the service's frontend), on the service's own asyncio loop; or as a process of its own (`sdl dashboard
--connect URL`)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from sdl.access.owner import owner_token
from sdl.access.tokens import TokenFile
from sdl.api.server import Execute
from sdl.daemon.state import LabState
from sdl.dashboard.app import create_app
from sdl.dashboard.backend import Backend, ServiceBackend
from sdl.dashboard.hosts import MAX_HOST, AllowedHosts

log = logging.getLogger(__name__)


class HttpError(ValueError):
    """A --http address or its TLS files cannot be used (the message says why)."""


@dataclass
class HttpOptions:
    host: str
    port: int
    tokens: Path
    cert: Path | None = None
    key: Path | None = None
    allowed_hosts: tuple[str, ...] = ()
    anonymous: bool = False

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        tokens: Path,
        cert: Path | None = None,
        key: Path | None = None,
        allowed_hosts: Sequence[str] = (),
        anonymous: bool = False,
    ) -> HttpOptions:
        host, _, port = text.removeprefix("http://").removeprefix("https://").rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or int(port) > 65535:
            raise HttpError(f"--http {text}: give HOST:PORT, e.g. 127.0.0.1:8080")
        if (cert is None) != (key is None):
            raise HttpError("--tls-cert and --tls-key go together")
        for path in (cert, key):
            if path is not None and not path.is_file():
                raise HttpError(f"{path}: no such file")
        for name in allowed_hosts:
            if not name or len(name) > MAX_HOST or any(c in name for c in "/@ :[]") or name != name.strip():
                raise HttpError(
                    f"--allowed-host {name!r}: give a host name as a browser asks for it (lab.example.org)"
                )
        options = cls(host, int(port), tokens, cert, key, tuple(allowed_hosts), anonymous)
        if not options.loopback and cert is None:
            raise HttpError(
                f"--http {text}: not a loopback address; sign-in tokens must not cross the network in clear: "
                "give --tls-cert and --tls-key (or serve on 127.0.0.1 behind your own HTTPS proxy)"
            )
        return options

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def hosts(self) -> AllowedHosts:
        return AllowedHosts.of(self.host, self.allowed_hosts)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.cert else 'http'}://{host}:{self.port}"

    def bind(self) -> socket.socket:
        """Bind the listening socket now (port 0: any free port, then known), so the URL can be published."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise HttpError(
                f"cannot serve the dashboard on {self.host}:{self.port}: {exc.strerror}"
            ) from None
        sock.listen(128)
        sock.set_inheritable(False)
        self.port = sock.getsockname()[1]
        return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process that runs it decides what a signal means."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(backend: Backend, http: HttpOptions) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(backend, http.hosts, secure_cookie=http.cert is not None),
        lifespan="off",
        log_level="warning",
        access_log=False,
        ssl_certfile=str(http.cert) if http.cert else None,
        ssl_keyfile=str(http.key) if http.key else None,
        timeout_graceful_shutdown=2,
    )


class InService:
    """The dashboard as the lab service's frontend (`sdl daemon --http`): its socket is bound before the
    service writes daemon.json, then it serves on the service's loop until cancelled."""

    def __init__(self, http: HttpOptions) -> None:
        self.http = http
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return self.http.url

    def bind(self) -> None:
        self._socket = self.http.bind()

    async def serve(self, state: LabState, execute: Execute) -> None:
        sock = self._socket
        assert sock is not None, "bind() first"
        token = owner_token(state.store.data_dir)
        backend = ServiceBackend(
            state, execute, TokenFile(self.http.tokens), anonymous=self.http.anonymous, owner_token=token
        )
        server = _Server(_config(backend, self.http))
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        summaries = asyncio.ensure_future(_summarise_refusals(backend))
        announce(self.http, token)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            server.should_exit = True
            await asyncio.wait({task}, timeout=5)
            raise
        finally:
            summaries.cancel()
            sock.close()
            backend.refusals.flush(everything=True)


async def _summarise_refusals(backend: Backend) -> None:
    """Write the summaries of throttled refusals as their windows close."""
    while True:
        await asyncio.sleep(1.0)
        try:
            backend.refusals.flush()
        except Exception:
            log.exception("could not write the audit log")


def announce(http: HttpOptions, token: str) -> None:
    """Say where the dashboard is, and the owner's sign-in URL (as Jupyter does: the token is in the data
    directory too, readable by its owner alone)."""
    log.warning("dashboard on %s", http.url)
    log.warning("sign in at %s", sign_in_url(http.url, token))


def sign_in_url(url: str, token: str) -> str:
    return f"{url}/?token={token}"


def run_dashboard(backend: Backend, http: HttpOptions, token: str) -> None:
    """`sdl dashboard`: serve until SIGINT or SIGTERM."""
    sock = http.bind()
    announce(http, token)
    try:
        uvicorn.Server(_config(backend, http)).run(sockets=[sock])
    finally:
        sock.close()
        backend.close()
