"""What the API server reads of a request before it parses it, and what it refuses unread.

The server runs in-process here, on a real ROUTER socket, with handlers that only record what reached them;
a raw DEALER plays the client, so nothing of our client's politeness helps. The hostile client against the
whole service is tests/test_hostile_client.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import zmq
import zmq.asyncio

from sdl.access.roles import Caller
from sdl.api import models as m
from sdl.api.client import Client
from sdl.api.models import ApiError
from sdl.api.server import PARSE_BURST, SMALL_BYTES, ApiServer, ParseBudget
from sdl.api.wire import limit_socket

#: Generous: a reply that does not come within it never comes (nothing here takes more than milliseconds).
REPLY_S = 30.0


def strict_json(data: bytes) -> Any:
    """RFC 8259 JSON only: NaN and Infinity are not JSON, whatever Python's json module accepts."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(data, parse_constant=refuse)


class Recorder:
    """Handlers for every method: each call is recorded, then answered ``not_found`` (or held until
    ``release`` is set, for the methods in ``hold``)."""

    def __init__(self, hold: frozenset[str] = frozenset()) -> None:
        self.calls: list[str] = []
        self.hold = hold
        self.release = asyncio.Event()

    def table(self) -> dict[str, Callable[[m.Request, Caller], Awaitable[m.Ok]]]:
        async def handle(request: m.Request, caller: Caller) -> m.Ok:
            self.calls.append(request.method)
            if request.method in self.hold:
                await self.release.wait()
            if isinstance(request, m.EStop):
                return m.Ok(message="stopped")
            raise ApiError("not_found", f"nothing here for {request.method}")

        return {name: handle for name in m.METHODS}


class Clock:
    """A clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def serving(
    recorder: Recorder,
    address: str = "inproc://api",
    start: bool = True,
    budget: ParseBudget | None = None,
) -> AsyncIterator[tuple[zmq.asyncio.Context, ApiServer, asyncio.Event]]:
    """An API server on ``address``; with ``start`` false it serves only once the returned event is set,
    so that a test can queue requests in the socket first (inproc delivers them at once)."""
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    limit_socket(socket)  # as the service does
    socket.bind(address)
    server = ApiServer(socket, recorder.table(), budget=budget)
    go = asyncio.Event()
    if start:
        go.set()

    async def serve() -> None:
        await go.wait()
        await server.serve()

    task = asyncio.create_task(serve())
    try:
        yield context, server, go
    finally:
        recorder.release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        socket.close(linger=0)
        context.destroy(linger=0)


def dealer(context: zmq.asyncio.Context, address: str = "inproc://api") -> zmq.asyncio.Socket:
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(address)
    return socket


async def reply_to(socket: zmq.asyncio.Socket) -> list[bytes]:
    frames: list[bytes] = await asyncio.wait_for(socket.recv_multipart(), REPLY_S)
    return frames


async def ask(socket: zmq.asyncio.Socket, payload: bytes) -> dict[str, Any]:
    await socket.send_multipart([b"", payload])
    reply = await reply_to(socket)
    parsed = strict_json(reply[-1])
    assert isinstance(parsed, dict)
    return parsed


def error_type(reply: dict[str, Any]) -> str:
    assert reply["ok"] is False, reply
    return str(m.Error.model_validate(reply["error"]).type)


# -- numbers and constants (issue 21, item 6) ------------------------------------------------------------


def test_numeric_edges_get_typed_replies_in_strict_json() -> None:
    """An integer past Python's 4300-digit limit once got no reply at all; NaN, Infinity and 1e999 as an
    id came back as invalid JSON; 10^19 reached SQLite and came back `internal` (and as an id, was echoed
    back where no 64-bit client can read it)."""
    huge = b"9" * 5000
    cases = {
        b'{"method": "status", "id": ' + huge + b"}": ("bad_request", None),
        b'{"method": "experiment.show", "id": 1, "params": {"experiment_id": ' + huge + b"}}": (
            "bad_request",
            1,
        ),
        b'{"method": "status", "id": NaN}': ("bad_request", None),
        b'{"method": "status", "id": Infinity}': ("bad_request", None),
        b'{"method": "status", "id": -Infinity}': ("bad_request", None),
        b'{"method": "status", "id": 1e999}': ("bad_request", None),
        b'{"method": "status", "id": [1, 2]}': ("bad_request", None),
        b'{"method": "status", "id": 10000000000000000000}': ("bad_request", None),
        b'{"method": "experiment.show", "id": 2, "params": {"experiment_id": 10000000000000000000}}': (
            "invalid_params",
            2,
        ),
        b'{"method": "events.since", "id": 3, "params": {"seq": 10000000000000000000}}': (
            "invalid_params",
            3,
        ),
        b'{"method": "audit.list", "id": 4, "params": {"after_id": 10000000000000000000}}': (
            "invalid_params",
            4,
        ),
        b'{"method": "campaign.submit", "id": 5, "params": {"text": "", "path": "/x", "seed": -1}}': (
            "invalid_params",
            5,
        ),
        b'{"method": "status", "id": 6, "params": {"a": 1, "b": 2, "c": 3}}': ("invalid_params", 6),
    }

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder) as (context, _server, _go):
            client = dealer(context)
            for payload, (expected, id) in cases.items():
                reply = await ask(client, payload)
                assert (error_type(reply), reply["id"]) == (expected, id), (payload[:80], reply)
            assert recorder.calls == []  # none of them reached a handler
            # and the server still answers
            assert error_type(await ask(client, b'{"method": "status", "id": 7}')) == "not_found"

    asyncio.run(scenario())


def test_the_bounds_are_in_the_models_too() -> None:
    """The dashboard and the CLI build requests without the wire: the models refuse what the store cannot
    hold, with pydantic's own messages."""
    too_big = 10**19
    for build in (
        lambda: m.ShowExperiment(experiment_id=too_big),
        lambda: m.EventsSince(seq=too_big),
        lambda: m.ListAudit(after_id=too_big),
        lambda: m.ListExperiments(campaign_id="c", after_seq=too_big),
        lambda: m.SetBudget(campaign_id="c", max_experiments=too_big),
        lambda: m.SubmitCampaign(text="", path="/x", seed=too_big),
        lambda: m.AbortCampaign(campaign_id="c", reason="x" * 100_000),
    ):
        try:
            build()
        except ValueError as exc:
            assert "should be less than" in str(exc) or "at most" in str(exc), exc
        else:
            raise AssertionError("accepted a value the store cannot hold")


# -- size, frames and the e-stop (issue 21, items 7 and 8) ---------------------------------------------------


def test_an_oversized_request_is_refused_with_its_id_read_from_its_first_bytes() -> None:
    """15 MB that are not even JSON past their first bytes: refused as too large, unparsed, with the id the
    client gave (a whole-frame parse could not have found it)."""

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder) as (context, _server, _go):
            client = dealer(context)
            payload = b'{"method": "status", "id": 77, "params": {"pad": "' + b"x" * (15 << 20)
            reply = await ask(client, payload)
            assert (error_type(reply), reply["id"]) == ("too_large", 77), reply
            assert recorder.calls == []

    asyncio.run(scenario())


def test_a_message_of_many_frames_is_refused_without_echoing_them() -> None:
    """The server once echoed every envelope frame back: 40 frames of 15 MB in, 40 out."""

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder) as (context, _server, _go):
            client = dealer(context)
            frames = [b"e" * 1024] * 40 + [b'{"method": "status", "id": 8}']
            await client.send_multipart(frames)
            reply = await reply_to(client)
            assert len(reply) <= 2 and sum(map(len, reply)) < 4096, [len(f) for f in reply]
            parsed = strict_json(reply[-1])
            assert error_type(parsed) == "too_large", parsed
            assert recorder.calls == []
            assert error_type(await ask(client, b'{"method": "status", "id": 9}')) == "not_found"

    asyncio.run(scenario())


def test_the_e_stop_is_taken_before_the_requests_queued_ahead_of_it() -> None:
    """40 connections have a request of almost 1 MB waiting when an operator's e-stop arrives last: the
    e-stop reaches its handler before them (it is read without parsing what waits ahead of it)."""
    connections = 40

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, start=False) as (context, _server, go):
            flood = [dealer(context) for _ in range(connections)]
            operator = dealer(context)
            pad = "y" * (900 << 10)
            for socket in flood:
                request = {"method": "campaign.submit", "id": 1, "params": {"text": pad, "path": "/x"}}
                await socket.send_multipart([b"", json.dumps(request).encode()])
            await operator.send_multipart([b"", b'{"method": "lab.estop", "id": 99}'])
            go.set()  # everything is queued in the socket (inproc): now serve
            reply = strict_json((await reply_to(operator))[-1])
            assert reply == {"id": 99, "ok": True, "result": {"message": "stopped"}}, reply
            assert recorder.calls.index("lab.estop") <= 1, recorder.calls[:5]
            for socket in flood:  # and every other request was taken too
                assert error_type(strict_json((await reply_to(socket))[-1])) == "not_found"
            assert len(recorder.calls) == connections + 1

    asyncio.run(scenario())


def test_one_connection_cannot_take_every_request_slot() -> None:
    """A client that pipelines hundreds of requests that hang gets `busy` for most of them; another
    client's request is still taken."""

    async def scenario() -> None:
        recorder = Recorder(hold=frozenset({"campaign.list"}))
        async with serving(recorder) as (context, _server, _go):
            greedy = dealer(context)
            for i in range(200):
                await greedy.send_multipart([b"", b'{"method": "campaign.list", "id": %d}' % i])
            busy = 0
            while busy + len(recorder.calls) < 200:
                reply = strict_json((await reply_to(greedy))[-1])
                assert error_type(reply) == "busy", reply
                busy += 1
            viewer = dealer(context)
            assert error_type(await ask(viewer, b'{"method": "status", "id": 1}')) == "not_found"
            assert recorder.calls[-1] == "status"

    asyncio.run(scenario())


def test_our_client_refuses_a_request_over_the_limit_before_sending_it() -> None:
    """Nothing listens here: a request that was sent would end in "no answer" after the timeout."""
    request = m.SubmitCampaign(text="\x00" * 300_000, path="/x")  # within the model, 1.8 MB as JSON
    with Client("tcp://127.0.0.1:9", timeout=5) as client:
        try:
            client.call(request)
        except ApiError as exc:
            assert exc.error.type == "too_large", exc.error
        else:
            raise AssertionError("sent")


def test_a_client_waits_for_one_request_of_each_other_client_not_for_all_of_them() -> None:
    """Four connections have 32 requests waiting to be parsed when a viewer's one arrives: it is parsed
    after about one of each of theirs (the connections take turns), not after all of them."""

    async def scenario() -> None:
        recorder = Recorder(hold=frozenset({"campaign.list"}))
        async with serving(recorder, start=False) as (context, _server, go):
            greedy = [dealer(context) for _ in range(4)]
            for socket in greedy:
                for i in range(8):
                    await socket.send_multipart([b"", b'{"method": "campaign.list", "id": %d}' % i])
            go.set()
            while not recorder.calls:  # the server has read them all, and parsed the first
                await asyncio.sleep(0)
            viewer = dealer(context)
            await viewer.send_multipart([b"", b'{"method": "status", "id": 1}'])
            assert error_type(strict_json((await reply_to(viewer))[-1])) == "not_found"
            assert recorder.calls.index("status") <= 2 * len(greedy), recorder.calls

    asyncio.run(scenario())


def test_large_requests_are_rationed_per_key_and_small_ones_never() -> None:
    """Parsing holds the interpreter, an e-stop's thread included: one key's requests of almost 1 MB are
    parsed up to its ration, the rest answered ``busy`` unparsed; its small requests, and another key's
    large ones, are still taken. The clock stands still, so nothing is refilled meanwhile."""
    large = b'{"method": "campaign.list", "id": %d, "params": {"pad": [' + b"1," * (450 << 10) + b"1]}}"
    fits = PARSE_BURST // len(large % 0)

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, start=False, budget=ParseBudget(1.0, PARSE_BURST, Clock())) as (
            context,
            _server,
            go,
        ):
            greedy, other = dealer(context), dealer(context)
            for i in range(8):
                await greedy.send_multipart([b"", large % i])
            go.set()
            replies = [strict_json((await reply_to(greedy))[-1]) for _ in range(8)]
            kinds = sorted(error_type(r) for r in replies)
            # Parsed, the padded list is not campaign.list's params: invalid, but parsed.
            assert kinds == ["busy"] * (8 - fits) + ["invalid_params"] * fits, kinds
            assert "a second" in next(r for r in replies if error_type(r) == "busy")["error"]["message"]
            assert error_type(await ask(greedy, b'{"method": "status", "id": 9}')) == "not_found"
            assert error_type(await ask(other, large % 10)) == "invalid_params"

    assert 1 <= fits < 8
    asyncio.run(scenario())


def test_a_parse_budget_refills_at_its_rate_up_to_its_burst_and_forgets_full_buckets() -> None:
    clock = Clock()
    budget = ParseBudget(rate=100.0, burst=300.0, clock=clock)
    assert budget.take(b"a", 200) and budget.take(b"a", 100)
    assert not budget.take(b"a", 1)  # spent
    assert budget.take(b"b", 300)  # another key has its own
    clock.now += 0.5
    assert not budget.take(b"a", 60) and budget.take(b"a", 50)  # 50 refilled; a refusal spends nothing
    clock.now += 100
    assert budget.take(b"a", 300) and not budget.take(b"a", 1)  # never more than the burst saved up
    for i in range(5000):  # connections without a key, each its own bucket
        clock.now += 10
        budget.take(b"peer %d" % i, 1)
    assert len(budget) <= 1025
    assert SMALL_BYTES < 300_000
