"""The proposer process: the service's decisions, made in a child that keeps each campaign's optimizer."""

from __future__ import annotations

import asyncio
import io
import os
import pickle
import signal
import subprocess
import sys
from typing import Any

import pytest

from sdl.daemon.launch import alive
from sdl.daemon.proposer import _HEADER, Decide, Forget, Proposer, Setup, serve
from sdl.loop.proposing import decide_next, optimizer_for
from sdl.optimizer import OptimizerExhausted
from sdl.spec.campaign import Campaign
from sdl.spec.status import ExperimentStatus
from sdl.store import ExperimentRecord
from sdl.testing import wait_for


def campaign(**optimizer: Any) -> Campaign:
    return Campaign.model_validate(
        {
            "name": "bowl",
            "parameters": [
                {"name": "x", "type": "real", "low": 0.0, "high": 1.0},
                {"name": "y", "type": "real", "low": 0.0, "high": 1.0},
            ],
            "objectives": [{"measurement": "loss"}],
            "budget": {"max_experiments": 40},
            "optimizer": {"kind": "bayesian", "initial_design": 4, "seed": 7, **optimizer},
            "procedure": {"function": "daemon_procedures:bowl"},
        }
    )


def done(seq: int, x: float, y: float) -> ExperimentRecord:
    loss = (x - 0.3) ** 2 + (y - 0.6) ** 2
    at = f"2026-01-01T00:00:{seq:02d}+00:00"
    return ExperimentRecord(
        id=seq, campaign_id="c", seq=seq, status=ExperimentStatus.DONE, recipe={"x": x, "y": y},
        assignments=None, measurements={"loss": loss}, objective=loss, failure=None,
        proposed_at=at, started_at=at, finished_at=at,
    )  # fmt: skip


HISTORY = [done(i + 1, x, y) for i, (x, y) in enumerate([(0.1, 0.2), (0.8, 0.9), (0.5, 0.5), (0.3, 0.7)])]


def exchange(*requests: Decide | Forget) -> list[tuple[str, Any]]:
    """Run the child's loop over in-memory pipes."""
    incoming = io.BytesIO()
    for request in requests:
        data = pickle.dumps(request)
        incoming.write(_HEADER.pack(len(data)) + data)
    incoming.seek(0)
    outgoing = io.BytesIO()
    serve(incoming, outgoing)
    outgoing.seek(0)
    replies = []
    while header := outgoing.read(_HEADER.size):
        (size,) = _HEADER.unpack(header)
        replies.append(pickle.loads(outgoing.read(size)))
    return replies


def decide(c: Campaign, setup: bool) -> Decide:
    return Decide("c", Setup(c, ()) if setup else None, HISTORY, decide_inputs(), [])


def decide_inputs() -> list[Any]:
    from sdl.loop.history import observations

    return observations(HISTORY)


def test_the_child_keeps_each_campaigns_optimizer_until_told_to_forget_it():
    c = campaign()
    replies = exchange(decide(c, False), decide(c, True), decide(c, False), Forget("c"), decide(c, False))
    assert [kind for kind, _ in replies] == ["setup", "ok", "ok", "ok", "setup"]
    expected = decide_next(c, optimizer_for(c), HISTORY)
    assert replies[1][1].recipe == expected.recipe and replies[1][1].decision.model == expected.decision.model


def test_an_optimizers_error_comes_back_as_itself():
    tiny = campaign().model_copy(deep=True)
    tiny = Campaign.model_validate(
        {**tiny.model_dump(), "parameters": [{"name": "n", "type": "integer", "low": 0, "high": 1}]}
    )
    history = [ExperimentRecord(**{**done(i + 1, 0, 0).__dict__, "recipe": {"n": i}}) for i in range(2)]
    from sdl.loop.history import observations

    ((kind, error),) = exchange(Decide("c", Setup(tiny, ()), history, observations(history), []))
    assert kind == "error" and isinstance(error, OptimizerExhausted)


def test_the_service_side_gets_the_same_decision_and_a_new_child_when_the_last_one_died():
    c = campaign()

    async def scenario() -> tuple[Any, Any, int | None, int | None]:
        proposer = Proposer()
        try:
            first = await proposer.decide("c", c, lambda: (), HISTORY, decide_inputs(), [])
            old = proposer.pid
            assert old is not None
            await proposer.forget("c")  # understood by the child itself, which goes on serving
            setups = []
            forgotten = await proposer.decide(
                "c", c, lambda: setups.append(1) or (), HISTORY, decide_inputs(), []
            )
            assert forgotten.recipe == first.recipe and setups == [1] and proposer.pid == old
            os.kill(old, signal.SIGKILL)
            assert proposer._process is not None
            await proposer._process.wait()
            again = await proposer.decide("c", c, lambda: (), HISTORY, decide_inputs(), [])
            return first, again, old, proposer.pid
        finally:
            await proposer.close()

    first, again, old, new = asyncio.run(scenario())
    expected = decide_next(c, optimizer_for(c), HISTORY)
    assert first.recipe == again.recipe == expected.recipe
    assert new is not None and new != old


def test_the_child_ends_when_the_service_is_killed(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(
        "import asyncio\n"
        "from sdl.daemon.proposer import Proposer\n"
        "async def main():\n"
        "    proposer = Proposer()\n"
        "    await proposer.start()\n"
        "    print(proposer.pid, flush=True)\n"
        "    await asyncio.sleep(3600)\n"
        "asyncio.run(main())\n"
    )
    service = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert service.stdout is not None
        child = int(service.stdout.readline())
        assert alive(child)
    finally:
        service.kill()
        service.wait()
        service.stdout.close()  # type: ignore[union-attr]
    wait_for(lambda: not alive(child), 30, "the proposer to exit after its service was killed")


@pytest.fixture(autouse=True)
def _procedures_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
