"""The two-station lab under injected faults of every kind, end to end: real drivers, byte-level simulators,
the lab service and its workers as separate processes.

Every instrument (the Cavro water pumps and the Ocean HDX included) fails 5 % of its opportunities in each
of its own ways and 5 % of its replies in each way a link can (a drop, a garbled byte, half a reply, no
reply). The whole budget must still end as real results: what the drivers cannot absorb ends faulted (not
spent, not learnt), the instrument is recovered and checked, and every quarantine is released by recovery
without a person. A permanently broken instrument is quarantined for good, and the workcell that does not
need it finishes the work. The faults are drawn from a seed, so a run sees the same faults at the same
opportunities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from test_daemon_lab import TESTS, colour_campaign, finished

from sdl.api import models as m
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
STATIONS = ROOT / "experiments" / "two_stations"
INSTRUMENTS = ("pumps_a", "pumps_b", "water_a", "water_b", "arm", "spectrometer")
EVERY_FAULT = "instrument%0.05,link%0.05"

pytestmark = pytest.mark.slow


def faulty_lab(tmp_path: Path, faults: dict[str, str], seed: int) -> Path:
    """The two-station lab with ``faults`` on its simulated bench, drawn from ``seed``; health checks soon
    after a quarantine, so that recovery is seen within the test, and they give up after four failures."""
    lab = yaml.safe_load((STATIONS / "lab.yaml").read_text())
    bench = yaml.safe_load((STATIONS / "bench.yaml").read_text())
    bench["faults_seed"] = seed
    # 60 mL dye syringes: experiments lost to faults still dispense, and a budget's worth of them would
    # run 10 mL syringes dry (the simulated plunger then stalls at the end of its travel, as a real one does).
    for pumps in ("pumps_a", "pumps_b"):
        for pump in bench["instruments"][pumps]["pumps"]:
            pump.update(diameter_mm=26.59, syringe_volume_ul=60000)
        for pump in lab["instruments"][pumps]["options"]["pumps"].values():
            pump.update(diameter_mm=26.59, syringe_volume_ul=60000)
        stocks = lab["inventory"][pumps].items()
        lab["inventory"][pumps] = {dye: {**s, "amount": 60000, "capacity": 60000} for dye, s in stocks}
    for instrument, spec in faults.items():
        bench["instruments"][instrument]["faults"] = spec
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench, sort_keys=False))
    lab["simulated"] = str(tmp_path / "bench.yaml")
    # Faults this frequent quarantine the NE-1000s (a power cycle at 5 % of commands loses about half
    # their experiments) over and over: this lab trusts its drivers' recovery, and does not ration it.
    lab["health"] = {"quarantine_after": 3, "recheck_after": 0.5, "max_rechecks": 4, "max_auto_releases": 100}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(lab, sort_keys=False))
    return path


def instrument_states(events: list[m.EventRecord]) -> dict[str, list[str]]:
    """Each instrument's states in the order the service announced them."""
    out: dict[str, list[str]] = {}
    for event in events:
        if event.topic == "instrument.state":
            out.setdefault(event.body["instrument"], []).append(event.body["state"])
    return out


def all_events(client: Any) -> list[m.EventRecord]:
    events: list[m.EventRecord] = []
    while True:
        page = client.call(m.EventsSince(seq=events[-1].seq if events else 0, limit=1000)).events
        if not page:
            return events
        events += page


def test_every_fault_everywhere_the_budget_completes_and_every_quarantine_recovers(tmp_path: Path) -> None:
    budget = 12
    path = faulty_lab(tmp_path, dict.fromkeys(INSTRUMENTS, EVERY_FAULT), seed=5)
    service = LabServiceProcess(path, tmp_path / "data", pythonpath=[TESTS, ROOT])
    with service.start(), service.client() as client:
        campaign_id = client.submit(colour_campaign(tmp_path, "faulty", budget)).campaign_id
        summary = finished(service, campaign_id, timeout=900)
        history = client.call(m.ListExperiments(campaign_id=campaign_id)).experiments
        # Whatever was taken out of service comes back by itself once it is recovered and checked.
        wait_for(
            lambda: all(i.state == "ok" for i in client.call(m.ListInstruments()).instruments),
            300,
            "every instrument back in service",
        )
        instruments = client.call(m.ListInstruments()).instruments
        events = all_events(client)
        status = client.call(m.Status())
    done = [e for e in history if e.status == "done"]
    assert summary.status == "completed" and summary.spent == budget
    assert len(done) == budget, [(e.status, e.failure) for e in history if e.status == "failed"]
    assert all(e.measurements and e.loss is not None for e in done)
    faulted = [e for e in history if e.status == "faulted"]
    for e in faulted:  # on record as the instrument's, named, with the driver's fault kind
        assert e.fault_instrument in INSTRUMENTS and e.fault_kind, e
    # The faults were really there: every instrument absorbed some, or lost an experiment to one.
    absorbed = {i.name for i in instruments if i.retries > 0} | {e.fault_instrument for e in faulted}
    assert absorbed == set(INSTRUMENTS), absorbed
    # Every instrument taken out of service came back by recovery (no operator released anything).
    for name, states in instrument_states(events).items():
        assert states[-1] == "ok", (name, states)
    assert not [e for e in events if e.topic == "lab.alert" and e.body.get("active")]
    assert status.alerts == []


def test_a_permanently_broken_instrument_is_quarantined_and_the_other_station_finishes(
    tmp_path: Path,
) -> None:
    faults = dict.fromkeys(INSTRUMENTS, EVERY_FAULT)
    faults["water_b"] = "init-failure%1"  # it never initialises again: neither in use nor in recovery
    budget = 8
    service = LabServiceProcess(
        faulty_lab(tmp_path, faults, seed=3), tmp_path / "data", pythonpath=[TESTS, ROOT]
    )
    with service.start(), service.client() as client:
        campaign_id = client.submit(colour_campaign(tmp_path, "broken", budget)).campaign_id
        summary = finished(service, campaign_id, timeout=900)
        history = client.call(m.ListExperiments(campaign_id=campaign_id)).experiments
        # The automatic re-checks back off, give up, and say so where a person looks.
        status = wait_for(
            lambda: (s := client.call(m.Status())).alerts and s, 300, "an alert that water_b needs a person"
        )
        events = all_events(client)
    instruments = {i.name: i for i in status.instruments}
    cells = {w.name: w for w in status.workcells}
    assert summary.status == "completed" and summary.spent == budget
    assert {e.workcell for e in history if e.status == "done"} == {"station_a"}
    assert instruments["water_b"].state == "quarantined"
    assert cells["station_b"].state == "blocked" and cells["station_b"].blocked_by == ["water_b"]
    [alert] = status.alerts
    assert alert.kind == "instrument" and alert.subject == "water_b", alert
    assert any(e.topic == "lab.alert" and e.body["subject"] == "water_b" for e in events)
    # Station B's experiments were lost to water_b, or to the 5 % faults every instrument has (a pump's
    # power cycle mid-dispense), never blamed on station A's instruments.
    blamed = {e.fault_instrument for e in history if e.workcell == "station_b" and e.status == "faulted"}
    assert "water_b" in blamed and blamed <= {"pumps_b", "water_b", "arm", "spectrometer"}, blamed
