"""The lab service after things went wrong, as an operator meets it: a release that could not release, the
experiments a killed service's workers closed on their own, and an experiment refused an instrument that a
dead worker left mid-move. Each through the real service, its workers and its CLI."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest

from sdl.api import models as m
from sdl.cli import main
from sdl.spec.status import ExperimentStatus
from sdl.store import Store
from sdl.testing import LabServiceProcess, alive, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def service_process(lab: Path, data_dir: Path) -> LabServiceProcess:
    return LabServiceProcess(lab, data_dir, pythonpath=[TESTS, ROOT])


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def finished(service: LabServiceProcess, campaign_id: str, timeout: float = 120) -> m.CampaignSummary:
    return wait_for(
        lambda: (
            (c := service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running" and c
        ),
        timeout,
        f"{campaign_id} to end",
    )


# -- a release that did not release --------------------------------------------------------------------------


def test_a_release_whose_check_fails_exits_non_zero_and_is_audited_as_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    broken.write_text("the lamp does not light")
    lab = write(
        tmp_path / "lab.yaml",
        f"""\
        name: probes
        workers: {{heartbeat_timeout: 5}}
        instruments:
          probe: {{driver: "daemon_procedures:make_probe", options: {{broken: "{broken}"}}}}
        workcells:
          w1: {{devices: {{probe: probe}}}}
        """,
    )
    with service_process(lab, tmp_path / "data").start() as service:
        service.call(m.QuarantineInstrument(name="probe", reason="lamp replaced"))
        wait_for(lambda: service.call(m.ListWorkcells()).workcells[0].worker_pid, what="the worker")
        wait_for(
            lambda: service.call(m.ListWorkcells()).workcells[0].state == "blocked", what="the worker ready"
        )
        capsys.readouterr()
        assert (
            main(["release", "probe", "--connect", service.address, "--data-dir", str(tmp_path / "data")])
            == 1
        )
        err = capsys.readouterr().err
        assert "probe stays quarantined" in err and "the lamp does not light" in err, err
        [probe] = service.call(m.ListInstruments()).instruments
        assert probe.state == "quarantined"

        broken.unlink()  # mended
        assert (
            main(["release", "probe", "--connect", service.address, "--data-dir", str(tmp_path / "data")])
            == 0
        )
        assert "probe released" in capsys.readouterr().out
        [probe] = service.call(m.ListInstruments()).instruments
        assert probe.state == "ok"
        audit = service.call(m.ListAudit(action="instrument.release")).entries
    assert [a.result.split(":")[0] for a in audit] == ["refused", "ok"]
    assert "the lamp does not light" in audit[0].result
    assert service.stop() == 0


# -- status changes nobody announced -------------------------------------------------------------------------


def compute_lab(tmp_path: Path) -> Path:
    return write(
        tmp_path / "lab.yaml",
        """\
        name: compute
        workers: {heartbeat_timeout: 5}
        workcells:
          w1: {}
          w2: {}
        """,
    )


def gated_campaign(tmp_path: Path, gate: Path, budget: int, points: int = 0) -> Path:
    return write(
        tmp_path / "gated.yaml",
        f"""\
        name: gated
        parameters:
          - {{name: x, type: real, low: 0.0, high: 1.0}}
          - {{name: y, type: real, low: 0.0, high: 1.0}}
        objectives: [{{measurement: loss}}]
        budget: {{max_experiments: {budget}}}
        optimizer: {{kind: bayesian, initial_design: 4, seed: 1}}
        procedure:
          function: daemon_procedures:gated
          options: {{gate: "{gate}", points: {points}}}
        """,
    )


def test_experiments_closed_by_a_killed_services_workers_reach_the_event_stream(tmp_path: Path) -> None:
    """kill -9 of the service: its workers record their own experiments as interrupted and exit. The next
    service publishes those status changes; in the end every change in the store is on the stream, once,
    in order."""
    gate = tmp_path / "gate"
    gate.mkdir()
    service = service_process(compute_lab(tmp_path), tmp_path / "data").start()
    with service.client() as client:
        campaign_id = client.submit(gated_campaign(tmp_path, gate, budget=4)).campaign_id
    wait_for(lambda: len(list(gate.glob("running-*"))) == 2, what="two experiments in flight")
    workers = service.family() - {service.pid}
    service.kill9()
    wait_for(lambda: not any(alive(p) for p in workers), 30, "the orphaned workers to exit")
    with Store(service.data_dir, read_only=True) as store:
        closed = [e.id for e in store.experiments(campaign_id) if e.status is ExperimentStatus.INTERRUPTED]
        assert len(closed) == 2  # by the workers themselves: nothing was left for the next service to mark
    (gate / "open").write_text("")
    service.start()
    assert finished(service, campaign_id).status == "completed"
    with service.client() as client:
        events = client.call(m.EventsSince(seq=0, limit=10_000)).events
    assert service.stop() == 0
    service.assert_nothing_left()
    heard = [e.body["experiment_id"] for e in events if e.topic == "experiment.interrupted"]
    assert sorted(heard) == sorted(closed)
    word = {"running": "started"}
    with Store(service.data_dir, read_only=True) as store:
        for experiment in store.experiments(campaign_id):
            changes = [
                word.get(t.to_status.value, t.to_status.value) for t in store.transitions(experiment.id)
            ]
            on_stream = [
                e.topic.removeprefix("experiment.")
                for e in events
                if e.topic.startswith("experiment.") and e.body["experiment_id"] == experiment.id
            ]
            assert on_stream == changes, experiment.id


# -- a lease refused for an instrument a dead worker left mid-move -----------------------------------------


def journal(store: Store, experiment_id: int) -> list[tuple[str, str]]:
    return [(j.entry, j.command) for j in store.journal(experiment_id)]


def test_an_experiment_refused_an_instrument_left_mid_move_names_it_in_its_fault(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    lab = write(
        tmp_path / "lab.yaml",
        f"""\
        name: shared-arm
        workers: {{heartbeat_timeout: 5}}
        instruments:
          arm: {{driver: "daemon_procedures:make_gated_motor", options: {{gate: "{gate}"}}}}
        workcells:
          w1: {{devices: {{arm: arm}}}}
          w2: {{devices: {{arm: arm}}}}
        """,
    )
    campaign = write(
        tmp_path / "arm.yaml",
        """\
        name: arm
        parameters: [{name: x, type: real, low: 0.0, high: 1.0}, {name: y, type: real, low: 0.0, high: 1.0}]
        objectives: [{measurement: loss}]
        budget: {max_experiments: 3}
        optimizer: {kind: random, seed: 2}
        requires: {devices: [arm]}
        procedure:
          plan: daemon_procedures:leased_move
          extractor: daemon_procedures:plan_loss
          lease_on_demand: [arm]
        """,
    )
    with service_process(lab, tmp_path / "data").start() as service, service.client() as client:
        campaign_id = client.submit(campaign).campaign_id

        def moving_and_waiting() -> tuple[int, int] | None:
            """(the experiment moving the arm, the one waiting for it), once both are so."""
            with Store(service.data_dir, read_only=True) as store:
                running = store.experiments_with_status(campaign_id, ExperimentStatus.RUNNING)
                lines = {e.id: journal(store, e.id) for e in running}
            moving = [i for i, j in lines.items() if ("sent", "set") in j and ("done", "set") not in j]
            waiting = [
                i for i, j in lines.items() if ("lease", "lease") in j and ("granted", "lease") not in j
            ]
            return (moving[0], waiting[0]) if moving and waiting else None

        moving, waiting = wait_for(
            moving_and_waiting, 120, "one experiment moving the arm, one waiting for it"
        )
        cells = {w.experiment: w for w in client.call(m.ListWorkcells()).workcells}
        os.kill(cells[moving].worker_pid, signal.SIGKILL)
        refused = wait_for(
            lambda: next(
                (e for e in client.call(m.ListExperiments(campaign_id=campaign_id)).experiments
                 if e.id == waiting and e.status != "running"),
                None,
            ),
            60,
            "the waiting experiment to end",
        )  # fmt: skip
        (gate / "open").write_text("")  # the arm moves freely from now on
        assert finished(service, campaign_id).status == "completed"
        arm = client.call(m.ListInstruments()).instruments[0]
    assert (refused.status, refused.fault_kind, refused.fault_instrument) == ("faulted", "not_ready", "arm")
    assert "arm is out of service (suspect" in (refused.failure or "")
    # Refused an instrument already out of service, it costs the arm no fault of its own.
    assert arm.state == "ok" and arm.faults == 0
