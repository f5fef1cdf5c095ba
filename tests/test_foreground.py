"""`sdl run`'s loop: failures, stopping rules, Ctrl-C inside a procedure, claims, crash recovery, resume."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from sdl.loop.foreground import ForegroundRun, run_campaign
from sdl.loop.lifecycle import CRASH_REASON, new_run_owner, resume, start_campaign
from sdl.loop.proposing import decide_next, optimizer_for
from sdl.spec.campaign import Campaign
from sdl.spec.loading import LoadedCampaign
from sdl.spec.status import CampaignStatus, Cause, ExperimentStatus
from sdl.store import CampaignBusy, Store

TESTS_DIR = Path(__file__).resolve().parent

# -- procedures the campaigns below point at ---------------------------------------------------------


def bowl(recipe: dict[str, Any], counter: str = "", interrupt_at: int = 0, fail_above: float = 2.0) -> dict:
    """(x - 0.3)^2 + (y - 0.6)^2; optionally Ctrl-C on the n-th call, or fail when x is large."""
    if counter:
        calls = int(Path(counter).read_text()) + 1 if Path(counter).exists() else 1
        Path(counter).write_text(str(calls))
        if calls == interrupt_at:
            raise KeyboardInterrupt
    if recipe["x"] > fail_above:
        raise ValueError(f"x={recipe['x']:.3f} overflows the vial")
    return {"loss": (recipe["x"] - 0.3) ** 2 + (recipe["y"] - 0.6) ** 2, "x_seen": recipe["x"]}


def wrong_name(recipe: dict[str, Any]) -> dict:
    return {"los": 1.0}


def not_a_dict(recipe: dict[str, Any]) -> list:
    return [1.0]


BASE: dict[str, Any] = {
    "name": "bowl",
    "parameters": [
        {"name": "x", "type": "real", "low": 0.0, "high": 1.0},
        {"name": "y", "type": "real", "low": 0.0, "high": 1.0},
    ],
    "objectives": [{"measurement": "loss", "goal": "minimize"}],
    "budget": {"max_experiments": 8},
    "optimizer": {"kind": "bayesian", "initial_design": 4, "seed": 3},
    "procedure": {"function": "test_foreground:bowl"},
}


def campaign(tmp_path: Path, **changes: Any) -> LoadedCampaign:
    spec = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = spec
        for key in parents:
            target = target[key]
        target[leaf] = value
    return LoadedCampaign(campaign=Campaign.model_validate(spec), path=tmp_path / "bowl.yaml", source="")


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS_DIR))


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "data") as store:
        yield store


def run(store: Store, loaded: LoadedCampaign, **kwargs: Any) -> tuple[str, Any]:
    campaign_id = start_campaign(store, loaded)
    return campaign_id, run_campaign(store, campaign_id, **kwargs)


def statuses(store: Store, campaign_id: str) -> list[str]:
    return [e.status.value for e in store.experiments(campaign_id)]


# -- the loop --------------------------------------------------------------------------------------------


def test_a_plain_function_campaign_spends_its_budget_and_records_decisions(
    store: Store, tmp_path: Path
) -> None:
    campaign_id, result = run(store, campaign(tmp_path))
    assert result.status is CampaignStatus.COMPLETED
    assert result.stop_reason == "budget spent: 8 of 8 experiments"
    history = store.experiments(campaign_id)
    assert statuses(store, campaign_id) == ["done"] * 8
    assert [e.decision.n_observations for e in history if e.decision] == list(range(8))
    assert history[0].decision is not None and history[-1].decision is not None
    assert history[0].decision.model != history[-1].decision.model  # initial design, then the model
    for e in history:
        assert e.objective == pytest.approx((e.recipe["x"] - 0.3) ** 2 + (e.recipe["y"] - 0.6) ** 2)
        assert e.measurements == {"loss": e.objective, "x_seen": e.recipe["x"]}
    assert result.best == min(history, key=lambda e: e.objective or 0.0)
    assert store.campaign(campaign_id).status is CampaignStatus.COMPLETED


def test_failures_are_recorded_with_reasons_and_count_toward_the_budget(store: Store, tmp_path: Path) -> None:
    loaded = campaign(tmp_path, procedure__options={"fail_above": 0.5}, budget__max_consecutive_failures=None)
    campaign_id, result = run(store, loaded)
    history = store.experiments(campaign_id)
    failed = [e for e in history if e.status is ExperimentStatus.FAILED]
    assert len(history) == 8 and failed and len(failed) < 8
    for e in failed:
        assert e.recipe["x"] > 0.5
        assert e.failure == f"ValueError: x={e.recipe['x']:.3f} overflows the vial"
        assert e.objective is None and e.finished_at is not None
    assert result.status is CampaignStatus.COMPLETED


def test_a_missing_measurement_fails_the_experiment_and_keeps_what_was_measured(
    store: Store, tmp_path: Path
) -> None:
    loaded = campaign(tmp_path, procedure__function="test_foreground:wrong_name", budget__max_experiments=2)
    campaign_id, _ = run(store, loaded)
    first = store.experiments(campaign_id)[0]
    assert first.status is ExperimentStatus.FAILED
    assert first.failure == "measurement 'loss' is missing or not a number (got None; measured: los)"
    assert first.measurements == {"los": 1.0}


def test_a_procedure_returning_something_else_fails(store: Store, tmp_path: Path) -> None:
    loaded = campaign(tmp_path, procedure__function="test_foreground:not_a_dict", budget__max_experiments=1)
    campaign_id, _ = run(store, loaded)
    assert store.experiments(campaign_id)[0].failure == "the procedure returned list, not a dict"


def test_consecutive_failures_stop_the_campaign_as_failed(store: Store, tmp_path: Path) -> None:
    loaded = campaign(tmp_path, procedure__options={"fail_above": -1.0}, budget__max_consecutive_failures=3)
    campaign_id, result = run(store, loaded)
    assert statuses(store, campaign_id) == ["failed"] * 3
    assert result.status is CampaignStatus.FAILED
    assert result.stop_reason.startswith("3 experiments failed in a row (last: ValueError: x=")
    assert store.campaign(campaign_id).status is CampaignStatus.FAILED


def test_reaching_the_target_stops_early(store: Store, tmp_path: Path) -> None:
    campaign_id, result = run(store, campaign(tmp_path, budget__stop_when={"loss": 0.5}))
    history = store.experiments(campaign_id)
    hit = [e for e in history if e.objective is not None and e.objective <= 0.5]
    assert hit and history[-1] == hit[0]
    assert result.stop_reason == f"target reached by experiment {hit[0].seq}"
    assert result.status is CampaignStatus.COMPLETED


def test_wall_time_budget_uses_the_injected_clock(store: Store, tmp_path: Path) -> None:
    loaded = campaign(tmp_path, budget__max_wall_time=25)
    campaign_id = start_campaign(store, loaded)
    ticks = iter(range(0, 1000, 10))
    loop = ForegroundRun(store, campaign_id, loaded.campaign, clock=lambda: float(next(ticks)))
    result = loop.run()
    # the clock reads 0 at the start, then 10, 20, 30 before each decision: two experiments fit
    assert statuses(store, campaign_id) == ["done", "done"]
    assert result.stop_reason == "wall time spent: 30 s of 25 s"


def test_an_exhausted_search_space_ends_the_campaign(store: Store, tmp_path: Path) -> None:
    loaded = campaign(
        tmp_path,
        parameters=[
            {"name": "x", "type": "categorical", "choices": [0.1, 0.9]},
            {"name": "y", "type": "integer", "low": 0, "high": 1},
        ],
        optimizer={"kind": "grid"},
        budget__max_experiments=10,
    )
    campaign_id, result = run(store, loaded)
    recipes = [e.recipe for e in store.experiments(campaign_id)]
    assert sorted((r["x"], r["y"]) for r in recipes) == [(0.1, 0), (0.1, 1), (0.9, 0), (0.9, 1)]
    assert result.stop_reason.startswith("search space exhausted")
    assert result.status is CampaignStatus.COMPLETED


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, str]] = []

    def experiment_started(self, experiment: Any) -> None:
        self.events.append(("started", experiment.seq, experiment.status.value))

    def experiment_finished(self, experiment: Any, history: list[Any]) -> None:
        self.events.append(("finished", experiment.seq, experiment.status.value))


def test_the_observer_sees_each_experiment_running_then_finished(store: Store, tmp_path: Path) -> None:
    recorder = Recorder()
    run(store, campaign(tmp_path, budget__max_experiments=2), observer=recorder)
    assert recorder.events == [
        ("started", 1, "running"),
        ("finished", 1, "done"),
        ("started", 2, "running"),
        ("finished", 2, "done"),
    ]


# -- Ctrl-C, crashes and resume ------------------------------------------------------------------------


def test_resume_after_ctrl_c_reproduces_the_history_and_continues(tmp_path: Path) -> None:
    with Store(tmp_path / "straight") as store:
        straight_id, _ = run(store, campaign(tmp_path))
        straight = [e.recipe for e in store.experiments(straight_id)]

    counter = tmp_path / "calls"
    loaded = campaign(tmp_path, procedure__options={"counter": str(counter), "interrupt_at": 6})
    with Store(tmp_path / "interrupted") as store:
        campaign_id, result = run(store, loaded)
        assert result.status is CampaignStatus.INTERRUPTED
        assert statuses(store, campaign_id) == ["done"] * 5 + ["interrupted"]
        interrupted = store.experiments(campaign_id)[-1]
        assert interrupted.failure == "interrupted by the operator (Ctrl-C)"
        assert interrupted.cause is Cause.OPERATOR
        assert store.campaign(campaign_id).status is CampaignStatus.INTERRUPTED
        assert store.campaign(campaign_id).owner is None  # the claim was released

    with Store(tmp_path / "interrupted") as store:  # a later `sdl run --resume`
        owner = new_run_owner()
        assert resume(store, campaign_id, owner) == []
        result = run_campaign(store, campaign_id, owner)
        assert result.status is CampaignStatus.COMPLETED
        history = store.experiments(campaign_id)
    assert [e.status.value for e in history] == ["done"] * 5 + ["interrupted"] + ["done"] * 3
    # The interrupted experiment stays on record; its recipe is proposed afresh since it gave no result,
    # so the finished experiments are exactly those of the uninterrupted campaign.
    assert [e.recipe for e in history if e.status is ExperimentStatus.DONE] == straight
    assert interrupted.recipe == straight[5]


def crashed_owner() -> str:
    """The claim a killed `sdl run` leaves behind: a process on this host that no longer exists."""
    import socket

    return f"run:{socket.gethostname()}:999999999:dead00"


def test_after_a_crash_the_experiment_in_flight_is_interrupted_never_rerun(tmp_path: Path) -> None:
    with Store(tmp_path / "data") as store:
        loaded = campaign(tmp_path, budget__max_experiments=3)
        campaign_id = start_campaign(store, loaded, owner=crashed_owner())
        optimizer = optimizer_for(loaded.campaign)
        nxt = decide_next(loaded.campaign, optimizer, store.experiments(campaign_id))
        in_flight = store.add_proposal(campaign_id, nxt.recipe, nxt.decision)
        store.start_experiment(in_flight.id)
        # the process dies here: the record says running, the campaign is claimed by a dead process

    with Store(tmp_path / "data") as store:
        owner = new_run_owner()
        recovered = resume(store, campaign_id, owner)
        assert [e.id for e in recovered] == [in_flight.id]
        after = store.experiment(in_flight.id)
        assert after.status is ExperimentStatus.INTERRUPTED and after.failure == CRASH_REASON
        assert after.cause is Cause.CRASH
        run_campaign(store, campaign_id, owner)
        history = store.experiments(campaign_id)
        assert [e.status.value for e in history] == ["interrupted", "done", "done", "done"]
        assert [t.to_status.value for t in store.transitions(in_flight.id)] == [
            "proposed",
            "running",
            "interrupted",
        ]


def test_a_proposal_left_by_a_crash_runs_first_on_resume(tmp_path: Path) -> None:
    with Store(tmp_path / "data") as store:
        loaded = campaign(tmp_path, budget__max_experiments=2)
        campaign_id = start_campaign(store, loaded, owner=crashed_owner())
        optimizer = optimizer_for(loaded.campaign)
        nxt = decide_next(loaded.campaign, optimizer, store.experiments(campaign_id))
        proposed = store.add_proposal(campaign_id, nxt.recipe, nxt.decision)  # ...and the process dies
        run_campaign(store, campaign_id)
        history = store.experiments(campaign_id)
    assert [e.status.value for e in history] == ["done", "done"]
    assert history[0].id == proposed.id and history[0].recipe == nxt.recipe


def test_a_campaign_run_by_a_live_process_cannot_be_taken_over(store: Store, tmp_path: Path) -> None:
    import socket

    live = f"run:{socket.gethostname()}:{os.getppid()}:feed00"
    campaign_id = start_campaign(store, campaign(tmp_path), owner=live)
    with pytest.raises(CampaignBusy, match=f"is being run by `sdl run` \\(process {os.getppid()} on "):
        resume(store, campaign_id, new_run_owner())
    with pytest.raises(CampaignBusy):
        run_campaign(store, campaign_id)
    assert store.campaign(campaign_id).owner == live


def test_two_processes_racing_to_resume_a_crashed_campaign_never_both_win(tmp_path: Path) -> None:
    """Each attempt runs in its own process with its own connection, released at the same moment."""
    import multiprocessing

    with Store(tmp_path / "data") as store:
        campaign_id = start_campaign(store, campaign(tmp_path), owner=crashed_owner())
    context = multiprocessing.get_context("spawn")
    data_dir = str(tmp_path / "data")
    for _ in range(10):
        with Store(tmp_path / "data") as store:
            store.claim_campaign(campaign_id, crashed_owner())  # as if crashed again
        barrier = context.Barrier(2)
        results = context.Queue()
        racers = [
            context.Process(target=_race_take_over, args=(data_dir, campaign_id, barrier, results))
            for _ in range(2)
        ]
        for racer in racers:
            racer.start()
        outcomes = sorted(results.get(timeout=60) for _ in racers)
        for racer in racers:
            racer.join(timeout=60)
        assert outcomes == ["CampaignBusy", "won"], outcomes


def _race_take_over(data_dir: str, campaign_id: str, barrier: Any, results: Any) -> None:
    with Store(data_dir) as store:
        owner = new_run_owner()
        barrier.wait()
        try:
            resume(store, campaign_id, owner)
        except CampaignBusy:
            results.put("CampaignBusy")
        except Exception as exc:
            results.put(f"{type(exc).__name__}: {exc}")
        else:
            results.put("won")


def test_interrupt_between_experiments_starts_nothing_new(store: Store, tmp_path: Path) -> None:
    loaded = campaign(tmp_path)
    campaign_id = start_campaign(store, loaded)

    class StopAfterTwo(Recorder):
        def experiment_finished(self, experiment: Any, history: list[Any]) -> None:
            if experiment.seq == 2:
                loop.interrupt()

    loop = ForegroundRun(store, campaign_id, loaded.campaign, observer=StopAfterTwo())
    result = loop.run()
    assert statuses(store, campaign_id) == ["done", "done"]
    assert result.status is CampaignStatus.INTERRUPTED


# -- a campaign that never succeeds ----------------------------------------------------------------------


def test_a_campaign_without_a_single_success_fails_even_within_the_failure_streak(
    store: Store, tmp_path: Path
) -> None:
    loaded = campaign(
        tmp_path,
        procedure__function="test_foreground:wrong_name",
        budget__max_experiments=4,
        budget__max_consecutive_failures=5,
    )
    campaign_id, result = run(store, loaded)
    assert statuses(store, campaign_id) == ["failed"] * 4
    assert result.status is CampaignStatus.FAILED
    assert result.stop_reason.startswith("budget spent: 4 of 4 experiments, without a single successful")
    assert store.campaign(campaign_id).status is CampaignStatus.FAILED


def nan_loss(recipe: dict[str, Any]) -> dict:
    return {"loss": float("nan")}


def test_a_measured_nan_is_reported_as_nan(store: Store, tmp_path: Path) -> None:
    loaded = campaign(tmp_path, procedure__function="test_foreground:nan_loss", budget__max_experiments=1)
    campaign_id, _ = run(store, loaded)
    assert store.experiments(campaign_id)[0].failure == "measurement 'loss' is NaN (not a number)"


# -- instrument faults and retries ------------------------------------------------------------------------


class PumpStalled(Exception):
    """Stands in for a driver error: drivers tag theirs with a fault kind (decision 0003)."""

    fault = "alarm"
    instrument = "dye_pumps"


def stalls_once(recipe: dict[str, Any], counter: str) -> dict:
    calls = int(Path(counter).read_text()) + 1 if Path(counter).exists() else 1
    Path(counter).write_text(str(calls))
    if calls == 2:
        raise PumpStalled("dye_pumps: motor stalled")
    return bowl(recipe)


def test_an_instrument_fault_is_not_a_failure_and_spends_no_budget(store: Store, tmp_path: Path) -> None:
    loaded = campaign(
        tmp_path,
        procedure__function="test_foreground:stalls_once",
        procedure__options={"counter": str(tmp_path / "calls")},
        budget__max_experiments=3,
    )
    campaign_id, result = run(store, loaded)
    history = store.experiments(campaign_id)
    assert [e.status.value for e in history] == ["done", "faulted", "done", "done"]
    faulted = history[1]
    assert (faulted.fault_kind, faulted.fault_instrument) == ("alarm", "dye_pumps")
    assert faulted.cause is Cause.FAULT
    assert faulted.failure == "dye_pumps: PumpStalled: motor stalled"
    assert result.status is CampaignStatus.COMPLETED
    # not safe to repeat: the optimizer proposed afresh, and never saw the fault as an observation
    assert history[2].retry_of is None and history[2].decision.n_observations == 1


def test_a_recipe_cut_short_by_a_fault_runs_again_when_safe_to_repeat(store: Store, tmp_path: Path) -> None:
    loaded = campaign(
        tmp_path,
        procedure__function="test_foreground:stalls_once",
        procedure__options={"counter": str(tmp_path / "calls")},
        procedure__safe_to_repeat=True,
        budget__max_experiments=3,
    )
    campaign_id, _ = run(store, loaded)
    history = store.experiments(campaign_id)
    assert [e.status.value for e in history] == ["done", "faulted", "done", "done"]
    retry = history[2]
    assert retry.retry_of == history[1].id and retry.recipe == history[1].recipe
    assert retry.decision is not None and retry.decision.model == "retry"


def stalls_from(recipe: dict[str, Any], counter: str, first: int) -> dict:
    """Works until call ``first``, then stalls on every call (an empty syringe stalls at once)."""
    calls = int(Path(counter).read_text()) + 1 if Path(counter).exists() else 1
    Path(counter).write_text(str(calls))
    if calls >= first:
        raise PumpStalled("dye_pumps: motor stalled")
    return bowl(recipe)


def test_an_instrument_that_keeps_faulting_stops_the_run_instead_of_looping(
    store: Store, tmp_path: Path
) -> None:
    """Faulted experiments spend no budget, so without this rule a broken pump would be retried forever."""
    counter = tmp_path / "calls"
    loaded = campaign(
        tmp_path,
        procedure__function="test_foreground:stalls_from",
        procedure__options={"counter": str(counter), "first": 3},
        procedure__safe_to_repeat=True,
        budget__max_experiments=8,
    )
    campaign_id, result = run(store, loaded)
    history = store.experiments(campaign_id)
    assert [e.status.value for e in history] == ["done", "done", "faulted", "faulted", "faulted"]
    assert result.status is CampaignStatus.INTERRUPTED and result.out_of_service == "dye_pumps"
    record = store.campaign(campaign_id)
    assert record.status is CampaignStatus.INTERRUPTED
    assert record.stop_reason == (
        "instrument dye_pumps taken out of service: 3 experiments in a row lost to it "
        "(last: dye_pumps: PumpStalled: motor stalled)"
    )
    # Resuming is the operator saying it is fixed: the earlier faults do not stop the new run at once.
    counter.write_text("-100")
    resume(store, campaign_id, "operator")
    resumed = run_campaign(store, campaign_id, "operator")
    assert resumed.status is CampaignStatus.COMPLETED and resumed.out_of_service is None
    assert resumed.counts[ExperimentStatus.DONE] == 8


def test_an_abort_before_the_run_engine_starts_stops_the_plan_at_its_first_message(tmp_path: Path) -> None:
    """A Ctrl-C that lands after the plan is built but before the RunEngine leaves idle (too early for
    RunEngine.abort) must not let the plan run on: it stops at its first message."""
    from bluesky import RunEngine

    from sdl.execution.engine import close_run_engine
    from sdl.execution.experiment import ExperimentRunner

    class SignalAsItStarts(RunEngine):
        """Delivers the operator's abort at the worst moment: entering the RunEngine, still idle."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            assert self.state.is_idle
            runner.abort("interrupted by the operator (SIGTERM)")
            return super().__call__(*args, **kwargs)

    loaded = campaign(
        tmp_path,
        procedure={"plan": "test_foreground:one_message_plan", "extractor": "test_foreground:no_measurement"},
    )
    engine = SignalAsItStarts({}, context_managers=[], call_returns_result=True)
    with Store(tmp_path / "data") as store:
        campaign_id = start_campaign(store, loaded)
        runner = ExperimentRunner(loaded.campaign, store, run_engine=engine)
        nxt = decide_next(loaded.campaign, optimizer_for(loaded.campaign), [])
        experiment = store.add_proposal(campaign_id, nxt.recipe, nxt.decision)
        store.start_experiment(experiment.id)
        try:
            outcome = runner.run(store.experiment(experiment.id))
        finally:
            close_run_engine(engine)
    assert outcome.status is ExperimentStatus.INTERRUPTED
    assert outcome.failure == "interrupted by the operator (SIGTERM)"
    assert MOVED == [], "the plan ran on after the abort"
    # It stopped before its run was even opened: the run that records it is a start and an abort.
    names = [(name, doc.get("exit_status")) for _, name, doc in outcome.trailing_documents]
    assert names == [("start", None), ("stop", "abort")]


MOVED: list[int] = []


def one_message_plan(recipe: dict[str, Any], devices: dict[str, Any]) -> Any:
    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp

    @bpp.run_decorator()
    def inner() -> Any:
        yield from bps.null()
        MOVED.append(1)

    return (yield from inner())


def no_measurement(documents: list[Any]) -> dict:
    return {"loss": 0.0}
