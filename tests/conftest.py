"""Fixtures shared by the instrument conformance suites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bluesky import RunEngine

from sdl.execution.engine import close_run_engine


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
