"""The lab service's API: one request model and one reply model per method, and the typed error reply.

Every method is a pydantic model here; the server's dispatch table and `docs/api.md` are generated from
them (`python -m sdl.api.docs`), so the code, the reference and the clients cannot drift apart.

On the wire, a request is one JSON object ``{"method": NAME, "id": ANY, "params": {...}}`` and its reply
``{"id": ANY, "ok": true, "result": {...}}`` or ``{"id": ANY, "ok": false, "error": {...}}``.

Long because it is the whole API, one short model per method and per shared record, in the order of the
reference it generates: split, a reader would chase one method's request, reply and records across files.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from sdl.access.roles import Role
from sdl.spec.status import CampaignStatus, Cause, ExperimentStatus, InstrumentState, WorkcellState


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: The store's integers are SQLite's, signed 64-bit: a larger number is refused here as invalid_params
#: rather than carried to the store to fail there.
MAX_STORE_INT = 2**63 - 1
#: A campaign file's text (a request is at most 1 MiB on the wire).
MAX_TEXT_CHARS = 1 << 20
StoreInt = Annotated[int, Field(ge=0, le=MAX_STORE_INT)]
#: A number of experiments.
Count = Annotated[int, Field(ge=1, le=MAX_STORE_INT)]
#: A campaign id, an instrument's or a key's name, a filter.
Name = Annotated[str, Field(max_length=256)]
#: Why, in words: it goes to the record and the audit log.
Reason = Annotated[str, Field(max_length=1000)]


class Request(_Model):
    """Base of every request's parameters: bounded, as everything read from outside."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    method: ClassVar[str]
    role: ClassVar[Role]
    reply: ClassVar[type[BaseModel]]


class Ok(_Model):
    """A command was accepted."""

    message: str = ""


# -- shared records -----------------------------------------------------------------------------------


class Best(_Model):
    experiment: int = Field(description="Sequence number of the best experiment.")
    objectives: dict[str, Any] = Field(description="Its objectives' measured values (the user's direction).")
    loss: float | None = Field(
        default=None,
        description="The campaign's scalar, as its multi_objective ranks experiments (lower is better).",
    )


class CampaignSummary(_Model):
    id: str
    name: str
    status: CampaignStatus = Field(description="The record's status.")
    state: str = Field(
        description="What it is doing, in words: running, held (the lab is e-stopped), paused, stopping, "
        "aborting, stale (with what to do), or the status of a campaign that ended."
    )
    stop_reason: str | None = None
    budget: int
    spent: int = Field(description="Experiments that spent budget (done or failed).")
    counts: dict[ExperimentStatus, int] = Field(description="Experiments by status.")
    best: Best | None = Field(
        default=None,
        description="The best experiment as the campaign defines it (its multi_objective); none for a "
        "pareto campaign, whose front is the answer.",
    )
    front: list[Best] = Field(
        default_factory=list[Best],
        description="With several objectives: the experiments no other beats on every objective.",
    )
    priority: int = 0
    weight: float = 1.0
    submitted_by: str | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    active_seconds: float = Field(default=0.0, description="Wall time spent running, over every restart.")
    max_wall_time: float | None = None


class DecisionRecord(_Model):
    model: str
    acquisition: str | None = None
    acquisition_value: float | None = None
    seconds: float
    n_observations: int
    n_pending: int


class Usage(_Model):
    """What an experiment's instruments reported using of one stock, and the lot it came from."""

    stock: str = Field(description="instrument.consumable")
    amount: float
    unit: str = ""
    lot: str | None = None


class ExperimentSummary(_Model):
    id: int
    campaign_id: str
    seq: int
    status: ExperimentStatus
    recipe: dict[str, Any]
    measurements: dict[str, Any] | None = None
    loss: float | None = Field(default=None, description="The scalar the optimizer minimises.")
    failure: str | None = None
    cause: Cause | None = None
    fault_kind: str | None = None
    fault_instrument: str | None = None
    workcell: str | None = None
    retry_of: int | None = None
    proposed_at: str
    started_at: str | None = None
    finished_at: str | None = None
    decision: DecisionRecord | None = None
    used: list[Usage] = Field(
        default_factory=list[Usage],
        description="What its instruments reported using, by stock and lot (the raw materials it was made "
        "from), when the lab keeps an inventory.",
    )


class JournalLine(_Model):
    id: int
    at: float
    entry: str = Field(description="sent, done, failed or abort.")
    command: str
    instrument: str | None = None
    device: str | None = None
    detail: str | None = None
    ref: int | None = None


class InstrumentStatus(_Model):
    name: str
    driver: str
    state: InstrumentState = Field(description="suspect: made safe and checked before it is used again.")
    reason: str | None = None
    connected_in: list[str] = Field(default_factory=list, description="Workcells whose worker holds it open.")
    leased_to: int | None = Field(default=None, description="Experiment id holding it now.")
    leased_by: str | None = Field(default=None, description="Workcell running that experiment.")
    consecutive_faults: int = 0
    faults: int = 0
    retries: int = 0
    workcells: list[str] = Field(default_factory=list)


class WorkcellStatus(_Model):
    name: str
    state: WorkcellState = Field(
        description="recovering: making an instrument safe or checking it; blocked: an instrument it has is "
        "quarantined; held: idle while the lab is e-stopped."
    )
    capabilities: list[str]
    devices: dict[str, str] = Field(description="Device name the plan sees -> instrument.")
    experiment: int | None = None
    campaign_id: str | None = None
    worker_pid: int | None = None
    restarts: int = 0
    blocked_by: list[str] = Field(default_factory=list)
    agent: str | None = Field(
        default=None, description="The agent whose PC runs its worker (`sdl agent`); none: the service's PC."
    )


class AgentStatus(_Model):
    """An instrument PC's agent (`sdl agent`), as the service hears it."""

    name: str
    host: str = Field(default="", description="Its machine, once it connected.")
    pid: int | None = None
    reachable: bool
    silent_s: float | None = Field(
        description="Seconds since the service last heard it; none: not since the service started."
    )
    unacknowledged: int = Field(
        description="Messages to it that it has not acknowledged yet (its outbox here)."
    )
    workcells: list[str]


class EStopState(_Model):
    active: bool
    reason: str | None = None
    by: str | None = None
    at: str | None = None


class Alert(_Model):
    """Something a person must see to: the lab cannot put it right by itself, or has stopped work until it
    can. Raised and cleared as ``lab.alert`` events, listed by ``status`` while it lasts."""

    key: str = Field(
        description="What it is about, the same while it lasts: 'storage', 'instrument:NAME' or 'task:ID'."
    )
    kind: Literal["storage", "instrument", "task"] = Field(
        description="storage: the disk holding the store is full (no experiment starts; results measured "
        "are held until they can be written); instrument: automatic recovery gave up on it; task: a person "
        "must do something (refill a stock) before the workcells that need it run again."
    )
    subject: str | None = Field(default=None, description="The instrument, or the data directory.")
    message: str
    since: str


class EventRecord(_Model):
    seq: int = Field(description="Increases by one per event; a gap means events were missed.")
    at: str
    topic: str
    campaign_id: str | None = None
    body: dict[str, Any]


# -- methods ------------------------------------------------------------------------------------------


class Standby(_Model):
    """A service standing by to take the lab over (`sdl daemon --standby`)."""

    host: str
    pid: int
    seen_at: str = Field(description="When it last said so (it does every half second).")


class StatusReply(_Model):
    lab: str
    pid: int
    host: str = Field(default="", description="The machine the service runs on.")
    started_at: str
    estop: EStopState
    workcells: list[WorkcellStatus]
    instruments: list[InstrumentStatus]
    campaigns: list[CampaignSummary] = Field(description="Campaigns that are running (paused included).")
    last_event: int
    events_address: str
    documents_address: str
    alerts: list[Alert] = Field(
        default_factory=list[Alert], description="What needs a person now, oldest first."
    )
    http_address: str | None = Field(
        default=None,
        description="Where the service serves its web dashboard (`sdl daemon --http`), if it does.",
    )
    standbys: list[Standby] = Field(
        default_factory=list[Standby],
        description="Services standing by to take the lab over if this one goes, oldest first.",
    )
    agents: list[AgentStatus] = Field(
        default_factory=list[AgentStatus], description="The agents the lab file names, by name."
    )


class Status(Request):
    """The whole lab at a glance: workcells, instruments, e-stop, running campaigns."""

    method = "status"
    role = Role.VIEWER
    reply = StatusReply


class SubmitReply(_Model):
    campaign_id: str
    notes: list[str] = Field(
        default_factory=list[str],
        description="What an operator should know before it runs: e.g. the refills its budget will take.",
    )


class SubmitCampaign(Request):
    """Validate a campaign file and queue it; the scheduler starts it on free workcells that fit."""

    method = "campaign.submit"
    role = Role.OPERATOR
    reply = SubmitReply
    text: str = Field(max_length=MAX_TEXT_CHARS, description="The campaign file's YAML.")
    path: str = Field(
        max_length=4096,
        description="Where the file lives on the lab's machine: procedures import from its folder.",
    )
    seed: StoreInt | None = Field(default=None, description="Override optimizer.seed.")
    budget: Count | None = Field(default=None, description="Override budget.max_experiments.")


class CampaignList(_Model):
    campaigns: list[CampaignSummary]


class ListCampaigns(Request):
    """Every campaign in the store, newest last."""

    method = "campaign.list"
    role = Role.VIEWER
    reply = CampaignList
    active_only: bool = Field(default=False, description="Only campaigns that are running (paused included).")


class CampaignDetail(_Model):
    campaign: CampaignSummary
    spec: dict[str, Any] = Field(description="The validated campaign file, as recorded.")


class ShowCampaign(Request):
    """One campaign: its summary and its recorded campaign file."""

    method = "campaign.show"
    role = Role.VIEWER
    reply = CampaignDetail
    campaign_id: Name


class CampaignStateReply(_Model):
    campaign_id: str
    state: str


class PauseCampaign(Request):
    """Finish the experiments in flight, start no new ones until resumed."""

    method = "campaign.pause"
    role = Role.OPERATOR
    reply = CampaignStateReply
    campaign_id: Name


class ResumeCampaign(Request):
    """Start experiments again: a paused campaign, or a stopped, failed or interrupted one (a new budget
    may be needed)."""

    method = "campaign.resume"
    role = Role.OPERATOR
    reply = CampaignStateReply
    campaign_id: Name


class StopCampaign(Request):
    """Stop after the experiments in flight finish; the campaign then ends as interrupted."""

    method = "campaign.stop"
    role = Role.OPERATOR
    reply = CampaignStateReply
    campaign_id: Name


class AbortCampaign(Request):
    """Abort the campaign's experiments in flight now (the RunEngine stops every moving device) and end it."""

    method = "campaign.abort"
    role = Role.OPERATOR
    reply = CampaignStateReply
    campaign_id: Name
    reason: Reason = "aborted by the operator"


class SetBudget(Request):
    """Change a campaign's budget (total experiments); a finished campaign with budget left runs again."""

    method = "campaign.budget"
    role = Role.OPERATOR
    reply = CampaignStateReply
    campaign_id: Name
    max_experiments: Count


class ExperimentList(_Model):
    experiments: list[ExperimentSummary]


class ListExperiments(Request):
    """A campaign's experiments in proposal order, with results and the optimizer's decisions."""

    method = "experiments.list"
    role = Role.VIEWER
    reply = ExperimentList
    campaign_id: Name
    after_seq: StoreInt = Field(default=0, description="Only experiments with a larger sequence number.")
    limit: int = Field(default=1000, ge=1, le=10000)


class ExperimentDetail(_Model):
    experiment: ExperimentSummary
    journal: list[JournalLine]
    documents: list[tuple[str, dict[str, Any]]] | None = None


class ShowExperiment(Request):
    """One experiment with its command journal (and its event-model documents when asked)."""

    method = "experiment.show"
    role = Role.VIEWER
    reply = ExperimentDetail
    experiment_id: StoreInt
    documents: bool = False


class InstrumentList(_Model):
    instruments: list[InstrumentStatus]


class ListInstruments(Request):
    """Every instrument with its state, health counters and lease holder."""

    method = "lab.instruments"
    role = Role.VIEWER
    reply = InstrumentList


class WorkcellList(_Model):
    workcells: list[WorkcellStatus]


class ListWorkcells(Request):
    """Every workcell with its worker, what it runs, and what blocks it."""

    method = "lab.workcells"
    role = Role.VIEWER
    reply = WorkcellList


class QuarantineInstrument(Request):
    """Take an instrument out of service: workcells that need it take no work, the others carry on."""

    method = "instrument.quarantine"
    role = Role.ADMIN
    reply = Ok
    name: Name
    reason: Reason = "quarantined by the operator"


#: How long a release with a check waits for the instrument's recovery and health check.
RELEASE_CHECK_S = 120.0


class ReleaseInstrument(Request):
    """Put a quarantined or suspect instrument back in service (after a recovery and health check unless
    ``check`` is false). With the check, the reply comes once it is done: ``refused`` (with the reason) if
    the recovery or the health check failed, and the instrument stays out of service."""

    method = "instrument.release"
    role = Role.ADMIN
    reply = Ok
    name: Name
    check: bool = Field(default=True, description="Run the driver's recovery and health check first.")


class EStop(Request):
    """Stop every instrument now (pumps stopped, arm stopped), abort every experiment in flight, and hold
    the lab until an administrator clears the e-stop. Always allowed to an operator."""

    method = "lab.estop"
    role = Role.OPERATOR
    reply = Ok
    reason: Reason = "emergency stop"


class ClearEStop(Request):
    """Let the lab take work again after an e-stop."""

    method = "lab.clear_estop"
    role = Role.ADMIN
    reply = Ok


class EventList(_Model):
    events: list[EventRecord]
    last: int = Field(description="The newest event's sequence number.")


class EventsSince(Request):
    """Events after a sequence number, from the record: how a subscriber catches up after a gap."""

    method = "events.since"
    role = Role.VIEWER
    reply = EventList
    seq: StoreInt = 0
    limit: int = Field(default=1000, ge=1, le=10000)
    campaign_id: Name | None = None


class Shutdown(Request):
    """Stop the lab service: finish (or abort) work in flight, bring instruments to a safe state, exit."""

    method = "daemon.shutdown"
    role = Role.ADMIN
    reply = Ok
    abort: bool = Field(
        default=False, description="Abort experiments in flight instead of letting them finish."
    )


# -- access -------------------------------------------------------------------------------------------


class Identity(_Model):
    name: str = Field(description="The caller's key name (local:USER for the data directory owner's key).")
    role: Role
    origin: str | None = Field(
        default=None, description="Where the request came from (peer address, loopback)."
    )
    curve: bool = Field(description="Whether the service requires CurveZMQ keys (every lab service does).")


class WhoAmI(Request):
    """Who the service takes the caller for, and with which role."""

    method = "access.whoami"
    role = Role.VIEWER
    reply = Identity


class KeyInfo(_Model):
    name: str
    public_key: str = Field(description="Z85, 40 characters.")
    role: Role
    added_at: str | None = None
    added_by: str | None = None


class KeyList(_Model):
    keys: list[KeyInfo]
    path: str = Field(description="The allow-list file on the lab's machine.")


class ListKeys(Request):
    """The allow-list: every client key with its role."""

    method = "keys.list"
    role = Role.ADMIN
    reply = KeyList


class AddKey(Request):
    """Allow a client key with a role (replaces the role of a key of that name)."""

    method = "keys.add"
    role = Role.ADMIN
    reply = KeyInfo
    name: Name
    public_key: str = Field(
        max_length=64, description="The client's public key, Z85 (the `public-key` line of NAME.key)."
    )
    key_role: Role = Field(
        description="viewer, operator or admin; agent for an instrument PC's `sdl agent` (its key opens the "
        "agents' socket, and nothing else)."
    )


class RemoveKey(Request):
    """Remove a client key: refused from its next request, even on a connection already open."""

    method = "keys.remove"
    role = Role.ADMIN
    reply = KeyInfo
    name: Name


class AuditEntry(_Model):
    id: int
    at: str
    who: str
    origin: str | None = None
    action: str
    target: str | None = None
    arguments: dict[str, Any] | None = None
    result: str = Field(description="ok, refused: WHY, or the error type and message.")


class AuditList(_Model):
    entries: list[AuditEntry]


class ListAudit(Request):
    """The audit log (every control command and every refusal), oldest first, filtered."""

    method = "audit.list"
    role = Role.VIEWER
    reply = AuditList
    after_id: StoreInt = Field(default=0, description="Only entries with a larger id.")
    limit: int = Field(default=1000, ge=1, le=10000)
    who: Name | None = None
    action: Name | None = Field(
        default=None, description="A method name, or a prefix ending in '.' (campaign.)."
    )
    refused: bool | None = Field(
        default=None, description="Only refusals (true) or only accepted commands (false)."
    )
    since: str | None = Field(
        default=None, max_length=64, description="ISO time: only entries at or after it."
    )
    newest_first: bool = Field(
        default=False, description="The newest entries first (with limit: the last ones)."
    )


# -- inventory and tasks ---------------------------------------------------------------------------------


class Stock(_Model):
    instrument: str
    kind: Literal["supply", "waste"] = Field(
        default="supply", description="supply: experiments draw from it; waste: they fill it, up to capacity."
    )
    consumable: str = Field(description="Its driver's name for it: a pump's label, a port's, a feeder's.")
    amount: float = Field(description="What it holds now, by the record (its unit).")
    unit: str
    lot: str | None = None
    material: str | None = None
    capacity: float | None = None
    warn_below: float | None = None
    low: bool = Field(default=False, description="Less is left (of a waste: less room) than warn_below.")
    claimed: float = Field(
        default=0.0, description="What experiments in flight will still take of it (by their needs)."
    )
    task: int | None = Field(default=None, description="The refill task still to do for it, if any.")
    updated_at: str


class StockList(_Model):
    stocks: list[Stock]


class ListInventory(Request):
    """Every stock of the lab with what it holds, its lot, what experiments in flight will take of it, and
    the refill task still to do for it."""

    method = "inventory.list"
    role = Role.VIEWER
    reply = StockList


class StockChange(_Model):
    id: int
    at: str
    instrument: str
    consumable: str
    change: str = Field(description="declare, consume, refill, replace, correct or empty.")
    amount: float = Field(description="consume: what was used; otherwise what it holds after.")
    after: float
    lot: str | None = None
    experiment_id: int | None = None
    who: str
    why: str | None = None


class StockChangeList(_Model):
    changes: list[StockChange]


class ListStockChanges(Request):
    """The inventory's transactions in order: all (after an id), or what one experiment consumed."""

    method = "inventory.changes"
    role = Role.VIEWER
    reply = StockChangeList
    after_id: StoreInt = 0
    experiment_id: StoreInt | None = None
    limit: int = Field(default=1000, ge=1, le=10000)


class Restock(Request):
    """Record what a person did to a stock: refilled it (it holds ``amount`` now), replaced it with a new lot,
    or corrected the count. Workcells waiting for it run again once its refill task is done."""

    method = "inventory.restock"
    role = Role.OPERATOR
    reply = Stock
    instrument: Name
    consumable: Name
    change: Literal["refill", "replace", "correct", "empty"] = "refill"
    amount: float = Field(ge=0, le=1e12)
    lot: Name | None = None
    reason: Reason | None = None


class Task(_Model):
    id: int
    kind: str = Field(
        description="refill (or empty, for a waste), question (a plan asks: the done note is "
        "the answer), or other."
    )
    state: Literal["open", "acknowledged", "done", "cancelled"]
    title: str
    detail: str | None = None
    instrument: str | None = None
    consumable: str | None = None
    workcell: str | None = Field(default=None, description="The workcell that waits for it.")
    experiment_id: int | None = None
    opened_at: str
    opened_by: str
    acknowledged_at: str | None = None
    acknowledged_by: str | None = None
    closed_at: str | None = None
    closed_by: str | None = None
    outcome: dict[str, Any] | None = Field(default=None, description="What was done (amount, lot, note).")


class TaskList(_Model):
    tasks: list[Task]


class ListTasks(Request):
    """Tasks for people, newest first: those still to do, or all."""

    method = "task.list"
    role = Role.VIEWER
    reply = TaskList
    all: bool = Field(default=False, description="Done and cancelled ones too.")
    limit: int = Field(default=200, ge=1, le=10000)


class AcknowledgeTask(Request):
    """Say someone is on a task."""

    method = "task.acknowledge"
    role = Role.OPERATOR
    reply = Task
    task_id: StoreInt


class CompleteTask(Request):
    """Say a task is done. For a refill: ``amount`` is what the stock holds now (default: its capacity) and
    ``lot`` the lot it was filled from (default: the one it had); the stock is restocked with the task, and
    the workcells waiting for it run again."""

    method = "task.done"
    role = Role.OPERATOR
    reply = Task
    task_id: StoreInt
    amount: float | None = Field(default=None, ge=0, le=1e12)
    lot: Name | None = None
    note: Reason | None = None


class CancelTask(Request):
    """Drop a task nobody will do (the workcells waiting for a refill run again, on what the record says is
    left)."""

    method = "task.cancel"
    role = Role.OPERATOR
    reply = Task
    task_id: StoreInt
    reason: Reason | None = None


class Proposal(_Model):
    """A proposal that waits (or waited) for an operator's approval."""

    experiment_id: int
    campaign_id: str
    seq: int
    recipe: dict[str, Any]
    state: Literal["pending", "approved", "rejected"]
    why: str = Field(description="Why it needs approval (the campaign's approval rule).")
    asked_at: str
    decided_at: str | None = None
    decided_by: str | None = None
    reason: str | None = None


class ProposalList(_Model):
    proposals: list[Proposal]


class ListApprovals(Request):
    """Proposals waiting for an operator's approval, oldest first (or every one asked, with ``all``)."""

    method = "approval.list"
    role = Role.VIEWER
    reply = ProposalList
    campaign_id: Name | None = None
    all: bool = False


class ApproveProposal(Request):
    """Let a waiting proposal run: the next free workcell that can run it takes it."""

    method = "approval.approve"
    role = Role.OPERATOR
    reply = Proposal
    experiment_id: StoreInt
    reason: Reason | None = None


class RejectProposal(Request):
    """Refuse a waiting proposal: it ends failed with who refused it and why, the optimizer learns it as a
    failure (and proposes elsewhere), and it spends one experiment of the budget."""

    method = "approval.reject"
    role = Role.OPERATOR
    reply = Proposal
    experiment_id: StoreInt
    reason: Reason = Field(min_length=1, description="Why: recorded as the experiment's failure.")


# -- errors -------------------------------------------------------------------------------------------

ErrorType = Literal[
    "bad_request",  # not JSON, not an object, no method
    "too_large",  # over the size limit
    "unknown_method",
    "invalid_params",  # the parameters do not match the method's model
    "unauthenticated",  # no key, or an unknown key
    "forbidden",  # the caller's role may not do this
    "not_found",  # unknown campaign, experiment or instrument
    "invalid_campaign",  # the submitted campaign file has mistakes (details: one line per mistake)
    "conflict",  # not possible in the current state (e.g. e-stop active, campaign already finished)
    "refused",  # tried and not done (a release whose recovery or health check failed): the message says why
    "busy",  # another process holds the campaign
    "internal",  # a bug: the service logged it and carries on
]


class Error(_Model):
    type: ErrorType
    message: str
    details: list[str] = Field(default_factory=list)


class ApiError(Exception):
    """Raised by a handler (or the client) with a typed error."""

    def __init__(self, type: ErrorType, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.error = Error(type=type, message=message, details=details or [])


METHODS: dict[str, type[Request]] = {
    model.method: model
    for model in (
        Status,
        SubmitCampaign,
        ListCampaigns,
        ShowCampaign,
        PauseCampaign,
        ResumeCampaign,
        StopCampaign,
        AbortCampaign,
        SetBudget,
        ListExperiments,
        ShowExperiment,
        ListInstruments,
        ListWorkcells,
        QuarantineInstrument,
        ReleaseInstrument,
        EStop,
        ClearEStop,
        EventsSince,
        Shutdown,
        WhoAmI,
        ListKeys,
        AddKey,
        RemoveKey,
        ListAudit,
        ListInventory,
        ListStockChanges,
        Restock,
        ListTasks,
        AcknowledgeTask,
        CompleteTask,
        CancelTask,
        ListApprovals,
        ApproveProposal,
        RejectProposal,
    )
}
