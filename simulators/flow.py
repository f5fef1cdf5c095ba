"""Continuous flow in the simulated world: a tubular reactor of given volume and a flow cell.

Pumps infuse into a reactor the way they fill a vial (its station is their outlet); whatever the
pumps delivered in the same stretch of time is mixed into the same plug. A reactor holds its
volume as a queue of plugs; each new plug pushes the same volume out at the far end, so a plug
leaves after exactly one reactor volume has come in behind it — at total flow Q its residence
time is V/Q — and only then reacts, once, for the time it spent inside, under the conditions the
reactor was in meanwhile (``chemistry.evolve``), piece by piece when those changed. What leaves
goes to the station the reactor's station is plumbed to (``downstream``): a flow cell, a
well-mixed cell of small volume that the outflow displaces, read by the spectrometer (its contents
react no further: the reading is of what left the reactor). A reactor starts full of plain
solvent, which the first plugs push out.

Reactors are vessels, so the arm can take one from a rack and install it in a reactor bay
(Coley et al.'s modules); ``light`` and ``catalyst`` say what kind of module it is.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from simulators.world import Conditions, Portion, Station, Vessel


@dataclass
class Plug:
    """A stretch of the reactor's contents: when it came in, and how far its chemistry has run."""

    portion: Portion
    entered_at: float
    evolved_to: float


class FlowReactor(Vessel):
    """A tube (or packed bed) of ``volume_ul`` that moves liquid through in plugs."""

    #: The world does not react a reactor's contents as a whole: each plug reacts as it leaves.
    reacts = False

    def __init__(
        self,
        name: str,
        volume_ul: float,
        *,
        light: float = 0.0,
        catalyst: str | None = None,
        plug_ul: float | None = None,
    ):
        if not volume_ul > 0:
            raise ValueError(f"volume_ul must be > 0, not {volume_ul!r}")
        super().__init__(name, capacity_ul=float(volume_ul), volume_ul=float(volume_ul))
        self.light = float(light)
        self.catalyst = catalyst
        self.plug_ul = float(plug_ul) if plug_ul else self.capacity_ul / 100.0
        self._plugs: deque[Plug] = deque([Plug(Portion(float(volume_ul)), -math.inf, -math.inf)])
        self._incoming: list[Portion] = []
        self._advanced_to: float | None = None
        #: (from time, conditions) in force since then; a plug reacts piecewise over them.
        self._history: list[tuple[float, Conditions]] = []
        #: µL that went through, and what a plug that left last had spent inside (s).
        self.throughput_ul = 0.0
        self.last_residence_s: float | None = None

    # -- what the pumps see ------------------------------------------------------------------------
    def put(self, portion: Portion) -> None:
        if portion.volume_ul > 0:
            self._incoming.append(portion)

    def take(self, volume_ul: float) -> Portion:
        return Portion(0.0)  # nothing is drawn out of a reactor backwards

    @property
    def amounts(self) -> dict[str, float]:  # type: ignore[override]
        total: dict[str, float] = {}
        for plug in self._plugs:
            for species, amount in plug.portion.amounts.items():
                total[species] = total.get(species, 0.0) + amount
        return total

    @amounts.setter
    def amounts(self, value: dict[str, float]) -> None:
        pass  # the plugs hold the contents (Vessel.__init__ assigns an empty dict)

    # -- time passing --------------------------------------------------------------------------------
    def advance(self, now: float, conditions: Conditions, downstream: Station | None, chemistry: Any) -> None:
        """Bring the flow up to ``now``: take in what the pumps delivered, push the same volume out."""
        start = now if self._advanced_to is None else self._advanced_to
        if not self._history or self._history[-1][1] != conditions:
            # The first conditions hold from the beginning of time: plugs delivered before the first look.
            self._history.append((start if self._history else -math.inf, conditions))
        incoming, self._incoming = self._incoming, []
        self._advanced_to = now
        if not incoming:
            return
        begin = min((p.span[0] if p.span else start) for p in incoming)
        end = max((p.span[1] if p.span else now) for p in incoming)
        total = sum(p.volume_ul for p in incoming)
        count = max(1, math.ceil(total / self.plug_ul))
        width = (end - begin) / count
        for i in range(count):
            low, high = begin + i * width, begin + (i + 1) * width
            plug = Portion(0.0)
            for portion in incoming:
                share = _share(portion.span or (start, now), low, high, last=i == count - 1)
                if share <= 0:
                    continue
                plug.volume_ul += portion.volume_ul * share
                for species, amount in portion.amounts.items():
                    plug.amounts[species] = plug.amounts.get(species, 0.0) + amount * share
            if plug.volume_ul > 0:
                middle = (low + high) / 2
                self._plugs.append(Plug(plug, middle, middle))
        self._push_out(total, begin, end, downstream, chemistry)
        self.throughput_ul += total

    def _push_out(
        self, volume: float, begin: float, end: float, downstream: Station | None, chemistry: Any
    ) -> None:
        pushed = 0.0
        while volume - pushed > 1e-12 and self._plugs:
            head = self._plugs[0]
            room = volume - pushed
            if head.portion.volume_ul <= room + 1e-12:
                self._plugs.popleft()
                leaving = head.portion
            else:
                fraction = room / head.portion.volume_ul
                leaving = Portion(room, {s: a * fraction for s, a in head.portion.amounts.items()})
                for species in head.portion.amounts:
                    head.portion.amounts[species] *= 1 - fraction
                head.portion.volume_ul -= room
            # Outflow runs as evenly as the inflow that drives it: the middle of this slice leaves at
            # the matching moment of the delivery.
            exit_at = begin + (pushed + leaving.volume_ul / 2) / volume * (end - begin)
            pushed += leaving.volume_ul
            self._react(leaving, head.evolved_to, exit_at, chemistry)
            if math.isfinite(head.entered_at):
                self.last_residence_s = exit_at - head.entered_at
            if downstream is not None:
                downstream.put(leaving)

    def _react(self, portion: Portion, since: float, until: float, chemistry: Any) -> None:
        evolve = getattr(chemistry, "evolve", None)
        if evolve is None or not portion.amounts or not math.isfinite(since):
            return
        for i, (start, conditions) in enumerate(self._history):
            stop = self._history[i + 1][0] if i + 1 < len(self._history) else math.inf
            low, high = max(start, since), min(stop, until)
            if high > low:
                evolve(portion, high - low, conditions)

    def residence_time_s(self, flow_ul_min: float) -> float:
        return self.capacity_ul / flow_ul_min * 60.0


def _share(span: tuple[float, float], low: float, high: float, *, last: bool) -> float:
    """The fraction of a delivery spread evenly over ``span`` that falls in [low, high)."""
    a, b = span
    if b <= a:  # delivered at one instant: all of it in the slice that holds that instant
        return 1.0 if low <= a < high or (last and a >= low) else 0.0
    return max(0.0, min(b, high) - max(a, low)) / (b - a)


class FlowCell(Vessel):
    """A small well-mixed cell that the outflow displaces (what leaves goes to waste).

    What reaches it is read as it arrived: the cell holds seconds of outflow, and its contents do not
    react further (as if quenched at the reactor's outlet), so a reading does not depend on how long
    a plan takes to get to it.
    """

    reacts = False

    def put(self, portion: Portion) -> None:
        excess = self.volume_ul + portion.volume_ul - self.capacity_ul
        if excess > 0:
            self.take(min(excess, self.volume_ul))
        room = self.capacity_ul - self.volume_ul
        if portion.volume_ul > room > 0:
            fraction = room / portion.volume_ul
            portion = Portion(room, {s: a * fraction for s, a in portion.amounts.items()})
        super().put(portion)


__all__ = ["FlowCell", "FlowReactor", "Plug"]
