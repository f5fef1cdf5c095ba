"""Who is calling and what they may do: the three client roles (and the agents'), the caller of a request,
and a refusal.

The API's models name a method's role (`sdl.api.models`), the allow-list gives each key one
(`sdl.access.keys`), and the server checks one against the other for every request (`sdl.api.server`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """Who may call a method: each role may do what the roles before it may."""

    VIEWER = "viewer"  # read and watch
    OPERATOR = "operator"  # run campaigns: submit, pause, resume, stop, abort, budget, e-stop
    ADMIN = "admin"  # the lab itself: quarantine, release, clear the e-stop, keys, shut the service down
    AGENT = "agent"  # an instrument PC's agent: serves its workcells, and nothing else (no API at all)

    def allows(self, needed: Role) -> bool:
        if Role.AGENT in (self, needed):  # outside the chain: an agent's key opens no client's door
            return self is needed
        order = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a name for the audit log, a role, and where from."""

    name: str
    role: Role
    origin: str | None = None


class Refused(Exception):
    """A caller that could not be authenticated: the message says why; ``who`` and ``origin`` go to the
    audit log."""

    def __init__(self, message: str, who: str, origin: str | None) -> None:
        super().__init__(message)
        self.who = who
        self.origin = origin
