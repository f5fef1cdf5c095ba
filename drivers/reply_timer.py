"""How long to wait for a reply: a timeout that learns the link's round trips, as TCP's does.

A fixed reply timeout is either too long for a fast link (every lost reply costs it in full: on a
local simulator, whose replies take a millisecond, half a second per lost reply) or too short for
a slow one. :class:`ReplyTimer` keeps RFC 6298's estimate of the round trip instead: a smoothed
round trip ``srtt`` and its variation ``rttvar`` from every measured exchange, and a timeout of
``srtt + 4 * rttvar`` between a floor and the configured ceiling. Until the first measurement the
timeout is the ceiling; each expiry doubles it (up to the ceiling) and, by Karn's rule, the next
measurement is not taken, since its reply may answer the request before.

    timer = ReplyTimer(ceiling_s=0.5)
    timer.timeout          # 0.5 until the link has been measured
    timer.observe(0.002)   # one round trip: 2 ms
    timer.timeout          # the floor (0.05 s), since 2 ms + 4 x 1 ms is less
    timer.expired()        # a reply did not come: 0.1 s, and the next round trip is not taken
"""

from __future__ import annotations

#: RFC 6298 section 2: the gains of the smoothed round trip and of its variation, and how many
#: variations the timeout allows above the smoothed round trip.
ALPHA = 1 / 8
BETA = 1 / 4
K = 4

#: The shortest timeout a link learns. Far above a loopback or LAN round trip (about a millisecond),
#: so scheduling hiccups on a loaded machine are not taken for lost replies, and far below the
#: configured ceilings (0.5–1 s) that every lost reply cost before. Measured in benchmarks/faults.py.
MIN_REPLY_TIMEOUT_S = 0.05


class ReplyTimer:
    """RFC 6298's retransmission timer for one link: ``timeout`` follows the round trips observed.

    Not thread-safe on its own: the transport calls it under the link's lock.
    """

    def __init__(self, ceiling_s: float, *, floor_s: float = MIN_REPLY_TIMEOUT_S) -> None:
        if not ceiling_s > 0 or not floor_s > 0:
            raise ValueError(f"reply timeouts must be > 0 s, not ceiling {ceiling_s}, floor {floor_s}")
        self._ceiling = float(ceiling_s)
        self._floor = float(floor_s)
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self._timeout = self._ceiling
        self._ambiguous = False

    @property
    def ceiling_s(self) -> float:
        """The configured reply timeout: never waited longer than this."""
        return self._ceiling

    @ceiling_s.setter
    def ceiling_s(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"a reply timeout must be > 0 s, not {seconds}")
        self._ceiling = float(seconds)
        self._timeout = self._clamp(self._estimate() if self.srtt is not None else self._ceiling)

    @property
    def floor_s(self) -> float:
        """The shortest timeout learned (at most the ceiling: a floor at the ceiling keeps it fixed)."""
        return min(self._floor, self._ceiling)

    @property
    def timeout(self) -> float:
        """How long to wait for the next reply, s."""
        return self._timeout

    def observe(self, seconds: float) -> None:
        """One round trip measured: from the request's last byte out to its reply's first byte in."""
        if self._ambiguous:
            self._ambiguous = False  # Karn: this reply may belong to the request that timed out
            return
        sample = max(0.0, float(seconds))
        if self.srtt is None or self.rttvar is None:
            self.srtt, self.rttvar = sample, sample / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - sample)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * sample
        self._timeout = self._clamp(self._estimate())

    def expired(self) -> None:
        """A reply did not come within ``timeout``: wait twice as long next time (up to the ceiling)."""
        self._timeout = self._clamp(2 * self._timeout)
        self._ambiguous = True

    def _estimate(self) -> float:
        assert self.srtt is not None and self.rttvar is not None
        return self.srtt + K * self.rttvar

    def _clamp(self, seconds: float) -> float:
        return min(self._ceiling, max(self.floor_s, seconds))

    def __repr__(self) -> str:
        srtt = "unmeasured" if self.srtt is None else f"srtt={self.srtt * 1e3:.2f} ms"
        return f"ReplyTimer({srtt}, timeout={self._timeout:.3f} s, ceiling={self._ceiling:g} s)"


__all__ = ["MIN_REPLY_TIMEOUT_S", "ReplyTimer"]
