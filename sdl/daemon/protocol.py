"""Messages between the lab service and its workers (one process per workcell), over a 0MQ socket.

The lab service writes an experiment's proposal, lease and ``running`` before it sends ``RunExperiment``;
the worker journals each command and streams each document into the store itself, writes the outcome,
then says ``Finished``. Everything the worker knows at start — its workcell, the instruments and their
resolved addresses — comes in ``WorkerConfig`` (an environment variable), so a replacement worker starts
exactly like the first.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from sdl.spec.campaign import Instrument
from sdl.spec.status import Cause


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkerConfig(_Message):
    """What a worker process is started with (JSON in $SDL_WORKER_CONFIG)."""

    workcell: str
    manager: str = Field(description="0MQ address of the lab service's worker socket.")
    token: str = Field(description="Shared secret the worker presents in Hello.")
    data_dir: str
    base_dir: str | None = None
    instruments: dict[str, Instrument] = Field(description="The workcell's instruments, by lab name.")
    addresses: dict[str, Any] = Field(description="Instrument -> resolved address.")
    documents: str | None = Field(
        default=None, description="0MQ address the RunEngine publishes documents to."
    )
    heartbeat_s: float = 0.5
    parent_pid: int = Field(description="The service's pid: once it is not the parent, the service is gone.")
    owner: str | None = Field(
        default=None,
        description="The service's claim on the lab: once the store names another holder (a standby took "
        "the lab over from a service that went silent), this service is gone too.",
    )
    lab_provenance: dict[str, Any] = Field(
        default_factory=dict, description="The lab file's part of each experiment's provenance (its hashes)."
    )


# -- manager -> worker ------------------------------------------------------------------------------------


class RunExperiment(_Message):
    type: Literal["run"] = "run"
    experiment_id: int
    campaign_id: str
    devices: dict[str, str] = Field(description="Device name the plan sees -> instrument.")
    options: dict[str, Any] = Field(default_factory=dict, description="The workcell's plan options.")
    release_after: list[str] = Field(
        default_factory=list, description="Shared instruments to disconnect when the experiment ends."
    )
    on_demand: list[str] = Field(
        default_factory=list,
        description="Instruments the plan leases itself, step by step (not connected at the start).",
    )


class LeaseGranted(_Message):
    type: Literal["granted"] = "granted"
    request: int


class LeaseRefused(_Message):
    type: Literal["refused"] = "refused"
    request: int
    reason: str
    instruments: list[str] = Field(default_factory=list, description="Those out of service, the reason.")


class Abort(_Message):
    type: Literal["abort"] = "abort"
    experiment_id: int
    reason: str
    cause: Cause


class EStop(_Message):
    type: Literal["estop"] = "estop"
    reason: str


class MakeSafe(_Message):
    """Bring instruments a crash left suspect to a safe state, then check them."""

    type: Literal["make_safe"] = "make_safe"
    instruments: list[str]
    check: bool = True
    release_after: list[str] = Field(default_factory=list)


class CheckHealth(_Message):
    """Recover and health-check a quarantined instrument."""

    type: Literal["check"] = "check"
    instrument: str
    release_after: bool = False


class Shutdown(_Message):
    type: Literal["shutdown"] = "shutdown"


class Answered(_Message):
    """A person's answer to a plan's question (None: the task was cancelled)."""

    type: Literal["answered"] = "answered"
    request: int
    answer: str | None = None


ToWorker = Annotated[
    RunExperiment
    | LeaseGranted
    | LeaseRefused
    | Answered
    | Abort
    | EStop
    | MakeSafe
    | CheckHealth
    | Shutdown,
    Field(discriminator="type"),
]

# -- worker -> manager ------------------------------------------------------------------------------------


class Hello(_Message):
    type: Literal["hello"] = "hello"
    workcell: str
    pid: int
    token: str


class Heartbeat(_Message):
    type: Literal["heartbeat"] = "heartbeat"
    experiment_id: int | None = None
    connected: list[str] = Field(default_factory=list)


class Started(_Message):
    type: Literal["started"] = "started"
    experiment_id: int


class Finished(_Message):
    """The outcome is in the store (or ``recorded`` is false: someone else closed the experiment first)."""

    type: Literal["finished"] = "finished"
    experiment_id: int
    status: str
    failure: str | None = None
    fault_kind: str | None = None
    #: For an ``empty`` fault: the consumable that ran out.
    fault_consumable: str | None = None
    fault_instrument: str | None = None
    recorded: bool = True
    instruments: list[str] = Field(default_factory=list, description="Instruments the experiment held.")


class LeaseRequest(_Message):
    """A plan asks for instruments for the next steps (granted when all are free, in order of asking)."""

    type: Literal["lease"] = "lease"
    request: int
    experiment_id: int
    instruments: list[str]


class LeaseRelease(_Message):
    """A plan gives instruments back (or withdraws a request still waiting)."""

    type: Literal["release"] = "release"
    request: int
    experiment_id: int
    instruments: list[str]


class InstrumentReport(_Message):
    """A health-relevant happening on one instrument (a retry, a reconnect, a recovery...)."""

    type: Literal["instrument"] = "instrument"
    instrument: str
    event: str
    fault: str | None = None
    detail: str = ""


class ServiceResult(_Message):
    """The result of MakeSafe or CheckHealth for one instrument."""

    type: Literal["service"] = "service"
    action: Literal["make_safe", "check"]
    instrument: str
    ok: bool
    detail: str = ""
    fault: str | None = Field(default=None, description="The driver's fault kind, when it failed.")


class Storage(_Message):
    """The worker's writes to the store fail for want of space (``full``), or go through again. While full,
    the worker holds what it measured (``experiment_id``'s outcome, in memory and in the file ``spilled``
    if one could be written) and keeps trying."""

    type: Literal["storage"] = "storage"
    full: bool
    detail: str = ""
    experiment_id: int | None = None
    spilled: str | None = None


class EStopped(_Message):
    type: Literal["estopped"] = "estopped"
    stopped: list[str]


class Goodbye(_Message):
    type: Literal["goodbye"] = "goodbye"


class Ask(_Message):
    """A plan asks a person (the service opens a task), or withdraws the question (``withdraw``: it timed
    out, or the experiment was aborted)."""

    type: Literal["ask"] = "ask"
    request: int
    experiment_id: int
    question: str = Field(default="", max_length=4000)
    withdraw: bool = False


FromWorker = Annotated[
    Hello
    | Heartbeat
    | Started
    | Finished
    | LeaseRequest
    | LeaseRelease
    | InstrumentReport
    | ServiceResult
    | Storage
    | EStopped
    | Goodbye
    | Ask,
    Field(discriminator="type"),
]

TO_WORKER: TypeAdapter[Any] = TypeAdapter(ToWorker)
FROM_WORKER: TypeAdapter[Any] = TypeAdapter(FromWorker)


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()
