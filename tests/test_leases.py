"""On-demand leases: a plan never waits on a lease its own experiment holds, a campaign that names a device
it is not handed is refused before it runs, and a request that waits longer than a few seconds is logged
with who holds what it waits for."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from bluesky.utils import Msg

from sdl.access.keys import KeyRing
from sdl.daemon import protocol as p
from sdl.daemon.leases import LONG_WAIT_S, LeaseGrants
from sdl.daemon.state import LabState
from sdl.execution.experiment import ExperimentRunner
from sdl.plans import LEASE, RELEASE
from sdl.spec.campaign import Campaign
from sdl.spec.lab import LabSpec
from sdl.spec.loading import CampaignError, load_campaign_text
from sdl.store import Decision, Store

DECISION = Decision(model="gp", acquisition="ei", acquisition_value=0.1, seconds=0.01)
LAB = LabSpec.model_validate(
    {
        "name": "shared",
        "instruments": {"m1": {"driver": "daemon_procedures:make_motor", "address": "none"}},
        "workcells": {"w1": {"devices": {"motor": "m1"}}, "w2": {"devices": {"motor": "m1"}}},
    }
)


def campaign_text(**procedure: Any) -> str:
    spec = {
        "name": "leasing",
        "parameters": [{"name": "x", "type": "real", "low": 0.0, "high": 1.0}],
        "objectives": [{"measurement": "loss"}],
        "budget": {"max_experiments": 2},
        "procedure": {"plan": "daemon_procedures:move_and_read", "extractor": "daemon_procedures:plan_loss"}
        | procedure,
        "requires": {"devices": ["motor", "probe"]},
    }
    return yaml.safe_dump(spec, sort_keys=False)


def test_a_device_to_lease_on_demand_that_the_plan_is_not_handed_is_named_with_those_it_is() -> None:
    with pytest.raises(CampaignError) as refused:
        load_campaign_text(campaign_text(lease_on_demand=["motor", "prbe"]), "c.yaml", check_imports=False)
    assert refused.value.problems == [
        "c.yaml:16: procedure.lease_on_demand[1]: unknown device 'prbe' (the plan's devices: motor, probe)"
    ]


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str | None]] = []

    def journal_entry(self, experiment_id: int, entry: str, command: str, **kw: Any) -> int:
        self.lines.append((entry, kw.get("detail")))
        return len(self.lines)


class Leasing:
    def __init__(self) -> None:
        self.asked: list[list[str]] = []
        self.released: list[list[str]] = []

    async def acquire(self, experiment_id: int, instruments: list[str]) -> None:
        self.asked.append(instruments)

    async def release(self, experiment_id: int, instruments: list[str]) -> None:
        self.released.append(instruments)


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_a_plan_asks_only_for_what_it_leases_on_demand_never_for_what_its_experiment_holds() -> None:
    """Leasing [motor, probe] with only the motor on demand: the probe is the experiment's all along (leased
    with `running`), so asking the lab service for it would wait on a lease the experiment itself holds."""
    campaign = Campaign.model_validate(
        yaml.safe_load(campaign_text(lease_on_demand=["motor"], plan="daemon_procedures:move_and_read"))
    )
    leasing, recorder = Leasing(), Recorder()
    runner = ExperimentRunner(
        campaign, recorder, devices={"motor": Named("m1"), "probe": Named("p1")}, leasing=leasing
    )
    runner._experiment_id = 7
    asyncio.run(runner._lease_command(Msg(LEASE, None, Named("m1"), Named("p1"))))
    asyncio.run(runner._release_command(Msg(RELEASE, None, Named("m1"), Named("p1"))))
    assert leasing.asked == [["m1"]] and leasing.released == [["m1"]]
    assert ("granted", "m1") in recorder.lines


def test_a_long_wait_for_a_lease_is_logged_with_who_holds_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Store(tmp_path / "data") as store:
        store.ensure_instruments(LAB.instruments)
        campaign_id = store.create_campaign(name="c", spec={}, seed=0, max_experiments=10)
        holder = store.add_proposal(campaign_id, {"x": 0.1}, DECISION, workcell="w1")
        store.start_experiment(holder.id, workcell="w1", instruments=["m1"])
        waiter = store.add_proposal(campaign_id, {"x": 0.2}, DECISION, workcell="w2")
        store.start_experiment(waiter.id, workcell="w2")
        state = LabState(LAB, store, "daemon:test", KeyRing(tmp_path / "keys.yaml"), curve=False)
        grants = LeaseGrants(state)
        grants.request(
            state.cells["w2"], p.LeaseRequest(request=1, experiment_id=waiter.id, instruments=["m1"])
        )
        (waiting,) = grants.waiting
        caplog.set_level(logging.WARNING, "sdl.daemon")
        for seconds in (0.0, LONG_WAIT_S - 1, LONG_WAIT_S + 1, LONG_WAIT_S + 2, 2 * LONG_WAIT_S + 3):
            grants.tick(waiting.since + seconds)
    expected = (
        f"workcell w2: experiment id {waiter.id} has waited {{:.0f}} s for m1: m1 is leased to experiment id "
        f"{holder.id} on w1"
    )
    assert caplog.messages == [expected.format(LONG_WAIT_S + 1), expected.format(2 * LONG_WAIT_S + 3)]
