"""The lab service as a user drives it: a subprocess, reached only through its API, its CLI and its store.

The campaigns here run plain functions (or a plan with no instruments) on workcells without instruments,
so what is tested is the service itself: parallel workcells, pending-aware proposals, control commands,
fair sharing, crash recovery of the service and of its workers, typed errors, and a clean stop.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

import pytest
import zmq

from sdl.api import models as m
from sdl.api.convert import campaign_state
from sdl.api.docs import render
from sdl.api.models import ApiError
from sdl.cli import main
from sdl.spec.status import ExperimentStatus
from sdl.store import Store
from sdl.testing import LabServiceProcess, alive, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def service_process(lab: Path, data_dir: Path, *extra: str) -> LabServiceProcess:
    return LabServiceProcess(lab, data_dir, *extra, pythonpath=[TESTS, ROOT])


def lab_file(tmp_path: Path, workcells: int = 2) -> Path:
    path = tmp_path / "lab.yaml"
    cells = "".join(f"  w{i + 1}: {{}}\n" for i in range(workcells))
    path.write_text(f"name: compute\nworkers: {{heartbeat_timeout: 5}}\nworkcells:\n{cells}")
    return path


def campaign_file(tmp_path: Path, name: str = "bowl", budget: int = 8, **procedure: object) -> Path:
    path = tmp_path / f"{name}.yaml"
    function = procedure.pop("function", "daemon_procedures:bowl")
    options = json.dumps(procedure.pop("options", {}))
    extra = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in procedure.items())
    path.write_text(
        textwrap.dedent(
            f"""\
            name: {name}
            parameters:
              - {{name: x, type: real, low: 0.0, high: 1.0}}
              - {{name: y, type: real, low: 0.0, high: 1.0}}
            objectives: [{{measurement: loss}}]
            budget: {{max_experiments: {budget}}}
            optimizer: {{kind: bayesian, initial_design: 4, seed: 1}}
            """
        )
        + f"procedure:\n  function: {function}\n  options: {options}\n{extra}"
    )
    return path


@pytest.fixture
def daemon(tmp_path: Path):
    service = service_process(lab_file(tmp_path), tmp_path / "data").start()
    yield service
    if service.process is not None and service.process.poll() is None:
        assert service.stop() == 0, service.log_text()
    service.assert_nothing_left()


def experiments(daemon: LabServiceProcess, campaign_id: str) -> list[m.ExperimentSummary]:
    return daemon.call(m.ListExperiments(campaign_id=campaign_id)).experiments


def state(daemon: LabServiceProcess, campaign_id: str) -> m.CampaignSummary:
    return daemon.call(m.ShowCampaign(campaign_id=campaign_id)).campaign


def finished(daemon: LabServiceProcess, campaign_id: str, timeout: float = 120) -> m.CampaignSummary:
    return wait_for(
        lambda: (c := state(daemon, campaign_id)).status != "running" and c, timeout, f"{campaign_id} to end"
    )


def runs_started(daemon: LabServiceProcess, campaign_id: str) -> list[int]:
    """Experiments whose plan has opened its run (its start document is in the store)."""
    out = []
    for e in experiments(daemon, campaign_id):
        documents = daemon.call(m.ShowExperiment(experiment_id=e.id, documents=True)).documents or []
        if any(name == "start" for name, _ in documents):
            out.append(e.id)
    return out


def running_files(gate: Path) -> int:
    return len(list(gate.glob("running-*")))


# -- running campaigns -------------------------------------------------------------------------------------


def test_a_campaign_runs_on_every_free_workcell_with_pending_aware_proposals(
    daemon: LabServiceProcess, tmp_path: Path
) -> None:
    with daemon.client() as client:
        campaign_id = client.submit(campaign_file(tmp_path, budget=10)).campaign_id
    summary = finished(daemon, campaign_id)
    assert (summary.status, summary.stop_reason) == ("completed", "budget spent: 10 of 10 experiments")
    history = experiments(daemon, campaign_id)
    assert [e.status for e in history] == ["done"] * 10
    assert {e.workcell for e in history} == {"w1", "w2"}
    # each proposal knew what was still running elsewhere
    assert any(e.decision is not None and e.decision.n_pending > 0 for e in history)
    assert len({tuple(sorted(e.recipe.items())) for e in history}) == 10

    events = daemon.call(m.EventsSince(seq=0, limit=10000)).events
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))
    topics = [e.topic for e in events if e.campaign_id == campaign_id]
    assert topics.count("experiment.started") == 10 and topics.count("experiment.done") == 10
    assert topics[-2:] == ["campaign.finished", "campaign.progress"]

    with Store(daemon.data_dir, read_only=True) as store:
        audit = store.audit_log()
    assert [(a.action, a.result) for a in audit] == [("campaign.submit", "ok")]
    assert audit[0].who.startswith("local:") and audit[0].target == campaign_id  # the campaign it created

    # The optimizers live in the proposer process, which forgot the finished campaign's and serves the next.
    with daemon.client() as client:
        second = client.submit(campaign_file(tmp_path, "second", budget=2)).campaign_id
    assert finished(daemon, second).status == "completed"
    assert daemon.log_text().count("proposer started") == 1, daemon.log_text()


def test_pause_resume_and_stop_after_the_current_experiments(
    daemon: LabServiceProcess, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    path = campaign_file(tmp_path, budget=6, function="daemon_procedures:gated", options={"gate": str(gate)})
    with daemon.client() as client:
        campaign_id = client.submit(path).campaign_id
        wait_for(lambda: running_files(gate) == 2, what="two experiments running")
        assert client.call(m.PauseCampaign(campaign_id=campaign_id)).state == "paused"
        paused_at = client.call(m.EventsSince(seq=0, limit=1)).last
        (gate / "open").write_text("")
        wait_for(
            lambda: all(e.status == "done" for e in experiments(daemon, campaign_id)), what="in-flight to end"
        )
        assert len(experiments(daemon, campaign_id)) == 2 and state(daemon, campaign_id).state == "paused"
        (gate / "open").unlink()
        resumed_at = client.call(m.EventsSince(seq=0, limit=1)).last
        started_while_paused = [
            e for e in client.call(m.EventsSince(seq=paused_at, limit=1000)).events
            if e.topic == "experiment.started" and e.seq <= resumed_at
        ]  # fmt: skip
        assert started_while_paused == []
        assert client.call(m.ResumeCampaign(campaign_id=campaign_id)).state == "running"
        wait_for(lambda: running_files(gate) == 4, what="two more experiments after resuming")
        assert client.call(m.StopCampaign(campaign_id=campaign_id)).state == "stopping"
        (gate / "open").write_text("")
    summary = finished(daemon, campaign_id)
    assert (summary.status, summary.stop_reason) == ("interrupted", "stopped by the operator")
    assert [e.status for e in experiments(daemon, campaign_id)] == ["done"] * 4
    with Store(daemon.data_dir, read_only=True) as store:
        actions = [a.action for a in store.audit_log()]
    assert actions == ["campaign.submit", "campaign.pause", "campaign.resume", "campaign.stop"]


def test_abort_stops_a_plan_through_the_run_engine_and_ends_the_campaign(
    daemon: LabServiceProcess, tmp_path: Path
) -> None:
    path = tmp_path / "waiting.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: waiting
            parameters:
              - {name: x, type: real, low: 0.0, high: 1.0}
              - {name: y, type: real, low: 0.0, high: 1.0}
            objectives: [{measurement: loss}]
            budget: {max_experiments: 4}
            procedure:
              plan: daemon_procedures:waiting_plan
              extractor: daemon_procedures:plan_loss
            """
        )
    )
    with daemon.client() as client:
        campaign_id = client.submit(path).campaign_id
        wait_for(lambda: len(runs_started(daemon, campaign_id)) == 2, what="two plans to open their runs")
        client.call(m.AbortCampaign(campaign_id=campaign_id, reason="wrong stock bottle"))
    summary = finished(daemon, campaign_id)
    assert summary.status == "interrupted" and summary.stop_reason.startswith("wrong stock bottle (local:")
    history = experiments(daemon, campaign_id)
    assert [(e.status, e.cause) for e in history] == [("interrupted", "operator")] * 2
    detail = daemon.call(m.ShowExperiment(experiment_id=history[0].id, documents=True))
    assert [name for name, _ in detail.documents] == ["start", "stop"]  # the run was closed, not lost
    assert detail.documents[-1][1]["exit_status"] == "abort"
    assert [line.entry for line in detail.journal] == ["abort"]


def test_campaigns_share_a_workcell_by_their_weights(tmp_path: Path) -> None:
    service = service_process(lab_file(tmp_path, workcells=1), tmp_path / "data").start()
    try:
        gate = tmp_path / "gate"
        gate.mkdir()
        ids = {}
        with service.client() as client:
            for name, weight in (("light", 1), ("heavy", 3)):
                path = campaign_file(
                    tmp_path, name, budget=40, function="daemon_procedures:gated", options={"gate": str(gate)}
                )
                path.write_text(path.read_text() + f"scheduling: {{weight: {weight}}}\n")
                ids[name] = client.submit(path).campaign_id
                wait_for(lambda: running_files(gate) == 1, what="the first experiment to hold the workcell")
            (gate / "open").write_text("")
            wait_for(
                lambda: sum(len(experiments(service, i)) for i in ids.values()) >= 25, what="25 experiments"
            )
            for campaign_id in ids.values():
                client.call(m.PauseCampaign(campaign_id=campaign_id))
        # Interleaved on one workcell, the heavy campaign got three experiments for each of the light one's.
        started = [
            e.campaign_id
            for e in service.call(m.EventsSince(seq=0, limit=10000)).events
            if e.topic == "experiment.started"
        ][1:25]  # after the light campaign's head start
        assert abs(started.count(ids["heavy"]) - 18) <= 1 and abs(started.count(ids["light"]) - 6) <= 1, (
            started
        )
    finally:
        assert service.stop() == 0
        service.assert_nothing_left()


def test_a_campaign_no_workcell_can_run_is_refused_with_the_reasons(
    daemon: LabServiceProcess, tmp_path: Path
) -> None:
    path = campaign_file(tmp_path)
    path.write_text(path.read_text() + "requires: {capabilities: [furnace]}\n")
    with daemon.client() as client, pytest.raises(ApiError) as refused:
        client.submit(path)
    assert refused.value.error.type == "invalid_campaign"
    assert refused.value.error.details == [
        "workcell w1: no capability furnace",
        "workcell w2: no capability furnace",
    ]


def test_a_bad_campaign_file_is_reported_like_validate_does(
    daemon: LabServiceProcess, tmp_path: Path, capsys
) -> None:
    path = campaign_file(tmp_path)
    path.write_text(path.read_text().replace("high: 1.0}\n  - {name: y", "high: -1.0}\n  - {name: y"))
    code = main(["submit", str(path), "--connect", daemon.address, "--data-dir", str(daemon.data_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}:3: parameters[0]: low (0.0) must be less than high (-1.0)" in err


# -- crashes -------------------------------------------------------------------------------------------------


def test_kill_9_of_the_service_mid_experiment_then_a_restart_finishes_the_campaign(
    tmp_path: Path, backend
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    service = service_process(lab_file(tmp_path), backend.bind(tmp_path / "data")).start()
    path = campaign_file(tmp_path, budget=6, function="daemon_procedures:gated", options={"gate": str(gate)})
    with service.client() as client:
        campaign_id = client.submit(path).campaign_id
    wait_for(lambda: running_files(gate) == 2, what="two experiments in flight")
    workers = service.family() - {service.pid}
    service.kill9()
    # Its workers notice the service is gone, record what they were doing, and exit.
    wait_for(lambda: not any(alive(p) for p in workers), 30, "the orphaned workers to exit")
    with Store(service.data_dir, read_only=True) as store:
        record = store.campaign(campaign_id)
        assert record.status.value == "running"  # nobody closed it: the service adopts it again
    (gate / "open").write_text("")
    service.start()
    summary = finished(service, campaign_id)
    assert summary.status == "completed"
    history = experiments(service, campaign_id)
    interrupted = [e for e in history if e.status == "interrupted"]
    assert len(interrupted) == 2 and all(e.cause == "crash" for e in interrupted)
    assert [e.status for e in history].count("done") == 6  # the budget, never a repeat of an interrupted one
    assert service.stop() == 0
    service.assert_nothing_left()


def test_a_killed_worker_is_replaced_and_its_experiment_accounted_for(
    daemon: LabServiceProcess, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    path = campaign_file(tmp_path, budget=4, function="daemon_procedures:gated", options={"gate": str(gate)})
    with daemon.client() as client:
        campaign_id = client.submit(path).campaign_id
        wait_for(lambda: running_files(gate) == 2, what="two experiments in flight")
        victim = next(w for w in client.call(m.ListWorkcells()).workcells if w.experiment is not None)
        os.kill(victim.worker_pid, signal.SIGKILL)
        wait_for(
            lambda: (
                next(w for w in client.call(m.ListWorkcells()).workcells if w.name == victim.name).restarts
                == 1
            ),
            what="the worker to be replaced",
        )
        (gate / "open").write_text("")
    summary = finished(daemon, campaign_id)
    assert summary.status == "completed"
    lost = next(e for e in experiments(daemon, campaign_id) if e.id == victim.experiment)
    assert (lost.status, lost.cause) == ("interrupted", "crash")
    assert lost.failure.startswith(f"the worker for workcell {victim.name} stopped (it exited with code -9)")


def test_sigterm_lets_work_in_flight_finish_and_the_next_start_carries_on(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    service = service_process(lab_file(tmp_path), tmp_path / "data", "--stop-timeout", "120").start()
    path = campaign_file(tmp_path, budget=5, function="daemon_procedures:gated", options={"gate": str(gate)})
    with service.client() as client:
        campaign_id = client.submit(path).campaign_id
    wait_for(lambda: running_files(gate) == 2, what="two experiments in flight")
    service.family()
    assert service.process is not None
    service.process.send_signal(signal.SIGTERM)
    (gate / "open").write_text("")
    assert service.process.wait(timeout=120) == 0, service.log_text()
    service.assert_nothing_left()
    log = service.log_text()
    assert "worker stopped" in log and "worker lost" not in log, (
        log
    )  # a clean stop is not reported as a crash
    with Store(service.data_dir, read_only=True) as store:
        history = store.experiments(campaign_id)
        assert [e.status for e in history] == [ExperimentStatus.DONE] * 2  # finished, not aborted
        assert campaign_state(store.campaign(campaign_id)).startswith("stale: waiting for the lab service")
    service.start()
    assert finished(service, campaign_id).status == "completed"
    assert service.stop() == 0
    service.assert_nothing_left()


# -- the API itself ------------------------------------------------------------------------------------------


def test_malformed_requests_get_typed_errors_and_the_service_carries_on(daemon: LabServiceProcess) -> None:
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    daemon.credentials().apply(socket)  # the owner's key, found in the data directory
    socket.connect(daemon.address)

    def ask(payload: bytes) -> dict:
        socket.send_multipart([b"", payload])
        assert socket.poll(10000), "no reply"
        return json.loads(socket.recv_multipart()[-1])

    try:
        cases = {
            b"not json": "bad_request",
            b"[1, 2]": "bad_request",
            b'{"params": {}}': "bad_request",
            b'{"method": "campaign.explode", "id": 3}': "unknown_method",
            b'{"method": "campaign.pause", "id": 4, "params": {"campaign_id": 7}}': "invalid_params",
            b'{"method": "campaign.pause", "id": 5, "params": {"campaign": "x"}}': "invalid_params",
            b'{"method": "campaign.pause", "id": 6, "params": {"campaign_id": "nope"}}': "not_found",
            b'{"method": "status", "params": []}': "invalid_params",
            b"[" * 100000 + b"]" * 100000: "bad_request",
            b'{"method": "status", "pad": "' + b"x" * (2 << 20) + b'"}': "too_large",
        }
        for payload, expected in cases.items():
            reply = ask(payload)
            assert reply["ok"] is False and reply["error"]["type"] == expected, (payload[:60], reply)
        assert ask(b'{"method": "campaign.pause", "id": 4, "params": {"campaign_id": 7}}')["id"] == 4
        assert daemon.call(m.Status()).lab == "compute"
    finally:
        socket.close()
        context.term()


def test_the_api_reference_is_generated_from_the_models() -> None:
    assert (ROOT / "docs" / "api.md").read_text() == render(), "run: python -m sdl.api.docs > docs/api.md"


def test_every_method_has_a_role_and_a_reply() -> None:
    for name, model in m.METHODS.items():
        assert model.method == name and isinstance(model.role, m.Role) and model.reply is not None
    assert m.EStop.role is m.Role.OPERATOR and m.ClearEStop.role is m.Role.ADMIN


def test_events_are_gap_free_for_a_subscriber(daemon: LabServiceProcess, tmp_path: Path) -> None:
    with daemon.client() as client:
        since = client.call(m.EventsSince(seq=0, limit=1)).last
        campaign_id = client.submit(campaign_file(tmp_path, budget=4)).campaign_id
        seen = []
        for event in client.events(since, idle_timeout=60):
            seen.append(event)
            if event.topic == "campaign.finished" and event.campaign_id == campaign_id:
                break
    assert [e.seq for e in seen] == list(range(since + 1, since + 1 + len(seen)))
    assert {e.topic for e in seen} >= {"campaign.submitted", "experiment.started", "experiment.done"}


def test_an_event_the_subscription_never_heard_still_reaches_the_stream(daemon: LabServiceProcess) -> None:
    """The last event of a story (sent while the subscription was reconnecting) is read from the record."""
    with daemon.client() as client:
        since = client.call(m.EventsSince(seq=0, limit=1)).last
        client._events_address = "tcp://127.0.0.1:9"  # a publisher that never answers: only the record
        client.call(m.EStop(reason="drill"))
        heard = []
        for event in client.events(since, idle_timeout=20):
            heard.append(event)
            if event.topic == "lab.estop" and event.body.get("active"):
                client.call(m.ClearEStop())  # published after the stream read the record: live only
            if event.topic == "lab.estop" and event.body.get("active") is False:
                break
    estops = [e.body for e in heard if e.topic == "lab.estop"]
    assert [(b["active"], b.get("reason")) for b in estops] == [(True, "drill"), (False, None)], heard
    assert [e.seq for e in heard] == list(range(since + 1, since + 1 + len(heard)))


def test_a_stock_bluesky_consumer_receives_the_runs_documents(
    daemon: LabServiceProcess, tmp_path: Path
) -> None:
    """Documents go out the bluesky way (bluesky's Publisher, a 0MQ proxy): RemoteDispatcher subscribes."""
    import asyncio
    import contextlib
    import threading

    from bluesky.callbacks.zmq import ClientCurve, RemoteDispatcher

    address = daemon.call(m.Status()).documents_address.removeprefix("tcp://")
    received: list[tuple[str, dict]] = []
    keys = daemon.data_dir / "keys"  # the owner's key and the service's public key
    dispatcher = RemoteDispatcher(
        address, curve_config=ClientCurve(keys / "owner.key_secret", keys / "server.key")
    )
    dispatcher.subscribe(lambda name, doc: received.append((name, doc)))

    def listen() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # stopped by the test
            dispatcher.start()

    thread = threading.Thread(target=listen, name="remote-dispatcher")
    thread.start()
    path = tmp_path / "plan.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: published
            parameters:
              - {name: x, type: real, low: 0.0, high: 1.0}
              - {name: y, type: real, low: 0.0, high: 1.0}
            objectives: [{measurement: loss}]
            budget: {max_experiments: 20}
            procedure:
              plan: daemon_procedures:waiting_plan
              options: {seconds: 0.05}
              extractor: daemon_procedures:plan_loss
            """
        )
    )

    def whole_runs() -> int:
        # A 0MQ subscriber misses what was published before its subscription reached the proxy (the "slow
        # joiner"), so the first runs may arrive without their start: count only runs seen from start to stop.
        started = {doc["uid"] for name, doc in list(received) if name == "start"}
        return sum(name == "stop" and doc["run_start"] in started for name, doc in list(received))

    try:
        wait_for(lambda: dispatcher._task is not None, 30, "the dispatcher to subscribe")
        with daemon.client() as client:
            campaign_id = client.submit(path).campaign_id
        wait_for(lambda: whole_runs() >= 2, 120, "two whole runs' documents")
    finally:
        dispatcher.loop.call_soon_threadsafe(dispatcher._task.cancel)
        thread.join(timeout=30)
    starts = {doc["uid"]: doc for name, doc in received if name == "start"}
    stops = [doc for name, doc in received if name == "stop" and doc["run_start"] in starts]
    assert stops, "no whole run came through"
    for stop in stops:
        start = starts[stop["run_start"]]
        assert start["sdl_campaign"] == campaign_id and start["plan_name"] == "waiting_plan"
        assert stop["exit_status"] == "success"
