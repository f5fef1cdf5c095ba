"""A campaign's lifetime around the executor: create or resume its record, bring up the lab, run, close."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from sdl.campaign import Campaign
from sdl.executor import Executor, Observer, RunResult
from sdl.lab import LabSession
from sdl.loading import LoadedCampaign
from sdl.status import CampaignStatus
from sdl.store import ExperimentRecord, Store, StoreError

log = logging.getLogger(__name__)

CRASH_REASON = "sdl stopped while this experiment was in flight; its physical outcome is unknown"


class CampaignBusy(StoreError):
    """The campaign is being run by a live process."""


def start_campaign(
    store: Store, loaded: LoadedCampaign, *, seed: int | None = None, max_experiments: int | None = None
) -> str:
    """Record a new campaign (with command-line overrides applied to its spec) and return its id."""
    campaign = with_overrides(loaded.campaign, seed=seed, max_experiments=max_experiments)
    return store.create_campaign(
        name=campaign.name,
        spec=campaign.model_dump(mode="json"),
        seed=campaign.optimizer.seed,
        max_experiments=campaign.budget.max_experiments,
        source_path=str(loaded.path),
        source_text=loaded.source,
        base_dir=str(loaded.base_dir),
    )


def with_overrides(
    campaign: Campaign, *, seed: int | None = None, max_experiments: int | None = None
) -> Campaign:
    data = campaign.model_dump()
    if seed is not None:
        data["optimizer"]["seed"] = seed
    if max_experiments is not None:
        data["budget"]["max_experiments"] = max_experiments
    return Campaign.model_validate(data)


def campaign_of(store: Store, campaign_id: str) -> tuple[Campaign, Path | None]:
    record = store.campaign(campaign_id)
    return Campaign.model_validate(record.spec), Path(record.base_dir) if record.base_dir else None


def runner_alive(pid: int | None, host: str | None) -> bool:
    if pid is None or host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_resume(store: Store, campaign_id: str) -> list[ExperimentRecord]:
    """Take over a stopped campaign: experiments left unfinished become ``interrupted``, never re-run.

    Returns the experiments so recovered (non-empty after a crash or a forced stop).
    """
    record = store.campaign(campaign_id)
    if record.status is CampaignStatus.RUNNING and runner_alive(record.runner_pid, record.runner_host):
        raise CampaignBusy(f"campaign {campaign_id} is being run by process {record.runner_pid}")
    recovered = store.recover(campaign_id, CRASH_REASON)
    for experiment in recovered:
        log.warning(
            "experiment %d was left %s; marked interrupted, not re-run", experiment.seq, experiment.status
        )
    if record.status is CampaignStatus.RUNNING:  # its runner died without closing the record
        store.set_campaign_status(campaign_id, CampaignStatus.INTERRUPTED, "the process running it stopped")
    store.set_campaign_status(campaign_id, CampaignStatus.RUNNING)
    return recovered


def run_campaign(
    store: Store,
    campaign_id: str,
    *,
    observer: Observer | None = None,
    simulator_command: Sequence[str] | None = None,
    guard: Callable[[Executor], AbstractContextManager[Any]] | None = None,
    optimizer: Any = None,
) -> RunResult:
    """Run (or continue) a campaign that is ``running`` in the store, and close its record.

    ``guard(executor)`` wraps the loop, e.g. to route Ctrl-C to :meth:`Executor.interrupt`.
    """
    campaign, base_dir = campaign_of(store, campaign_id)
    try:
        with LabSession(campaign.lab, base_dir, command=simulator_command) as lab:
            executor = Executor(
                store,
                campaign_id,
                campaign,
                base_dir=base_dir,
                devices=lab.devices,
                assignments=lab.assignments,
                observer=observer,
                optimizer=optimizer,
            )
            with guard(executor) if guard is not None else nullcontext():
                result = executor.run()
    except KeyboardInterrupt:
        _close(store, campaign_id, CampaignStatus.INTERRUPTED, "interrupted by the operator (Ctrl-C)")
        raise
    except BaseException as exc:
        _close(store, campaign_id, CampaignStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    _close(store, campaign_id, result.status, result.stop_reason)
    return result


def _close(store: Store, campaign_id: str, status: CampaignStatus, reason: str) -> None:
    # Anything still in flight after an abnormal exit (e.g. a second Ctrl-C) is marked, not left running.
    store.recover(campaign_id, reason)
    store.set_campaign_status(campaign_id, status, reason)
