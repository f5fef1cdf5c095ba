"""Fixtures shared by the instrument conformance suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bluesky import RunEngine


@pytest.fixture
def engine() -> Iterator[RunEngine]:
    """A RunEngine without signal handlers (tests are not the main thread's owner), torn down fully.

    Its event-loop thread is stopped and the loop closed afterwards, so no thread or unclosed
    loop leaks into the next test (warnings are errors here).
    """
    engine = RunEngine({}, context_managers=[])
    yield engine
    engine.loop.call_soon_threadsafe(engine.loop.stop)
    engine._th.join(timeout=5)
    engine.loop.close()
