"""The store: round trip of every record, the status lifecycle, WAL mode, and schema migrations.

Each test that takes ``backend`` runs on SQLite and on PostgreSQL (conftest.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from sdl.spec.status import CampaignStatus, Cause, ExperimentStatus, IllegalTransition, check_transition
from sdl.store import DB_FILENAME, LATEST, Decision, SchemaTooNew, Store, UnknownCampaign
from sdl.store.connection import store_url
from sdl.store.db import Db
from sdl.store.migrations import MIGRATIONS, Migration, migrate, schema_version
from sdl.store.postgres import Database

SPEC = {"name": "c", "budget": {"max_experiments": 3}}
DECISION = Decision(model="gp", acquisition="ei", acquisition_value=0.25, seconds=0.01, n_observations=4)


@pytest.fixture
def store(tmp_path: Path, backend):
    with Store(backend.bind(tmp_path)) as store:
        yield store


def new_campaign(store: Store) -> str:
    return store.create_campaign(
        name="Colour match #1", spec=SPEC, seed=7, max_experiments=3, source_text="x: 1"
    )


def test_round_trip_of_a_campaign_and_its_experiments(store: Store) -> None:
    campaign_id = new_campaign(store)
    assert campaign_id.startswith("colour-match-1-")
    record = store.campaign(campaign_id)
    assert (record.name, record.status, record.spec, record.seed, record.source_text) == (
        "Colour match #1", CampaignStatus.RUNNING, SPEC, 7, "x: 1",
    )  # fmt: skip

    first = store.add_proposal(campaign_id, {"x": np.float64(0.5), "n": np.int64(3), "dye": "red"}, DECISION)
    assert first.seq == 1 and first.status is ExperimentStatus.PROPOSED
    assert first.recipe == {"x": 0.5, "n": 3, "dye": "red"}
    assert first.decision == DECISION
    store.mark_running(
        first.id, {"pump": {"driver": "drivers.newera:make_device", "address": "socket://h:1"}}
    )
    store.mark_done(first.id, {"delta_e": 1.5, "spectrum_peak": np.float32(2.0)}, objective=1.5)

    second = store.add_proposal(campaign_id, {"x": 0.9, "n": 1, "dye": "blue"}, DECISION)
    store.mark_running(second.id)
    store.mark_failed(second.id, "pump stalled (A?S)")

    done, failed = store.experiments(campaign_id)
    assert (done.seq, failed.seq) == (1, 2)
    assert done.status is ExperimentStatus.DONE and done.objective == 1.5
    assert done.measurements == {"delta_e": 1.5, "spectrum_peak": 2.0}
    assert done.assignments == {"pump": {"driver": "drivers.newera:make_device", "address": "socket://h:1"}}
    assert done.proposed_at <= done.started_at <= done.finished_at  # type: ignore[operator]
    assert failed.status is ExperimentStatus.FAILED and failed.failure == "pump stalled (A?S)"
    assert [t.to_status for t in store.transitions(done.id)] == [
        ExperimentStatus.PROPOSED, ExperimentStatus.RUNNING, ExperimentStatus.DONE,
    ]  # fmt: skip

    store.set_campaign_status(campaign_id, CampaignStatus.COMPLETED, "budget spent")
    assert store.campaign(campaign_id).stop_reason == "budget spent"
    assert [c.id for c in store.campaigns()] == [campaign_id]


def test_records_survive_reopening(tmp_path: Path, backend) -> None:
    with Store(backend.bind(tmp_path)) as store:
        campaign_id = new_campaign(store)
        experiment = store.add_proposal(campaign_id, {"x": 1.0}, DECISION)
    with Store(tmp_path) as store:
        assert store.experiments(campaign_id)[0].id == experiment.id
        assert store.schema_version == LATEST


def test_raw_documents_round_trip_compressed(store: Store) -> None:
    campaign_id = new_campaign(store)
    experiment = store.add_proposal(campaign_id, {"x": 1.0}, DECISION)
    spectrum = np.linspace(0, 1, 2048)
    documents = [
        ("start", {"uid": "s", "time": 1.0}),
        ("event", {"data": {"spectrum": spectrum, "peak": np.float64(np.nan)}, "seq_num": 1}),
        ("stop", {"exit_status": "success"}),
    ]
    store.save_documents(experiment.id, documents)
    back = store.documents(experiment.id)
    assert [name for name, _ in back] == ["start", "event", "stop"]
    assert back[1][1]["data"]["spectrum"] == pytest.approx(spectrum.tolist())
    assert back[1][1]["data"]["peak"] is None  # NaN is not JSON
    raw = len(json.dumps(back[1][1]))
    (stored,) = store._conn.execute("SELECT length(body) FROM run_documents WHERE seq = 2").fetchone()
    assert stored < raw / 2


def test_documents_of_stores_written_before_version_3_are_still_read(store: Store) -> None:
    experiment = store.add_proposal(new_campaign(store), {"x": 1.0}, DECISION)
    documents = [("start", {"uid": "s"}), ("stop", {"exit_status": "success"})]
    store.save_legacy_documents(experiment.id, documents)
    assert store.documents(experiment.id) == documents


def test_illegal_transitions_raise_and_change_nothing(store: Store) -> None:
    campaign_id = new_campaign(store)
    experiment = store.add_proposal(campaign_id, {"x": 1.0}, DECISION)
    with pytest.raises(IllegalTransition, match="experiment cannot go from proposed to done"):
        store.mark_done(experiment.id, {}, objective=1.0)
    store.mark_running(experiment.id)
    store.mark_done(experiment.id, {"y": 1.0}, objective=1.0)
    with pytest.raises(IllegalTransition, match="from done to running"):
        store.mark_running(experiment.id)
    with pytest.raises(IllegalTransition, match="from done to interrupted"):
        store.mark_interrupted(experiment.id, "late")
    assert store.experiment(experiment.id).status is ExperimentStatus.DONE
    with pytest.raises(IllegalTransition, match="campaign cannot go from running to running"):
        store.set_campaign_status(campaign_id, CampaignStatus.RUNNING)


def test_the_transition_table_is_the_documented_lifecycle() -> None:
    allowed = {
        (a, b) for a in ExperimentStatus for b in ExperimentStatus if _allowed(a, b)
    }  # fmt: skip
    p, r, d, f, i, x = (
        ExperimentStatus(s) for s in ("proposed", "running", "done", "failed", "interrupted", "faulted")
    )
    assert allowed == {(p, r), (p, i), (p, f), (r, d), (r, f), (r, i), (r, x)}


def _allowed(a: ExperimentStatus, b: ExperimentStatus) -> bool:
    try:
        check_transition(a, b)
    except IllegalTransition:
        return False
    return True


def test_recover_marks_running_experiments_interrupted_and_keeps_proposals(store: Store) -> None:
    campaign_id = new_campaign(store)
    running = store.add_proposal(campaign_id, {"x": 1.0}, DECISION)
    store.mark_running(running.id)
    proposed = store.add_proposal(campaign_id, {"x": 2.0}, DECISION)
    recovered = store.recover(campaign_id, "crashed")
    assert [e.id for e in recovered] == [running.id]
    after = store.experiment(running.id)
    assert (after.status, after.failure) == (ExperimentStatus.INTERRUPTED, "crashed")
    assert after.cause is Cause.CRASH
    assert store.experiment(proposed.id).status is ExperimentStatus.PROPOSED  # never started: runs next
    assert [e.id for e in store.drop_proposals(campaign_id, "campaign stopped")] == [proposed.id]
    assert store.experiment(proposed.id).cause is Cause.DROPPED


def test_recovery_keeps_an_outcome_recorded_between_its_read_and_its_write(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead service's orphaned worker records its own outcome while a standby recovers the campaign: the
    worker's record stands, and recovery reports only what it closed itself."""
    campaign_id = new_campaign(store)
    measured, lost = (store.add_proposal(campaign_id, {"x": x}, DECISION) for x in (1.0, 2.0))
    for experiment in (measured, lost):
        store.mark_running(experiment.id)
    read = store.experiments_with_status

    def read_then_worker_records(campaign: str, status: ExperimentStatus):
        running = read(campaign, status)
        store.mark_done(measured.id, {"y": 0.5}, 0.5)  # the orphan's write, after recovery read
        return running

    monkeypatch.setattr(store, "experiments_with_status", read_then_worker_records)
    assert [e.id for e in store.recover(campaign_id, "crashed")] == [lost.id]
    assert store.experiment(measured.id).status is ExperimentStatus.DONE
    assert store.experiment(lost.id).status is ExperimentStatus.INTERRUPTED


def test_unknown_campaign(store: Store) -> None:
    with pytest.raises(UnknownCampaign, match="no campaign 'nope'"):
        store.campaign("nope")


def test_wal_mode_and_schema_version(store: Store) -> None:
    if store.url is None:
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version == LATEST == MIGRATIONS[-1].version


# -- migrations --------------------------------------------------------------------------------------------


def _connect(data_dir: Path) -> Db:
    """A bare connection to the data directory's database, as migrations are given one."""
    if (url := store_url(data_dir)) is not None:
        return Database(url, read_only=False, busy_timeout=30)
    return sqlite3.connect(data_dir / DB_FILENAME, isolation_level=None)


def _tables(conn: Db) -> set[str]:
    if isinstance(conn, sqlite3.Connection):
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    return {r[0] for r in rows.fetchall()}


def test_migration_from_version_1_keeps_data_and_backfills_the_transition_log(
    tmp_path: Path, backend
) -> None:
    conn = _connect(backend.bind(tmp_path))
    assert migrate(conn, MIGRATIONS[:1]) == [1]
    conn.execute(
        "INSERT INTO campaigns (id, name, status, spec_json, seed, max_experiments, created_at) "
        "VALUES ('c-1', 'c', 'completed', '{}', 0, 2, '2025-01-01T00:00:00')"
    )
    conn.execute(
        "INSERT INTO experiments (campaign_id, seq, status, recipe_json, measurements_json, objective, "
        "proposed_at, started_at, finished_at) VALUES "
        "('c-1', 1, 'done', '{\"x\": 1}', '{\"y\": 2.0}', 2.0, 't0', 't1', 't2'), "
        "('c-1', 2, 'interrupted', '{\"x\": 2}', NULL, NULL, 't3', NULL, 't4')"
    )
    conn.close()

    with Store(tmp_path) as store:
        assert store.schema_version == LATEST
        first, second = store.experiments("c-1")
        assert first.recipe == {"x": 1} and first.measurements == {"y": 2.0} and first.decision is None
        assert [(t.from_status, t.to_status, t.at) for t in store.transitions(first.id)] == [
            (None, ExperimentStatus.PROPOSED, "t0"),
            (ExperimentStatus.PROPOSED, ExperimentStatus.RUNNING, "t1"),
            (ExperimentStatus.RUNNING, ExperimentStatus.DONE, "t2"),
        ]
        assert [(t.from_status, t.to_status) for t in store.transitions(second.id)] == [
            (None, ExperimentStatus.PROPOSED),
            (ExperimentStatus.PROPOSED, ExperimentStatus.INTERRUPTED),
        ]


def test_a_failing_migration_leaves_the_previous_version_intact(tmp_path: Path, backend) -> None:
    def broken(conn: Db) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("disk full")

    conn = _connect(backend.bind(tmp_path))
    migrate(conn)
    assert "campaigns" in _tables(conn)
    with pytest.raises(RuntimeError, match="disk full"):
        migrate(conn, (*MIGRATIONS, Migration(LATEST + 1, "broken", broken)))
    assert schema_version(conn) == LATEST
    assert "half_done" not in _tables(conn)
    conn.close()


def test_a_store_from_a_newer_sdl_is_refused(tmp_path: Path, backend) -> None:
    conn = _connect(backend.bind(tmp_path))
    migrate(conn)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match=f"schema version {LATEST + 1}, newer than this sdl understands"):
        Store(tmp_path)
