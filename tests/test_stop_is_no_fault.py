"""How an experiment ends when an instrument raised, read from the fault kind its driver's error carries
(decision 0005): a stop someone asked for (``drivers.errors.Stopped``) interrupts the experiment, blaming
neither recipe nor instrument; the faults drivers report — a protective stop, a missed grip, a reply cut
short — end it faulted, not spent, counted against the instrument named in the error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.cavro.errors import TruncatedReply
from drivers.errors import InstrumentError, ReplyCutShort, Stopped, name_instrument
from drivers.newera import GarbledReply
from drivers.newera.codec import CodecError
from drivers.ur.errors import GripperMissedObject, MotionStopped, ProtectiveStop
from sdl.execution.experiment import ExperimentRunner, Outcome
from sdl.execution.faults import classify, stopped
from sdl.loop.lifecycle import start_campaign
from sdl.loop.proposing import decide_next, optimizer_for
from sdl.spec.campaign import Campaign
from sdl.spec.loading import LoadedCampaign
from sdl.spec.status import Cause, ExperimentStatus
from sdl.store import Store

TESTS_DIR = Path(__file__).resolve().parent

#: What the procedure below raises, and what it does first (set by each test).
RAISE: list[BaseException] = []
FIRST: list[Callable[[], None]] = []


def procedure(recipe: dict[str, Any]) -> dict[str, float]:
    for action in FIRST:
        action()
    raise RAISE[0]


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    RAISE.clear()
    FIRST.clear()


def run_once(
    tmp_path: Path, error: BaseException, first: Callable[[ExperimentRunner], None] | None = None
) -> Outcome:
    spec = {
        "name": "stops",
        "parameters": [{"name": "x", "type": "real", "low": 0.0, "high": 1.0}],
        "objectives": [{"measurement": "loss"}],
        "budget": {"max_experiments": 2},
        "optimizer": {"kind": "random", "seed": 1},
        "procedure": {"function": "test_stop_is_no_fault:procedure"},
    }
    loaded = LoadedCampaign(campaign=Campaign.model_validate(spec), path=tmp_path / "c.yaml", source="")
    with Store(tmp_path / "data") as store:
        campaign_id = start_campaign(store, loaded)
        runner = ExperimentRunner(loaded.campaign, store)
        RAISE.append(error)
        if first is not None:
            FIRST.append(lambda: first(runner))
        proposal = decide_next(loaded.campaign, optimizer_for(loaded.campaign), [])
        experiment = store.add_proposal(campaign_id, proposal.recipe, proposal.decision)
        store.start_experiment(experiment.id)
        try:
            return runner.run(store.experiment(experiment.id))
        finally:
            runner.close()


def named(error: InstrumentError, instrument: str) -> BaseException:
    return name_instrument(error, instrument)


def test_a_stop_nobody_in_the_experiment_asked_for_interrupts_it_and_blames_no_one(tmp_path: Path) -> None:
    outcome = run_once(tmp_path, named(MotionStopped("move to 'waste' was stopped"), "arm"))
    assert outcome.status is ExperimentStatus.INTERRUPTED and outcome.cause is Cause.OPERATOR
    assert outcome.fault is None
    assert outcome.failure == "stopped on request: arm: MotionStopped: move to 'waste' was stopped"


def test_an_e_stop_during_a_plain_function_interrupts_it_with_the_e_stops_cause(tmp_path: Path) -> None:
    """A function cannot be aborted from outside: the e-stop's stop of the instrument is what ends it."""
    outcome = run_once(
        tmp_path,
        named(Stopped("dispense: stopped on request"), "pumps_a"),
        first=lambda runner: runner.abort("e-stop: spill on the bench", Cause.ESTOP),
    )
    assert (outcome.status, outcome.cause) == (ExperimentStatus.INTERRUPTED, Cause.ESTOP)
    assert outcome.failure == "e-stop: spill on the bench"


@pytest.mark.parametrize(
    ("error", "instrument", "kind"),
    [
        (ProtectiveStop("the arm stopped: PROTECTIVE_STOP"), "arm", "protective_stop"),
        (GripperMissedObject("the gripper found nothing to hold at 'feeder'", "feeder"), "arm", "alarm"),
        (TruncatedReply("a reply began and did not end"), "water_a", "garbled"),
        (ReplyCutShort("OBP reply cut short after 12 of 64 bytes"), "spectrometer", "garbled"),
    ],
)
def test_the_faults_drivers_report_end_the_experiment_faulted_against_the_instrument(
    tmp_path: Path, error: InstrumentError, instrument: str, kind: str
) -> None:
    outcome = run_once(tmp_path, named(error, instrument))
    assert (outcome.status, outcome.cause) == (ExperimentStatus.FAULTED, Cause.FAULT)
    assert outcome.fault is not None and (outcome.fault.kind, outcome.fault.instrument) == (kind, instrument)
    assert not outcome.status.spends_budget


def test_stopped_is_read_through_the_chain_of_causes_and_is_no_fault() -> None:
    try:
        try:
            raise named(Stopped("acquisition: stopped on request"), "spectrometer")
        except Stopped as exc:
            raise RuntimeError("FailedStatus") from exc
    except RuntimeError as wrapped:
        assert stopped(wrapped) and classify(wrapped) is None
    assert not stopped(ProtectiveStop("stop")) and classify(ProtectiveStop("stop")) is not None


def test_a_driver_error_raised_from_an_untagged_one_is_still_the_instruments_fault() -> None:
    # A garbled reply the retries could not get past: the driver's GarbledReply is raised from the codec's
    # CodecError, which carries no fault kind. The fault is the innermost tagged error, not the recipe's.
    try:
        try:
            try:
                raise CodecError("malformed reply '0jS'")
            except CodecError as exc:
                raise named(GarbledReply("pump 00 VOLUL: malformed reply '0jS'"), "pumps_b") from exc
        except GarbledReply as exc:
            raise RuntimeError("FailedStatus") from exc
    except RuntimeError as wrapped:
        fault = classify(wrapped)
    assert fault is not None and (fault.kind, fault.instrument) == ("garbled", "pumps_b"), fault
    assert fault.detail.startswith("pumps_b: GarbledReply: pump 00 VOLUL"), fault.detail
