"""The demo campaign end to end: the sdl command, the real drivers, the simulated lab as a subprocess.

Nothing here is faked: `sdl run` starts the simulated bench from its lab file, connects the
NE-1000, Cavro, UR and Ocean drivers to the endpoints it prints, and runs each experiment as a
bluesky plan; what the spectrometer saw is computed by the simulated world from what the pumps
actually delivered into the vial the arm actually carried.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from sdl.spec.status import ExperimentStatus
from sdl.store import Store

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "experiments" / "color_matching" / "campaign.yaml"
# The console script's entry point, without relying on PATH.
SDL = [sys.executable, "-c", "import sys; from sdl.cli import main; sys.exit(main())"]


def sdl(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*SDL, *args], capture_output=True, text=True, timeout=300, **kwargs)


def campaign_copy(tmp_path: Path, **budget) -> Path:
    """The demo campaign with a smaller budget, next to a copy of its lab and target files."""
    spec = yaml.safe_load(CAMPAIGN.read_text())
    spec["budget"].update(budget)
    spec["lab"]["simulated"] = str(CAMPAIGN.parent / "lab.yaml")
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def only_campaign(data_dir: Path) -> str:
    with Store(data_dir) as store:
        (campaign,) = store.campaigns()
        return campaign.id


def test_demo_campaign_runs_through_the_drivers_and_improves(tmp_path):
    path = campaign_copy(tmp_path, max_experiments=8, stop_when={})
    data = tmp_path / "data"
    result = sdl("run", str(path), "--data-dir", str(data), "--seed", "3")
    assert result.returncode == 0, result.stderr
    campaign_id = only_campaign(data)

    with Store(data) as store:
        experiments = store.experiments(campaign_id)
        assert [e.status for e in experiments] == [ExperimentStatus.DONE] * 8
        distances = [e.measurements["distance"] for e in experiments]
        # The model's proposals (after the 6-point initial design) beat the initial design.
        assert min(distances[6:]) < min(distances[:6]), distances
        documents = store.documents(experiments[-1].id)

    # The record is the event-model documents of one run, with the spectrum the extractor read.
    names = [name for name, _ in documents]
    assert names[0] == "start" and names[-1] == "stop" and names.count("start") == 1
    start = documents[0][1]
    assert start["plan_name"] == "color_match" and set(start["recipe"]) == {"yellow", "red", "blue"}
    event = next(doc for name, doc in documents if name == "event")
    absorbance = np.asarray(event["data"]["spectrometer_absorbance"], dtype=float)
    assert absorbance.shape == (2068,)
    # The pumps' own counters agree with the recipe: what was asked is what was delivered.
    recipe = experiments[-1].recipe
    # A dye at 0 µL is skipped by the plan (below the pumps' resolution), and only the pumps that moved are
    # read with the spectrum: a pump's counter would still show its previous move.
    dispensed = [dye for dye in ("yellow", "red", "blue") if recipe[dye] > 0.05]
    assert dispensed
    read = {dye for dye in ("yellow", "red", "blue") if f"dye_pumps_{dye}_dispensed" in event["data"]}
    assert read == set(dispensed)
    for dye in dispensed:
        # The pumps take 4 significant digits: 305.406 µL goes out as 305.4.
        assert abs(event["data"][f"dye_pumps_{dye}_dispensed"] - recipe[dye]) <= 0.001 * recipe[dye] + 0.01

    export = tmp_path / "history.csv"
    result = sdl("export", campaign_id, "--format", "csv", "-o", str(export), "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    with export.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    assert {"yellow [µL]", "red [µL]", "blue [µL]", "distance [absorbance]", "status"} <= set(rows[0])


def test_ctrl_c_interrupts_the_experiment_in_flight_and_resume_finishes(tmp_path):
    path = campaign_copy(tmp_path, max_experiments=4, stop_when={})
    spec = yaml.safe_load(path.read_text())
    spec["lab"]["speed"] = 20  # slow enough that an experiment is surely in flight when SIGINT lands
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    data = tmp_path / "data"
    process = subprocess.Popen(
        [*SDL, "run", str(path), "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    running = False
    while not running and time.monotonic() < deadline and process.poll() is None:
        if Store.exists(data):
            with Store(data) as store:
                campaigns = store.campaigns()
                experiments = store.experiments(campaigns[0].id) if campaigns else []
                running = any(e.status is ExperimentStatus.RUNNING and e.seq == 2 for e in experiments)
        time.sleep(0.05)
    assert running, "the second experiment never started"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err

    campaign_id = only_campaign(data)
    with Store(data) as store:
        statuses = [e.status for e in store.experiments(campaign_id)]
    assert statuses[0] is ExperimentStatus.DONE and statuses[1] is ExperimentStatus.INTERRUPTED, statuses

    result = sdl("run", "--resume", campaign_id, "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    with Store(data) as store:
        experiments = store.experiments(campaign_id)
    done = [e for e in experiments if e.status is ExperimentStatus.DONE]
    # The interrupted experiment is never silently repeated: it stays interrupted, and the
    # budget is filled by new experiments.
    assert experiments[1].status is ExperimentStatus.INTERRUPTED
    assert len(done) == 4


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def test_kill_9_of_sdl_run_leaves_no_simulator_behind(tmp_path):
    path = campaign_copy(tmp_path, max_experiments=50, stop_when={})
    data = tmp_path / "data"
    process = subprocess.Popen(
        [*SDL, "run", str(path), "--data-dir", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    done = 0
    while done < 2 and time.monotonic() < deadline and process.poll() is None:
        if Store.exists(data):
            with Store(data) as store:
                campaigns = store.campaigns()
                experiments = store.experiments(campaigns[0].id) if campaigns else []
                done = sum(e.status is ExperimentStatus.DONE for e in experiments)
        time.sleep(0.05)
    assert done >= 2, "the campaign never got going"
    (simulator,) = [
        pid for pid in _children(process.pid) if b"simulators" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    process.kill()  # mid-campaign, no chance to clean up
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{simulator}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = Path(f"/proc/{simulator}").exists()
    if alive:
        os.kill(simulator, signal.SIGKILL)
    assert not alive, "the simulated lab outlived sdl"
