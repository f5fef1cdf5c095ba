"""A standby takes the lab over: `sdl daemon --standby` waits while another service holds the lab, and takes
it when that one is gone — at once when it sees the process dead on its own machine, after the claim's stale
limit when the holder runs elsewhere. Each through real services, workers and the simulated lab, with the
colour campaign on two workcells, checked as exactly as after twenty kill -9s (test_daemon_recovery.py)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from campaign_files import BAYESIAN, SLOW_BOWL, bowl
from test_daemon_recovery import (
    assert_finished_exactly,
    colour_campaign,
    done_ids,
    journal_lines,
)

from sdl.api import models as m
from sdl.store import STALE_AFTER_S, Store, bind_store
from sdl.testing import LabServiceProcess, alive, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
LAB = ROOT / "experiments" / "two_stations" / "lab.yaml"

pytestmark = pytest.mark.slow
BUDGET = 16
#: Takeovers in the test (benchmarks/failover.py does ten per run, and times them).
TAKEOVERS = 3


def service(
    data_dir: Path,
    name: str,
    *extra: str,
    env: dict[str, str] | None = None,
    wrap: list[str] | None = None,
) -> LabServiceProcess:
    return LabServiceProcess(
        LAB, data_dir, *extra, pythonpath=[TESTS, ROOT], env=env, name=name, wrap=wrap or []
    )


def standing_by(data_dir: Path, pid: int) -> bool:
    """Whether the service ``pid`` has said in the store that it stands by."""
    with Store(data_dir, read_only=True) as store:
        return any(s["pid"] == pid for s in store.standbys(stale_after=STALE_AFTER_S))


def test_kill_9s_each_met_by_the_standby_and_the_campaign_finishes_exactly(tmp_path: Path) -> None:
    """Two services take turns: the one serving is killed at a random moment of the campaign, the standby
    takes the lab over, and the killed one comes back as the new standby."""
    rng = random.Random(20261207)
    data = tmp_path / "data"
    pair = [service(data, "first").start(), service(data, "second", "--standby")]
    serving, waiting = pair
    waiting.start(wait=False)
    wait_for(lambda: standing_by(data, waiting.pid), 60, "the second service to stand by")
    status = serving.call(m.Status())
    assert [(s.host, s.pid) for s in status.standbys] == [(os.uname().nodename, waiting.pid)]
    with serving.client() as client:
        campaign_id = client.submit(colour_campaign(tmp_path, BUDGET)).campaign_id
    completed: set[int] = set()
    takeovers = 0
    try:
        for kill in range(TAKEOVERS):
            mark = journal_lines(data) + rng.randint(1, 8)
            wait_for(
                lambda mark=mark: journal_lines(data) >= mark or not in_progress(data, campaign_id),
                180,
                f"kill {kill + 1}: {mark} journal lines",
            )
            if not in_progress(data, campaign_id):
                break
            completed |= done_ids(data, campaign_id)
            serving.kill9()
            wait_for(waiting.serving, 60, f"kill {kill + 1}: the standby to take over (log: {waiting.log})")
            takeovers += 1
            serving, waiting = waiting, serving
            # The campaign waits while the killed service comes back as the standby (slow on a busy
            # machine), so that every takeover meets a campaign still running.
            serving.call(m.PauseCampaign(campaign_id=campaign_id))
            waiting.extra = ("--standby",)
            waiting.start(wait=False)
            pid = waiting.pid
            wait_for(lambda pid=pid: standing_by(data, pid), 60, "the killed service back as the standby")
            serving.call(m.ResumeCampaign(campaign_id=campaign_id))
        done = wait_for(
            lambda: (
                (c := serving.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running"
                and c
            ),
            600,
            "the campaign to finish after the last takeover",
        )
        assert waiting.process is not None and waiting.process.poll() is None
        assert serving.stop() == 0, serving.log_text()
        assert waiting.stop() == 0, waiting.log_text()  # a standby stops cleanly too
    finally:
        for process in pair:
            if process.process is not None and process.process.poll() is None:
                process.kill9()
        for process in pair:
            process.assert_nothing_left(60)
    assert takeovers == TAKEOVERS, takeovers
    assert done.status == "completed" and done.spent == BUDGET, done
    assert_finished_exactly(data, campaign_id, completed)
    with Store(data, read_only=True) as store:
        assert store.standbys(stale_after=1e9) == []  # each one stood down: when it took over, or stopped


def other_host() -> list[str]:
    """A command prefix that runs a process under a host name of its own (a UTS namespace): its claims name
    that host, so it cannot see the other service's process and must judge it by its heartbeat."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    prefix = [unshare, "--uts", "sh", "-c", 'hostname standby-host && exec "$@"', "sh"]
    probe = subprocess.run([*prefix, "hostname"], capture_output=True, text=True, check=False)
    if probe.returncode != 0 or probe.stdout.strip() != "standby-host":
        pytest.skip(f"a UTS namespace needs root here: {probe.stderr.strip()}")
    return prefix


def test_a_hung_service_is_taken_over_from_another_host_and_its_workers_stop(tmp_path: Path) -> None:
    """The serving service hangs (SIGSTOP) mid-campaign. The standby, on another host name, takes the lab over
    once the claim is stale; the hung service's workers, which still run, see the claim move and stop before
    anything starts on their instruments; when the hung service wakes it finds the lab gone and exits 1."""
    prefix = other_host()
    data = tmp_path / "data"
    stale = {"SDL_CLAIM_STALE_S": "3"}
    primary = service(data, "primary", env=stale).start()
    standby = service(data, "standby", "--standby", env=stale, wrap=prefix).start(wait=False)
    try:
        wait_for(lambda: standing_by(data, standby.pid), 60, "the standby to stand by")
        [waiting] = primary.call(m.Status()).standbys
        assert waiting.host == "standby-host"
        with primary.client() as client:
            campaign_id = client.submit(colour_campaign(tmp_path, 8)).campaign_id
        wait_for(lambda: len(done_ids(data, campaign_id)) >= 2, 180, "two experiments done")
        wait_for(lambda: journal_lines(data) > 0 and running(data, campaign_id), 60, "one in flight")
        primary.family()  # remembered: none of them may outlive the test
        workers = [c.worker_pid for c in primary.call(m.ListWorkcells()).workcells if c.worker_pid]
        assert len(workers) == 2, workers
        completed = done_ids(data, campaign_id)
        primary.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            wait_for(standby.serving, 60, f"the standby to take over (log: {standby.log})")
            wait_for(lambda: not any(alive(p) for p in workers), 60, "the hung service's workers to stop")
        finally:
            primary.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        assert primary.process.wait(timeout=60) == 1, primary.log_text()  # type: ignore[union-attr]
        log = primary.log_text(whole=True)
        assert "the lab is held by another service now" in log, log
        assert "the lab's claim was taken by another process" in log, log
        after = log.split("the lab is held by another service now", 1)[1]
        assert " started on " not in after, after  # it started nothing once replaced, woken or not
        done = wait_for(
            lambda: (
                (c := standby.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running"
                and c
            ),
            600,
            "the campaign to finish on the standby",
        )
        assert standby.stop() == 0, standby.log_text()
    finally:
        for process in (primary, standby):
            if process.process is not None and process.process.poll() is None:
                process.process.send_signal(signal.SIGCONT)
                process.kill9()
        for process in (primary, standby):
            process.assert_nothing_left(60)
    assert done.status == "completed" and done.spent == 8, done
    assert_finished_exactly(data, campaign_id, completed)


def in_progress(data_dir: Path, campaign_id: str) -> bool:
    with Store(data_dir, read_only=True) as store:
        return store.campaign(campaign_id).status.value == "running"


def running(data_dir: Path, campaign_id: str) -> bool:
    with Store(data_dir, read_only=True) as store:
        return any(e.status.value == "running" for e in store.experiments(campaign_id))


def test_standbys_are_on_record_while_they_wait_and_leave_it_when_they_stop(tmp_path: Path, backend) -> None:
    with Store(backend.bind(tmp_path / "data")) as store:
        store.stand_by("daemon:b:2:x", "b", 2)
        store.stand_by("daemon:c:3:y", "c", 3)
        store.stand_by("daemon:b:2:x", "b", 2)  # said again: one record, fresher
        assert [(s["host"], s["pid"]) for s in store.standbys(stale_after=60)] == [("c", 3), ("b", 2)]
        store.stand_down("daemon:c:3:y")
        assert [s["pid"] for s in store.standbys(stale_after=60)] == [2]
        assert store.standbys(stale_after=-1.0) == []  # silent longer than the limit: not counted


def test_a_standby_with_a_data_directory_of_its_own_takes_over_a_lab_kept_in_postgresql(
    tmp_path: Path, postgres
) -> None:
    """As on two machines: each service has its own data directory, both name one PostgreSQL database, and
    the standby has a copy of the first one's keys (so its clients' pinned server key still holds)."""
    url = postgres.database()
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: compute\nworkcells:\n  w1: {}\n  w2: {}\n")
    spec = bowl(tmp_path, 8, SLOW_BOWL % 0.5, optimizer=BAYESIAN)
    first, second = tmp_path / "host-a", tmp_path / "host-b"
    for data in (first, second):
        bind_store(data, url)
    primary = LabServiceProcess(lab, first, pythonpath=[TESTS, ROOT]).start()
    shutil.copytree(first / "keys", second / "keys", dirs_exist_ok=True)
    standby = LabServiceProcess(lab, second, "--standby", pythonpath=[TESTS, ROOT]).start(wait=False)
    try:
        wait_for(lambda: standing_by(first, standby.pid), 60, "the standby to stand by")
        with primary.client() as client:
            campaign_id = client.submit(spec).campaign_id
        wait_for(lambda: len(done_ids(first, campaign_id)) >= 2, 120, "two experiments done")
        completed = done_ids(first, campaign_id)
        primary.kill9()
        wait_for(standby.serving, 60, f"the standby to take over (log: {standby.log})")
        with standby.client(data_dir=first) as client:  # the first host's key, the same server key
            assert client.call(m.Status()).pid == standby.pid
        done = wait_for(
            lambda: (
                (c := standby.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running"
                and c
            ),
            120,
            "the campaign to finish on the standby",
        )
        assert standby.stop() == 0, standby.log_text()
    finally:
        for process in (primary, standby):
            if process.process is not None and process.process.poll() is None:
                process.kill9()
        for process in (primary, standby):
            process.assert_nothing_left(60)
    assert done.status == "completed" and done.spent == 8, done
    with Store(second, read_only=True) as store:
        history = store.experiments(campaign_id)
        assert completed <= {e.id for e in history if e.status.value == "done"}
        assert all(e.status.is_final for e in history)
        recipes = [tuple(sorted(e.recipe.items())) for e in history if e.status.value == "done"]
        assert len(recipes) == len(set(recipes)), "an experiment ran twice"
