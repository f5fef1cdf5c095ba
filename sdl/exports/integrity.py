"""Whether a data package can be trusted before anything is taken from it.

A package is a folder anyone can edit, copy half-way or truncate. Before `sdl import` (or a warm start)
reads it, every resource the descriptor lists is checked against the sha256 and size recorded when it was
written, and the record is checked to hold together: every row has the fields the store needs, of the right
kind, and every reference (a transition's experiment, a journal line's acknowledgement, a retry's original,
a run's documents) points at something the record holds. What is wrong is reported with the file it is
in, before a single row is written.

The hashes prove a package whole, not who wrote it: someone who edits a file and its hash in the descriptor
is not caught.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sdl.spec.status import CampaignStatus, ExperimentStatus

DESCRIPTOR = "datapackage.json"
#: Packages since this version carry a hash for every resource; before, only for the files `sdl import`
#: reads (record.json and the documents), so an older package's tables may have none.
PACKAGE_VERSION = 2
PACKAGE_KEY = "sdl:package"
#: A descriptor lists files and schemas; anything larger is not one `sdl export` wrote.
MAX_DESCRIPTOR_BYTES = 16 * 1024 * 1024
_SHA256 = re.compile(r"^sha256:([0-9a-f]{64})$")
_CHUNK = 1 << 20


class PackageError(ValueError):
    """A directory that is not a data package `sdl export` wrote, or one that is damaged."""


def read_descriptor(directory: Path) -> dict[str, Any]:
    path = directory / DESCRIPTOR
    if not path.is_file():
        raise PackageError(f"{directory} is not a data package (no {DESCRIPTOR})")
    if path.stat().st_size > MAX_DESCRIPTOR_BYTES:
        raise PackageError(f"{path} is larger than a descriptor can be ({MAX_DESCRIPTOR_BYTES} bytes)")
    try:
        descriptor = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{path}: cannot read the descriptor: {exc}") from None
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("resources"), list):
        raise PackageError(f"{path}: not a data package descriptor (no list of resources)")
    return descriptor


def verify_resources(directory: Path, descriptor: dict[str, Any]) -> set[str]:
    """Check every resource the descriptor lists: inside the package, present, of the recorded size and
    sha256. Return the resources' paths (as the descriptor writes them)."""
    root = directory.resolve()
    version = descriptor.get(PACKAGE_KEY, 1)
    every = not isinstance(version, int) or version >= PACKAGE_VERSION
    listed: set[str] = set()
    for i, resource in enumerate(descriptor["resources"]):
        where = f"{directory / DESCRIPTOR}: resources[{i}]"
        name = resource.get("path") if isinstance(resource, dict) else None
        if not isinstance(name, str) or not name:
            raise PackageError(f"{where} has no path")
        path = (directory / name).resolve()
        if Path(name).is_absolute() or not path.is_relative_to(root):
            raise PackageError(f"{where}: {name} is outside the package")
        if not path.is_file():
            raise PackageError(f"{directory / name} is missing (the package lists it)")
        expected = _SHA256.match(str(resource.get("hash", "")))
        if expected is None and not every and "schema" in resource:
            listed.add(Path(name).as_posix())  # an older package's table: nothing to check it against
            continue
        if expected is None:
            raise PackageError(f"{directory / name}: the descriptor gives no sha256 for it")
        size, digest = _digest(path)
        if resource.get("bytes") is not None and resource["bytes"] != size:
            raise PackageError(
                f"{directory / name} has {size} bytes, not the {resource['bytes']} it was written with "
                "(truncated or edited); its sha256 does not match"
            )
        if digest != expected.group(1):
            raise PackageError(
                f"{directory / name} was changed after it was written: its sha256 is {digest}, "
                f"the descriptor says {expected.group(1)}"
            )
        listed.add(Path(name).as_posix())
    return listed


def _digest(path: Path) -> tuple[int, str]:
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def read_document_lines(path: Path, label: str) -> list[tuple[str, dict[str, Any]]]:
    """A run's ``[name, document]`` lines; a line that is not one is reported as ``label:LINE``."""
    out = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    name, doc = json.loads(line)
                except (json.JSONDecodeError, ValueError, TypeError):
                    name, doc = None, None
                if not isinstance(name, str) or not isinstance(doc, dict):
                    raise PackageError(
                        f"{label}:{number}: not a JSON (name, document) pair ({_excerpt(line)})"
                    )
                out.append((name, doc))
    except UnicodeDecodeError as exc:
        raise PackageError(f"{label}: not UTF-8 text ({exc})") from None
    return out


def _excerpt(line: str) -> str:
    text = line.strip()
    return f"{len(text)} characters, ending {text[-40:]!r}" if len(text) > 60 else repr(text)


# -- the record holds together --------------------------------------------------------------------------

Check = Callable[[Any], bool]


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _json(kind: type) -> Check:
    def check(value: Any) -> bool:
        try:
            return isinstance(value, str) and isinstance(json.loads(value), kind)
        except json.JSONDecodeError:
            return False

    check.__name__ = f"JSON {'object' if kind is dict else kind.__name__} text"
    return check


def _one_of(values: set[str]) -> Check:
    def check(value: Any) -> bool:
        return value in values

    check.__name__ = f"one of {', '.join(sorted(values))}"
    return check


def _or_none(check: Check) -> Check:
    def optional(value: Any) -> bool:
        return value is None or check(value)

    optional.__name__ = f"{check.__name__} or null"
    return optional


_STATUSES = _one_of({s.value for s in ExperimentStatus})
_CAMPAIGN: dict[str, Check] = {
    "id": _text, "name": _text, "status": _one_of({s.value for s in CampaignStatus}),
    "spec_json": _json(dict), "seed": _int, "max_experiments": _int, "created_at": _text,
}  # fmt: skip
_EXPERIMENT: dict[str, Check] = {
    "id": _int, "seq": _int, "status": _STATUSES, "recipe_json": _json(dict),
    "measurements_json": _or_none(_json(dict)), "objective": _or_none(_number), "proposed_at": _text,
    "retry_of": _or_none(_int),
}  # fmt: skip
_TABLES: dict[str, dict[str, Check]] = {
    "decisions": {"experiment_id": _int, "model": _text, "seconds": _number, "n_observations": _int,
                  "n_pending": _int},
    "transitions": {"experiment_id": _int, "to_status": _STATUSES, "at": _text},
    "journal": {"experiment_id": _int, "id": _int, "at": _number, "entry": _text, "command": _text,
                "ref": _or_none(_int)},
    "provenance": {"experiment_id": _int, "body": _json(dict), "updated_at": _text},
}  # fmt: skip
_PRIOR: dict[str, Check] = {
    "seq": _int, "source": _text, "status": _text, "recipe_json": _json(dict),
    "measurements_json": _or_none(_json(dict)),
}  # fmt: skip


def _rows(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise PackageError(f"{where} is not a list of rows")
    return value


def _check_fields(row: dict[str, Any], fields: dict[str, Check], where: str) -> None:
    for key, check in fields.items():
        if key not in row:
            raise PackageError(f"{where} has no {key}")
        if not check(row[key]):
            raise PackageError(f"{where}.{key} is {_short(row[key])}, not {check.__name__}")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_record(record: Any, label: str) -> None:
    """Raise :class:`PackageError` (prefixed with ``label``, the record's file) unless the record's rows
    hold together: every field the store needs, of its kind, and every reference resolved."""
    if not isinstance(record, dict):
        raise PackageError(f"{label}: not a JSON object")
    for key in ("campaign", "experiments", "tables"):
        if key not in record:
            raise PackageError(f"{label}: no {key!r}")
    if not isinstance(record["campaign"], dict):
        raise PackageError(f"{label}: campaign is not an object")
    _check_fields(record["campaign"], _CAMPAIGN, f"{label}: campaign")
    experiments = _rows(record["experiments"], f"{label}: experiments")
    ids: set[int] = set()
    seqs: set[int] = set()
    for i, e in enumerate(experiments):
        _check_fields(e, _EXPERIMENT, f"{label}: experiments[{i}]")
        if e["id"] in ids or e["seq"] in seqs:
            raise PackageError(
                f"{label}: experiments[{i}] repeats experiment id {e['id']} or number {e['seq']}"
            )
        ids.add(e["id"])
        seqs.add(e["seq"])
    for i, e in enumerate(experiments):
        if e["retry_of"] is not None and e["retry_of"] not in ids:
            raise PackageError(
                f"{label}: experiments[{i}] is a retry of experiment id {e['retry_of']}, "
                "which is not among the record's experiments"
            )
    tables = record["tables"]
    if not isinstance(tables, dict):
        raise PackageError(f"{label}: tables is not an object")
    for table, fields in _TABLES.items():
        rows = _rows(tables.get(table, []), f"{label}: tables.{table}")
        for i, row in enumerate(rows):
            where = f"{label}: tables.{table}[{i}]"
            _check_fields(row, fields, where)
            _known(row["experiment_id"], ids, where, label)
        if table == "journal":
            lines = {row["id"] for row in rows}
            for i, row in enumerate(rows):
                if row["ref"] is not None and row["ref"] not in lines:
                    raise PackageError(
                        f"{label}: tables.journal[{i}] acknowledges journal line {row['ref']}, "
                        "which is not in the record"
                    )
    for key, name in _documents(record, label):
        _known(key, ids, f"{label}: documents[{key}] ({name})", label)
    for i, prior in enumerate(_rows(record.get("prior_observations", []), f"{label}: prior_observations")):
        _check_fields(prior, _PRIOR, f"{label}: prior_observations[{i}]")


def _known(experiment_id: int, ids: set[int], where: str, label: str) -> None:
    if experiment_id not in ids:
        raise PackageError(
            f"{where} names experiment id {experiment_id}, which is not among {label}'s experiments"
        )


def _documents(record: dict[str, Any], label: str) -> Iterator[tuple[int, str]]:
    documents = record.get("documents", {})
    if not isinstance(documents, dict):
        raise PackageError(f"{label}: documents is not an object")
    for key, name in documents.items():
        if not isinstance(name, str) or not re.fullmatch(r"-?\d+", str(key)):
            raise PackageError(f"{label}: documents[{key}] is not an experiment id and a file")
        yield int(key), name


def document_files(record: dict[str, Any], label: str) -> dict[int, str]:
    """Experiment id -> its documents' file (relative to the package), as the checked record names them."""
    return dict(_documents(record, label))
