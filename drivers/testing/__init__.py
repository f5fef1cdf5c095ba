"""Testing help for drivers: the driver contract suite (decision 0003) and small polling helpers.

An out-of-tree driver runs the same contract the built-in ones do; see ``drivers.testing.contract``
and docs/drivers.md, "Run the contract suite on your driver".
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], timeout: float = 5.0, *, what: str = "the condition") -> None:
    """Poll ``condition`` until it is true; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold within {timeout} s")
        time.sleep(0.001)


__all__ = ["wait_for"]
