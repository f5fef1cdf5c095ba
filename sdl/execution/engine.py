"""What `sdl` needs of bluesky that its public API lacks, in one place (tests/test_engine.py fails if an
upgrade of bluesky breaks it).

- A RunEngine owns an event-loop thread that bluesky never stops: :func:`close_run_engine` stops it through
  the loop bluesky exposes (``RunEngine.loop``) and closes that loop, so nothing leaks into what runs next.
- ``RunEngine.abort`` raises bluesky's ``TransitionError`` (not in ``bluesky.utils``'s public names) when the
  run has just ended: :func:`abort_run` absorbs exactly that.
- bluesky's 0MQ ``Publisher`` keeps unsent documents when it is closed, forever if the proxy is gone (libzmq's
  default linger): :func:`document_publisher` sets the linger of its socket to zero, the one private
  attribute we touch. The store has every document anyway.
"""

from __future__ import annotations

import time
from contextlib import suppress

import zmq
from bluesky import RunEngine
from bluesky.callbacks.zmq import Publisher
from bluesky.utils import TransitionError  # pyright: ignore[reportPrivateImportUsage]

#: How long to wait for a RunEngine's loop to stop before closing it regardless.
STOP_WAIT_S = 5.0


def new_run_engine() -> RunEngine:
    """A RunEngine with no SIGINT handler of its own: its owner decides what Ctrl-C means."""
    return RunEngine({}, context_managers=[], call_returns_result=True)


def close_run_engine(run_engine: RunEngine) -> None:
    """Stop a RunEngine's event-loop thread and close its loop.

    The thread runs ``loop.run_forever()`` and ends when it returns: once the loop no longer runs, the thread
    has nothing left to do."""
    loop = run_engine.loop
    if loop.is_closed():
        return
    loop.call_soon_threadsafe(loop.stop)
    deadline = time.monotonic() + STOP_WAIT_S
    while loop.is_running() and time.monotonic() < deadline:
        time.sleep(0.001)
    if not loop.is_running():
        loop.close()


def abort_run(run_engine: RunEngine, reason: str) -> None:
    """Abort the run in progress, if it still is: a run that ended meanwhile (the RunEngine refuses the
    transition) is left alone, its outcome already says what happened."""
    with suppress(TransitionError):
        run_engine.abort(reason)


def document_publisher(address: str, prefix: bytes) -> Publisher:
    """bluesky's own ``Publisher`` to the 0MQ proxy at ``address``; closing it drops what it has not sent."""
    publisher = Publisher(address, prefix=prefix)
    socket: zmq.Socket[bytes] = publisher._socket  # pyright: ignore[reportPrivateUsage]
    socket.setsockopt(zmq.LINGER, 0)
    return publisher
