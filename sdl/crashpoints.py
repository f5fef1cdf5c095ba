"""Deterministic crash injection, for testing exact recovery at each commit point.

    SDL_CRASH_FILE=/tmp/crash   # holding e.g. "worker store.journal 2"

The process whose role matches (``service`` or ``worker``) exits at once, as a ``kill -9`` would — no
cleanup, no flush — the 2nd time it passes ``store.journal``, and deletes the file first, so the crash
happens once across every process and restart of the lab. Without the variable a crash point costs one
dictionary look-up.
"""

from __future__ import annotations

import os
from pathlib import Path

role = "process"
_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    path = os.environ.get("SDL_CRASH_FILE")
    if not path:
        return
    try:
        wanted_role, point, nth = Path(path).read_text().split()
    except (OSError, ValueError):
        return
    if wanted_role != role or point != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth):
        try:
            Path(path).unlink()
        except OSError:
            return  # another process took this crash
        os._exit(137)
