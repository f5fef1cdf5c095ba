"""What `sdl.execution.engine` does for bluesky, checked against the installed bluesky: an upgrade that
breaks a wrapper fails here, not in a worker that hangs on its way out."""

from __future__ import annotations

import threading

import zmq

from sdl.execution.engine import abort_run, close_run_engine, document_publisher, new_run_engine
from sdl.testing import wait_for


def engine_threads() -> set[threading.Thread]:
    """The threads running a RunEngine's loop (bluesky names them)."""
    return {t for t in threading.enumerate() if t.name == "bluesky-run-engine"}


def test_closing_a_run_engine_ends_its_thread_and_closes_its_loop() -> None:
    before = engine_threads()
    engine = new_run_engine()
    started = engine_threads() - before
    assert len(started) == 1 and engine.loop.is_running()
    close_run_engine(engine)
    assert engine.loop.is_closed()
    (thread,) = started
    wait_for(lambda: not thread.is_alive(), 10, "the RunEngine's thread to end")
    close_run_engine(engine)  # closing twice is harmless


def test_a_run_engine_runs_a_plan_then_closes() -> None:
    import bluesky.plan_stubs as bps

    engine = new_run_engine()
    try:
        result = engine(bps.null())
        assert result is not None
    finally:
        close_run_engine(engine)
    assert engine.loop.is_closed()


def test_the_document_publisher_does_not_wait_for_unsent_documents_when_closed() -> None:
    """libzmq's default linger would keep a closed publisher's unsent documents until a proxy that is gone
    took them (a worker hung on its way out); the wrapper sets it to zero through bluesky's private
    ``_socket``, which this reads the same way: a bluesky that renames it fails here."""
    publisher = document_publisher("127.0.0.1:9", b"w1")
    try:
        assert publisher._socket.getsockopt(zmq.LINGER) == 0
    finally:
        publisher.close()


def test_aborting_a_run_that_already_ended_is_left_alone() -> None:
    from bluesky.utils import TransitionError

    engine = new_run_engine()
    try:
        try:
            engine.abort("too late")
        except TransitionError:
            pass  # what bluesky does for an idle RunEngine: the wrapper absorbs exactly this
        else:
            raise AssertionError("bluesky no longer refuses to abort an idle RunEngine: revisit abort_run")
        abort_run(engine, "too late")
    finally:
        close_run_engine(engine)
