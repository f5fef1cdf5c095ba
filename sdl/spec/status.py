"""Lifecycle of an experiment and of a campaign, as explicit state machines; and the states an instrument and
a workcell are in, as the lab service reports them.

Every status change in the store goes through :func:`check_transition`, so an illegal move (say, a
``done`` experiment becoming ``running`` again) raises instead of silently rewriting the record.
"""

from __future__ import annotations

from enum import StrEnum


class IllegalTransition(RuntimeError):
    """A status change that the lifecycle does not allow."""


class ExperimentStatus(StrEnum):
    PROPOSED = "proposed"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    #: An instrument failed (link lost, alarm, protective stop...): the recipe was not tried. The
    #: optimizer does not learn from it, it spends no budget, and it counts against the instrument.
    FAULTED = "faulted"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_EXPERIMENT

    @property
    def spends_budget(self) -> bool:
        """Done and failed experiments spent the budget; interrupted and faulted ones produced no result."""
        return self in (ExperimentStatus.DONE, ExperimentStatus.FAILED)


class Cause(StrEnum):
    """Why an experiment ended without a result (interrupted or faulted)."""

    OPERATOR = "operator"  # Ctrl-C, SIGTERM, `sdl abort`
    CRASH = "crash"  # the process running it died; its physical outcome is unknown
    ESTOP = "estop"
    SHUTDOWN = "shutdown"  # the lab service stopped and aborted work in flight
    DROPPED = "dropped"  # proposed, never started
    FAULT = "fault"  # an instrument fault aborted it (status faulted)
    TIMEOUT = "timeout"  # it outlived its procedure's timeout and was aborted

    @property
    def retryable(self) -> bool:
        """Whether the recipe may run again when its procedure is safe to repeat (never after an operator's
        decision to stop it)."""
        return self in (Cause.CRASH, Cause.SHUTDOWN, Cause.FAULT, Cause.TIMEOUT)


class CampaignStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class InstrumentState(StrEnum):
    """Whether an instrument may be used (decision 0005)."""

    OK = "ok"
    SUSPECT = "suspect"  # a crash or a fault left it in an unknown state: made safe and checked before use
    QUARANTINED = "quarantined"  # out of service until released (by an administrator, or a passing check)


class WorkcellState(StrEnum):
    """What a workcell is doing, as the lab service reports it."""

    STARTING = "starting"  # its worker process is starting
    IDLE = "idle"
    BUSY = "busy"  # running an experiment
    DOWN = "down"  # no worker (it died; a replacement is due)
    RECOVERING = "recovering"  # idle, making an instrument safe or checking it
    BLOCKED = "blocked"  # idle, but an instrument it has is quarantined
    HELD = "held"  # idle, and the lab is e-stopped: it takes no work until the e-stop is cleared
    UNREACHABLE = "unreachable"  # its agent's PC cannot be reached: nothing starts there until it is


_FINAL_EXPERIMENT = frozenset(
    {ExperimentStatus.DONE, ExperimentStatus.FAILED, ExperimentStatus.INTERRUPTED, ExperimentStatus.FAULTED}
)

# A proposal may be dropped (interrupted) before it starts: e.g. Ctrl-C while the optimizer thinks.
EXPERIMENT_TRANSITIONS: dict[ExperimentStatus, frozenset[ExperimentStatus]] = {
    # ... or rejected by the operator it waited for (failed: the optimizer learns the recipe is unwanted).
    ExperimentStatus.PROPOSED: frozenset(
        {ExperimentStatus.RUNNING, ExperimentStatus.INTERRUPTED, ExperimentStatus.FAILED}
    ),
    ExperimentStatus.RUNNING: _FINAL_EXPERIMENT,
    ExperimentStatus.DONE: frozenset(),
    ExperimentStatus.FAILED: frozenset(),
    ExperimentStatus.INTERRUPTED: frozenset(),
    ExperimentStatus.FAULTED: frozenset(),
}

# A campaign that stopped (for any reason) may be resumed, which makes it running again.
CAMPAIGN_TRANSITIONS: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    CampaignStatus.RUNNING: frozenset(
        {CampaignStatus.COMPLETED, CampaignStatus.INTERRUPTED, CampaignStatus.FAILED}
    ),
    CampaignStatus.COMPLETED: frozenset({CampaignStatus.RUNNING}),
    CampaignStatus.INTERRUPTED: frozenset({CampaignStatus.RUNNING}),
    CampaignStatus.FAILED: frozenset({CampaignStatus.RUNNING}),
}


def check_transition(current: ExperimentStatus, new: ExperimentStatus) -> None:
    """Raise :class:`IllegalTransition` unless an experiment may go from ``current`` to ``new``."""
    if new not in EXPERIMENT_TRANSITIONS[current]:
        raise IllegalTransition(f"experiment cannot go from {current.value} to {new.value}")


def check_campaign_transition(current: CampaignStatus, new: CampaignStatus) -> None:
    """Raise :class:`IllegalTransition` unless a campaign may go from ``current`` to ``new``."""
    if new not in CAMPAIGN_TRANSITIONS[current]:
        raise IllegalTransition(f"campaign cannot go from {current.value} to {new.value}")
