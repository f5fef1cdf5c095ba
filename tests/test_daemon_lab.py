"""The lab service on the simulated two-station lab (real drivers, byte-level simulators): shared
instruments used by one experiment at a time yet stations overlapping, the e-stop proven on the wire, and
a persistently failing instrument quarantined while the other station finishes the work."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_driver_contract import cavro_moves, ne1000_command, ur_moves

from sdl.api import models as m
from sdl.spec.campaign import fill
from sdl.spec.status import ExperimentStatus
from sdl.store import Store
from sdl.testing import LabServiceProcess, wait_for
from simulators.testing import run_lab

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
STATIONS = ROOT / "experiments" / "two_stations"


def colour_campaign(tmp_path: Path, name: str, budget: int, seed: int = 0) -> Path:
    spec = yaml.safe_load((ROOT / "experiments" / "color_matching" / "campaign.yaml").read_text())
    spec["name"] = name
    spec["budget"] = {"max_experiments": budget}
    spec["optimizer"]["seed"] = seed
    spec.pop("lab")  # the lab service runs it on its own workcells
    spec["requires"] = {"devices": ["dye_pumps", "water_pump", "arm", "spectrometer"]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def lab_file(tmp_path: Path, **changes: Any) -> Path:
    """The two-station lab, with its simulated bench changed (faults, speed) or replaced by addresses."""
    lab = yaml.safe_load((STATIONS / "lab.yaml").read_text())
    bench = yaml.safe_load((STATIONS / "bench.yaml").read_text())
    for instrument, faults in changes.pop("faults", {}).items():
        bench["instruments"][instrument]["faults"] = faults
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench, sort_keys=False))
    lab["simulated"] = str(tmp_path / "bench.yaml")
    lab.update(changes)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(lab, sort_keys=False))
    return path


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def finished(service: LabServiceProcess, campaign_id: str, timeout: float = 300) -> m.CampaignSummary:
    return wait_for(
        lambda: (
            (c := service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running" and c
        ),
        timeout,
        f"{campaign_id} to end",
    )


def test_two_campaigns_sharing_the_spectrometer_never_use_it_at_once(tmp_path: Path) -> None:
    """Asserted from the command journal: per instrument, no two experiments' commands interleave."""
    with LabServiceProcess(
        lab_file(tmp_path), tmp_path / "data", pythonpath=[TESTS, ROOT]
    ).start() as service:
        with service.client() as client:
            ids = [client.submit(colour_campaign(tmp_path, f"c{i}", 6, seed=i)).campaign_id for i in (1, 2)]
        for campaign_id in ids:
            assert finished(service, campaign_id).status == "completed"
        with Store(service.data_dir, read_only=True) as store:
            experiments = [e for i in ids for e in store.experiments(i)]
            journals = {e.id: store.journal(e.id) for e in experiments}
            provenance = {e.id: store.provenance(e.id) for e in experiments}
    # Every experiment's provenance names its workcell and the instruments it used, as they identified
    # themselves over their own protocols to that workcell's worker.
    for e in experiments:
        p = provenance[e.id]
        assert p is not None and p["workcell"] == e.workcell, e.seq
        assert len(p["lab"]["sha256"]) == 64 and p["software"]["sdl"]
        assert p["instruments"]["arm"]["identity"]["model"] == "UR5"
        assert p["instruments"]["spectrometer"]["identity"]["serial"]
        pumps = "pumps_a" if e.workcell == "station_a" else "pumps_b"
        assert p["instruments"][pumps]["identity"]["model"] == "NE1000"
    use: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for experiment_id, journal in journals.items():
        for instrument, periods in periods_of_use(journal).items():
            use[instrument] += [(start, end, experiment_id) for start, end in periods]
    assert {"spectrometer", "arm"} <= set(use)
    for instrument in ("spectrometer", "arm"):
        spans = sorted(use[instrument])
        for (_, end, first), (later_start, _, second) in itertools.pairwise(spans):
            assert end <= later_start, f"{instrument}: experiments {first} and {second} used it at once"
    # ... and yet the two stations worked at the same time.
    spans = [(stamp(e.started_at), stamp(e.finished_at), e.workcell) for e in experiments]
    overlap = sum(
        1 for a in spans for b in spans if a[2] != b[2] and a[0] < b[1] and b[0] < a[1]
    )  # fmt: skip
    assert overlap > 0, "the two stations never ran at once"
    assert {e.workcell for e in experiments} == {"station_a", "station_b"}


def periods_of_use(journal: list[Any]) -> dict[str, list[tuple[float, float]]]:
    """Per instrument, the spans of time over which one experiment sent it commands: one span per on-demand
    lease (between its 'granted' and 'released' lines), or the whole experiment for an instrument held
    throughout. A command to an on-demand instrument outside a lease fails the test."""
    leased_on_demand = {n for e in journal if e.entry == "granted" for n in (e.detail or "").split(", ")}
    open_: dict[str, list[float]] = {}
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for entry in journal:
        names = [n for n in (entry.detail or "").split(", ") if n]
        if entry.entry == "granted":
            open_.update({n: [] for n in names})
        elif entry.entry == "released":
            for n in names:
                times = open_.pop(n, [])
                if times:
                    out[n].append((min(times), max(times)))
        elif entry.instrument:
            if entry.instrument in leased_on_demand:
                assert entry.instrument in open_, f"{entry.command} to {entry.instrument} outside its lease"
                open_[entry.instrument].append(entry.at)
            else:
                open_.setdefault(f"held:{entry.instrument}", []).append(entry.at)
    for key, times in open_.items():
        if times:
            out[key.removeprefix("held:")].append((min(times), max(times)))
    return out


def wire(sim: Any, instrument: str) -> list[Any]:
    return sim.call(lambda: list(sim.lab.simulators[instrument].wire_log))


def test_estop_stops_every_moving_instrument_on_the_wire_and_holds_the_lab(tmp_path: Path) -> None:
    """The simulated lab runs in this process (its wire log is readable); the service gets its addresses."""
    bench = yaml.safe_load((STATIONS / "bench.yaml").read_text())
    with run_lab({**bench, "speed": 5}) as sim:
        lab = yaml.safe_load((STATIONS / "lab.yaml").read_text())
        lab.pop("simulated")
        lab.pop("speed")
        for spec in lab["instruments"].values():
            spec["address"] = fill(spec["address"], sim.urls)
        lab["instruments"]["arm"]["options"]["unlock_delay"] = 1.0
        path = tmp_path / "lab.yaml"
        path.write_text(yaml.safe_dump(lab, sort_keys=False))
        with LabServiceProcess(path, tmp_path / "data", pythonpath=[TESTS, ROOT]).start() as service:
            with service.client() as client:
                campaign_id = client.submit(colour_campaign(tmp_path, "estop", 6)).campaign_id

                def dispensing() -> bool:
                    with Store(service.data_dir, read_only=True) as store:
                        running = [
                            e for e in store.experiments(campaign_id) if e.status is ExperimentStatus.RUNNING
                        ]
                        return any(
                            j.command == "set" and j.instrument == "pumps_a"
                            for e in running
                            for j in store.journal(e.id)
                        )

                wait_for(dispensing, 120, "station_a's pumps to be dispensing")
                moment = time.monotonic()
                client.call(m.EStop(reason="spill on the bench"))
                wait_for(
                    lambda: all(
                        e.status != "running"
                        for e in client.call(m.ListExperiments(campaign_id=campaign_id)).experiments
                    ),
                    60,
                    "every experiment in flight to end",
                )
                held_from = client.call(m.EventsSince(seq=0, limit=1)).last
                status = client.call(m.Status())
                assert status.estop.active and status.estop.reason == "spill on the bench"
                # The lab holds: nothing starts until the e-stop is cleared.
                stopped = [e for e in client.call(m.ListExperiments(campaign_id=campaign_id)).experiments]
                assert [(e.status, e.cause) for e in stopped if e.status == "interrupted"] != []
                assert all(e.cause == "estop" for e in stopped if e.status == "interrupted")
                started = [e for e in client.call(m.EventsSince(seq=held_from, limit=1000)).events
                           if e.topic == "experiment.started"]  # fmt: skip
                assert started == []

                # On the wire: the pumps got their stop promptly, and nothing moved afterwards.
                pumps = wire(sim, "pumps_a")
                stops = [r for r in pumps if r.time >= moment and ne1000_command(r) == "STP"]
                assert stops, "no STP reached the station's pumps"
                assert stops[0].time - moment < 10.0  # a generous bound; the measured figure is in the notes
                for instrument, moves in (("pumps_a", lambda r: ne1000_command(r) in ("RUN", "PUR")),
                                          ("water_a", cavro_moves), ("arm", ur_moves)):  # fmt: skip
                    late = [r for r in wire(sim, instrument) if r.time > stops[0].time + 0.5 and moves(r)]
                    assert late == [], f"{instrument} was told to move after the e-stop: {late[:3]}"

                client.call(m.ClearEStop())
                assert finished(service, campaign_id).status == "completed"
            with Store(service.data_dir, read_only=True) as store:
                actions = [(a.action, a.result) for a in store.audit_log()]
            assert ("lab.estop", "ok") in actions and ("lab.clear_estop", "ok") in actions


def test_a_persistently_failing_instrument_is_quarantined_and_the_other_station_finishes(
    tmp_path: Path,
) -> None:
    path = lab_file(tmp_path, faults={"pumps_b": "stall%1"})
    service = LabServiceProcess(path, tmp_path / "data", pythonpath=[TESTS, ROOT])
    with service.start(), service.client() as client:
        campaign_id = client.submit(colour_campaign(tmp_path, "stalls", 8)).campaign_id
        summary = finished(service, campaign_id)
        instruments = {i.name: i for i in client.call(m.ListInstruments()).instruments}
        cells = {w.name: w for w in client.call(m.ListWorkcells()).workcells}
        history = client.call(m.ListExperiments(campaign_id=campaign_id)).experiments
    assert summary.status == "completed" and summary.spent == 8
    assert instruments["pumps_b"].state == "quarantined"
    assert "experiments in a row lost to it" in (instruments["pumps_b"].reason or "")
    assert cells["station_b"].state == "blocked" and cells["station_b"].blocked_by == ["pumps_b"]
    faulted = [e for e in history if e.status == "faulted"]
    assert len(faulted) == 3 and {e.fault_instrument for e in faulted} == {"pumps_b"}
    assert {e.workcell for e in history if e.status == "done"} == {"station_a"}
    # The optimizer never saw an instrument fault as a failure: no failures at all, and no decision counted
    # a faulted experiment among its observations.
    assert [e for e in history if e.status == "failed"] == []
    done_before = {e.id: sum(1 for d in history if d.status == "done" and d.id < e.id) for e in history}
    for e in history:
        assert e.decision is None or e.decision.n_observations <= done_before[e.id]


@pytest.mark.parametrize("instrument", ["spectrometer"])
def test_quarantining_a_shared_instrument_blocks_both_stations_until_released(
    tmp_path: Path, instrument: str
) -> None:
    with (
        LabServiceProcess(lab_file(tmp_path), tmp_path / "data", pythonpath=[TESTS, ROOT]).start() as service,
        service.client() as client,
    ):
        client.call(m.QuarantineInstrument(name=instrument, reason="lamp replaced"))
        campaign_id = client.submit(colour_campaign(tmp_path, "waits", 2)).campaign_id
        states = lambda: {c.state for c in client.call(m.ListWorkcells()).workcells}  # noqa: E731
        wait_for(lambda: states() == {"blocked"}, 60, "both stations to say they are blocked")
        assert client.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.spent == 0
        client.call(m.ReleaseInstrument(name=instrument, check=True))
        assert finished(service, campaign_id).status == "completed"


FAULTS_5 = {
    "pumps_a": "drop%0.05,garble%0.05,stall%0.05",
    "pumps_b": "drop%0.05,garble%0.05,stall%0.05",
    "water_a": "drop%0.05,garble%0.05",
    "water_b": "drop%0.05,garble%0.05",
    "arm": "drop%0.05,garble%0.05,protective-stop%0.05",
    "spectrometer": "drop%0.05,garble%0.05",
}


def test_with_five_percent_faults_everywhere_the_budget_completes_as_real_results(tmp_path: Path) -> None:
    """Link drops, garbled replies, pump stalls and protective stops at 5 % each, over two workcells."""
    budget = 20
    path = lab_file(tmp_path, faults=FAULTS_5)
    service = LabServiceProcess(path, tmp_path / "data", pythonpath=[TESTS, ROOT])
    with service.start(), service.client() as client:
        campaign_id = client.submit(colour_campaign(tmp_path, "faulty", budget)).campaign_id
        summary = finished(service, campaign_id, timeout=900)
        history = client.call(m.ListExperiments(campaign_id=campaign_id)).experiments
        instruments = client.call(m.ListInstruments()).instruments
    done = [e for e in history if e.status == "done"]
    failed = [e for e in history if e.status == "failed"]
    assert summary.status == "completed" and summary.spent == budget
    assert len(done) >= 0.99 * budget, [e.failure for e in failed]
    # Whatever the instruments could not absorb is on record as theirs, never as the recipe's.
    for e in history:
        if e.status == "faulted":
            assert e.fault_instrument in FAULTS_5 and e.fault_kind, e
    assert sum(i.retries for i in instruments) > 0, "the faults were injected and absorbed"
