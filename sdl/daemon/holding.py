"""What a worker records while the disk holding the store may be full: nothing measured is lost, and no
command goes out before its journal line is on disk.

- A command's journal line must be written before the command is sent (decision 0004). While the disk is
  full the plan waits for it here, trying again every ``RETRY_S``, until it is written or the experiment
  is aborted (its procedure's timeout, an operator, the service stopping); then the plan ends interrupted.
- A document, an acknowledgement, the line of an abort: held in memory, written before the next write
  that succeeds; nothing waits for them. What is still held when the experiment ends is written with its
  outcome, in one transaction (`sdl.store.spill` if even that cannot be written).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sdl.store import Finish, JournalLine, Spilled, Store, StoreFull
from sdl.store.spill import discard, spill

log = logging.getLogger("sdl.worker")

RETRY_S = 0.5
#: Journal lines that come before a command to an instrument: the plan waits until they are written.
BEFORE_A_COMMAND = frozenset({"sent"})

Document = tuple[int, str, dict[str, Any]]


class PatientRecorder:
    """The store as one worker's experiments write to it (their ``Recorder``). ``full(detail)`` is told each
    time a write fails for want of space; ``cancelled()`` says whether the experiment waiting on a journal
    line was aborted meanwhile."""

    def __init__(self, store: Store, full: Callable[[str], None]) -> None:
        self.store = store
        self._full = full
        self.cancelled: Callable[[], bool] = lambda: False
        self._lock = threading.RLock()
        self._journal: dict[int, list[JournalLine]] = {}
        self._documents: dict[int, list[Document]] = {}

    # -- the Recorder protocol -------------------------------------------------------------------------------

    def append_documents(self, experiment_id: int, documents: list[Document]) -> None:
        with self._lock:
            held = self._documents.setdefault(experiment_id, [])
            held.extend(documents)
            try:
                self._write_journal(experiment_id)
                self.store.append_documents(experiment_id, held)
            except StoreFull as exc:
                self._full(str(exc))  # held: written with the next write that has room
                return
            del self._documents[experiment_id]

    def journal_entry(
        self,
        experiment_id: int,
        entry: str,
        command: str,
        *,
        instrument: str | None = None,
        device: str | None = None,
        detail: str | None = None,
        ref: int | None = None,
    ) -> int:
        line = JournalLine(entry, command, time.time(), instrument, device, detail, ref)
        while True:
            with self._lock:
                try:
                    self._write_journal(experiment_id)
                    return self._write_line(experiment_id, line)
                except StoreFull as exc:
                    self._full(str(exc))
                    if entry not in BEFORE_A_COMMAND:
                        self._journal.setdefault(experiment_id, []).append(line)
                        return 0
                    if self.cancelled():
                        raise  # the command is not sent: the plan ends, interrupted
            time.sleep(RETRY_S)  # the command waits until its line is on disk

    # -- the end of an experiment ----------------------------------------------------------------------------

    def take(
        self,
        experiment_id: int,
        finish: Finish,
        trailing: Sequence[Document],
        provenance: Mapping[str, Any] | None,
    ) -> Spilled:
        """The experiment's outcome with what is still held of it, to be written together (and forget it
        here)."""
        with self._lock:
            journal, documents = self._journal.pop(experiment_id, []), self._documents.pop(experiment_id, [])
        kept = dict(provenance) if provenance is not None else None
        return Spilled(experiment_id, finish, [*documents, *trailing], journal, kept)

    def _write_journal(self, experiment_id: int) -> None:
        held = self._journal.get(experiment_id)
        while held:
            self._write_line(experiment_id, held[0])
            held.pop(0)

    def _write_line(self, experiment_id: int, line: JournalLine) -> int:
        return self.store.journal_entry(
            experiment_id, line.entry, line.command, instrument=line.instrument, device=line.device,
            detail=line.detail, ref=line.ref, at=line.at,
        )  # fmt: skip


RECORDED, SPILLED, IN_MEMORY = "recorded", "spilled", "in memory"


def record_outcome(
    store: Store,
    held: Spilled,
    *,
    full: Callable[[str, str | None], None],
    closing: threading.Event,
) -> str:
    """Write an experiment's outcome with what was held of it; if the disk is full, spill it to a file at
    once (so that even a killed worker loses nothing), tell ``full(detail, spill path)``, and keep trying
    until it is written (``RECORDED``) or the worker is closing with the outcome safe in its file
    (``SPILLED``). Without a file, it keeps trying while the worker lets it (``IN_MEMORY`` if it had to stop).
    Raises ``IllegalTransition`` if the experiment was closed by someone else first."""
    path: str | None = None
    while True:
        try:
            store.write_held(held.experiment_id, held.finish, held.documents, held.journal, held.provenance)
        except StoreFull as exc:
            if path is None:
                spilled_to = spill(store.data_dir, held)
                path = str(spilled_to) if spilled_to is not None else None
                log.error(
                    "experiment id %d: its outcome cannot be written (%s); held %s until it can",
                    held.experiment_id,
                    exc,
                    f"in {path}" if path else "in memory only (no room to spill it either)",
                )
            full(str(exc), path)
        else:
            discard(store.data_dir, held.experiment_id)
            return RECORDED
        if closing.wait(RETRY_S):
            return SPILLED if path is not None else IN_MEMORY
