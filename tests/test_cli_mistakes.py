"""What a first user trips on, handled as a mature tool would: failed campaigns say so, mistakes in paths and
procedure options are refused with exit code 2 and nothing written, signals are recorded by name, records can
be deleted, and a failure is printed once."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest
from test_cli import sdl, wait_for

from sdl.cli import main
from sdl.store import Store

CAMPAIGN = """\
name: tries
parameters: [{{name: x, type: real, low: 0, high: 1}}]
objectives: [{{measurement: {measurement}, goal: maximize}}]
budget: {{max_experiments: {budget}}}
optimizer: {{kind: random, seed: 1}}
procedure:
  function: test_cli_mistakes:{function}
  options: {options}
"""


def measure(recipe: dict, scale: float = 1.0) -> dict:
    return {"yield_": scale * recipe["x"]}


def measure_slowly(recipe: dict, gate: str) -> dict:
    Path(gate + ".running").write_text("")
    while not Path(gate).exists():
        pass
    return {"yield_": recipe["x"]}


class SyringeEmpty(Exception):
    """Stands in for a driver error tagged with its fault kind and instrument (decision 0003)."""

    fault = "alarm"
    instrument = "dye_pumps"


def stall(recipe: dict) -> dict:
    raise SyringeEmpty("dye_pumps: motor stalled at once (syringe empty)")


def write(tmp_path: Path, measurement: str = "yield_", budget: int = 4, function: str = "measure",
          options: str = "{}") -> Path:  # fmt: skip
    path = tmp_path / "tries.yaml"
    path.write_text(
        CAMPAIGN.format(measurement=measurement, budget=budget, function=function, options=options)
    )
    return path


def run(*args: str) -> int:
    return main(list(args))


def test_a_campaign_that_never_succeeds_ends_failed_with_exit_1(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, measurement="yeild")  # the typo: no experiment can ever be scored
    assert run("run", str(path), "--data-dir", str(tmp_path / "d")) == 1
    out = capsys.readouterr().out
    assert "campaign failed after" in out
    assert "budget spent: 4 of 4 experiments, without a single successful experiment" in out
    assert run("campaigns", "--data-dir", str(tmp_path / "d")) == 0
    listing = capsys.readouterr().out
    assert "failed" in listing and "4/4" in listing


def test_an_instrument_that_keeps_faulting_ends_the_run_with_exit_1_and_how_to_go_on(
    tmp_path: Path, capsys
) -> None:
    path = write(tmp_path, function="stall")
    assert run("run", str(path), "--data-dir", str(tmp_path / "d")) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "stopped: instrument dye_pumps taken out of service: 3 experiments in a row lost to it" in out
    assert "fix dye_pumps, then continue with: sdl run --resume tries-" in out


def test_validate_dry_run_calls_a_function_once_and_names_what_it_did_not_measure(
    tmp_path: Path, capsys
) -> None:
    assert run("validate", str(write(tmp_path)), "--dry-run") == 0
    assert "dry run at {'x': 0.5}: ok (yield_=0.5)" in capsys.readouterr().out
    assert run("validate", str(write(tmp_path, measurement="yeild")), "--dry-run") == 2
    err = capsys.readouterr().err
    assert "dry run at {'x': 0.5}: measurement 'yeild' is missing or not a number" in err
    assert "measured: yield_" in err


def test_a_procedure_option_the_function_does_not_take_is_refused_at_validate(tmp_path: Path, capsys) -> None:
    assert run("validate", str(write(tmp_path, options="{scal: 2}"))) == 2
    err = capsys.readouterr().err
    assert (
        "tries.yaml:8: procedure.options.scal: function test_cli_mistakes:measure takes no option(s) scal"
        in err
    )
    assert "(it takes: scale)" in err


def test_maximised_objectives_are_shown_as_measured_never_negated(tmp_path: Path, capsys) -> None:
    assert run("run", str(write(tmp_path)), "--data-dir", str(tmp_path / "d")) == 0
    out = capsys.readouterr().out
    assert "best value" in out and "yield_=" in out and "yield_=-" not in out


def test_sigterm_is_recorded_as_sigterm(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    path = write(tmp_path, function="measure_slowly", options=f"{{gate: '{gate}'}}")
    process = sdl("run", str(path), "--data-dir", str(tmp_path / "d"))
    wait_for(Path(str(gate) + ".running"), process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    with Store(tmp_path / "d", read_only=True) as store:
        (record,) = store.campaigns()
        (experiment,) = store.experiments(record.id)
    assert experiment.failure == "interrupted by the operator (SIGTERM)"
    assert record.stop_reason == "interrupted by the operator (SIGTERM)"


def test_a_failure_is_printed_once(tmp_path: Path) -> None:
    path = write(tmp_path, measurement="yeild", budget=2)
    process = sdl("run", str(path), "--data-dir", str(tmp_path / "d"))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    message = "measurement 'yeild' is missing or not a number"
    # One line per failed experiment, and the campaign's reason once (in its last line, and in the summary
    # table, which wraps it).
    assert (out + err).count(message) == 2 + 1


def test_outputs_into_a_missing_directory_are_refused(tmp_path: Path, capsys) -> None:
    data = str(tmp_path / "d")
    assert run("run", str(write(tmp_path)), "--data-dir", data) == 0
    with Store(data, read_only=True) as store:
        campaign_id = store.campaigns()[0].id
    capsys.readouterr()
    for command in (
        ["export", campaign_id, "-o", "/nonexistent/x.csv"],
        ["plot", campaign_id, "-o", "/nope/x.png"],
    ):
        assert run(*command, "--data-dir", data) == 2
        assert "does not exist (create it first)" in capsys.readouterr().err
    assert not Path("/nonexistent").exists() and not Path("/nope").exists()


def test_a_bad_data_dir_names_the_path_and_why(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run("run", str(write(tmp_path)), "--data-dir", str(blocker / "data")) == 2
    assert f"cannot create the store's directory {blocker / 'data'}" in capsys.readouterr().err
    assert run("campaigns", "--data-dir", str(tmp_path / "nowhere")) == 2
    assert f"no store in {tmp_path / 'nowhere'}" in capsys.readouterr().err


def test_delete_asks_unless_yes_and_removes_everything(tmp_path: Path, capsys, monkeypatch) -> None:
    data = str(tmp_path / "d")
    assert run("run", str(write(tmp_path)), "--data-dir", data) == 0
    with Store(data, read_only=True) as store:
        campaign_id = store.campaigns()[0].id
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert run("delete", campaign_id, "--data-dir", data) == 2
    assert "pass --yes in scripts" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert run("delete", campaign_id, "--data-dir", data) == 0
    assert "nothing deleted" in capsys.readouterr().out
    assert run("delete", campaign_id, "--yes", "--data-dir", data) == 0
    assert f"deleted campaign {campaign_id} (4 experiments)" in capsys.readouterr().out
    with Store(data, read_only=True) as store:
        assert store.campaigns() == []


def test_budget_on_resume_is_the_new_total(tmp_path: Path, capsys) -> None:
    data = str(tmp_path / "d")
    assert run("run", str(write(tmp_path, budget=3)), "--data-dir", data) == 0
    with Store(data, read_only=True) as store:
        campaign_id = store.campaigns()[0].id
    assert run("run", "--resume", campaign_id, "--budget", "5", "--data-dir", data) == 0
    with Store(data, read_only=True) as store:
        assert len(store.experiments(campaign_id)) == 5
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run("run", "--help")
    assert "with --resume, N is the new total" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("address", ["{arm.nosuch}"])
def test_an_unknown_endpoint_is_reported_by_validate(tmp_path: Path, capsys, address: str) -> None:
    root = Path(__file__).resolve().parents[1] / "experiments" / "color_matching"
    text = (
        (root / "campaign.yaml").read_text().replace("simulated: lab.yaml", f"simulated: {root / 'lab.yaml'}")
    )
    text = text.replace('"{spectrometer.obp}"', f'"{address}"')
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    assert run("validate", str(path)) == 2
    assert (
        "'{arm.nosuch}' is not served by lab.yaml: arm serves arm.dashboard, arm.gripper, arm.primary, "
        "arm.realtime, arm.rtde, arm.script"
    ) in capsys.readouterr().err


def test_validate_checks_a_lab_file_and_whether_a_campaign_fits_it(tmp_path: Path, capsys) -> None:
    root = Path(__file__).resolve().parents[1] / "experiments"
    assert run("validate", str(root / "two_stations" / "lab.yaml")) == 0
    assert "lab 'two-stations', 6 instrument(s), workcells station_a" in capsys.readouterr().out
    path = write(tmp_path)
    path.write_text(path.read_text() + "requires: {capabilities: [furnace]}\n")
    assert run("validate", str(path), "--lab", str(root / "two_stations" / "lab.yaml")) == 2
    assert "no workcell of lab 'two-stations'" in capsys.readouterr().err
    broken = tmp_path / "lab.yaml"
    broken.write_text("workcells:\n  a: {devices: {pump: nowhere}}\n")
    assert run("validate", str(broken)) == 2
    assert "workcell 'a' names unknown instrument(s) nowhere" in capsys.readouterr().err


def test_show_experiment_tells_its_whole_story(tmp_path: Path, capsys) -> None:
    data = str(tmp_path / "d")
    assert run("run", str(write(tmp_path, budget=2)), "--data-dir", data) == 0
    with Store(data, read_only=True) as store:
        campaign_id = store.campaigns()[0].id
    capsys.readouterr()
    assert run("show", campaign_id, "--experiment", "2", "--data-dir", data) == 0
    out = capsys.readouterr().out
    assert f"experiment 2 of {campaign_id}: done" in out
    assert "proposed -> running" in out and "running -> done" in out
    assert "decision: random in" in out and "1 observations, 0 pending" in out
    assert run("show", campaign_id, "--experiment", "9", "--data-dir", data) == 2
    assert f"campaign {campaign_id} has no experiment 9" in capsys.readouterr().err
