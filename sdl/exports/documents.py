"""Each experiment's bluesky documents as JSON lines, the event-model format any bluesky tool reads.

Written by `suitcase-jsonl` (one ``[name, document]`` per line, one file per run), read back here. A run
cut short keeps the documents it emitted (a start without a stop); an experiment that failed before its
plan opened a run has no file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdl.exports.integrity import read_document_lines
from sdl.store import ExperimentRecord, Store


def document_file(seq: int) -> str:
    return f"documents/experiment-{seq:04d}.jsonl"


def write_documents(store: Store, history: Sequence[ExperimentRecord], directory: Path) -> list[Path]:
    """One JSONL file per experiment that has documents, in ``directory``; return the paths written."""
    import suitcase.jsonl

    written = []
    for experiment in history:
        documents = store.documents(experiment.id)
        if not documents:
            continue
        directory.mkdir(parents=True, exist_ok=True)
        name = Path(document_file(experiment.seq)).stem
        if documents[0][0] == "start":
            artifacts = suitcase.jsonl.export(documents, str(directory), file_prefix=name)
            written.append(Path(artifacts["all"][0]))
        else:  # an older record's run without its start: suitcase cannot name it, the format is the same
            path = directory / f"{name}.jsonl"
            path.write_text("".join(json.dumps([n, d]) + "\n" for n, d in documents), encoding="utf-8")
            written.append(path)
    return written


def read_documents(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """A run's documents from its JSONL file; raises ``PackageError`` naming the file and line of one that
    is not a ``[name, document]`` line."""
    return read_document_lines(path, str(path))
