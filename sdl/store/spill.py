"""Outcomes the store had no room for, kept in a file until it has.

A worker whose outcome cannot be written because the disk is full writes it here at once — the
experiment's result, its documents not yet in the store, its journal lines, its provenance — then keeps
trying the store and deletes the file once the outcome is in. Should the worker be stopped or killed
first, the lab service writes the file into the store when there is room (`write_spilled`): a result
measured while the disk was full is never lost, and never recorded as anything else.

A file goes in the data directory's ``spill/`` if that has room, else in a directory named for the data
directory under the system's temporary directory (usually another filesystem, or memory).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdl.spec.status import Cause, ExperimentStatus, IllegalTransition
from sdl.store.connection import StoreError, StoreFull
from sdl.store.experiments import ExperimentsMixin, Finish
from sdl.store.records import RecordsMixin
from sdl.store.schema import dumps

log = logging.getLogger(__name__)

SPILL_DIR = "spill"


@dataclass(frozen=True)
class JournalLine:
    """A journal line not yet in the store, with the time it was made."""

    entry: str
    command: str
    at: float
    instrument: str | None = None
    device: str | None = None
    detail: str | None = None
    ref: int | None = None


@dataclass(frozen=True)
class Spilled:
    """An experiment's outcome as a worker could not write it."""

    experiment_id: int
    finish: Finish
    documents: list[tuple[int, str, dict[str, Any]]] = field(
        default_factory=list[tuple[int, str, dict[str, Any]]]
    )
    journal: list[JournalLine] = field(default_factory=list[JournalLine])
    provenance: dict[str, Any] | None = None


def spill_dirs(data_dir: Path | str) -> list[Path]:
    """Where spilled outcomes of this data directory may be, in the order they are tried."""
    data_dir = Path(data_dir)
    tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return [data_dir / SPILL_DIR, Path(tempfile.gettempdir()) / f"sdl-spill-{tag}"]


def _name(experiment_id: int) -> str:
    return f"experiment-{experiment_id}.json"


def spill(data_dir: Path | str, spilled: Spilled) -> Path | None:
    """Write ``spilled`` to the first spill directory with room; None if none has (it stays in memory)."""
    body = dumps(
        {
            "experiment_id": spilled.experiment_id,
            "finish": {
                "status": spilled.finish.status.value,
                "measurements": spilled.finish.measurements,
                "objective": spilled.finish.objective,
                "failure": spilled.finish.failure,
                "cause": spilled.finish.cause.value if spilled.finish.cause else None,
                "fault_kind": spilled.finish.fault_kind,
                "fault_instrument": spilled.finish.fault_instrument,
            },
            "documents": [[seq, name, doc] for seq, name, doc in spilled.documents],
            "journal": [line.__dict__ for line in spilled.journal],
            "provenance": spilled.provenance,
        }
    ).encode()
    for directory in spill_dirs(data_dir):
        path = directory / _name(spilled.experiment_id)
        partial = path.with_name(path.name + ".partial")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            partial.replace(path)  # whole or absent
        except OSError as exc:
            partial.unlink(missing_ok=True)
            log.warning("could not spill experiment id %d to %s: %s", spilled.experiment_id, directory, exc)
            continue
        return path
    return None


def discard(data_dir: Path | str, experiment_id: int) -> None:
    """The outcome is in the store: forget its spill file."""
    for directory in spill_dirs(data_dir):
        (directory / _name(experiment_id)).unlink(missing_ok=True)


def spilled(data_dir: Path | str, experiment_id: int | None = None) -> list[Spilled]:
    """The outcomes spilled for this data directory (or for one experiment of it)."""
    out: list[Spilled] = []
    for directory in spill_dirs(data_dir):
        pattern = _name(experiment_id) if experiment_id is not None else "experiment-*.json"
        for path in sorted(directory.glob(pattern)):
            try:
                out.append(_read(json.loads(path.read_bytes())))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("spilled outcome %s cannot be read (%s); it is left where it is", path, exc)
    return out


def _read(raw: Mapping[str, Any]) -> Spilled:
    finish = raw["finish"]
    return Spilled(
        experiment_id=int(raw["experiment_id"]),
        finish=Finish(
            status=ExperimentStatus(finish["status"]),
            measurements=finish["measurements"],
            objective=finish["objective"],
            failure=finish["failure"],
            cause=Cause(finish["cause"]) if finish["cause"] else None,
            fault_kind=finish["fault_kind"],
            fault_instrument=finish["fault_instrument"],
        ),
        documents=[(int(seq), str(name), dict(doc)) for seq, name, doc in raw["documents"]],
        journal=[JournalLine(**line) for line in raw["journal"]],
        provenance=raw["provenance"],
    )


class SpillsMixin(ExperimentsMixin, RecordsMixin):
    def write_held(
        self,
        experiment_id: int,
        finish: Finish,
        documents: Sequence[tuple[int, str, Mapping[str, Any]]] = (),
        journal: Sequence[JournalLine] = (),
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        """Write an outcome held back by a full disk — its journal lines, documents and result — in one
        transaction. Raises :class:`sdl.store.StoreFull` (writing nothing) if there is still no room."""
        with self.transaction():
            for line in journal:
                self.journal_entry(
                    experiment_id, line.entry, line.command, instrument=line.instrument, device=line.device,
                    detail=line.detail, ref=line.ref, at=line.at,
                )  # fmt: skip
            self.finish_experiment(experiment_id, finish, documents, provenance=provenance)

    def write_spilled(self, experiment_id: int | None = None, *, skip: Collection[int] = ()) -> list[int]:
        """Write the outcomes spilled for this store (or for one experiment; but those in ``skip``, which
        their workers still hold and write themselves) and delete their files; return the experiments
        written. One the record has closed otherwise is set aside (``.rejected``), never forced over it.
        Raises :class:`sdl.store.StoreFull` if there is still no room."""
        written: list[int] = []
        for held in spilled(self.data_dir, experiment_id):
            if held.experiment_id in skip:
                continue
            try:
                self.write_held(
                    held.experiment_id, held.finish, held.documents, held.journal, held.provenance
                )
            except StoreFull:
                raise
            except (IllegalTransition, StoreError) as exc:
                log.error(
                    "the outcome spilled for experiment id %d cannot be recorded (%s); its file is set aside",
                    held.experiment_id,
                    exc,
                )
                for directory in spill_dirs(self.data_dir):
                    path = directory / _name(held.experiment_id)
                    if path.exists():
                        path.replace(path.with_suffix(".rejected"))
                continue
            discard(self.data_dir, held.experiment_id)
            written.append(held.experiment_id)
            log.warning(
                "experiment id %d: its outcome, held for want of space, is recorded", held.experiment_id
            )
        return written
