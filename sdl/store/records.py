"""What an experiment leaves behind besides its status: its event-model documents and its command journal.

Documents are written one row each as the RunEngine emits them, so a crash keeps every measurement taken
up to that moment. The journal lists each command the RunEngine sent to a device, written before the
command is sent, and its acknowledgement when the device's status completes: after a crash it tells
what was sent and what was acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sdl.crashpoints import crash_point
from sdl.store.connection import Connection
from sdl.store.experiments import insert_documents
from sdl.store.schema import (
    DOCUMENT_ENCODING,
    JournalEntry,
    decode_document,
    decode_documents,
    encode_documents,
)


class RecordsMixin(Connection):
    # -- event-model documents -------------------------------------------------------------------------

    def append_documents(
        self, experiment_id: int, documents: Sequence[tuple[int, str, Mapping[str, Any]]]
    ) -> None:
        """Commit ``(seq, name, doc)`` documents of a run now."""
        with self._tx() as conn:
            insert_documents(conn, experiment_id, documents)
        crash_point("store.document")

    def save_documents(self, experiment_id: int, documents: list[tuple[str, Mapping[str, Any]]]) -> None:
        """Store a whole run's documents at once (numbered from 1)."""
        self.append_documents(experiment_id, [(i, n, d) for i, (n, d) in enumerate(documents, start=1)])

    def documents(self, experiment_id: int) -> list[tuple[str, dict[str, Any]]]:
        """The run's documents in emission order (one blob per run in stores written before version 3)."""
        rows = self._read(
            "SELECT name, body FROM run_documents WHERE experiment_id = ? ORDER BY seq", (experiment_id,)
        )
        if rows:
            return [(r["name"], decode_document(r["body"])) for r in rows]
        legacy = self._read("SELECT encoding, blob FROM documents WHERE experiment_id = ?", (experiment_id,))
        return decode_documents(legacy[0]["blob"], legacy[0]["encoding"]) if legacy else []

    def save_legacy_documents(
        self, experiment_id: int, documents: list[tuple[str, Mapping[str, Any]]]
    ) -> None:
        """Write the pre-version-3 one-blob form (kept for migration tests)."""
        blob, raw_bytes = encode_documents(documents)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO documents (experiment_id, encoding, n_documents, raw_bytes, blob) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (experiment_id) DO UPDATE SET "
                "encoding = excluded.encoding, n_documents = excluded.n_documents, "
                "raw_bytes = excluded.raw_bytes, blob = excluded.blob",
                (experiment_id, DOCUMENT_ENCODING, len(documents), raw_bytes, blob),
            )

    # -- the command journal -----------------------------------------------------------------------------

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
        at: float | None = None,
    ) -> int:
        """Append one journal line and commit it; return its id (what an acknowledgement refers to). ``at``:
        when it happened, for a line written later than that (held while the disk was full)."""
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO journal (experiment_id, at, entry, command, instrument, device, detail, ref) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    experiment_id,
                    time.time() if at is None else at,
                    entry,
                    command,
                    instrument,
                    device,
                    detail,
                    ref,
                ),
            )
            line = int(cur.fetchone()[0])
        crash_point("store.journal")
        return line

    def journal(self, experiment_id: int) -> list[JournalEntry]:
        rows = self._read("SELECT * FROM journal WHERE experiment_id = ? ORDER BY id", (experiment_id,))
        return [_entry(r) for r in rows]

    def journal_of_instrument(self, instrument: str, limit: int = 1000) -> list[JournalEntry]:
        rows = self._read(
            "SELECT * FROM journal WHERE instrument = ? ORDER BY id DESC LIMIT ?", (instrument, limit)
        )
        return [_entry(r) for r in reversed(rows)]


#: Commands whose completion the device reports (a status), and the journal records as done or failed.
ACKNOWLEDGED_COMMANDS = frozenset({"set", "trigger", "kickoff", "complete"})


def unacknowledged(entries: Sequence[JournalEntry]) -> list[JournalEntry]:
    """The commands that were sent and never acknowledged (done or failed), in order."""
    answered = {e.ref for e in entries if e.entry in ("done", "failed")}
    sent = [e for e in entries if e.entry == "sent" and e.command in ACKNOWLEDGED_COMMANDS]
    return [e for e in sent if e.id not in answered]


def _entry(r: Any) -> JournalEntry:
    return JournalEntry(
        id=r["id"],
        experiment_id=r["experiment_id"],
        at=r["at"],
        entry=r["entry"],
        command=r["command"],
        instrument=r["instrument"],
        device=r["device"],
        detail=r["detail"],
        ref=r["ref"],
    )
