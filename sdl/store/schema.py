"""Records read back from the store, and the encodings of what goes into it."""

from __future__ import annotations

import datetime as dt
import json
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic_core import from_json

from sdl.spec.status import CampaignStatus, Cause, ExperimentStatus, InstrumentState

DOCUMENT_ENCODING = "json+zlib"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def to_jsonable(value: Any) -> Any:
    """Numpy scalars/arrays, tuples and non-finite floats -> plain JSON (NaN/inf become null)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in cast(Mapping[object, object], value).items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in cast(Iterable[object], value)]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def dumps(value: Any) -> str:
    try:  # plain JSON already, as nearly everything is: no need to walk it in Python first
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(to_jsonable(value), separators=(",", ":"), allow_nan=False)


def loads(text: str | bytes) -> Any:
    """Parse what :func:`dumps` wrote. pydantic's parser (in Rust; pydantic is a dependency anyway) reads
    these small objects about four times as fast as ``json.loads``, which matters on pages of rows."""
    return from_json(text)


def encode_documents(documents: list[tuple[str, Mapping[str, Any]]]) -> tuple[bytes, int]:
    raw = dumps([[name, doc] for name, doc in documents]).encode()
    return zlib.compress(raw, 6), len(raw)


def encode_document(doc: Mapping[str, Any]) -> bytes:
    """One event-model document as stored in a row of its own (zlib-compressed JSON)."""
    return zlib.compress(dumps(doc).encode(), 6)


def decode_document(body: bytes) -> dict[str, Any]:
    return dict(json.loads(zlib.decompress(body)))


def decode_documents(blob: bytes, encoding: str) -> list[tuple[str, dict[str, Any]]]:
    if encoding != DOCUMENT_ENCODING:
        raise ValueError(f"unknown document encoding {encoding!r}")
    return [(name, doc) for name, doc in json.loads(zlib.decompress(blob))]


@dataclass(frozen=True)
class Decision:
    """Why the optimizer proposed a recipe: its model, acquisition and how long it took."""

    model: str
    acquisition: str | None
    acquisition_value: float | None
    seconds: float
    n_observations: int = 0
    n_pending: int = 0


@dataclass(frozen=True)
class CampaignRecord:
    id: str
    name: str
    status: CampaignStatus
    stop_reason: str | None
    spec: dict[str, Any]
    source_path: str | None
    source_text: str | None
    base_dir: str | None
    seed: int
    max_experiments: int
    runner_pid: int | None
    runner_host: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    owner: str | None = None
    epoch: int = 0
    heartbeat_at: float | None = None
    active_seconds: float = 0.0
    control: str = "run"
    priority: int = 0
    weight: float = 1.0
    submitted_by: str | None = None
    #: for a campaign loaded by `sdl import`: the package it came from
    imported_from: dict[str, Any] | None = None


@dataclass(frozen=True)
class ExperimentRecord:
    id: int
    campaign_id: str
    seq: int
    status: ExperimentStatus
    recipe: dict[str, Any]
    assignments: dict[str, Any] | None
    measurements: dict[str, Any] | None
    objective: float | None
    failure: str | None
    proposed_at: str
    started_at: str | None
    finished_at: str | None
    decision: Decision | None = field(default=None, compare=False)
    workcell: str | None = None
    retry_of: int | None = None
    cause: Cause | None = None
    fault_kind: str | None = None
    fault_instrument: str | None = None


@dataclass(frozen=True)
class Transition:
    experiment_id: int
    from_status: ExperimentStatus | None
    to_status: ExperimentStatus
    at: str
    note: str | None


@dataclass(frozen=True)
class JournalEntry:
    """One line of an experiment's command journal: a command sent to a device, or its acknowledgement."""

    id: int
    experiment_id: int
    at: float
    entry: str  # sent | done | failed | abort
    command: str
    instrument: str | None
    device: str | None
    detail: str | None
    ref: int | None


@dataclass(frozen=True)
class InstrumentRecord:
    """An instrument's health as the lab service keeps it."""

    name: str
    state: InstrumentState
    reason: str | None
    consecutive_faults: int
    faults: int
    retries: int
    auto_releases: int
    updated_at: str


@dataclass(frozen=True)
class EventRecord:
    seq: int
    at: str
    topic: str
    campaign_id: str | None
    body: dict[str, Any]


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: str
    who: str
    origin: str | None
    action: str
    target: str | None
    arguments: dict[str, Any] | None
    result: str


@dataclass(frozen=True)
class StockRecord:
    """One consumable an instrument draws from, as the store keeps it now."""

    instrument: str
    consumable: str
    amount: float
    unit: str
    lot: str | None
    material: str | None
    capacity: float | None
    warn_below: float | None
    updated_at: str
    kind: str = "supply"  # supply | waste

    @property
    def available(self) -> float:
        """What experiments may still take: what a supply holds, or the room left in a waste."""
        if self.kind == "waste" and self.capacity is not None:
            return max(0.0, self.capacity - self.amount)
        return self.amount

    @property
    def low(self) -> bool:
        return self.warn_below is not None and self.available < self.warn_below


@dataclass(frozen=True)
class StockChange:
    """One recorded change of a stock: consumed by an experiment, refilled, replaced, corrected."""

    id: int
    at: str
    instrument: str
    consumable: str
    change: str  # declare | consume | refill | replace | correct
    amount: float
    after: float
    lot: str | None
    experiment_id: int | None
    who: str
    why: str | None


@dataclass(frozen=True)
class TaskRecord:
    """Something a person is asked to do, and what they did."""

    id: int
    kind: str  # refill | other
    state: str  # open | acknowledged | done | cancelled
    title: str
    detail: str | None
    instrument: str | None
    consumable: str | None
    workcell: str | None
    experiment_id: int | None
    opened_at: str
    opened_by: str
    acknowledged_at: str | None
    acknowledged_by: str | None
    closed_at: str | None
    closed_by: str | None
    outcome: dict[str, Any] | None

    @property
    def pending(self) -> bool:
        return self.state in ("open", "acknowledged")


@dataclass(frozen=True)
class ApprovalRecord:
    """A proposal that waited for an operator's approval, and what was decided."""

    experiment_id: int
    campaign_id: str
    seq: int
    recipe: dict[str, Any]
    state: str  # pending | approved | rejected
    why: str
    asked_at: str
    decided_at: str | None
    decided_by: str | None
    reason: str | None
