"""The store as several processes share it: claims, leases, streamed documents, the command journal,
instrument health, events, audit, and a store that is damaged, read-only, backed up or deleted.

Each test that takes ``backend`` runs on SQLite and on PostgreSQL (conftest.py); the ones about the SQLite
file itself (damaged, deleted, checkpointed, backed up) run on SQLite alone."""

from __future__ import annotations

import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from sdl.spec.status import CampaignStatus, ExperimentStatus, IllegalTransition
from sdl.store import (
    DB_FILENAME,
    STORE_SETTING,
    CampaignBusy,
    Decision,
    Finish,
    LeaseConflict,
    Store,
    StoreDamaged,
    StoreError,
    StoreUnavailable,
    StoreVanished,
    bind_store,
    connection,
    new_owner,
    store_url,
    unacknowledged,
)

DECISION = Decision(model="gp", acquisition="ei", acquisition_value=0.1, seconds=0.01)
DEAD = f"run:{socket.gethostname()}:999999999:dead00"


@pytest.fixture
def store(tmp_path: Path, backend):
    with Store(backend.bind(tmp_path / "data")) as store:
        yield store


SPEC = {
    "name": "c",
    "parameters": [{"name": "x", "type": "real", "low": 0.0, "high": 100.0}],
    "objectives": [{"measurement": "y"}],
    "budget": {"max_experiments": 5},
    "procedure": {"function": "math:sqrt"},
}


def new_campaign(store: Store, owner: str | None = None) -> str:
    return store.create_campaign(name="c", spec=SPEC, seed=0, max_experiments=5, owner=owner)


def running_experiment(store: Store, campaign_id: str, **start: object) -> int:
    experiment = store.add_proposal(campaign_id, {"x": 1.0}, DECISION)
    store.start_experiment(experiment.id, **start)  # type: ignore[arg-type]
    return experiment.id


# -- claims --------------------------------------------------------------------------------------------------


def test_a_claim_is_taken_from_a_dead_or_silent_owner_but_not_from_a_live_one(store: Store) -> None:
    campaign_id = new_campaign(store, owner=DEAD)
    mine = new_owner("run")
    assert store.claim_campaign(campaign_id, mine) == 2  # the dead process's claim was epoch 1
    with pytest.raises(CampaignBusy, match="is being run by `sdl run` \\(process"):
        store.claim_campaign(campaign_id, new_owner("run"))
    # a live owner elsewhere whose heartbeat went silent: taken over once the heartbeat is stale
    store._conn.execute(
        "UPDATE campaigns SET owner = 'daemon:elsewhere:1:x', heartbeat_at = 0 WHERE id = ?", (campaign_id,)
    )
    assert store.claim_campaign(campaign_id, mine, stale_after=5.0) == 3


def test_heartbeats_keep_a_claim_count_wall_time_and_reveal_a_take_over(store: Store) -> None:
    owner = new_owner("run")
    campaign_id = new_campaign(store, owner=owner)
    store._conn.execute("UPDATE campaigns SET heartbeat_at = heartbeat_at - 2 WHERE id = ?", (campaign_id,))
    assert store.heartbeat(owner) == {campaign_id}
    assert store.campaign(campaign_id).active_seconds == pytest.approx(2.0, abs=0.5)
    store.set_control(campaign_id, "pause")  # a paused campaign's clock stands still
    store._conn.execute("UPDATE campaigns SET heartbeat_at = heartbeat_at - 3 WHERE id = ?", (campaign_id,))
    store.heartbeat(owner)
    assert store.campaign(campaign_id).active_seconds == pytest.approx(2.0, abs=0.5)
    store._conn.execute("UPDATE campaigns SET owner = 'run:elsewhere:2:y' WHERE id = ?", (campaign_id,))
    assert store.heartbeat(owner) == set()


def test_one_lab_service_per_store(store: Store) -> None:
    first = new_owner("daemon")
    store.claim_lab(first, stale_after=10)
    with pytest.raises(CampaignBusy, match="one lab service per store"):
        store.claim_lab(new_owner("daemon"), stale_after=10)
    store.set_lab_state("daemon", {"owner": DEAD, "epoch": 1, "heartbeat_at": 0})
    assert store.claim_lab(new_owner("daemon"), stale_after=10) == 2


def test_a_running_campaign_cannot_be_deleted_a_stopped_one_leaves_nothing_behind(store: Store) -> None:
    campaign_id = new_campaign(store, owner=new_owner("run"))
    experiment_id = running_experiment(store, campaign_id, instruments=["pump"])
    store.journal_entry(experiment_id, "sent", "set", instrument="pump")
    with pytest.raises(CampaignBusy, match="stop it first"):
        store.delete_campaign(campaign_id)
    store.finish_experiment(experiment_id, Finish(ExperimentStatus.DONE, {"y": 1.0}, 1.0), [(1, "stop", {})])
    store.set_campaign_status(campaign_id, CampaignStatus.COMPLETED, "done")
    store._conn.execute("UPDATE campaigns SET owner = NULL WHERE id = ?", (campaign_id,))
    store.delete_campaign(campaign_id)
    tables = ("campaigns", "experiments", "decisions", "transitions", "run_documents", "journal", "leases")
    for table in tables:
        assert store._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table


# -- leases and the outcome transaction ---------------------------------------------------------------------


def test_an_instrument_is_never_leased_to_two_experiments(store: Store) -> None:
    campaign_id = new_campaign(store)
    first = running_experiment(store, campaign_id, instruments=["spectrometer", "arm"], workcell="a")
    second = store.add_proposal(campaign_id, {"x": 2.0}, DECISION)
    with pytest.raises(LeaseConflict, match="spectrometer"):
        store.start_experiment(second.id, instruments=["pumps_b", "spectrometer"], workcell="b")
    assert store.experiment(second.id).status is ExperimentStatus.PROPOSED  # nothing changed
    assert store.leases() == {"spectrometer": (first, "a"), "arm": (first, "a")}
    store.finish_experiment(first, Finish(ExperimentStatus.FAULTED, failure="arm: protective stop"))
    assert store.leases() == {}
    store.start_experiment(second.id, instruments=["pumps_b", "spectrometer"], workcell="b")
    assert set(store.leases()) == {"pumps_b", "spectrometer"}


def test_the_outcome_and_the_last_documents_commit_together_or_not_at_all(store: Store) -> None:
    campaign_id = new_campaign(store)
    experiment_id = running_experiment(store, campaign_id)
    store.append_documents(experiment_id, [(1, "start", {"uid": "s"}), (2, "event", {"data": {"y": 1}})])
    with pytest.raises(IllegalTransition):  # an illegal outcome: the trailing document must not land either
        store.finish_experiment(experiment_id, Finish(ExperimentStatus.PROPOSED), [(3, "stop", {})])
    assert [n for n, _ in store.documents(experiment_id)] == ["start", "event"]
    store.finish_experiment(experiment_id, Finish(ExperimentStatus.DONE, {"y": 1.0}, 1.0), [(3, "stop", {})])
    assert [n for n, _ in store.documents(experiment_id)] == ["start", "event", "stop"]


def test_the_journal_tells_what_was_sent_and_never_acknowledged(store: Store) -> None:
    experiment_id = running_experiment(store, new_campaign(store))
    sent = store.journal_entry(experiment_id, "sent", "set", instrument="pumps", device="pumps_red")
    store.journal_entry(experiment_id, "done", "set", instrument="pumps", device="pumps_red", ref=sent)
    moving = store.journal_entry(experiment_id, "sent", "set", instrument="arm", device="arm_transfer")
    entries = store.journal(experiment_id)
    assert [(e.entry, e.command, e.instrument) for e in entries] == [
        ("sent", "set", "pumps"),
        ("done", "set", "pumps"),
        ("sent", "set", "arm"),
    ]
    assert [e.id for e in unacknowledged(entries)] == [moving]
    assert [e.entry for e in store.journal_of_instrument("arm")] == ["sent"]


# -- health, events, audit ---------------------------------------------------------------------------------


def test_instrument_health_counts_consecutive_faults_and_resets_on_success(store: Store) -> None:
    store.ensure_instruments(["pump", "arm"])
    assert store.record_fault("pump").consecutive_faults == 1
    assert store.record_fault("pump").consecutive_faults == 2
    store.record_success(["pump"])
    record = store.record_fault("pump")
    assert (record.consecutive_faults, record.faults) == (1, 3)
    quarantined = store.set_instrument_state("pump", "quarantined", "3 faults in a row: motor stall")
    assert (quarantined.state, quarantined.reason) == ("quarantined", "3 faults in a row: motor stall")
    released = store.set_instrument_state("pump", "ok", auto_release=True)
    assert (released.state, released.consecutive_faults, released.auto_releases) == ("ok", 0, 1)
    with pytest.raises(ValueError, match="allowed: ok, suspect, quarantined"):
        store.set_instrument_state("arm", "broken")


def test_events_have_sequence_numbers_to_catch_up_from(store: Store) -> None:
    first = store.append_event("campaign.progress", {"done": 1}, campaign_id="c-1")
    second = store.append_event("instrument.state", {"name": "pump", "state": "quarantined"})
    assert second.seq == first.seq + 1 == store.last_event_seq()
    assert [e.topic for e in store.events_since(0)] == ["campaign.progress", "instrument.state"]
    assert [e.seq for e in store.events_since(first.seq)] == [second.seq]
    assert [e.seq for e in store.events_since(0, campaign_id="c-1")] == [first.seq]


def test_an_event_recorded_late_keeps_its_number_and_later_events_follow_it(store: Store) -> None:
    store.append_event("campaign.progress", {"done": 1})
    late = store.append_event("lab.storage", {"full": True}, seq=10, at="2026-01-01T00:00:00+00:00")
    assert (late.seq, store.last_event_seq()) == (10, 10)
    assert store.append_event("campaign.progress", {"done": 2}).seq == 11


def test_racing_processes_take_a_claim_once(store: Store, backend) -> None:
    """Every writer re-reads the claim under the store's one write lock: of many racing for a stale claim,
    exactly one takes it (the others see its fresh claim)."""
    campaign_id = new_campaign(store, owner=DEAD)
    racers = 6
    start = threading.Barrier(racers)
    won: list[int] = []
    refused: list[str] = []

    def race() -> None:
        with Store(store.data_dir) as mine:
            start.wait(timeout=60)
            try:
                won.append(mine.claim_campaign(campaign_id, new_owner("run")))
            except CampaignBusy as exc:
                refused.append(str(exc))

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert (won, len(refused)) == ([2], racers - 1)


def test_a_writer_held_up_by_a_stopped_one_fails_saying_so_instead_of_stalling(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stopped (or hung) inside a write transaction holds the store's write lock; another process's
    write waits at most the busy timeout, then fails naming the lock, as SQLite's does."""
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_S", 0.5)
    campaign_id = new_campaign(store)
    with Store(store.data_dir) as other, store.transaction():
        store.set_control(campaign_id, "pause")  # holds the write lock until the block ends
        with pytest.raises(Exception, match="lock") as refused:
            other.set_control(campaign_id, "stop")
        assert not isinstance(refused.value, AssertionError)
    assert store.campaign(campaign_id).control == "pause"


def test_times_keep_their_precision(store: Store) -> None:
    """Unix times are stored as 8-byte floats on both backends (PostgreSQL's REAL would round to minutes)."""
    campaign_id = new_campaign(store)
    experiment_id = running_experiment(store, campaign_id)
    at = 1_765_000_000.123456
    store.journal_entry(experiment_id, "sent", "set", device="pump", at=at)
    assert store.journal(experiment_id)[0].at == at


def test_the_audit_log_is_append_only_and_readable(store: Store) -> None:
    store.audit("ana", "campaign.abort", "ok", origin="127.0.0.1", target="c-1", arguments={"reason": "x"})
    store.audit("bob", "lab.estop", "refused: needs operator")
    log = store.audit_log()
    assert [(a.who, a.action, a.result) for a in log] == [
        ("ana", "campaign.abort", "ok"),
        ("bob", "lab.estop", "refused: needs operator"),
    ]
    assert log[0].arguments == {"reason": "x"} and log[0].target == "c-1"


# -- a store that is damaged, vanished, read-only, or copied ------------------------------------------------


def filled_store(data_dir: Path, experiments: int = 30) -> str:
    with Store(data_dir) as store:
        campaign_id = new_campaign(store)
        for i in range(experiments):
            e = store.add_proposal(campaign_id, {"x": float(i)}, DECISION)
            store.start_experiment(e.id)
            store.mark_done(e.id, {"y": float(i)}, float(i))
    return campaign_id


@pytest.mark.parametrize("damage", ["random bytes over the last page", "cut in half", "emptied"])
def test_a_damaged_store_is_reported_with_its_path_and_left_alone(tmp_path: Path, damage: str) -> None:
    data_dir = tmp_path / "data"
    filled_store(data_dir)
    path = data_dir / DB_FILENAME
    data = bytearray(path.read_bytes())
    if damage == "random bytes over the last page":
        rng = random.Random(1)
        data[-4096:] = bytes(rng.randrange(256) for _ in range(4096))
    elif damage == "cut in half":
        data = data[: len(data) // 2]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    for read_only in (True, False):
        with pytest.raises(StoreDamaged, match=f"the store {path} is damaged.*Restore it from a backup"):
            Store(data_dir, read_only=read_only)
    assert path.read_bytes() == bytes(data)  # nothing was written, no new empty store made


def test_after_every_experiment_the_main_file_alone_is_a_whole_store(tmp_path: Path) -> None:
    """Copying just sdl.sqlite3 mid-run (or losing its WAL) must not lose what was recorded."""
    data_dir = tmp_path / "data"
    with Store(data_dir) as store:  # kept open, as during a run: no checkpoint-on-close helps here
        campaign_id = new_campaign(store)
        for i in range(12):
            e = store.add_proposal(campaign_id, {"x": float(i)}, DECISION)
            store.start_experiment(e.id)
            store.append_documents(e.id, [(1, "event", {"data": {"spectrum": list(range(2000))}})])
            store.mark_done(e.id, {"y": float(i)}, float(i))
            store.checkpoint()  # what `sdl run` and the lab service do after each experiment
        copy = tmp_path / "copy"
        copy.mkdir()
        shutil.copy(data_dir / DB_FILENAME, copy / DB_FILENAME)
    with Store(copy, read_only=True) as copied:
        assert len(copied.experiments(campaign_id)) == 12


def test_a_store_deleted_while_in_use_is_noticed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with Store(data_dir) as store:
        owner = new_owner("run")
        new_campaign(store, owner=owner)
        shutil.rmtree(data_dir)
        with pytest.raises(StoreVanished, match="was deleted or replaced while sdl was using it"):
            store.heartbeat(owner)


def test_a_backup_is_a_whole_copy_taken_while_the_store_is_open(tmp_path: Path) -> None:
    campaign_id = filled_store(tmp_path / "data")
    with Store(tmp_path / "data") as store:
        store.add_proposal(campaign_id, {"x": 99.0}, DECISION)  # in the WAL, not yet in the main file
        target = store.backup(tmp_path / "backup.sqlite3")
        with pytest.raises(StoreUnavailable, match="already exists"):
            store.backup(target)
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(target, restored / DB_FILENAME)
    with Store(restored, read_only=True) as copy:
        assert len(copy.experiments(campaign_id)) == 31


def test_a_data_dir_names_its_database_once(tmp_path: Path) -> None:
    url = "postgresql://lab@db.example:5432/lab1"
    bind_store(tmp_path / "lab", url)
    bind_store(tmp_path / "lab", url)  # the same again: nothing to do
    setting = tmp_path / "lab" / STORE_SETTING
    assert store_url(tmp_path / "lab") == url and setting.stat().st_mode & 0o077 == 0  # may hold a password
    with pytest.raises(StoreUnavailable, match="keeps its store in postgresql://lab@db"):
        bind_store(tmp_path / "lab", "postgresql://lab:secret@db.example:5432/lab2")
    filled_store(tmp_path / "sqlite", experiments=1)
    with pytest.raises(StoreUnavailable, match="already holds an SQLite store"):
        bind_store(tmp_path / "sqlite", url)
    with pytest.raises(StoreUnavailable, match="not a database sdl can use"):
        bind_store(tmp_path / "other", "mysql://lab@db/lab")
    setting.write_text("sqlite:///elsewhere\n")
    with pytest.raises(StoreUnavailable, match="not a database sdl can use"):
        Store(tmp_path / "lab")


def test_a_database_that_cannot_be_reached_is_named_without_its_password(tmp_path: Path) -> None:
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgresql]')")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bind_store(tmp_path, f"postgresql://lab:secret@127.0.0.1:{port}/lab?connect_timeout=5")
    with pytest.raises(
        StoreUnavailable, match=f"cannot open the store postgresql://lab:\\*\\*\\*@127.0.0.1:{port}"
    ) as e:
        Store(tmp_path)
    assert "secret" not in str(e.value)


def test_read_only_opening_never_writes(tmp_path: Path, backend) -> None:
    campaign_id = filled_store(backend.bind(tmp_path / "data"))
    with Store(tmp_path / "data", read_only=True) as store:
        assert len(store.experiments(campaign_id)) == 30
        with pytest.raises(StoreError, match="open read-only"):
            store.add_proposal(campaign_id, {"x": 1.0}, DECISION)
    with pytest.raises(StoreUnavailable, match=r"no store (at|in)"):
        Store(backend.bind(tmp_path / "nothing-here"), read_only=True)


def test_an_unusable_data_dir_names_the_path_and_why(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreUnavailable, match=f"cannot create the store's directory {blocker / 'data'}"):
        Store(blocker / "data")


def mount_namespace() -> list[str]:
    """The command that runs a shell in a mount namespace of its own (as root, or in a user namespace of its
    own); without one, the test fails under CI and is skipped elsewhere, saying why."""
    why = "needs unshare(1) (util-linux) to mount a directory read-only"
    if shutil.which("unshare") is not None:
        for command in (["unshare", "-m"], ["unshare", "--map-root-user", "-m"]):
            probe = subprocess.run([*command, "true"], capture_output=True, text=True)
            if probe.returncode == 0:
                return command
        why = f"cannot make a mount namespace here: {probe.stderr.strip()}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI must run this test")
    pytest.skip(why)


def test_reading_commands_work_on_a_read_only_directory(tmp_path: Path) -> None:
    """`sdl campaigns`, `show` and `export` on a store mounted read-only (a namespace of its own)."""
    namespace = mount_namespace()
    campaign_id = filled_store(tmp_path / "data", experiments=3)
    mount = tmp_path / "ro"
    mount.mkdir()
    script = textwrap.dedent(
        f"""
        set -e
        mount --bind {tmp_path / "data"} {mount}
        mount -o remount,bind,ro {mount}
        ! touch {mount}/probe 2>/dev/null
        {sys.executable} -m sdl campaigns --data-dir {mount}
        {sys.executable} -m sdl show {campaign_id} --data-dir {mount}
        {sys.executable} -m sdl export {campaign_id} --data-dir {mount}
        """
    )
    done = subprocess.run([*namespace, "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert campaign_id in done.stdout and "3/5" in done.stdout


def test_migrating_a_version_2_store_keeps_its_documents(tmp_path: Path) -> None:
    from sdl.store.migrations import MIGRATIONS, migrate

    conn = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    migrate(conn, MIGRATIONS[:2])
    conn.close()
    with Store(tmp_path) as store:
        experiment = store.add_proposal(new_campaign(store), {"x": 1.0}, DECISION)
        store.save_legacy_documents(experiment.id, [("start", {"uid": "u"})])
        assert store.documents(experiment.id) == [("start", {"uid": "u"})]
