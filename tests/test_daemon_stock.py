"""The lab service on a finite two-station bench: a station whose syringe runs short waits with a refill
task while the other carries on; a person refills it (the bench's hands, then the task done) and it runs
again without a restart; every experiment's consumption is booked, with its lot, as the pumps reported it."""

from __future__ import annotations

import copy
import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_daemon_lab import colour_campaign, finished

from sdl.api import models as m
from sdl.cli import main
from sdl.spec.campaign import fill
from sdl.spec.status import ExperimentStatus
from sdl.store import Store
from sdl.testing import LabServiceProcess, wait_for
from simulators.hands import HandsClient
from simulators.testing import run_lab

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
STATIONS = ROOT / "experiments" / "two_stations"
#: What station A's red syringe holds at the start: a few experiments' worth (the recipes ask 0-500 uL).
SHORT_UL = 700.0
#: The NE-1000's volume resolution over this syringe, and then some: what the pump reports it delivered.
RESOLUTION_UL = 1.0
RACK = 1000


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def bench_and_lab(tmp_path: Path, sim: Any) -> Path:
    """The two-station lab file pointed at ``sim``, its inventory saying what the bench holds."""
    lab = yaml.safe_load((STATIONS / "lab.yaml").read_text())
    lab.pop("simulated")
    lab.pop("speed")
    for spec in lab["instruments"].values():
        spec["address"] = fill(spec["address"], sim.urls)
    lab["inventory"]["pumps_a"] = copy.deepcopy(lab["inventory"]["pumps_a"])  # a YAML alias of pumps_b's
    lab["inventory"]["pumps_a"]["red"].update(amount=SHORT_UL, lot="R-1")
    lab["inventory"]["arm"] = {"feeder": {"amount": RACK, "unit": "vials", "lot": "V-1"}}  # pairs vials
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(lab, sort_keys=False))
    return path


def short_bench() -> dict[str, Any]:
    bench = yaml.safe_load((STATIONS / "bench.yaml").read_text())
    bench["speed"] = 200
    red_a = next(p for p in bench["instruments"]["pumps_a"]["pumps"] if p["reagent"] == "red")
    red_a["fill_ul"] = SHORT_UL
    red_a["reagent"] = "red_a"  # its own bottle, of lot R-1 (station B's red is another)
    bench["world"]["stocks"]["red_a"] = {**bench["world"]["stocks"]["red"], "lot": "R-1"}
    for dye in ("yellow", "red", "blue"):
        bench["world"]["stocks"][dye]["lot"] = "sim-world-7"  # as the lab file records them
    bench["world"]["stations"]["feeder"].update(count=RACK, lot="V-1")
    return bench


def test_a_station_short_of_dye_waits_for_a_refill_while_the_other_carries_on(tmp_path: Path) -> None:
    with run_lab(short_bench()) as sim:
        hands = HandsClient(sim.url("bench.hands"))
        path = bench_and_lab(tmp_path, sim)
        data = tmp_path / "data"
        with LabServiceProcess(path, data, pythonpath=[TESTS, ROOT]).start() as service:
            with service.client() as client:
                campaign_id = client.submit(colour_campaign(tmp_path, "finite", 14)).campaign_id
            task = wait_for(lambda: next(iter(service.call(m.ListTasks()).tasks), None), 300, "a refill task")
            assert (task.kind, task.instrument, task.consumable, task.workcell) == (
                "refill", "pumps_a", "red", "station_a"
            ), task  # fmt: skip
            opened = stamp(task.opened_at)
            alerts = service.call(m.Status()).alerts
            assert any(a.key == f"task:{task.id}" and a.kind == "task" for a in alerts), alerts

            def after_opening() -> list[Any]:
                experiments = service.call(m.ListExperiments(campaign_id=campaign_id)).experiments
                return [e for e in experiments if e.started_at and stamp(e.started_at) > opened]

            # Station B carries on; station A starts nothing while its task is open.
            wait_for(
                lambda: (
                    sum(e.workcell == "station_b" and e.status != "running" for e in after_opening()) >= 2
                ),
                300,
                "station B to finish two experiments after the task opened",
            )
            assert not [e for e in after_opening() if e.workcell == "station_a"]
            assert service.call(m.ListTasks()).tasks[0].state == "open"

            # A person refills the syringe from a new bottle, then says so.
            hands.replace_syringe("pumps_a:red_a", 5000.0, lot="R-2")
            done_argv = [
                "--data-dir",
                str(data),
                "task",
                "done",
                str(task.id),
                "--amount",
                "5000",
                "--lot",
                "R-2",
            ]
            assert main(done_argv) == 0
            summary = finished(service, campaign_id, 600)
            assert summary.status == "completed", summary
            done = service.call(m.ListTasks(all=True)).tasks
            closed = next(t for t in done if t.id == task.id)
            assert closed.state == "done" and closed.outcome and closed.outcome["lot"] == "R-2"
            stock = next(s for s in service.call(m.ListInventory()).stocks if (s.instrument, s.consumable) ==
                         ("pumps_a", "red"))  # fmt: skip
        truth = hands.state()
        vials = hands.vials()
    with Store(data, read_only=True) as store:
        experiments = store.experiments(campaign_id)
        consumption = {e.id: store.stock_changes(experiment_id=e.id) for e in experiments}
        feeder = ("arm", "feeder", "consume")
        picks = [
            c.experiment_id for c in store.stock_changes() if (c.instrument, c.consumable, c.change) == feeder
        ]
    # Nothing lost to the empty syringe: every experiment ran to a result.
    lost = [
        (e.seq, e.workcell, e.status.value, e.failure)
        for e in experiments
        if e.status is not ExperimentStatus.DONE
    ]
    assert not lost, lost
    # Station A ran again after the refill, without a restart.
    assert closed.closed_at is not None
    again = [e for e in experiments if e.workcell == "station_a" and stamp(e.started_at or "") > stamp(
        closed.closed_at)]  # fmt: skip
    assert again, "station A never ran again after its refill"
    # Every dispense booked against its experiment, as the pump reported it, with the lot it came from.
    for e in experiments:
        pumps = "pumps_a" if e.workcell == "station_a" else "pumps_b"
        booked = {c.consumable: c for c in consumption[e.id] if c.instrument == pumps}
        for dye in ("yellow", "red", "blue"):
            asked = e.recipe[dye]
            if asked <= 0.05:
                assert dye not in booked, (e.seq, dye)
                continue
            assert booked[dye].amount == pytest.approx(asked, abs=RESOLUTION_UL), (e.seq, dye)
        if e.workcell == "station_a" and "red" in booked:
            refilled = stamp(e.started_at or "") > stamp(closed.closed_at)
            assert booked["red"].lot == ("R-2" if refilled else "R-1"), e.seq
    # The record against the bench's own accounting, experiment by experiment: the arm's picks pair each with
    # its vial; what the vial received of each dye, and from which lot, is what was booked.
    assert sorted(picks) == sorted(e.id for e in experiments) and len(vials) == len(picks)
    for experiment_id, vial in zip(picks, vials, strict=True):
        received: dict[tuple[str, str], float] = {}
        for origin, volume in vial["sources"].items():
            source, _, lot = origin.partition("@")
            if source != "water" and volume > 0.05:
                dye = "red" if source == "red_a" else source
                received[(dye, lot)] = received.get((dye, lot), 0.0) + volume
        booked_lots = {(c.consumable, c.lot or ""): c.amount for c in consumption[experiment_id]
                       if c.instrument.startswith("pumps")}  # fmt: skip
        assert booked_lots.keys() == received.keys(), (experiment_id, booked_lots, received)
        for key, volume in received.items():
            assert booked_lots[key] == pytest.approx(volume, abs=RESOLUTION_UL), (experiment_id, key)
        assert vial["lot"] == "V-1"
    # Every export carries the raw materials: what each experiment used, with its lots.
    table = tmp_path / "finite.csv"
    assert main(["--data-dir", str(data), "export", campaign_id, "--format", "csv", "-o", str(table)]) == 0
    with table.open(encoding="utf-8") as f:
        rows = {int(r["experiment"]): r for r in csv.DictReader(f)}
    for e in experiments:
        if e.workcell == "station_a" and "red" in (booked := {c.consumable: c for c in consumption[e.id]}):
            assert (
                f"pumps_a.red {booked['red'].amount:g} uL ({booked['red'].lot})"
                in rows[e.seq]["raw_materials"]
            )
    package = tmp_path / "package"
    assert (
        main(["--data-dir", str(data), "export", campaign_id, "--format", "datapackage", "-o", str(package)])
        == 0
    )
    fields = json.loads((package / "datapackage.json").read_text())["resources"][0]["schema"]["fields"]
    assert next(f for f in fields if f["name"] == "raw_materials")["stage"] == "raw_material"
    assert main(["--data-dir", str(tmp_path / "elsewhere"), "import", str(package)]) == 0
    # The record's figure is the bench's own, within the pump's resolution.
    syringe = truth["instruments"]["pumps_a"]["syringes"]["1"]
    assert stock.amount == pytest.approx(syringe["liquid_ul"], abs=RESOLUTION_UL), (stock, syringe)
    assert stock.lot == "R-2"


def test_a_greedy_recipe_that_needs_more_than_a_stock_can_hold_fails_instead_of_waiting(
    tmp_path: Path,
) -> None:
    """A feeder holds at most 10 vials; recipes with x above 0.5 need 12. No refill could cover them: they end
    failed (learned by the optimizer), no task is opened for them, and the campaign runs to its end."""
    (tmp_path / "greedy_needs.py").write_text(
        "def needs(recipe, **options):\n    return {'motor.feeder': 12 if recipe['x'] > 0.5 else 1}\n"
    )
    (tmp_path / "lab.yaml").write_text(
        "name: feeders\nworkers: {heartbeat_timeout: 5}\n"
        "instruments:\n  motor: {driver: 'daemon_procedures:make_motor', address: none}\n"
        "workcells:\n  w1: {devices: {motor: motor}}\n"
        "inventory:\n  motor:\n    feeder: {amount: 10, unit: vials, capacity: 10, lot: V-1}\n"
    )
    campaign = tmp_path / "greedy.yaml"
    campaign.write_text(
        "name: greedy\n"
        "parameters:\n  - {name: x, type: real, low: 0.0, high: 1.0}\n"
        "  - {name: y, type: real, low: 0.0, high: 1.0}\n"
        "objectives: [{measurement: loss}]\nbudget: {max_experiments: 6}\n"
        "optimizer: {kind: random, seed: 4}\n"
        "requires: {devices: [motor]}\n"
        "procedure:\n  plan: daemon_procedures:move_and_read\n  extractor: daemon_procedures:plan_loss\n"
        "  needs: greedy_needs:needs\n"
    )
    with LabServiceProcess(tmp_path / "lab.yaml", tmp_path / "data", pythonpath=[TESTS, ROOT]).start() as lab:
        with lab.client() as client:
            reply = client.submit(campaign)
        assert any("more than it holds at most (10 vials)" in note for note in reply.notes), reply.notes
        summary = finished(lab, reply.campaign_id, 300)
        experiments = lab.call(m.ListExperiments(campaign_id=reply.campaign_id)).experiments
        tasks = lab.call(m.ListTasks(all=True)).tasks
    assert summary.status == "completed" and summary.spent == 6, summary
    greedy = [e for e in experiments if e.recipe["x"] > 0.5]
    assert greedy, "the random proposer never asked for 12 vials"
    for e in greedy:
        assert e.status == "failed" and e.started_at is None, e
        assert e.failure == (
            "the lab cannot hold what it needs: "
            "motor.feeder: needs 12 vials, more than it holds at most (10 vials)"
        )
    assert all(e.status == "done" for e in experiments if e.recipe["x"] <= 0.5)
    assert tasks == []  # while 10 vials cover the modest ones, nobody is asked for anything
