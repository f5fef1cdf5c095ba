"""The durable record of every campaign: SQLite in WAL mode (or a PostgreSQL database the data directory
names in its ``store.url``), the single source of truth.

Every status change is committed before the action it announces: an experiment is ``running`` on disk
(with its instruments leased to it) before its first command leaves, each command is journalled before
it is sent, and each event-model document is written as it is emitted, so a crash can never hide a
physical action nor lose a measurement.
"""

from __future__ import annotations

from pathlib import Path

from sdl.store.approvals import ApprovalError, ApprovalsMixin
from sdl.store.archive import ArchiveMixin, CampaignRows, ImportConflict
from sdl.store.campaigns import (
    HEARTBEAT_S,
    STALE_AFTER_S,
    CampaignBusy,
    CampaignsMixin,
    LostClaim,
    UnknownCampaign,
    claim_is_stale,
    describe_owner,
    new_owner,
    owner_alive_here,
)
from sdl.store.connection import (
    DB_FILENAME,
    STORE_SETTING,
    StoreDamaged,
    StoreError,
    StoreFull,
    StoreUnavailable,
    StoreVanished,
    bind_store,
    free_bytes,
    store_url,
)
from sdl.store.experiments import Finish, LeaseConflict
from sdl.store.inventory import InventoryError, InventoryMixin
from sdl.store.labwide import LabwideMixin
from sdl.store.migrations import LATEST, SchemaTooNew
from sdl.store.records import unacknowledged
from sdl.store.schema import (
    ApprovalRecord,
    AuditRecord,
    CampaignRecord,
    Decision,
    EventRecord,
    ExperimentRecord,
    InstrumentRecord,
    JournalEntry,
    StockChange,
    StockRecord,
    TaskRecord,
    Transition,
)
from sdl.store.spill import JournalLine, Spilled, SpillsMixin

__all__ = [
    "DB_FILENAME",
    "HEARTBEAT_S",
    "LATEST",
    "STALE_AFTER_S",
    "STORE_SETTING",
    "ApprovalError",
    "ApprovalRecord",
    "AuditRecord",
    "CampaignBusy",
    "CampaignRecord",
    "CampaignRows",
    "Decision",
    "EventRecord",
    "ExperimentRecord",
    "Finish",
    "ImportConflict",
    "InstrumentRecord",
    "InventoryError",
    "JournalEntry",
    "JournalLine",
    "LeaseConflict",
    "LostClaim",
    "SchemaTooNew",
    "Spilled",
    "StockChange",
    "StockRecord",
    "Store",
    "StoreDamaged",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "StoreVanished",
    "TaskRecord",
    "Transition",
    "UnknownCampaign",
    "bind_store",
    "claim_is_stale",
    "describe_owner",
    "free_bytes",
    "new_owner",
    "owner_alive_here",
    "store_url",
    "unacknowledged",
]


class Store(CampaignsMixin, SpillsMixin, LabwideMixin, InventoryMixin, ApprovalsMixin, ArchiveMixin):
    """One SQLite database in a data directory, or the PostgreSQL database its ``store.url`` names
    (:func:`bind_store`). Thread-safe: one connection behind a lock per process.

    ``Store(dir)`` opens for writing (creating the directory and the database's tables if needed);
    ``Store(dir, read_only=True)`` opens an existing store without ever writing to it.
    Both check an SQLite file is a whole database first.
    """

    @classmethod
    def exists(cls, data_dir: Path | str) -> bool:
        return (Path(data_dir) / DB_FILENAME).is_file() or store_url(data_dir) is not None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
