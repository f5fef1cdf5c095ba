"""The bluesky documents are the record: every data key that has units says them, the derived results are
a stream of the run, and every experiment of a plan is a run whose stop says how it ended — all of it
valid event-model."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import pytest
from event_model import DocumentNames, schema_validators

from drivers.ophyd_support import UnitSignal
from sdl.execution.experiment import ExperimentRunner
from sdl.loop.lifecycle import start_campaign
from sdl.space.units import conversion
from sdl.spec.campaign import Campaign
from sdl.spec.loading import LoadedCampaign
from sdl.spec.status import ExperimentStatus
from sdl.store import Store
from sdl.store.schema import Decision

TESTS_DIR = Path(__file__).resolve().parent


def valid(documents: list[tuple[str, dict[str, Any]]]) -> None:
    for name, doc in documents:
        schema_validators[DocumentNames[name]].validate(doc)


def data_keys(documents: list[tuple[str, dict[str, Any]]], stream: str) -> dict[str, dict[str, Any]]:
    (descriptor,) = [d for n, d in documents if n == "descriptor" and d["name"] == stream]
    return descriptor["data_keys"]


# -- the demo, through the real drivers ----------------------------------------------------------------------

#: Keys that are counts or names, not quantities.
UNITLESS = {"spectrometer_mode", "spectrometer_averages", "water_pump_valve", "arm_location",
            "arm_robot_mode", "arm_safety_status", "arm_gripper_state", "arm_gripper_object_detected",
            "arm_gripper_finger_position", "arm_transfer_last"}  # fmt: skip


def test_every_quantity_in_the_demo_documents_has_its_units(demo_record):
    data, campaign_id = demo_record
    with Store(data, read_only=True) as store:
        campaign = Campaign.model_validate(store.campaign(campaign_id).spec)
        for e in store.experiments(campaign_id):
            documents = store.documents(e.id)
            valid(documents)
            keys: dict[str, dict[str, Any]] = {}
            values: dict[str, Any] = {}
            for name, doc in documents:
                if name == "descriptor":
                    keys.update(doc["data_keys"])
                    for device in doc.get("configuration", {}).values():
                        keys.update(device["data_keys"])
                        values.update(device["data"])
            missing = sorted(k for k, spec in keys.items() if not spec.get("units") and k not in UNITLESS)
            assert not missing, missing
            # The integration time reads 100000 us, which is the campaign's 100 ms.
            integration = keys["spectrometer_integration_time"]["units"]
            condition = campaign.conditions["integration_time"]
            converted = conversion(integration, condition.units)(values["spectrometer_integration_time"])
            assert converted == pytest.approx(condition.value)
            assert keys["dye_pumps_yellow_dispensed"]["units"] == "uL"
            assert keys["spectrometer_wavelengths"]["units"] == "nm"
            start = documents[0][1]
            assert start["conditions"]["integration_time"] == 100 and start["units"]["yellow"] == "µL"


def test_the_demo_results_are_a_stream_of_each_run(demo_record):
    data, campaign_id = demo_record
    with Store(data, read_only=True) as store:
        for e in store.experiments(campaign_id):
            documents = store.documents(e.id)
            keys = data_keys(documents, "results")
            assert keys["distance"]["units"] == "absorbance" and keys["distance"]["dtype"] == "number"
            assert keys["peak_absorbance"]["units"] == "absorbance"
            (descriptor,) = [d for n, d in documents if n == "descriptor" and d["name"] == "results"]
            (event,) = [d for n, d in documents if n == "event" and d["descriptor"] == descriptor["uid"]]
            assert event["data"] == e.measurements
            name, stop = documents[-1]
            assert name == "stop" and stop["exit_status"] == "success"
            assert stop["num_events"]["results"] == 1 and stop["num_events"]["primary"] >= 1


# -- failures are runs too -----------------------------------------------------------------------------------


def plan(recipe: dict[str, Any], devices: dict[str, Any], **options: Any) -> Generator[Any, Any, None]:
    x = recipe["x"]
    if x > 0.8:
        raise ValueError(f"x={x} cannot be made")  # the plan cannot even be built
    return steps(x)


def steps(x: float) -> Generator[Any, Any, None]:
    if x > 0.6:
        raise RuntimeError("the vial overflowed before the run opened")
    signal = UnitSignal(name="temperature", value=20.0 + x, metadata={"units": "degC"})
    yield from bps.open_run()
    yield from bps.trigger_and_read([signal])
    yield from bps.close_run()


def extract(documents: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    x = documents[0][1]["recipe"]["x"]
    if x > 0.4:
        raise ValueError("no peak in the spectrum")  # the run went well, its analysis did not
    return {"y": (x - 0.3) ** 2, "peak_nm": 520.0}


SPEC: dict[str, Any] = {
    "name": "runs",
    "parameters": [{"name": "x", "type": "real", "low": 0.0, "high": 1.0, "units": "mL"}],
    "objectives": [{"measurement": "y", "goal": "minimize", "units": "mL**2"}],
    "measurements": {"peak_nm": {"units": "nm"}},
    "conditions": {"temperature": {"value": 25, "units": "degC"}},
    "budget": {"max_experiments": 10},
    "procedure": {"plan": "test_run_documents:plan", "extractor": "test_run_documents:extract"},
}


#: An experiment at x = 0.2, stopped before it started.
STOPPED = -0.2


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[float, list[tuple[str, dict[str, Any]]]]:
    """Experiments at x = 0.1 (done), 0.5 (analysis failed), 0.7 (failed before its run opened), 0.9 (the
    plan could not be built) and one stopped before it started: each one's stored documents."""
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    campaign = Campaign.model_validate(SPEC)
    published: list[tuple[str, dict[str, Any]]] = []
    out = {}
    with Store(tmp_path / "data") as store:
        loaded = LoadedCampaign(campaign=campaign, path=tmp_path / "c.yaml", source="")
        campaign_id = start_campaign(store, loaded)
        decision = Decision(model="sobol", acquisition=None, acquisition_value=None, seconds=0.0)
        runner = ExperimentRunner(campaign, store, publish=lambda n, d: published.append((n, d)))
        try:
            for x in (0.1, 0.5, 0.7, 0.9, STOPPED):
                if x == STOPPED:
                    runner.abort("stopped by the operator")
                e = store.add_proposal(campaign_id, {"x": abs(x)}, decision)
                store.start_experiment(e.id)
                outcome = runner.run(store.experiment(e.id))
                store.finish_experiment(e.id, outcome.finish(), outcome.trailing_documents)
                out[x] = store.documents(e.id)
                assert store.experiment(e.id).status is {
                    0.1: ExperimentStatus.DONE,
                    STOPPED: ExperimentStatus.INTERRUPTED,
                }.get(x, ExperimentStatus.FAILED)
        finally:
            runner.close()
        every = [d for e in store.experiments(campaign_id) for d in store.documents(e.id)]
    # What the live publisher (Tiled, the lab's 0MQ proxy) was sent is what the store holds.
    assert [(n, d["uid"]) for n, d in published] == [(n, d["uid"]) for n, d in every]
    return out


def test_every_experiment_of_a_plan_is_a_run_whose_stop_says_how_it_ended(runs):
    for x, documents in runs.items():
        valid(documents)
        names = [name for name, _ in documents]
        assert names[0] == "start" and names[-1] == "stop" and names.count("start") == 1, (x, names)
        start, stop = documents[0][1], documents[-1][1]
        assert start["sdl_experiment"] and start["recipe"] == {"x": abs(x)}
        assert start["conditions"] == {"temperature": 25} and start["units"] == {
            "x": "mL",
            "temperature": "degC",
        }
        assert stop["run_start"] == start["uid"]
    assert runs[0.1][-1][1]["exit_status"] == "success"
    assert runs[0.5][-1][1]["exit_status"] == "fail"
    assert "no peak in the spectrum" in runs[0.5][-1][1]["reason"]
    assert runs[0.7][-1][1]["exit_status"] == "fail"
    assert "the vial overflowed before the run opened" in runs[0.7][-1][1]["reason"]
    assert [n for n, _ in runs[0.7]] == ["start", "stop"]
    assert "building the plan failed" in runs[0.9][-1][1]["reason"]
    assert runs[STOPPED][-1][1]["exit_status"] == "abort"
    assert runs[STOPPED][-1][1]["reason"] == "stopped by the operator"


def test_a_done_experiments_results_carry_the_declared_units(runs):
    documents = runs[0.1]
    keys = data_keys(documents, "results")
    assert keys == {
        "y": {"source": "sdl:results", "dtype": "number", "shape": [], "units": "mL**2"},
        "peak_nm": {"source": "sdl:results", "dtype": "number", "shape": [], "units": "nm"},
    }
    assert data_keys(documents, "primary")["temperature"]["units"] == "degC"
    assert documents[-1][1]["num_events"] == {"primary": 1, "results": 1}
    assert "results" not in {d.get("name") for n, d in runs[0.5] if n == "descriptor"}
