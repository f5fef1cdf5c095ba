"""A campaign's observations held as numbers: the optimizer's input, kept by a long-running lab service.

As Python objects an observation costs about 0.7 KiB (a dataclass, two dicts with their own key strings,
boxed floats); a campaign of 10,000 experiments held that way grew the service by megabytes that the store
already has. Here a plain observation — a result whose recipe and measurements are floats under the same
names as the first one's — is packed into one row of a float array (8 bytes a number), and anything else (a
failure, a categorical recipe, a spectrum) is kept as it came. An :class:`Observation` is made again when it
is read, which the optimizer does once per proposal, in the proposer process the log is sent to as a pickle.
"""

from __future__ import annotations

import bisect
import datetime as dt
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, overload

from sdl.optimizer import Observation

_NO_TIME = -(2**63)


def completion_key(finished_at: str | None, seq: int) -> tuple[int, int]:
    """When an experiment finished (microseconds since the epoch; times without a zone are UTC), then its
    sequence number: the order the optimizer sees results in."""
    if not finished_at:
        return (_NO_TIME, seq)
    at = dt.datetime.fromisoformat(finished_at)
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return ((at - _EPOCH) // dt.timedelta(microseconds=1), seq)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class ObservationLog(Sequence[Observation]):
    """Observations in completion order (see :func:`completion_key`), inserted one at a time."""

    def __init__(self) -> None:
        self._times = array("q")  # by position: the completion key
        self._seqs = array("q")
        self._where = array("q")  # by position: a packed row (>= 0) or -(index into _loose) - 1
        self._packed = array("d")  # rows of recipe values, the value, measurement values
        self._loose: list[Observation] = []
        self._recipe_names: tuple[str, ...] | None = None
        self._measurement_names: tuple[str, ...] = ()

    def insert(self, key: tuple[int, int], observation: Observation) -> None:
        at = bisect.bisect(_Keys(self._times, self._seqs), key)
        self._times.insert(at, key[0])
        self._seqs.insert(at, key[1])
        self._where.insert(at, self._store(observation))

    def _store(self, observation: Observation) -> int:
        packed = self._pack(observation)
        if packed is None:
            self._loose.append(observation)
            return -len(self._loose)
        width = len(packed)
        self._packed.extend(packed)
        return len(self._packed) // width - 1

    def _pack(self, o: Observation) -> list[float] | None:
        measurements = o.measurements
        if o.failure is not None or type(o.value) is not float or measurements is None:
            return None
        recipe_names, measurement_names = tuple(o.recipe), tuple(measurements)
        if self._recipe_names is None:
            self._recipe_names, self._measurement_names = recipe_names, measurement_names
        elif recipe_names != self._recipe_names or measurement_names != self._measurement_names:
            return None
        numbers = [*o.recipe.values(), o.value, *measurements.values()]
        return numbers if all(type(n) is float for n in numbers) else None

    def _unpack(self, numbers: Sequence[float], row: int) -> Observation:
        """Packed row ``row`` of ``numbers`` (the packed array, or it as a list when reading them all)."""
        names, measurement_names = self._recipe_names or (), self._measurement_names
        d, width = len(names), len(names) + 1 + len(measurement_names)
        values = numbers[row * width : (row + 1) * width]
        return Observation(  # not strict: the widths hold by construction, and checking costs 40 %
            recipe=dict(zip(names, values[:d], strict=False)),
            value=values[d],
            measurements=dict(zip(measurement_names, values[d + 1 :], strict=False)),
        )

    def __len__(self) -> int:
        return len(self._where)

    @overload
    def __getitem__(self, index: int) -> Observation: ...
    @overload
    def __getitem__(self, index: slice) -> list[Observation]: ...
    def __getitem__(self, index: int | slice) -> Observation | list[Observation]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        where = self._where[index]
        return self._unpack(self._packed, where) if where >= 0 else self._loose[-where - 1]

    def __iter__(self) -> Iterator[Observation]:
        numbers = self._packed.tolist()  # one conversion, not one per row
        for where in self._where:
            yield self._unpack(numbers, where) if where >= 0 else self._loose[-where - 1]

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


class _Keys(Sequence[tuple[int, int]]):
    """The completion keys by position, for bisect."""

    def __init__(self, times: array[int], seqs: array[int]) -> None:
        self._times, self._seqs = times, seqs

    def __len__(self) -> int:
        return len(self._times)

    def __getitem__(self, index: int) -> tuple[int, int]:  # type: ignore[override]
        return (self._times[index], self._seqs[index])
