"""A crash at each commit point of the lab service and its workers — injected deterministically, as abrupt
as `kill -9` — leaves a store that recovers to a consistent state, and the campaign finishes exactly."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sdl.api import models as m
from sdl.spec.status import Cause, ExperimentStatus
from sdl.store import Store, unacknowledged
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
BUDGET = 5

POINTS = [
    ("service", "service.mid-start", 2),  # starting the 2nd experiment: it must roll back whole
    ("service", "service.after-start", 2),  # running and leased on disk, the worker never told
    ("service", "service.after-finished", 2),  # an outcome recorded and announced
    ("service", "service.before-close", 1),  # the budget spent, the campaign not yet closed
    ("worker", "store.journal", 3),  # a command journalled, not yet sent
    ("worker", "store.document", 2),  # a document written mid-run
    ("worker", "worker.before-outcome", 2),  # the run ended, its outcome not recorded
    ("worker", "store.outcome", 2),  # the outcome recorded, the service not told
]


def write_lab(tmp_path: Path) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: motors
            workers: {heartbeat_timeout: 5, restart_backoff: 0.2}
            instruments:
              motor_a: {driver: "daemon_procedures:make_motor"}
              motor_b: {driver: "daemon_procedures:make_motor"}
            workcells:
              a: {devices: {motor: motor_a}}
              b: {devices: {motor: motor_b}}
            """
        )
    )
    return path


def write_campaign(tmp_path: Path) -> Path:
    path = tmp_path / "motors.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: motors
            parameters:
              - {{name: x, type: real, low: 0.0, high: 1.0}}
              - {{name: y, type: real, low: 0.0, high: 1.0}}
            objectives: [{{measurement: loss}}]
            budget: {{max_experiments: {BUDGET}}}
            optimizer: {{kind: random, seed: 3}}
            procedure:
              plan: daemon_procedures:move_and_read
              extractor: daemon_procedures:plan_loss
            requires: {{devices: [motor]}}
            """
        )
    )
    return path


@pytest.mark.parametrize(("role", "point", "nth"), POINTS, ids=[f"{r}-{p}" for r, p, _ in POINTS])
def test_a_crash_at_a_commit_point_recovers_to_a_consistent_store(
    tmp_path: Path, role: str, point: str, nth: int
) -> None:
    crash = tmp_path / "crash"
    crash.write_text(f"{role} {point} {nth}")
    service = LabServiceProcess(
        write_lab(tmp_path), tmp_path / "data", pythonpath=[TESTS, ROOT], env={"SDL_CRASH_FILE": str(crash)}
    )
    with service.start():
        with service.client() as client:
            campaign_id = client.submit(write_campaign(tmp_path)).campaign_id
        wait_for(lambda: not crash.exists(), 120, f"the crash at {role} {point}")
        if role == "service":
            assert service.process is not None
            assert service.process.wait(timeout=60) == 137
            service.family()
            service.start()  # the crash file is gone: it happens once
        summary = wait_for(
            lambda: (
                (c := service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running"
                and c
            ),
            180,
            "the campaign to finish after the crash",
        )
        if role == "worker":
            restarts = sum(w.restarts for w in service.call(m.ListWorkcells()).workcells)
            assert restarts == 1, "the crashed worker was replaced once"
    assert summary.status == "completed" and summary.spent == BUDGET
    with Store(service.data_dir, read_only=True) as store:  # opening checks the whole file
        history = store.experiments(campaign_id)
        assert all(e.status.is_final for e in history)
        assert store.leases() == {}
        recipes = [tuple(sorted(e.recipe.items())) for e in history if e.status is ExperimentStatus.DONE]
        assert len(recipes) == len(set(recipes)) == BUDGET
        for e in history:
            if e.status is ExperimentStatus.DONE:
                names = [n for n, _ in store.documents(e.id)]
                assert names[0] == "start" and names[-1] == "stop" and "event" in names, (e.seq, names)
                assert unacknowledged(store.journal(e.id)) == [], e.seq
            elif e.status is ExperimentStatus.INTERRUPTED:
                assert e.cause in (Cause.CRASH, Cause.DROPPED) and e.failure, e
            else:
                raise AssertionError(f"experiment {e.seq} ended {e.status.value}: {e.failure}")
        events = store.events_since(0, limit=100_000)
        assert [ev.seq for ev in events] == list(range(1, len(events) + 1))
