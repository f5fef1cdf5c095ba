"""The names the dashboard answers to, checked before anything else runs (a defence against DNS rebinding).

A web page on any site can point its own name at 127.0.0.1 (or at the lab's address) once the browser has
loaded it, and then read whatever the dashboard serves as if it were the same site: the browser sends that
site's name in the Host header. So the dashboard serves only requests whose Host is the address it is bound
to, a loopback name when it is bound to loopback, or a name the operator configured (``--allowed-host``, e.g.
the name of a reverse proxy in front of it); everything else gets ``400`` before any route runs, and the
refusal is audited. An IP address in the Host header cannot be rebound (no one else's page has that origin),
so any address is accepted when the dashboard listens on every interface.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: Longest Host header looked at (and written to the audit log).
MAX_HOST = 255
WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class AllowedHosts:
    """``bound``: the host the dashboard listens on; ``names``: names configured by the operator."""

    bound: str
    names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, bound: str, names: Iterable[str] = ()) -> AllowedHosts:
        return cls(bound.strip("[]").lower(), frozenset(_bare(n) for n in names if n))

    @property
    def loopback(self) -> bool:
        return self.bound == "localhost" or _is_loopback(self.bound)

    def accepts(self, header: str | None) -> bool:
        if not header or len(header) > MAX_HOST:
            return False
        name = _bare(_without_port(header))
        if not name:
            return False
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return name in self.names or name == self.bound or (self.loopback and name == "localhost")
        if self.bound in WILDCARDS:
            return True
        if self.loopback:
            return address.is_loopback
        return name == self.bound

    def describe(self) -> str:
        names = sorted({self.bound, *self.names, *(("localhost",) if self.loopback else ())} - {""})
        return ", ".join(names)


def _without_port(header: str) -> str:
    header = header.strip()
    if header.startswith("["):  # [::1]:8080
        return header[1 : header.find("]")] if "]" in header else ""
    name, colon, port = header.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name
    return header


def _bare(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()


def _is_loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


#: Told (the Host header, the client's address) for every request refused.
OnRefused = Callable[[str, str | None], None]


class HostCheck:
    """ASGI middleware: refuse a request whose Host is not allowed, before routing."""

    def __init__(self, app: ASGIApp, allowed: AllowedHosts, on_refused: OnRefused) -> None:
        self.app = app
        self.allowed = allowed
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope["headers"] if k == b"host"]
        header = values[0].decode("latin-1") if len(values) == 1 else None
        if self.allowed.accepts(header):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        self.on_refused((header or "")[:MAX_HOST], client[0] if client else None)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        message = (
            "this dashboard does not answer to that name (DNS rebinding?); it answers to "
            f"{self.allowed.describe()}: give `--allowed-host NAME` for another name"
        )
        response = JSONResponse(
            {"ok": False, "error": {"type": "bad_request", "message": message, "details": []}},
            status_code=400,
        )
        await response(scope, receive, send)
