"""Versioned schema of the store, upgraded in place one step at a time.

The version lives in SQLite's ``PRAGMA user_version`` (in a one-row table on PostgreSQL, which
sdl.store.postgres reads and writes under the same statement). Each migration runs in its own transaction
together with the version bump, so a crash mid-upgrade leaves the previous version intact.
Never edit a released migration: add the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sdl.store.db import Db


class SchemaTooNew(RuntimeError):
    """The data directory was written by a newer sdl than this one."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Db], None]


def _statements(*sql: str) -> Callable[[Db], None]:
    def apply(conn: Db) -> None:
        for statement in sql:
            conn.execute(statement)

    return apply


_V1 = _statements(
    """CREATE TABLE campaigns (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        stop_reason TEXT,
        spec_json TEXT NOT NULL,          -- the validated campaign, the single source for resume
        source_path TEXT,
        source_text TEXT,
        base_dir TEXT,
        seed INTEGER NOT NULL,
        max_experiments INTEGER NOT NULL,
        runner_pid INTEGER,
        runner_host TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    )""",
    """CREATE TABLE experiments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        campaign_id TEXT NOT NULL REFERENCES campaigns(id),
        seq INTEGER NOT NULL,             -- 1-based number within the campaign
        status TEXT NOT NULL,
        recipe_json TEXT NOT NULL,
        assignments_json TEXT,            -- instrument name -> driver and address used
        measurements_json TEXT,
        objective REAL,                   -- the scalar the optimizer minimises
        failure TEXT,
        proposed_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        UNIQUE (campaign_id, seq)
    )""",
    "CREATE INDEX experiments_by_campaign ON experiments (campaign_id, seq)",
    """CREATE TABLE decisions (
        experiment_id INTEGER PRIMARY KEY REFERENCES experiments(id),
        model TEXT NOT NULL,
        acquisition TEXT,
        acquisition_value REAL,
        seconds REAL NOT NULL,
        n_observations INTEGER NOT NULL,
        n_pending INTEGER NOT NULL
    )""",
    """CREATE TABLE documents (
        experiment_id INTEGER PRIMARY KEY REFERENCES experiments(id),
        encoding TEXT NOT NULL,           -- 'json+zlib': zlib-compressed JSON list of [name, doc]
        n_documents INTEGER NOT NULL,
        raw_bytes INTEGER NOT NULL,
        blob BLOB NOT NULL
    )""",
)


def _v2(conn: Db) -> None:
    # An audit log of status changes: the record says when each step happened, not only the last one.
    conn.execute(
        """CREATE TABLE transitions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            experiment_id INTEGER NOT NULL REFERENCES experiments(id),
            from_status TEXT,
            to_status TEXT NOT NULL,
            at TEXT NOT NULL,
            note TEXT
        )"""
    )
    conn.execute("CREATE INDEX transitions_by_experiment ON transitions (experiment_id, id)")
    # Backfill from the timestamps version 1 kept.
    conn.execute(
        "INSERT INTO transitions (experiment_id, from_status, to_status, at, note) "
        "SELECT id, NULL, 'proposed', proposed_at, 'backfilled' FROM experiments ORDER BY id"
    )
    conn.execute(
        "INSERT INTO transitions (experiment_id, from_status, to_status, at, note) "
        "SELECT id, 'proposed', 'running', started_at, 'backfilled' FROM experiments "
        "WHERE started_at IS NOT NULL ORDER BY id"
    )
    conn.execute(
        "INSERT INTO transitions (experiment_id, from_status, to_status, at, note) "
        "SELECT id, CASE WHEN started_at IS NULL THEN 'proposed' ELSE 'running' END, status, finished_at, "
        "'backfilled' FROM experiments WHERE finished_at IS NOT NULL ORDER BY id"
    )


_V3 = _statements(
    # Ownership is a claim (owner, epoch, heartbeat) taken in one transaction, not a pid check; the
    # wall time a campaign has run survives restarts; the daemon's per-campaign controls and shares.
    "ALTER TABLE campaigns ADD COLUMN owner TEXT",
    "ALTER TABLE campaigns ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE campaigns ADD COLUMN heartbeat_at REAL",
    "ALTER TABLE campaigns ADD COLUMN active_seconds REAL NOT NULL DEFAULT 0",
    "ALTER TABLE campaigns ADD COLUMN control TEXT NOT NULL DEFAULT 'run'",
    "ALTER TABLE campaigns ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE campaigns ADD COLUMN weight REAL NOT NULL DEFAULT 1",
    "ALTER TABLE campaigns ADD COLUMN submitted_by TEXT",
    # Where an experiment ran, what it repeats, and why it ended when it was not a result.
    "ALTER TABLE experiments ADD COLUMN workcell TEXT",
    "ALTER TABLE experiments ADD COLUMN retry_of INTEGER REFERENCES experiments(id)",
    "ALTER TABLE experiments ADD COLUMN cause TEXT",
    "ALTER TABLE experiments ADD COLUMN fault_kind TEXT",
    "ALTER TABLE experiments ADD COLUMN fault_instrument TEXT",
    # Event-model documents streamed one by one as the RunEngine emits them (zlib-compressed JSON).
    """CREATE TABLE run_documents (
        experiment_id INTEGER NOT NULL REFERENCES experiments(id),
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (experiment_id, seq)
    )""",
    # Every command the RunEngine sent to a device, written before it is sent, and its acknowledgement.
    """CREATE TABLE journal (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        experiment_id INTEGER NOT NULL REFERENCES experiments(id),
        at REAL NOT NULL,
        entry TEXT NOT NULL,              -- sent | done | failed | abort
        command TEXT NOT NULL,
        instrument TEXT,
        device TEXT,
        detail TEXT,
        ref INTEGER                       -- for done/failed: the id of the 'sent' entry
    )""",
    "CREATE INDEX journal_by_experiment ON journal (experiment_id, id)",
    "CREATE INDEX journal_by_instrument ON journal (instrument, id)",
    # Which experiment holds which instrument; written with the 'running' transition.
    """CREATE TABLE leases (
        instrument TEXT PRIMARY KEY,
        experiment_id INTEGER NOT NULL REFERENCES experiments(id),
        workcell TEXT,
        since TEXT NOT NULL
    )""",
    """CREATE TABLE instruments (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL DEFAULT 'ok',  -- ok | suspect | quarantined
        reason TEXT,
        consecutive_faults INTEGER NOT NULL DEFAULT 0,
        faults INTEGER NOT NULL DEFAULT 0,
        retries INTEGER NOT NULL DEFAULT 0,
        auto_releases INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL
    )""",
    # Small facts about the lab as a whole: the daemon's claim, the e-stop.
    "CREATE TABLE lab_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL)",
    # What the daemon published, so a subscriber that missed some catches up from the record.
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        topic TEXT NOT NULL,
        campaign_id TEXT,
        body TEXT NOT NULL
    )""",
    # Who asked for what, and what came of it. Append-only.
    """CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        who TEXT NOT NULL,
        origin TEXT,
        action TEXT NOT NULL,
        target TEXT,
        arguments TEXT,
        result TEXT NOT NULL
    )""",
)


_V4 = _statements(
    # Where each experiment's result came from: software, instruments as they identified themselves, the
    # lab file. Written when the experiment starts and completed with its outcome (JSON).
    """CREATE TABLE provenance (
        experiment_id INTEGER PRIMARY KEY REFERENCES experiments(id),
        body TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    # Observations a campaign was warm-started with, copied from their source when it was created, so the
    # campaign's decisions stay a function of its own record (the source may be deleted or elsewhere).
    """CREATE TABLE prior_observations (
        campaign_id TEXT NOT NULL REFERENCES campaigns(id),
        seq INTEGER NOT NULL,
        source TEXT NOT NULL,             -- e.g. 'campaign colour-1a2b3c experiment 4'
        status TEXT NOT NULL,             -- done | failed
        recipe_json TEXT NOT NULL,        -- in this campaign's units
        measurements_json TEXT,
        failure TEXT,
        PRIMARY KEY (campaign_id, seq)
    )""",
    # A campaign loaded by `sdl import`: the package it came from (JSON), NULL for one run here.
    "ALTER TABLE campaigns ADD COLUMN imported_from TEXT",
)


_V5 = _statements(
    # What each instrument draws from now (a syringe's fill, a reservoir, a feeder's rack), changed only by
    # the rows of stock_changes, which say who changed it, why, and for consumption which experiment.
    """CREATE TABLE stocks (
        instrument TEXT NOT NULL,
        consumable TEXT NOT NULL,
        amount REAL NOT NULL,
        unit TEXT NOT NULL,
        lot TEXT,
        material TEXT,
        capacity REAL,
        warn_below REAL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (instrument, consumable)
    )""",
    """CREATE TABLE stock_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        instrument TEXT NOT NULL,
        consumable TEXT NOT NULL,
        change TEXT NOT NULL,             -- declare | consume | refill | replace | correct
        amount REAL NOT NULL,             -- consume: what was used; otherwise what it holds now
        after REAL NOT NULL,              -- what it held after the change
        lot TEXT,
        experiment_id INTEGER REFERENCES experiments(id),
        who TEXT NOT NULL,
        why TEXT
    )""",
    "CREATE INDEX stock_changes_by_experiment ON stock_changes (experiment_id, id)",
    # What people are asked to do (refill a syringe, load a rack), and what they did.
    """CREATE TABLE tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,               -- refill | other
        state TEXT NOT NULL,              -- open | acknowledged | done | cancelled
        title TEXT NOT NULL,
        detail TEXT,
        instrument TEXT,
        consumable TEXT,
        workcell TEXT,
        experiment_id INTEGER REFERENCES experiments(id),
        opened_at TEXT NOT NULL,
        opened_by TEXT NOT NULL,
        acknowledged_at TEXT,
        acknowledged_by TEXT,
        closed_at TEXT,
        closed_by TEXT,
        outcome TEXT                      -- JSON: what was done (the new lot and amount, a note)
    )""",
    "CREATE INDEX tasks_by_state ON tasks (state, id)",
)


_V6 = _statements(
    # Proposals that waited for an operator's approval, and the decision (a rejected one ends failed).
    """CREATE TABLE approvals (
        experiment_id INTEGER PRIMARY KEY REFERENCES experiments(id),
        state TEXT NOT NULL,              -- pending | approved | rejected
        why TEXT NOT NULL,                -- why it needed approval
        asked_at TEXT NOT NULL,
        decided_at TEXT,
        decided_by TEXT,
        reason TEXT
    )""",
    "CREATE INDEX approvals_by_state ON approvals (state, experiment_id)",
)


_V7 = _statements(
    # A stock experiments fill (a waste container) rather than draw from.
    "ALTER TABLE stocks ADD COLUMN kind TEXT NOT NULL DEFAULT 'supply'",
)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "campaigns, experiments, optimizer decisions, raw documents", _V1),
    Migration(2, "experiment status transition log", _v2),
    Migration(
        3, "claims, streamed documents, command journal, leases, instrument health, events, audit", _V3
    ),
    Migration(4, "experiment provenance, warm-start observations, imported campaigns", _V4),
    Migration(5, "inventory of consumables, its changes, tasks for people", _V5),
    Migration(6, "approvals of proposals", _V6),
    Migration(7, "waste stocks", _V7),
)
LATEST = MIGRATIONS[-1].version


def schema_version(conn: Db) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: Db, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Bring the database up to the last of ``migrations``; return the versions applied.

    ``conn`` must be in autocommit mode (``isolation_level=None``) so each step owns its transaction.
    """
    latest = migrations[-1].version
    current = schema_version(conn)
    if current > latest:
        raise SchemaTooNew(
            f"the store has schema version {current}, newer than this sdl understands ({latest}); upgrade sdl"
        )
    applied: list[int] = []
    for migration in migrations:
        if migration.version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            if schema_version(conn) >= migration.version:
                conn.execute("ROLLBACK")
                continue
            migration.apply(conn)
            conn.execute(f"PRAGMA user_version = {int(migration.version)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(migration.version)
    return applied
