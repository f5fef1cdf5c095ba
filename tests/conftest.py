"""Fixtures shared by the instrument conformance suites, the demo record and the store's backends, and a test
run that ends every process it started."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
from bluesky import RunEngine
from postgres_server import PostgresServer, why_not

from sdl.execution.engine import close_run_engine
from sdl.store.connection import bind_store
from sdl.testing import descendants, end


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"{signal.Signals(signum).name}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM interrupts the run as Ctrl-C does: every test's teardown runs (a lab service a test started is
    stopped by its `with`), then `pytest_unconfigure` ends whatever is left, instead of a run that dies at
    once and leaves its services, workers and simulators running."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupted)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Every process a test started and did not end (an interrupted test, a failed one) ends with the run."""
    left = descendants(os.getpid())
    if left:
        end(left)


@pytest.fixture
def engine() -> Iterator[RunEngine]:
    """A RunEngine without signal handlers (tests are not the main thread's owner), torn down fully.

    Its event-loop thread is stopped and the loop closed afterwards, so no thread or unclosed
    loop leaks into the next test (warnings are errors here).
    """
    engine = RunEngine({}, context_managers=[])
    yield engine
    close_run_engine(engine)


# -- the demo campaign, run once per session for the tests of its record ------------------------------------

DEMO_EXPERIMENTS = 4


@pytest.fixture(scope="session")
def demo_record(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The colour-matching demo run by `sdl run` through the real drivers against its simulated bench (a
    few experiments): the data directory and the campaign id. Read it; do not change it."""
    import subprocess
    import sys

    import yaml

    from sdl.store import Store

    root = Path(__file__).resolve().parents[1]
    campaign = root / "experiments" / "color_matching" / "campaign.yaml"
    spec = yaml.safe_load(campaign.read_text())
    spec["budget"].update(max_experiments=DEMO_EXPERIMENTS, stop_when={})
    spec["lab"]["simulated"] = str(campaign.parent / "lab.yaml")
    folder = tmp_path_factory.mktemp("demo")
    path = folder / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    data = folder / "data"
    command = [sys.executable, "-c", "import sys; from sdl.cli import main; sys.exit(main())"]
    done = subprocess.run(
        [*command, "run", str(path), "--data-dir", str(data), "--seed", "5"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Store(data, read_only=True) as store:
        (record,) = store.campaigns()
    return data, record.id


# -- the store's two backends ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session. Skipped (with the reason) where PostgreSQL or psycopg
    is not installed; under CI, which installs both, their absence is a failure."""
    reason = why_not()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the PostgreSQL store tests: {reason}")
        pytest.skip(reason)
    server = PostgresServer()
    yield server
    server.stop()


class Backend:
    """Where a test's store lives: SQLite's file in the data directory, or a new PostgreSQL database."""

    def __init__(self, name: str, request: pytest.FixtureRequest) -> None:
        self.name = name
        self._request = request

    def bind(self, data_dir: Path) -> Path:
        """Make ``data_dir``'s store this backend's (a new database for PostgreSQL); return ``data_dir``."""
        if self.name == "postgresql":
            server: PostgresServer = self._request.getfixturevalue("postgres")
            bind_store(data_dir, server.database())
        return data_dir


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Run the test once on each of the store's backends."""
    return Backend(request.param, request)
