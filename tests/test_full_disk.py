"""A full disk under the lab service, for real: the data directory is a small tmpfs this test mounts (root),
filled with a file until the kernel refuses a byte more. The lab shows the fault (status, the event stream),
starts nothing new, holds what the experiments in flight measured, and carries on by itself once the file is
deleted — or, stopped meanwhile, records it at its next start. Nothing computed is lost, and nothing is
recorded as anything but what happened.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from test_lab_recovery import compute_lab, finished, gated_campaign

from sdl.api import models as m
from sdl.spec.status import ExperimentStatus
from sdl.store import Store
from sdl.store.spill import spill_dirs
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow


@contextmanager
def small_disk(mount_point: Path, size: str = "48m") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``mount_point``: the real thing, with the kernel's own ENOSPC."""
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        why = f"cannot mount a small tmpfs here ({done.stderr.strip() or 'mount failed'}; needs root)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has not a byte left."""
    filler = directory / "filler"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as out:
        with suppress(OSError):
            while True:
                out.write(chunk)
        with suppress(OSError):
            while True:
                out.write(b"\0" * 512)
    return filler


def storage_alert(service: LabServiceProcess) -> m.Alert | None:
    return next((a for a in service.call(m.Status()).alerts if a.key == "storage"), None)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(the lab file, a data directory on a small disk of its own); spill files are cleaned up after."""
    with small_disk(tmp_path / "data") as data:
        yield compute_lab(tmp_path), data
        for directory in spill_dirs(data):
            shutil.rmtree(directory, ignore_errors=True)


def two_in_flight_then_full(
    tmp_path: Path, service: LabServiceProcess, budget: int
) -> tuple[str, Path, Path, int]:
    """Run a campaign, fill the disk under the two experiments in flight, let them end: returns the campaign,
    the gate, the filler, and the last event number before the disk filled."""
    gate = tmp_path / "gate"
    gate.mkdir()
    with service.client() as client:
        # Each measures a spectrum of 100,000 points: more than the store's log has room for, once full.
        campaign_id = client.submit(gated_campaign(tmp_path, gate, budget, points=100_000)).campaign_id
    wait_for(lambda: len(list(gate.glob("running-*"))) == 2, what="two experiments in flight")
    before = service.call(m.EventsSince(seq=0, limit=1)).last
    filler = fill(service.data_dir)
    alert = wait_for(lambda: storage_alert(service), 30, "the storage alert in status")
    assert alert.kind == "storage" and str(service.data_dir) in alert.message
    (gate / "open").write_text("")  # the two experiments measure; the store has no room for their outcome
    wait_for(
        lambda: len([p for d in spill_dirs(service.data_dir) for p in d.glob("experiment-*.json")]) == 2,
        60,
        "both outcomes held (spilled where there is room)",
    )
    return campaign_id, gate, filler, before


def test_a_full_disk_holds_the_lab_shows_it_and_the_work_resumes_when_space_returns(
    tmp_path: Path, lab: tuple[Path, Path]
) -> None:
    lab_file, data = lab
    service = LabServiceProcess(lab_file, data, pythonpath=[TESTS, ROOT]).start()
    with service:
        campaign_id, _gate, filler, before = two_in_flight_then_full(tmp_path, service, budget=6)
        # The campaign is not what is wrong, nor are its experiments: they wait, running.
        held = service.call(m.ListExperiments(campaign_id=campaign_id)).experiments
        assert [e.status for e in held] == ["running", "running"]
        filler.unlink()  # space returns
        summary = finished(service, campaign_id)
        events = service.call(m.EventsSince(seq=before, limit=10_000)).events
        history = service.call(m.ListExperiments(campaign_id=campaign_id)).experiments
        assert storage_alert(service) is None
        assert service.stop() == 0, service.log_text()
    assert summary.status == "completed" and summary.spent == 6
    assert [e.status for e in history] == ["done"] * 6, [(e.status, e.failure) for e in history]
    assert all(e.measurements and e.loss is not None for e in history)
    # On the event stream: the alert, then its end; in between, nothing new was proposed or started.
    alerts = [
        (e.seq, e.body["active"]) for e in events if e.topic == "lab.alert" and e.body["key"] == "storage"
    ]
    assert [active for _, active in alerts] == [True, False]
    between = [e.topic for e in events if alerts[0][0] < e.seq < alerts[1][0]]
    assert "experiment.proposed" not in between and "experiment.started" not in between, between
    assert [e.seq for e in events] == list(range(before + 1, before + 1 + len(events)))  # no gap
    assert not [p for d in spill_dirs(data) for p in d.glob("experiment-*")]


def test_a_service_stopped_while_the_disk_is_full_records_what_was_measured_at_its_next_start(
    tmp_path: Path, lab: tuple[Path, Path]
) -> None:
    lab_file, data = lab
    service = LabServiceProcess(lab_file, data, pythonpath=[TESTS, ROOT]).start()
    with service:
        campaign_id, _gate, filler, _ = two_in_flight_then_full(tmp_path, service, budget=4)
        held = {e.id for e in service.call(m.ListExperiments(campaign_id=campaign_id)).experiments}
        assert service.process is not None
        service.process.send_signal(signal.SIGTERM)  # finish what is in flight... which waits on the disk
        assert service.process.wait(timeout=120) == 0, service.log_text()
        service.assert_nothing_left()
        filler.unlink()
        service.start()
        summary = finished(service, campaign_id)
        history = service.call(m.ListExperiments(campaign_id=campaign_id)).experiments
        assert service.stop() == 0, service.log_text()
    assert summary.status == "completed"
    first = [e for e in history if e.id in held]
    assert [e.status for e in first] == ["done", "done"], [(e.status, e.failure) for e in first]
    assert all(e.measurements and e.loss is not None for e in first)
    assert not [e for e in history if e.status == "interrupted"]
    with Store(data, read_only=True) as store:
        notes = [t.note or "" for e in history for t in store.transitions(e.id)]
    assert not [n for n in notes if "exited with code" in n], notes
    assert [e.status for e in history].count(ExperimentStatus.DONE.value) == 4
