"""The lab service as an operator meets it: workcell options that reach only the plans that take them, a
plan that never waits on a lease its own experiment holds, and states that say what is true (an e-stopped
lab holds its campaigns and workcells, an abort is aborting, the audit names the campaign a submission
created, the status names the dashboard)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from test_daemon import campaign_file, experiments, finished, running_files, service_process

from sdl.api import models as m
from sdl.api.models import ApiError
from sdl.cli import main
from sdl.store import Store
from sdl.testing import LabServiceProcess, wait_for


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def plan_campaign(tmp_path: Path, name: str, budget: int, extra: str = "") -> Path:
    return write(
        tmp_path / f"{name}.yaml",
        f"""\
        name: {name}
        parameters:
          - {{name: x, type: real, low: 0.0, high: 1.0}}
          - {{name: y, type: real, low: 0.0, high: 1.0}}
        objectives: [{{measurement: loss}}]
        budget: {{max_experiments: {budget}}}
        optimizer: {{kind: bayesian, initial_design: 4, seed: 1}}
        procedure:
          plan: daemon_procedures:waiting_plan
          options: {{seconds: 0}}
          extractor: daemon_procedures:plan_loss
        """
        + textwrap.dedent(extra),
    )


def all_idle(service: LabServiceProcess) -> bool:
    return all(w.state == "idle" for w in service.call(m.ListWorkcells()).workcells)


def test_workcell_options_reach_only_the_plans_that_take_them(tmp_path: Path) -> None:
    """Two stations whose options say where to dispense, and one without: a plain function runs on all
    three (it is never handed a workcell's options); a plan that takes no such option runs only where
    there are none, and is refused, with the reason, when only the stations could run it."""
    lab = write(
        tmp_path / "lab.yaml",
        """\
        name: stations
        workers: {heartbeat_timeout: 5}
        workcells:
          w1: {capabilities: [station], options: {dispense_station: a}}
          w2: {capabilities: [station], options: {dispense_station: b}}
          w3: {}
        """,
    )
    with service_process(lab, tmp_path / "data").start() as service:
        wait_for(lambda: all_idle(service), what="three workers up")
        with service.client() as client:
            function_id = client.submit(campaign_file(tmp_path, "function", budget=6)).campaign_id
            plan_id = client.submit(plan_campaign(tmp_path, "plan", budget=3)).campaign_id
            with pytest.raises(ApiError) as refused:
                client.submit(plan_campaign(tmp_path, "stations", 3, "requires: {capabilities: [station]}\n"))
        assert finished(service, function_id).status == "completed"
        assert finished(service, plan_id).status == "completed"
        ran = experiments(service, function_id)
        assert [e.status for e in ran] == ["done"] * 6, [e.failure for e in ran]
        assert {e.workcell for e in ran} & {"w1", "w2"}  # it ran where the options are, untouched by them
        planned = experiments(service, plan_id)
        assert [(e.status, e.workcell) for e in planned] == [("done", "w3")] * 3, [e.failure for e in planned]
        takes = "plan daemon_procedures:waiting_plan takes no option(s) dispense_station (it takes: seconds)"
        assert refused.value.error.type == "invalid_campaign"
        assert refused.value.error.details == [
            f"workcell w1: its plan options (dispense_station) do not fit: {takes}",
            f"workcell w2: its plan options (dispense_station) do not fit: {takes}",
            "workcell w3: no capability station",
        ]
        assert service.stop() == 0


def test_a_plan_never_waits_on_a_lease_its_own_experiment_holds(tmp_path: Path) -> None:
    """The plan leases the motor and the probe in one call, but only the motor is leased on demand: the
    probe is the experiment's for its whole run. A misspelt device to lease on demand is refused at once."""
    lab = write(
        tmp_path / "lab.yaml",
        """\
        name: motors
        workers: {heartbeat_timeout: 5}
        instruments:
          m1: {driver: "daemon_procedures:make_motor", address: none}
          p1: {driver: "daemon_procedures:make_motor", address: none}
        workcells:
          w1: {devices: {motor: m1, probe: p1}}
        """,
    )
    procedure = """\
        procedure:
          plan: lease_procedures:move_both
          extractor: daemon_procedures:plan_loss
          lease_on_demand: [{0}]
        requires: {{devices: [motor, probe]}}
        """
    common = """\
        name: {0}
        parameters:
          - {{name: x, type: real, low: 0.0, high: 1.0}}
          - {{name: y, type: real, low: 0.0, high: 1.0}}
        objectives: [{{measurement: loss}}]
        budget: {{max_experiments: 2}}
        """
    good, typo = tmp_path / "good.yaml", tmp_path / "typo.yaml"
    for path, name, device in ((good, "good", "motor"), (typo, "typo", "motr")):
        path.write_text(textwrap.dedent(common.format(name)) + textwrap.dedent(procedure.format(device)))
    with service_process(lab, tmp_path / "data").start() as service:
        with service.client() as client:
            campaign_id = client.submit(good).campaign_id
            summary = finished(service, campaign_id, timeout=120)
            assert (summary.status, summary.counts) == ("completed", {"done": 2})
            with pytest.raises(ApiError) as refused:
                client.submit(typo)
        devices = "(the plan's devices: motor, probe)"
        assert refused.value.error.details == [
            f"{typo}:10: procedure.lease_on_demand[0]: unknown device 'motr' {devices}"
        ]
        first = experiments(service, campaign_id)[0]
        journal = service.call(m.ShowExperiment(experiment_id=first.id)).journal
        leases = [(line.entry, line.detail) for line in journal if line.command in ("lease", "release")]
        assert leases == [
            ("lease", "m1 (p1: held for the whole run)"),
            ("granted", "m1"),
            ("released", "m1"),
        ]
        assert service.stop() == 0


def test_an_estopped_lab_shows_its_campaigns_and_workcells_held(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """And the rest an operator reads: the status names the dashboard, an abort says it is aborting, and
    the audit entry of a submission names the campaign it created."""
    lab = write(tmp_path / "lab.yaml", "name: compute\nworkcells:\n  w1: {}\n")
    gate = tmp_path / "gate"
    gate.mkdir()
    path = campaign_file(tmp_path, budget=6, function="daemon_procedures:gated", options={"gate": str(gate)})
    with service_process(lab, tmp_path / "data", "--http", "127.0.0.1:0").start() as service:
        with service.client() as client:
            campaign_id = client.submit(path).campaign_id
            wait_for(lambda: running_files(gate) == 1, what="an experiment running")
            client.call(m.EStop(reason="drill"))
            (gate / "open").write_text("")  # a plain function cannot be stopped: it finishes
            wait_for(
                lambda: [w.state for w in client.call(m.ListWorkcells()).workcells] == ["held"],
                what="the workcell to be held",
            )
            assert client.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.state == "held"
            assert main(["status", "--connect", service.address, "--data-dir", str(tmp_path / "data")]) == 0
            out = capsys.readouterr().out
            http = client.call(m.Status()).http_address
            assert http is not None and http.startswith("http://127.0.0.1:")
            assert f"dashboard: {http}" in out
            assert "│ w1       │ held" in out and "│ held " in out, out
            (gate / "open").unlink()
            client.call(m.ClearEStop())
            wait_for(lambda: running_files(gate) == 2, what="the next experiment to start")
            assert client.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.state == "running"
        assert (
            main(["abort", campaign_id, "--connect", service.address, "--data-dir", str(tmp_path / "data")])
            == 0
        )
        assert capsys.readouterr().out == f"campaign {campaign_id}: aborting\n"
        (gate / "open").write_text("")
        summary = finished(service, campaign_id)
        assert summary.status == "interrupted"
        assert service.stop() == 0
    with Store(tmp_path / "data", read_only=True) as store:
        audit = {a.action: a.target for a in store.audit_log()}
    assert audit["campaign.submit"] == campaign_id
