"""The optimizer's input held as numbers: whatever comes in, in whatever order, reads back as the same
observations in completion order — and plain results take a few bytes a number, not a dict each."""

from __future__ import annotations

import pickle
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from sdl.loop.observation_log import ObservationLog, completion_key
from sdl.optimizer import Observation

PLAIN = st.builds(
    lambda x, y, v: Observation(recipe={"x": x, "y": y}, value=v, measurements={"loss": v, "cost": x + y}),
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(-5, 5),
)
ODD = st.one_of(
    st.builds(
        lambda x: Observation(recipe={"x": x, "y": 0.5}, value=None, failure="clogged"), st.floats(0, 1)
    ),
    st.builds(  # a categorical recipe
        lambda s, v: Observation(recipe={"x": 0.1, "solvent": s}, value=v, measurements={"loss": v}),
        st.sampled_from(["water", "ethanol"]),
        st.floats(0, 1),
    ),
    st.builds(  # an integer among the measurements, and a spectrum
        lambda v: Observation(
            recipe={"x": 0.2, "y": 0.3}, value=v, measurements={"loss": v, "cost": 3, "spectrum": [v, 1.0]}
        ),
        st.floats(0, 1),
    ),
    st.builds(  # the same names in another order
        lambda v: Observation(recipe={"y": 0.3, "x": 0.2}, value=v, measurements={"cost": 1.0, "loss": v}),
        st.floats(0, 1),
    ),
)
STAMPS = st.sampled_from(
    ["", "2026-11-27T18:00:00.000001+00:00", "2026-11-27T18:00:00.000002+00:00", "2026-11-27T19:00:00+01:00",
     "2026-11-27T18:30:00", "2026-11-28T00:00:00.5+00:00"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(STAMPS, st.one_of(PLAIN, ODD)), max_size=30))
def test_reads_back_every_observation_in_completion_order(rows: list[tuple[str, Observation]]) -> None:
    log = ObservationLog()
    entries = []
    for seq, (finished_at, observation) in enumerate(rows, start=1):
        key = completion_key(finished_at, seq)
        log.insert(key, observation)
        entries.append((key, observation))
    expected = [o for _, o in sorted(entries, key=lambda e: e[0])]
    assert list(log) == expected and log == expected
    assert list(pickle.loads(pickle.dumps(log))) == expected  # as the proposer process receives it
    assert log[1:3] == expected[1:3]


def test_times_order_as_times_whatever_their_zone() -> None:
    assert completion_key("2026-11-27T19:00:00+01:00", 2) < completion_key("2026-11-27T18:00:00.5+00:00", 1)
    assert completion_key("", 9) < completion_key("2026-11-27T18:00:00+00:00", 1)


def test_a_plain_result_costs_bytes_not_a_dict() -> None:
    tracemalloc.start()
    try:
        log = ObservationLog()
        before = tracemalloc.get_traced_memory()[0]
        for seq in range(5000):
            v = seq / 5000
            log.insert(
                (seq, seq), Observation(recipe={"x": v, "y": 1 - v}, value=v, measurements={"loss": v})
            )
        per_observation = (tracemalloc.get_traced_memory()[0] - before) / 5000
    finally:
        tracemalloc.stop()
    assert per_observation < 100, per_observation  # five numbers and three keys: ~64 bytes
