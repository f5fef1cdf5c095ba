"""An interrupted test run (Ctrl-C, or SIGTERM from CI or a shell's kill) ends every process its tests
started: the lab service, its workers and its proposer do not outlive it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sdl.testing import alive, end, wait_for

TESTS = Path(__file__).resolve().parent


def read_family(path: Path) -> set[int]:
    return set(json.loads(path.read_text())) if path.exists() else set()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_ends_every_process_its_tests_started(tmp_path: Path, signum: int) -> None:
    family_file = tmp_path / "family.json"
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "--basetemp", str(tmp_path / "run"), str(TESTS / "interrupted_run.py")],
            cwd=TESTS.parent, env={**os.environ, "SDL_FAMILY_FILE": str(family_file)}, stdout=out, stderr=out,
        )  # fmt: skip
    family: set[int] = set()
    try:
        family = wait_for(lambda: read_family(family_file), 120, f"the service to start (log: {log})")
        assert len(family) >= 3, family  # the service, its worker and its proposer
        run.send_signal(signum)
        assert run.wait(timeout=180) != 0
        wait_for(
            lambda: not any(alive(p) for p in family),
            60,
            f"every process of the interrupted run to end: {sorted(p for p in family if alive(p))}",
        )
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        end({p for p in family if alive(p)}, grace=5)  # this test's own failure leaves nothing behind
