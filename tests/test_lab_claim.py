"""One lab service per store: a second or third `sdl daemon` on a running service's data directory is refused,
and leaves the first one's claim and its service record (daemon.json) alone, even when the first one's
heartbeat has gone quiet because it is stopped (not dead)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_daemon import ROOT, TESTS, lab_file, service_process

from sdl.api import models as m
from sdl.store import CampaignBusy, Store, new_owner
from sdl.testing import wait_for

#: A short staleness limit, so that a stopped service's heartbeat goes quiet within seconds.
STALE_S = "2"


def record(data_dir: Path) -> dict[str, object]:
    try:
        info: dict[str, object] = json.loads((data_dir / "daemon.json").read_text())
    except (OSError, ValueError):
        return {}
    return info


def claim(data_dir: Path) -> dict[str, object] | None:
    with Store(data_dir, read_only=True) as store:
        return store.lab_state("daemon")


def heartbeat_age(data_dir: Path) -> float:
    held = claim(data_dir) or {}
    return time.time() - float(held.get("heartbeat_at") or 0.0)  # type: ignore[arg-type]


def another_service(lab: Path, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "sdl", "daemon", "--lab", str(lab), "--data-dir", str(data_dir),
        "--api", "tcp://127.0.0.1:0", "--events", "tcp://127.0.0.1:0", "--documents", "tcp://127.0.0.1:0",
    ]  # fmt: skip
    env = {**os.environ, "SDL_CLAIM_STALE_S": STALE_S, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def outcome(process: subprocess.Popen[bytes], data_dir: Path) -> str:
    """Wait until the process either exits or names itself in daemon.json (it runs the lab)."""

    def settled() -> str | None:
        if process.poll() is not None:
            return "exited"
        return "running" if record(data_dir).get("pid") == process.pid else None

    found = wait_for(settled, 90, "the service to be refused or to start")
    return found


def test_three_services_on_one_store_one_runs_the_others_are_refused(tmp_path: Path, backend) -> None:
    lab, data = lab_file(tmp_path), backend.bind(tmp_path / "data")
    first = service_process(lab, data)
    first.env["SDL_CLAIM_STALE_S"] = STALE_S
    others: list[subprocess.Popen[bytes]] = []
    with first.start():
        try:
            assert first.call(m.Status()).pid == first.pid
            held = claim(data)
            assert held is not None and str(held["owner"]).startswith(f"daemon:{os.uname().nodename}:")

            # a second service while the first runs: refused, and the first's record and claim stay
            second = another_service(lab, data, tmp_path / "second.log")
            others.append(second)
            assert outcome(second, data) == "exited"
            assert second.returncode == 1, (tmp_path / "second.log").read_text()
            assert "one lab service per store" in (tmp_path / "second.log").read_text()
            assert record(data).get("pid") == first.pid
            assert str((claim(data) or {}).get("owner")) == held["owner"]
            assert first.call(m.Status()).pid == first.pid

            # the first stopped (not dead) until its heartbeat is stale: a third is refused all the same,
            # since the process that holds the claim is alive on this machine
            os.kill(first.pid, signal.SIGSTOP)
            try:
                wait_for(
                    lambda: heartbeat_age(data) > float(STALE_S) + 0.5,
                    60,
                    "the stopped service's heartbeat to go stale",
                )
                third = another_service(lab, data, tmp_path / "third.log")
                others.append(third)
                third_outcome = outcome(third, data)
            finally:
                os.kill(first.pid, signal.SIGCONT)
            assert third_outcome == "exited", "a third service started beside the first"
            assert third.returncode == 1, (tmp_path / "third.log").read_text()
            assert "one lab service per store" in (tmp_path / "third.log").read_text()

            # exactly one runs and is reachable: the first
            assert record(data).get("pid") == first.pid
            assert str((claim(data) or {}).get("owner")) == held["owner"]
            assert first.call(m.Status()).pid == first.pid
        finally:
            for process in others:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=120)
        assert first.stop() == 0, first.log_text()
    # the first, stopped cleanly, released what it held
    assert claim(data) is None
    assert not (data / "daemon.json").exists()


# -- the claim in the store --------------------------------------------------------------------------------


def test_only_the_holder_releases_the_lab_and_a_reused_pid_is_not_the_holder(tmp_path: Path) -> None:
    with Store(tmp_path / "data") as store:
        first = new_owner("daemon")
        store.claim_lab(first, stale_after=10)
        other = new_owner("daemon")
        with pytest.raises(CampaignBusy):
            store.claim_lab(other, stale_after=10)
        assert not store.release_lab(other) and not store.lab_heartbeat(other)
        assert (store.lab_state("daemon") or {})["owner"] == first

        # silent for longer than the limit, but this very process: still alive, so still the holder
        held = store.lab_state("daemon") or {}
        store.set_lab_state("daemon", {**held, "heartbeat_at": time.time() - 60})
        with pytest.raises(CampaignBusy, match="alive but silent for 60 s"):
            store.claim_lab(other, stale_after=10)

        # the same pid, but a process that started at another time: the holder is gone, its pid reused
        store.set_lab_state("daemon", {**held, "heartbeat_at": time.time() - 60, "started": -1})
        assert store.claim_lab(other, stale_after=10) == 2
        assert not store.lab_heartbeat(first) and not store.release_lab(first)
        assert store.lab_heartbeat(other) and store.release_lab(other)
        assert store.lab_state("daemon") is None
