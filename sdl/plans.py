"""Plan stubs for campaigns: lease a shared instrument for the steps that use it; ask a person.

    from sdl.plans import leased

    yield from leased([arm], bps.mv(arm.transfer, ("feeder", station)))
    ...
    yield from leased([arm, spectrometer], measure())     # ask for everything the steps need, at once

A campaign lists such devices in ``procedure.lease_on_demand``; the lab service then leases them to the
experiment only between ``lease`` and ``release`` (other workcells use them the rest of the time), and
connects them in the worker that holds the lease. Under `sdl run` the messages do nothing: the lab is the
campaign's alone. A plan holds one on-demand lease at a time — it releases before it asks again — so no two
experiments can each wait for what the other holds.

    answer = yield from ask("Is the new rack of vials in place?", timeout=600, default="no")

waits for a person: the lab service opens a task (`sdl tasks`, the page, the lab's ``on_task`` command) and
the answer is the note they give with ``sdl task done ID --note TEXT``. Without an answer within ``timeout``
seconds (or with the task cancelled) the plan goes on with ``default``, or — without one — the experiment
ends interrupted (nobody answered: not the recipe's fault). Under `sdl run` nobody is asked: the default
stands at once.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any

import bluesky.preprocessors as bpp
from bluesky.utils import Msg

LEASE, RELEASE, ASK = "sdl_lease", "sdl_release", "sdl_ask"


def lease(*devices: Any) -> Generator[Msg, Any, Any]:
    """Wait until every one of ``devices`` is leased to this experiment (and connected here)."""
    return (yield Msg(LEASE, None, *devices))


def release(*devices: Any) -> Generator[Msg, Any, Any]:
    """Give ``devices`` back for other workcells to use."""
    return (yield Msg(RELEASE, None, *devices))


class NoAnswer(RuntimeError):
    """A plan's question got no answer and has no default: the experiment ends interrupted."""

    fault = "stopped"  # nobody answered: neither the recipe's doing nor an instrument's


def ask(
    question: str, *, timeout: float | None = None, default: str | None = None
) -> Generator[Msg, Any, Any]:
    """Ask a person and wait for the answer (a string); see the module's docstring."""
    return (yield Msg(ASK, None, question, timeout=timeout, default=default))


def allow_leases(run_engine: Any) -> None:
    """Let a plain RunEngine — one that has the lab to itself, in a notebook or a test — run plans that lease:
    leasing then does nothing. sdl's own RunEngines (`sdl run`, the lab service's workers) need not."""

    async def granted(msg: Msg) -> None:
        return None

    run_engine.register_command(LEASE, granted)
    run_engine.register_command(RELEASE, granted)


def leased(devices: Iterable[Any], plan: Iterable[Msg]) -> Generator[Msg, Any, Any]:
    """Run ``plan`` with ``devices`` leased, releasing them however it ends."""
    devices = list(devices)
    yield from lease(*devices)
    return (yield from bpp.finalize_wrapper(plan, lambda: release(*devices)))
