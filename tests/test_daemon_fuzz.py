"""No message can crash or wedge the lab service: 10,000 random and mutated requests while a campaign runs.

Every reply must be a well-formed typed reply to the request that asked, and the campaign's results must be
exactly those of the same campaign run in the foreground (one workcell: the same sequence of proposals).
State-changing requests that happen to be valid are not sent: they would legitimately change the results.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_daemon import campaign_file, experiments, lab_file, service_process

from sdl.api import models as m
from sdl.api.models import ApiError, Role
from sdl.api.wire import decode_request
from sdl.loop.foreground import run_campaign
from sdl.loop.lifecycle import start_campaign
from sdl.spec.loading import load_campaign
from sdl.store import Store
from sdl.testing import wait_for

MESSAGES = 10_000

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
method_names = st.sampled_from(sorted(m.METHODS)) | st.text(max_size=30)
param_names = st.sampled_from(
    ["campaign_id", "experiment_id", "name", "reason", "seq", "limit", "text", "path", "max_experiments",
     "check", "abort", "documents", "after_seq", "active_only", "budget", "seed"]
) | st.text(max_size=12)  # fmt: skip
structured = st.fixed_dictionaries(
    {"method": method_names},
    optional={
        "id": json_scalars,
        "user": json_values,
        "params": st.dictionaries(param_names, json_values, max_size=4) | json_values,
    },
).map(lambda d: json.dumps(d, allow_nan=True).encode())
#: Each example is a drawn message and mutations of it made from a drawn seed (flipped bits, cuts,
#: insertions, repeats): hypothesis explores and shrinks the seed, the mutations come cheap.
MUTATIONS_PER_EXAMPLE = 9


def mutate(base: bytes, rng: random.Random) -> bytes:
    data = bytearray(base)
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        at = rng.randrange(len(data))
        kind = rng.choice(("flip", "cut", "insert", "repeat"))
        if kind == "flip":
            data[at] ^= 1 << rng.randrange(8)
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        else:
            data[at:at] = data[at : at + rng.randint(1, 20)] * rng.randint(1, 50)
    return bytes(data)


examples = st.tuples(st.binary(max_size=200) | structured, st.integers(0, 2**32 - 1), st.integers(0, 2))


def changes_state(frame: bytes) -> bool:
    """Whether the frame is a valid request that may change the lab (it is not sent)."""
    try:
        envelope = decode_request(frame)
    except (ApiError, RecursionError):
        return False
    return envelope.request.role is not Role.VIEWER


def test_random_and_mutated_messages_neither_crash_nor_wedge_the_service(tmp_path: Path) -> None:
    path = campaign_file(
        tmp_path, budget=40, function="daemon_procedures:slow_bowl", options={"seconds": 0.25}
    )
    with Store(tmp_path / "reference") as store:
        reference_id = start_campaign(store, load_campaign(path))
        run_campaign(store, reference_id)
        reference = [(e.recipe, e.objective) for e in store.experiments(reference_id)]

    service = service_process(lab_file(tmp_path, workcells=1), tmp_path / "data").start()
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    service.credentials().apply(socket)  # the owner's key, found in the data directory
    socket.connect(service.address)
    sent = {"messages": 0, "typed errors": 0, "results": 0}
    try:
        with service.client() as client:
            campaign_id = client.submit(path).campaign_id

        def ask(frames: list[bytes]) -> None:
            if changes_state(frames[-1]):
                return
            socket.send_multipart([b"", *frames])
            assert socket.poll(10_000), f"no reply to {frames!r:.200}"
            reply = json.loads(socket.recv_multipart()[-1])
            sent["messages"] += 1
            assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool)
            if reply["ok"]:
                sent["results"] += 1
            else:
                sent["typed errors"] += 1
                m.Error.model_validate(reply["error"])  # a typed error, not a traceback

        @settings(
            max_examples=MESSAGES // (1 + MUTATIONS_PER_EXAMPLE), deadline=None, database=None,
            derandomize=True, suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        @given(examples)
        def fuzz(example: tuple[bytes, int, int]) -> None:
            base, seed, extra_frames = example
            rng = random.Random(seed)
            for message in [base, *(mutate(base, rng) for _ in range(MUTATIONS_PER_EXAMPLE))]:
                ask([*(rng.randbytes(rng.randint(0, 6)) for _ in range(extra_frames)), message])

        fuzz()
        done = wait_for(
            lambda: (
                (c := service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running"
                and c
            ),
            120,
            "the campaign to end",
        )
        assert done.status == "completed"
        ran = [(e.recipe, e.loss) for e in experiments(service, campaign_id)]
        assert ran == reference  # untouched by everything the fuzzer sent
        assert sent["messages"] >= MESSAGES * 0.9, sent
        assert service.call(m.Status()).lab == "compute"
    finally:
        socket.close()
        context.term()
        assert service.stop() == 0
        service.assert_nothing_left()
