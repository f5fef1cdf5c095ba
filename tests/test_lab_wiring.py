"""Lab wiring: the simulated-lab subprocess, driver factories, and bluesky-plan campaigns over ophyd devices.

The fake factory, device and plans below are referenced from campaign files by import path
(``test_lab_wiring:make_pump``), exactly as real drivers and procedures are.
"""

from __future__ import annotations

import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import pytest
from ophyd import Component, Device, Signal
from ophyd.status import DeviceStatus

from sdl.execution.bringup import LabError, LabSession, SimulatedLab
from sdl.loop.foreground import run_campaign
from sdl.loop.lifecycle import start_campaign
from sdl.spec.loading import load_campaign
from sdl.spec.status import CampaignStatus, ExperimentStatus
from sdl.store import Store

TESTS_DIR = Path(__file__).resolve().parent

# -- what campaign files in these tests point at -------------------------------------------------------


class FakePump(Device):
    """A pump-like ophyd device: set(volume) dispenses; with hold=True a move never ends until stop()."""

    volume = Component(Signal, value=0.0, kind="hinted")

    def __init__(
        self,
        *args: Any,
        address: Any = None,
        hold: bool = False,
        marker: str = "",
        capacity: float = 100.0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.address = address
        self.hold = hold
        self.capacity = capacity
        self.marker = Path(marker) if marker else None
        self.moving = threading.Event()
        self.stopped = threading.Event()
        self.destroyed = False
        self._pending: DeviceStatus | None = None

    def set(self, value: float) -> DeviceStatus:
        status = DeviceStatus(self)
        if value > self.capacity:
            status.set_exception(ValueError(f"{value:.2f} uL exceeds the {self.capacity:g} uL syringe"))
        elif self.hold:
            self._pending = status
            self._note("moving")
            self.moving.set()
        else:
            self.volume.put(float(value))
            status.set_finished()
        return status

    def stop(self, *, success: bool = False) -> None:
        self.stopped.set()
        self._note("stopped")
        if self._pending is not None and not self._pending.done:
            self._pending.set_exception(RuntimeError("pump stopped"))

    def connect(self) -> None:
        """Built offline, connected by sdl (decision 0003): this is where a real driver opens its port."""
        CREATED[self.name] = self
        PUMP_MADE.set()

    def disconnect(self) -> None:
        pass

    def destroy(self) -> None:
        self.destroyed = True
        super().destroy()

    def _note(self, what: str) -> None:
        if self.marker is not None:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            (self.marker.parent / f"{self.marker.name}.{what}").write_text(what)


CREATED: dict[str, FakePump] = {}
PUMP_MADE = threading.Event()


def make_pump(name: str, address: Any, **options: Any) -> FakePump:
    return FakePump(name=name, address=address, **options)


class UnreachablePump(FakePump):
    def connect(self) -> None:
        raise ConnectionRefusedError(f"nothing listens at {self.address}")


def make_broken(name: str, address: Any, **options: Any) -> Any:
    return UnreachablePump(name=name, address=address, **options)


def dispense(recipe: dict[str, Any], devices: dict[str, Any], **options: Any) -> Any:
    pump = devices["pump"]

    @bpp.run_decorator(md={"plan_name": "dispense"})
    def inner() -> Any:
        yield from bps.mv(pump, recipe["volume"])
        yield from bps.trigger_and_read([pump])

    return inner()


def failing_plan(recipe: dict[str, Any], devices: dict[str, Any], **options: Any) -> Any:
    @bpp.run_decorator()
    def inner() -> Any:
        yield from bps.null()
        raise RuntimeError("the arm dropped the vial")

    return inner()


def squared_error(documents: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
    events = [doc for name, doc in documents if name == "event"]
    volume = events[-1]["data"]["pump_volume"]
    return {"error": (volume - 3.0) ** 2}


FAKE_SIMULATOR = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    sys.stderr.write("fake lab starting\\n")
    for line in sys.argv[1:]:
        print(line.replace("=", " "), flush=True)
    print("ready and serving", flush=True)
    while True:
        time.sleep(3600)
    """
)


def fake_simulator(tmp_path: Path, *endpoints: str) -> list[str]:
    script = tmp_path / "fake_simulator.py"
    script.write_text(FAKE_SIMULATOR)
    return [sys.executable, str(script), *endpoints]


#: What the campaigns' simulated lab file says (checked by `sdl validate`); the tests run a fake simulator
#: that announces the same endpoint.
SIMULATED_LAB = """\
world: {stocks: {dye: {}}, stations: {out: {}}}
instruments:
  pump:
    kind: ne1000
    pumps: [{address: 0, diameter_mm: 14.57, syringe_volume_ul: 10000, reagent: dye, outlet: out}]
"""

PLAN_CAMPAIGN = """
name: dispense-test
parameters:
  - {{name: volume, type: real, low: 0.0, high: 10.0, units: uL}}
objectives:
  - {{measurement: volume, goal: target, target: 3.0}}
budget: {{max_experiments: {budget}}}
optimizer: {{kind: random, seed: 1}}
procedure:
  plan: test_lab_wiring:{plan}
  measurements:
    volume: {{stream: primary, field: pump_volume, reduce: last}}
lab:
  simulated: lab.yaml
  speed: 50
  instruments:
    pump:
      driver: test_lab_wiring:make_pump
      address: "{{pump.pump}}"
      options: {options}
"""


def write_plan_campaign(
    tmp_path: Path, *, budget: int = 3, plan: str = "dispense", options: str = "{}"
) -> Path:
    (tmp_path / "lab.yaml").write_text(SIMULATED_LAB)
    path = tmp_path / "campaign.yaml"
    path.write_text(PLAN_CAMPAIGN.format(budget=budget, plan=plan, options=options))
    return path


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    CREATED.clear()
    PUMP_MADE.clear()


# -- the simulated lab subprocess ----------------------------------------------------------------------


def test_simulated_lab_announces_endpoints_and_stops_on_sigterm(tmp_path: Path) -> None:
    lab = SimulatedLab(fake_simulator(tmp_path, "pump.pump=socket://127.0.0.1:4001", "arm.dash=socket://h:2"))
    endpoints = lab.start({"pump.pump", "arm.dash"}, timeout=20)
    assert endpoints == {"pump.pump": "socket://127.0.0.1:4001", "arm.dash": "socket://h:2"}
    process = lab._process
    assert process is not None and process.poll() is None
    lab.stop()
    assert process.poll() == 0


def test_simulator_that_exits_early_reports_its_stderr(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import sys\nsys.stderr.write('no such lab file: lab.yaml\\n')\nsys.exit(3)\n")
    lab = SimulatedLab([sys.executable, str(script)])
    with pytest.raises(
        LabError, match=r"exited \(code 3\) before announcing endpoint\(s\) pump.pump"
    ) as info:
        lab.start({"pump.pump"}, timeout=20)
    assert "no such lab file: lab.yaml" in str(info.value)


def test_simulator_missing_an_endpoint_times_out_with_a_clear_error(tmp_path: Path) -> None:
    lab = SimulatedLab(fake_simulator(tmp_path, "pump.pump=socket://127.0.0.1:4001"))
    with pytest.raises(LabError, match=r"did not announce them within 0.5 s") as info:
        lab.start({"pump.pump", "arm.dashboard"}, timeout=0.5)
    assert "arm.dashboard" in str(info.value) and "fake lab starting" in str(info.value)


def test_lab_session_fills_addresses_builds_devices_and_closes_them(tmp_path: Path) -> None:
    loaded = load_campaign(write_plan_campaign(tmp_path))
    command = fake_simulator(tmp_path, "pump.pump=socket://127.0.0.1:4123")
    with LabSession(loaded.campaign.lab, loaded.base_dir, command=command) as session:
        pump = session.devices["pump"]
        assert pump.address == "socket://127.0.0.1:4123"
        assert session.assignments == {
            "pump": {"driver": "test_lab_wiring:make_pump", "address": "socket://127.0.0.1:4123"}
        }
        process = session.simulator._process if session.simulator else None
    assert pump.destroyed
    assert process is not None and process.poll() is not None


def test_a_driver_that_cannot_connect_stops_the_lab_cleanly(tmp_path: Path) -> None:
    path = write_plan_campaign(tmp_path)
    path.write_text(path.read_text().replace("test_lab_wiring:make_pump", "test_lab_wiring:make_broken"))
    loaded = load_campaign(path)
    command = fake_simulator(tmp_path, "pump.pump=socket://127.0.0.1:4123")
    session = LabSession(loaded.campaign.lab, loaded.base_dir, command=command)
    with pytest.raises(LabError, match=r"instrument 'pump' .* nothing listens at socket://127.0.0.1:4123"):
        session.__enter__()
    assert session.simulator is None  # stopped on the way out


# -- plan campaigns over ophyd devices -----------------------------------------------------------------


def test_plan_campaign_runs_over_ophyd_devices_and_keeps_documents(tmp_path: Path) -> None:
    loaded = load_campaign(write_plan_campaign(tmp_path, budget=3))
    with Store(tmp_path / "data") as store:
        campaign_id = start_campaign(store, loaded)
        command = fake_simulator(tmp_path, "pump.pump=socket://127.0.0.1:4999")
        result = run_campaign(store, campaign_id, simulator_command=command)
        assert result.status is CampaignStatus.COMPLETED
        history = store.experiments(campaign_id)
        assert [e.status for e in history] == [ExperimentStatus.DONE] * 3
        for e in history:
            assert e.measurements == {"volume": pytest.approx(e.recipe["volume"])}
            assert e.objective == pytest.approx(abs(e.recipe["volume"] - 3.0))
            assert e.assignments == {
                "pump": {"driver": "test_lab_wiring:make_pump", "address": "socket://127.0.0.1:4999"}
            }
            names = [name for name, _ in store.documents(e.id)]
            # the plan's one event, then the results stream (its measurements), then the stop
            assert names == ["start", "descriptor", "event", "descriptor", "event", "stop"]
            start = store.documents(e.id)[0][1]
            assert start["sdl_campaign"] == campaign_id and start["sdl_experiment"] == e.seq
            assert start["recipe"] == e.recipe
        assert CREATED["pump"].destroyed


def test_extractor_function_computes_measurements_from_documents(tmp_path: Path) -> None:
    path = write_plan_campaign(tmp_path, budget=2)
    text = path.read_text().replace(
        "{measurement: volume, goal: target, target: 3.0}", "{measurement: error}"
    )
    text = text.replace(
        "  measurements:\n    volume: {stream: primary, field: pump_volume, reduce: last}\n",
        "  extractor: test_lab_wiring:squared_error\n",
    )
    path.write_text(text)
    loaded = load_campaign(path)
    with Store(tmp_path / "data") as store:
        campaign_id = start_campaign(store, loaded)
        run_campaign(store, campaign_id, simulator_command=fake_simulator(tmp_path, "pump.pump=socket://x:1"))
        for e in store.experiments(campaign_id):
            assert e.measurements == {"error": pytest.approx((e.recipe["volume"] - 3.0) ** 2)}


def test_a_failing_plan_marks_the_experiment_failed_and_goes_on(tmp_path: Path) -> None:
    loaded = load_campaign(write_plan_campaign(tmp_path, budget=2, plan="failing_plan"))
    with Store(tmp_path / "data") as store:
        campaign_id = start_campaign(store, loaded)
        run_campaign(store, campaign_id, simulator_command=fake_simulator(tmp_path, "pump.pump=socket://x:1"))
        history = store.experiments(campaign_id)
        assert [e.status for e in history] == [ExperimentStatus.FAILED] * 2
        assert history[0].failure == "RuntimeError: the arm dropped the vial"
        assert [n for n, _ in store.documents(history[0].id)] == ["start", "stop"]
        assert store.documents(history[0].id)[1][1]["exit_status"] == "fail"


def test_a_device_error_is_reported_from_its_root_cause(tmp_path: Path) -> None:
    loaded = load_campaign(write_plan_campaign(tmp_path, budget=2, options="{capacity: -1}"))
    with Store(tmp_path / "data") as store:
        campaign_id = start_campaign(store, loaded)
        run_campaign(store, campaign_id, simulator_command=fake_simulator(tmp_path, "pump.pump=socket://x:1"))
        first = store.experiments(campaign_id)[0]
        assert first.status is ExperimentStatus.FAILED
        # bluesky wraps it as FailedStatus(DeviceStatus(...)); the record names the device and the cause
        assert first.failure == f"pump: ValueError: {first.recipe['volume']:.2f} uL exceeds the -1 uL syringe"


def test_interrupt_aborts_the_plan_stops_the_pump_and_marks_interrupted(tmp_path: Path) -> None:
    loaded = load_campaign(write_plan_campaign(tmp_path, budget=3, options="{hold: true}"))
    executors: list[Any] = []

    def capture(executor: Any) -> Any:
        executors.append(executor)
        return _Nothing()

    def interrupt_when_moving() -> None:
        assert PUMP_MADE.wait(30)
        assert CREATED["pump"].moving.wait(30)
        executors[0].interrupt()

    with Store(tmp_path / "data") as store:
        campaign_id = start_campaign(store, loaded)
        thread = threading.Thread(target=interrupt_when_moving)
        thread.start()
        result = run_campaign(
            store,
            campaign_id,
            guard=capture,
            simulator_command=fake_simulator(tmp_path, "pump.pump=socket://x:1"),
        )
        thread.join()
        assert result.status is CampaignStatus.INTERRUPTED
        assert CREATED["pump"].stopped.is_set()
        history = store.experiments(campaign_id)
        assert [e.status for e in history] == [ExperimentStatus.INTERRUPTED]
        assert history[0].failure == "interrupted by the operator (Ctrl-C)"
        assert store.campaign(campaign_id).status is CampaignStatus.INTERRUPTED
        assert [n for n, _ in store.documents(history[0].id)] == ["start", "stop"]


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- the real simulated lab and a real driver ------------------------------------------------------------

OCEAN_PLAN = textwrap.dedent(
    """
    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp
    import numpy as np

    def read_spectrum(recipe, devices):
        spec = devices["spec"]

        @bpp.run_decorator()
        def inner():
            yield from bps.mv(spec.integration_time, recipe["integration_us"])
            for mode in ("dark", "reference"):
                yield from bps.mv(spec.mode, mode)
                yield from bps.trigger_and_read([spec], name=mode)
            yield from bps.trigger_and_read([spec])

        return inner()

    def mean_counts(documents):
        primary = {d["uid"] for n, d in documents if n == "descriptor" and d["name"] == "primary"}
        events = [d for n, d in documents if n == "event" and d["descriptor"] in primary]
        return {"mean_counts": float(np.mean(events[-1]["data"]["spec_counts"]))}
    """
)

OCEAN_CAMPAIGN = """
name: ocean-smoke
parameters: [{name: integration_us, type: integer, low: 10000, high: 100000}]
objectives: [{measurement: mean_counts, goal: target, target: 20000}]
budget: {max_experiments: 2}
optimizer: {kind: random}
procedure:
  plan: ocean_plan_for_sdl_tests:read_spectrum
  extractor: ocean_plan_for_sdl_tests:mean_counts
lab:
  simulated: lab.yaml
  speed: 20
  instruments:
    spec: {driver: "drivers.ocean:make_device", address: "{spec.obp}"}
"""


def test_a_campaign_on_the_simulated_lab_with_a_real_driver(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(
        "world: {stations: {spectrometer: {}}}\ninstruments:\n  spec: {kind: ocean-hdx}\n"
    )
    (tmp_path / "ocean_plan_for_sdl_tests.py").write_text(OCEAN_PLAN)
    (tmp_path / "campaign.yaml").write_text(OCEAN_CAMPAIGN)
    loaded = load_campaign(tmp_path / "campaign.yaml")
    with Store(tmp_path / "data") as store:
        campaign_id = start_campaign(store, loaded)
        result = run_campaign(store, campaign_id)  # starts `python -m simulators lab lab.yaml --speed 20`
        history = store.experiments(campaign_id)
        assert [e.status.value for e in history] == ["done", "done"], [e.failure for e in history]
        assert result.status is CampaignStatus.COMPLETED
        for e in history:
            assert e.assignments is not None and e.assignments["spec"]["address"].startswith(
                "socket://127.0.0.1:"
            )
            assert e.measurements is not None and e.measurements["mean_counts"] > 0
            streams = [d["name"] for n, d in store.documents(e.id) if n == "descriptor"]
            assert streams == ["dark", "reference", "primary", "results"]
