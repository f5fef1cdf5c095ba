"""The disk that holds the store: a full one is a fault of the lab, and the lab resumes by itself when it has
room again.

When a write fails for want of space — the service's own, or a worker's (it says so) — or the free space
falls below a reserve, the lab raises the ``storage`` alert (``status``, the page, a ``lab.alert`` event),
and no experiment starts while it stands (the dispatcher asks the state). Nothing is lost meanwhile:
events go out and are recorded later under the numbers they went out with, writes the service owes are
kept in order, and each worker holds what it measured in memory and in a spill file (`sdl.store.spill`)
while it keeps trying the store. Every second this looks again; once the reserve is free and the store
takes writes, it makes what is owed, records the spilled outcomes and announces what changed, clears the
alert and wakes the dispatcher.

The reserve leaves the experiments in flight room to finish before the disk is full: the smaller of
``RESERVE_BYTES`` and ``RESERVE_SHARE`` of the filesystem.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from sdl.daemon.state import STORAGE, LabState
from sdl.store import StoreFull, free_bytes

log = logging.getLogger("sdl.storage")

RESERVE_BYTES = 32 << 20
RESERVE_SHARE = 0.05
LOOK_EVERY_S = 1.0


def reserve(directory: Path) -> int:
    """Bytes the lab keeps free on the filesystem of ``directory`` before it stops starting experiments."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return 0
    return min(RESERVE_BYTES, int(stat.f_blocks * stat.f_frsize * RESERVE_SHARE))


class StorageKeeper:
    def __init__(self, state: LabState) -> None:
        self.state = state

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(LOOK_EVERY_S)
            try:
                self.look()
            except Exception:
                log.exception("looking at the store's disk failed")

    def look(self) -> None:
        state = self.state
        directory = state.store.data_dir
        free, floor = free_bytes(directory), reserve(directory)
        low = free is not None and free < floor
        if not state.storage_full():
            if low:
                state.storage_failed(
                    f"the disk holding the store {state.store.path} has {free:,} bytes free, less than the "
                    f"{floor:,} the lab keeps in reserve"
                )
            return
        if low:
            return
        try:
            state.pay()
            held = {c.experiment for c in state.cells.values() if c.alive and c.experiment is not None}
            written = state.store.write_spilled(skip=held)  # a live worker writes what it holds itself
            changes = state.announce(postpone=False)
        except StoreFull:
            return  # still no room: look again in a second
        if written:
            log.warning("%d outcome(s) held for want of space are recorded", len(written))
        state.caught_up(changes)
        state.clear_alert(
            STORAGE, f"the disk holding the store {state.store.path} has room again; work resumes"
        )
        state.wake.set()
