"""Exact recovery: `kill -9` of the lab service or of its workers at random moments of a two-workcell
campaign on the simulated lab (real drivers, real instruments' protocols), then a restart.

After the last restart the campaign finishes its budget; no completed experiment is lost or repeated;
every interruption is in the store with its cause and its command journal; no simulator or worker is
left behind; no instrument is left leased.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import yaml

from sdl.api import models as m
from sdl.spec.status import ExperimentStatus
from sdl.store import Store
from sdl.testing import LabServiceProcess, alive, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
KILLS = 20


def colour_campaign(tmp_path: Path, budget: int) -> Path:
    spec = yaml.safe_load((ROOT / "experiments" / "color_matching" / "campaign.yaml").read_text())
    spec["budget"] = {"max_experiments": budget, "max_consecutive_failures": None}
    spec.pop("lab")  # the lab service runs it on its own lab's workcells
    spec["requires"] = {"devices": ["dye_pumps", "water_pump", "arm", "spectrometer"]}
    path = tmp_path / "colour.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def journal_lines(data_dir: Path) -> int:
    with Store(data_dir, read_only=True) as store:
        return int(store._read("SELECT COUNT(*) FROM journal")[0][0])


def done_ids(data_dir: Path, campaign_id: str) -> set[int]:
    with Store(data_dir, read_only=True) as store:
        return {e.id for e in store.experiments(campaign_id) if e.status is ExperimentStatus.DONE}


def test_twenty_kill_9s_at_random_moments_then_the_campaign_finishes_exactly(tmp_path: Path) -> None:
    rng = random.Random(20261127)
    budget = 24
    service = LabServiceProcess(ROOT / "experiments" / "two_stations" / "lab.yaml", tmp_path / "data",
                                pythonpath=[TESTS, ROOT])  # fmt: skip
    service.start()
    with service.client() as client:
        campaign_id = client.submit(colour_campaign(tmp_path, budget)).campaign_id
    completed: set[int] = set()
    kills = {"service": 0, "worker": 0}
    try:
        for kill in range(KILLS):
            # A random moment, chosen by progress rather than by the clock: after a random number of
            # commands has been journalled (mid-motion, mid-dispense, mid-measurement...).
            mark = journal_lines(service.data_dir) + rng.randint(1, 25)
            wait_for(
                lambda mark=mark: (
                    journal_lines(service.data_dir) >= mark or not campaign_running(service, campaign_id)
                ),
                180,
                f"kill {kill + 1}: {mark} journal lines (log: {service.log})",
            )
            if not campaign_running(service, campaign_id):
                break
            completed |= done_ids(service.data_dir, campaign_id)
            workers = sorted(service.family() - {service.pid})
            if rng.random() < 0.5 or not workers:
                service.kill9()
                kills["service"] += 1
                wait_for(lambda w=workers: not any(alive(p) for p in w), 60, "the orphaned workers to exit")
                service.start()
            else:
                cells = service.call(m.ListWorkcells()).workcells
                victim = rng.choice([c for c in cells if c.worker_pid])
                os.kill(victim.worker_pid, signal.SIGKILL)
                kills["worker"] += 1
        done = wait_for(
            lambda: (
                (c := service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running"
                and c
            ),
            600,
            "the campaign to finish after the last kill",
        )
    finally:
        if service.process is not None and service.process.poll() is None:
            assert service.stop() == 0, service.log_text()
        service.assert_nothing_left(60)

    assert kills["service"] + kills["worker"] >= 10, kills
    assert done.status == "completed" and done.spent == budget, done
    assert_finished_exactly(service.data_dir, campaign_id, completed)


def assert_finished_exactly(data_dir: Path, campaign_id: str, completed: set[int]) -> None:
    """Every experiment that was done stays done, none ran twice, every interruption is on record with its
    cause and journal, every finished run has its documents, and nothing is left leased or unwell."""
    with Store(data_dir, read_only=True) as store:
        history = store.experiments(campaign_id)
        finished = {e.id for e in history if e.status is ExperimentStatus.DONE}
        assert completed <= finished, "a completed experiment was lost"
        recipes = [tuple(sorted(e.recipe.items())) for e in history if e.status is ExperimentStatus.DONE]
        assert len(recipes) == len(set(recipes)), "an experiment ran twice"
        assert [e.failure for e in history if e.status is ExperimentStatus.FAILED] == []
        for e in history:
            assert e.status.is_final, e
            if e.status is ExperimentStatus.INTERRUPTED:
                assert e.cause is not None and e.cause.value in ("crash", "dropped"), e
                assert e.failure, e
                store.journal(e.id)  # readable: what was sent, what was acknowledged
            if e.status is ExperimentStatus.DONE:
                names = [n for n, _ in store.documents(e.id)]
                assert names[0] == "start" and names[-1] == "stop", (e.seq, names)
        assert store.leases() == {}
        assert {r.state for r in store.instruments().values()} <= {"ok"}, store.instruments()


def campaign_running(service: LabServiceProcess, campaign_id: str) -> bool:
    with Store(service.data_dir, read_only=True) as store:
        return store.campaign(campaign_id).status.value == "running"
