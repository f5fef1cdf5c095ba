"""drivers.halt.Halt: a stop ends the operation in progress and never the next one."""

from __future__ import annotations

import threading

import pytest

from drivers.errors import Stopped
from drivers.halt import Halt


class Terminated(Stopped):
    pass


def test_a_stop_ends_the_operation_in_progress():
    halt = Halt()
    with halt.operation():
        halt.check("before")  # nothing asked yet
        halt.request()
        assert halt.requested
        with pytest.raises(Terminated, match="aspirate: stopped on request"):
            halt.check("aspirate", Terminated)
        assert halt.wait(10.0)  # returns at once: the stop is there


def test_the_next_operation_starts_clear_after_a_stop_in_or_between_operations():
    halt = Halt()
    with halt.operation():
        halt.request()
    halt.request()  # make_safe() between operations: nothing runs, nothing to carry over
    with halt.operation():
        assert not halt.requested
        halt.check("recover")


def test_nested_operations_share_the_outermost_stop():
    halt = Halt()
    with halt.operation():
        assert halt.active
        with halt.operation():  # transfer -> aspirate
            halt.request()
        with pytest.raises(Stopped):
            halt.check("dispense")
    assert not halt.active


def test_a_caller_event_is_the_operations_stop_either_way():
    halt, caller = Halt(), threading.Event()
    caller.set()  # the action was stopped before its operation began
    with halt.operation(caller), pytest.raises(Stopped):
        halt.check("move")
    other = threading.Event()
    with halt.operation(other):
        halt.request()
    assert other.is_set()  # the driver's stop stopped the caller's action too


def test_operations_on_one_halt_take_turns():
    halt = Halt()
    inside, release, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with halt.operation():
            inside.set()
            release.wait(10)

    def second() -> None:
        with halt.operation():
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inside.wait(10)
    threads[1].start()
    assert not second_in.wait(0.05)  # not a timing assert: it must not get in while the first holds it
    release.set()
    for thread in threads:
        thread.join(10)
    assert second_in.is_set()
