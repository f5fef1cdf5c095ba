"""The link between the lab service and an agent: messages that arrive once, in order, across partitions.

An agent on an instrument PC runs the workers of its workcells there and relays their messages (the
worker protocol of `sdl.daemon.protocol`, unchanged) over one CurveZMQ connection to the service. A
network drops, holds or severs that connection at any moment; 0MQ reconnects by itself but loses what was
in flight. So every message that matters travels in a :class:`Carry` with a sequence number of its
sender's session, is kept by its sender until the other side acknowledges it (every :class:`Beat` says
how far it has received), is sent again after a reconnect, and is delivered by the receiver exactly once
and in order (:class:`Channel`). What the outbox holds during a partition is delivered when the link comes
back; what both sides already have is never delivered twice.

A new session on either side (a restarted agent, a restarted service or a standby that took the lab over)
starts both directions afresh: the old session's messages belonged to processes that are gone, and the
store's record, not the link, says what became of their experiments.
"""

from __future__ import annotations

from collections import deque
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from sdl.daemon.protocol import WorkerConfig

#: A frame larger than this is refused before it is parsed (the largest real one, a worker's config with
#: its instruments, is a few kilobytes).
MAX_FRAME = 1 << 20


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- what the link carries (each exactly once, in order) -------------------------------------------------


class FromCell(_Frame):
    """A worker's message to the service (its JSON, untouched)."""

    kind: Literal["from_cell"] = "from_cell"
    workcell: str
    message: str


class ToCell(_Frame):
    """The service's message to a worker."""

    kind: Literal["to_cell"] = "to_cell"
    workcell: str
    message: str


class Spawn(_Frame):
    """Start the workcell's worker with this config (the agent puts in its own local parts)."""

    kind: Literal["spawn"] = "spawn"
    workcell: str
    config: WorkerConfig


class Spawned(_Frame):
    kind: Literal["spawned"] = "spawned"
    workcell: str
    pid: int


class Kill(_Frame):
    """Kill the workcell's worker now (it stopped answering)."""

    kind: Literal["kill"] = "kill"
    workcell: str


class Exited(_Frame):
    kind: Literal["exited"] = "exited"
    workcell: str
    pid: int
    code: int
    reason: str = Field(default="", description="Why, when the agent stopped it.")


Item = Annotated[FromCell | ToCell | Spawn | Spawned | Kill | Exited, Field(discriminator="kind")]


# -- the frames on the wire ------------------------------------------------------------------------------


class Hello(_Frame):
    """An agent (re)connecting: who it is, its session, and how far it has received of the service's."""

    type: Literal["hello"] = "hello"
    agent: str
    host: str
    pid: int
    session: str
    service_session: str | None = None
    received: int = 0
    workcells: list[str] = Field(default_factory=list, description="Those it runs a worker for now.")


class Welcome(_Frame):
    """The service's answer: its session, the pairing of both sessions (which every :class:`Carry` of
    theirs names), the agent's workcells, and how far it has received."""

    type: Literal["welcome"] = "welcome"
    session: str
    pairing: str
    workcells: list[str]
    received: int = 0
    limit_s: float = Field(description="How long the agent may go without hearing the service.")


class Refusal(_Frame):
    type: Literal["refusal"] = "refusal"
    reason: str


class Beat(_Frame):
    """Both ways, every half second: alive, and how far the sender has received."""

    type: Literal["beat"] = "beat"
    session: str
    received: int


class Carry(_Frame):
    type: Literal["carry"] = "carry"
    session: str
    seq: int
    item: Item


Frame = Annotated[Hello | Welcome | Refusal | Beat | Carry, Field(discriminator="type")]
FRAME: TypeAdapter[Any] = TypeAdapter(Frame)


def encode(frame: BaseModel) -> bytes:
    return frame.model_dump_json().encode()


def decode(raw: bytes) -> Any:
    """A frame, or ValueError (too large, or not a frame)."""
    if len(raw) > MAX_FRAME:
        raise ValueError(f"a frame of {len(raw)} bytes (at most {MAX_FRAME})")
    return FRAME.validate_json(raw)


class Channel:
    """One direction pair of a session: what this side sent and the other has not acknowledged (its
    outbox), and how far it has received of the other side's messages."""

    def __init__(self, session: str) -> None:
        self.session = session
        self.sent = 0  # the last sequence number given out
        self.received = 0  # the last one delivered from the other side, in order
        self.unacked: deque[Carry] = deque()

    def carry(self, item: Any) -> Carry:
        """Put ``item`` in the outbox; the frame to send now (and again, until acknowledged)."""
        self.sent += 1
        frame = Carry(session=self.session, seq=self.sent, item=item)
        self.unacked.append(frame)
        return frame

    def acknowledged(self, received: int) -> None:
        """The other side has everything up to ``received``."""
        while self.unacked and self.unacked[0].seq <= received:
            self.unacked.popleft()

    def accept(self, frame: Carry) -> bool:
        """Whether to deliver ``frame``: the next in order. One already delivered is a copy sent again; one
        past a gap waits for the gap's resending (the sender sends everything unacknowledged, in order)."""
        if frame.seq != self.received + 1:
            return False
        self.received = frame.seq
        return True

    def outbox(self) -> list[Carry]:
        return list(self.unacked)
