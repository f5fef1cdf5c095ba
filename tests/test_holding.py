"""What a worker writes while the disk is full (`sdl.daemon.holding`), against a store that refuses writes
until the test gives it room: no command goes out before its journal line is written, and nothing measured
is lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdl.daemon import holding
from sdl.daemon.holding import RECORDED, SPILLED, PatientRecorder, record_outcome
from sdl.loop.lifecycle import start_campaign
from sdl.spec.campaign import Campaign
from sdl.spec.loading import LoadedCampaign
from sdl.spec.status import ExperimentStatus
from sdl.store import Decision, Finish, Store, StoreFull
from sdl.store.spill import spill_dirs, spilled


class FullDisk:
    """A store whose writes fail with StoreFull until ``room`` is set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.room = threading.Event()
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)
        if not callable(method):
            return method

        def write(*args: Any, **kwargs: Any) -> Any:
            if not self.room.is_set():
                self.refused += 1
                raise StoreFull("the disk holding the store is full")
            return method(*args, **kwargs)

        return write


@pytest.fixture
def experiment(tmp_path: Path) -> Iterator[tuple[Store, int]]:
    store = Store(tmp_path / "data")
    yield store, _running(store)
    store.close()
    for directory in spill_dirs(tmp_path / "data"):
        for path in directory.glob("*"):
            path.unlink()


def _running(store: Store) -> int:
    spec = {
        "name": "held",
        "parameters": [{"name": "x", "type": "real", "low": 0.0, "high": 1.0}],
        "objectives": [{"measurement": "loss"}],
        "budget": {"max_experiments": 1},
        "procedure": {"function": "daemon_procedures:bowl"},
    }
    loaded = LoadedCampaign(campaign=Campaign.model_validate(spec), path=Path("c.yaml"), source="")
    campaign_id = start_campaign(store, loaded)
    proposal = store.add_proposal(campaign_id, {"x": 0.5}, Decision("random", None, None, 0.0, 0, 0))
    store.start_experiment(proposal.id)
    return proposal.id


def test_a_command_waits_for_its_journal_line_and_nothing_held_is_lost(
    experiment: tuple[Store, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, experiment_id = experiment
    monkeypatch.setattr(holding, "RETRY_S", 0.01)
    disk = FullDisk(store)
    told: list[str] = []
    recorder = PatientRecorder(disk, told.append)  # type: ignore[arg-type]

    # An acknowledgement and a document: held, nothing waits for them.
    assert recorder.journal_entry(experiment_id, "done", "set", instrument="arm", ref=1) == 0
    recorder.append_documents(experiment_id, [(1, "start", {"uid": "a"})])
    assert told and store.journal(experiment_id) == []

    # A command's line: the plan waits here until it is on disk.
    sent: list[int] = []
    waiting = threading.Thread(
        target=lambda: sent.append(recorder.journal_entry(experiment_id, "sent", "set", instrument="arm"))
    )
    waiting.start()
    refused = disk.refused
    while disk.refused < refused + 3:  # it keeps trying...
        threading.Event().wait(0.01)
    assert sent == [] and waiting.is_alive()  # ... and the command has not gone out
    disk.room.set()
    waiting.join(30)
    assert sent and sent[0] > 0
    # What was held went first, in order.
    assert [(j.entry, j.command) for j in store.journal(experiment_id)] == [("done", "set"), ("sent", "set")]

    held = recorder.take(
        experiment_id, Finish(ExperimentStatus.DONE, {"loss": 0.1}, 0.1), [(2, "stop", {})], None
    )
    assert [name for _, name, _ in held.documents] == ["start", "stop"]
    assert record_outcome(store, held, full=lambda *a: None, closing=threading.Event()) == RECORDED
    assert store.experiment(experiment_id).status is ExperimentStatus.DONE
    assert [name for name, _ in store.documents(experiment_id)] == ["start", "stop"]


def test_an_aborted_experiment_stops_waiting_for_its_journal_line(
    experiment: tuple[Store, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, experiment_id = experiment
    monkeypatch.setattr(holding, "RETRY_S", 0.01)
    recorder = PatientRecorder(FullDisk(store), lambda detail: None)  # type: ignore[arg-type]
    recorder.cancelled = lambda: True
    with pytest.raises(StoreFull):
        recorder.journal_entry(experiment_id, "sent", "set", instrument="arm")


def test_an_outcome_the_disk_has_no_room_for_is_spilled_and_written_from_the_spill(
    experiment: tuple[Store, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, experiment_id = experiment
    monkeypatch.setattr(holding, "RETRY_S", 0.01)
    recorder = PatientRecorder(FullDisk(store), lambda detail: None)  # type: ignore[arg-type]
    held = recorder.take(experiment_id, Finish(ExperimentStatus.DONE, {"loss": 0.2}, 0.2), [], {"w": 1})
    closing = threading.Event()
    told: list[str | None] = []

    def full(detail: str, path: str | None) -> None:
        told.append(path)
        closing.set()  # the worker is told to stop while it holds the outcome

    assert record_outcome(FullDisk(store), held, full=full, closing=closing) == SPILLED  # type: ignore[arg-type]
    assert told[0] is not None and Path(told[0]).exists()
    [kept] = spilled(store.data_dir)
    assert kept.experiment_id == experiment_id and kept.finish.measurements == {"loss": 0.2}
    assert store.experiment(experiment_id).status is ExperimentStatus.RUNNING
    # The next service, with room: the spilled outcome is the record, and its file is gone.
    assert store.write_spilled() == [experiment_id]
    recorded = store.experiment(experiment_id)
    assert (recorded.status, recorded.measurements) == (ExperimentStatus.DONE, {"loss": 0.2})
    assert store.provenance(experiment_id) == {"w": 1}
    assert spilled(store.data_dir) == []
