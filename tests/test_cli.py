"""The `sdl` command: end to end on the Branin campaign, Ctrl-C on a running campaign, exit codes, help."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sdl.cli import build_parser, main
from sdl.store import Store

ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = ROOT / "tests"
BRANIN = ROOT / "experiments" / "branin" / "campaign.yaml"
SDL = [sys.executable, "-c", "import sys; from sdl.cli import main; sys.exit(main())"]


def sdl(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.Popen[str]:
    """`sdl ...` as a subprocess (the console script's entry point, without relying on PATH)."""
    full_env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), **(env or {})}
    return subprocess.Popen(
        [*SDL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, **kwargs
    )


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"sdl exited with {process.returncode} before {path.name}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.02)


def only_campaign(data_dir: Path) -> str:
    with Store(data_dir) as store:
        (record,) = store.campaigns()
        return record.id


# -- end to end on Branin ----------------------------------------------------------------------------------


def test_branin_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    process = sdl("run", str(BRANIN), "--budget", "12", "--seed", "4", "--data-dir", str(data_dir))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    campaign_id = only_campaign(data_dir)
    assert f"campaign {campaign_id} (branin)" in out
    assert "[12/12] experiment 12" in out  # plain progress lines when not a terminal
    assert "budget spent: 12 of 12 experiments" in out and "best recipe" in out

    assert main(["campaigns", "--data-dir", str(data_dir)]) == 0
    listing = capsys.readouterr().out
    assert campaign_id in listing and "12/12" in listing and "completed" in listing

    assert main(["show", campaign_id, "--data-dir", str(data_dir)]) == 0
    assert "optimizer bayesian (seed 4)" in capsys.readouterr().out

    assert main(["export", campaign_id, "--format", "csv", "--data-dir", str(data_dir)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 12
    assert list(rows[0])[:6] == ["experiment", "status", "x1", "x2", "branin", "regret"]
    assert {r["status"] for r in rows} == {"done"}
    assert float(rows[0]["branin"]) == pytest.approx(float(rows[0]["loss"]))  # minimised: the same here

    jsonl = tmp_path / "history.jsonl"
    assert (
        main(["export", campaign_id, "--format", "jsonl", "-o", str(jsonl), "--data-dir", str(data_dir)]) == 0
    )
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["experiment"] for r in records] == list(range(1, 13))
    assert records[-1]["model"] and isinstance(records[-1]["x1"], float)

    png = tmp_path / "plot.png"
    assert main(["plot", campaign_id, "-o", str(png), "--data-dir", str(data_dir)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- Ctrl-C --------------------------------------------------------------------------------------------------

SLOW_PROCEDURE = textwrap.dedent(
    """
    import time
    from pathlib import Path

    def measure(recipe, counter, block_at=0):
        calls = int(Path(counter).read_text()) + 1 if Path(counter).exists() else 1
        Path(counter).write_text(str(calls))
        if calls == block_at:  # a long experiment, long enough to be interrupted
            Path(counter + ".blocking").write_text("")
            while True:
                time.sleep(0.05)
        return {"loss": (recipe["x"] - 0.25) ** 2}
    """
)

SLOW_CAMPAIGN = """
name: slow
parameters: [{{name: x, type: real, low: 0, high: 1}}]
objectives: [{{measurement: loss}}]
budget: {{max_experiments: 6}}
optimizer: {{kind: bayesian, initial_design: 3, seed: 2}}
procedure:
  function: slow_procedure_for_sdl_tests:measure
  options: {{counter: "{counter}", block_at: {block_at}}}
"""


def test_ctrl_c_marks_the_experiment_interrupted_and_resume_continues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "slow_procedure_for_sdl_tests.py").write_text(SLOW_PROCEDURE)
    counter = tmp_path / "calls"
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW_CAMPAIGN.format(counter=counter, block_at=3))
    data_dir = tmp_path / "data"

    process = sdl("run", str(path), "--data-dir", str(data_dir))
    wait_for(Path(f"{counter}.blocking"), process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    campaign_id = only_campaign(data_dir)
    assert f"continue with: sdl run --resume {campaign_id}" in out
    assert "Traceback" not in err
    with Store(data_dir) as store:
        assert [e.status.value for e in store.experiments(campaign_id)] == ["done", "done", "interrupted"]
        assert store.campaign(campaign_id).status.value == "interrupted"

    assert main(["run", "--resume", campaign_id, "--data-dir", str(data_dir)]) == 0
    assert "budget spent: 6 of 6 experiments" in capsys.readouterr().out
    with Store(data_dir) as store:
        resumed = store.experiments(campaign_id)
    assert [e.status.value for e in resumed] == ["done", "done", "interrupted"] + ["done"] * 4

    path.write_text(SLOW_CAMPAIGN.format(counter=tmp_path / "calls2", block_at=0))
    assert main(["run", str(path), "--data-dir", str(tmp_path / "straight")]) == 0
    with Store(tmp_path / "straight") as store:
        straight = store.experiments(store.campaigns()[0].id)
    assert [e.recipe for e in resumed if e.status.value == "done"] == [e.recipe for e in straight]


def test_resume_with_a_larger_budget_extends_a_finished_campaign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    assert main(["run", str(BRANIN), "--budget", "3", "--data-dir", str(data_dir)]) == 0
    campaign_id = only_campaign(data_dir)
    assert main(["run", "--resume", campaign_id, "--budget", "5", "--data-dir", str(data_dir)]) == 0
    assert "budget spent: 5 of 5 experiments" in capsys.readouterr().out
    with Store(data_dir) as store:
        assert [e.seq for e in store.experiments(campaign_id)] == [1, 2, 3, 4, 5]
        assert store.campaign(campaign_id).spec["budget"]["max_experiments"] == 5
    assert main(["run", "--resume", campaign_id, "--seed", "1", "--data-dir", str(data_dir)]) == 2
    assert "--resume takes a campaign id (and optionally --budget)" in capsys.readouterr().err


PLAN_CAMPAIGN = """
name: held-pump
parameters: [{{name: volume, type: real, low: 0, high: 10}}]
objectives: [{{measurement: volume, goal: target, target: 3}}]
budget: {{max_experiments: 3}}
optimizer: {{kind: random}}
procedure:
  plan: test_lab_wiring:dispense
  measurements: {{volume: {{field: pump_volume}}}}
lab:
  instruments:
    pump:
      driver: test_lab_wiring:make_pump
      address: socket://127.0.0.1:9
      options: {{hold: true, marker: "{marker}"}}
"""


def test_ctrl_c_during_a_plan_stops_the_pump_through_the_run_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pump"
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN_CAMPAIGN.format(marker=marker))
    data_dir = tmp_path / "data"
    process = sdl("run", str(path), "--data-dir", str(data_dir), "-v")
    wait_for(tmp_path / "pump.moving", process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert (tmp_path / "pump.stopped").exists()
    assert "SIGINT: stopping the experiment in flight" in err
    campaign_id = only_campaign(data_dir)
    with Store(data_dir) as store:
        (experiment,) = store.experiments(campaign_id)
        assert experiment.status.value == "interrupted"
        assert experiment.assignments == {
            "pump": {"driver": "test_lab_wiring:make_pump", "address": "socket://127.0.0.1:9"}
        }
        assert [name for name, _ in store.documents(experiment.id)] == ["start", "stop"]
    assert main(["show", campaign_id, "--experiment", "1", "--data-dir", str(data_dir)]) == 0
    story = capsys.readouterr().out
    assert "experiment 1 of" in story and "interrupted (cause: operator)" in story
    assert "command journal (3 lines)" in story  # sent set, the abort, then the set failing as it stopped
    assert "interrupted by the operator (Ctrl-C)" in story and "RuntimeError: pump stopped" in story
    assert "never acknowledged" not in story  # the failed set closed the journal: nothing left in doubt
    assert "documents: 2 (start, stop)" in story


# -- exit codes and messages ---------------------------------------------------------------------------


def test_bad_input_exits_2_without_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    assert main(["run", "--data-dir", str(data_dir)]) == 2
    assert "give a campaign FILE to run, or --resume CAMPAIGN_ID" in capsys.readouterr().err
    assert main(["run", str(BRANIN), "--budget", "0", "--data-dir", str(data_dir)]) == 2
    assert "--budget must be at least 1, got 0" in capsys.readouterr().err
    assert main(["show", "nope", "--data-dir", str(data_dir)]) == 2
    assert f"no store in {data_dir}" in capsys.readouterr().err
    assert main(["run", "--resume", "nope", "--data-dir", str(data_dir)]) == 2
    assert not data_dir.exists()
    assert main(["run", str(tmp_path / "missing.yaml"), "--data-dir", str(data_dir)]) == 2
    assert "cannot read campaign file" in capsys.readouterr().err
    assert not data_dir.exists()


def test_unknown_campaign_id_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Store(tmp_path).close()
    assert main(["export", "nope", "--data-dir", str(tmp_path)]) == 2
    assert "no campaign 'nope'" in capsys.readouterr().err


def test_a_lab_that_cannot_start_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN_CAMPAIGN.format(marker=tmp_path / "m").replace("make_pump", "make_broken"))
    assert main(["run", str(path), "--data-dir", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert "error: LabError: instrument 'pump' (test_lab_wiring:make_broken) at socket://127.0.0.1:9" in err
    assert "Traceback" not in err
    with Store(tmp_path / "data") as store:
        (record,) = store.campaigns()
        assert record.status.value == "failed" and "LabError" in (record.stop_reason or "")


def test_demo_runs_the_packaged_campaign_and_says_where_the_results_went(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdl.cli import run

    monkeypatch.setattr(run, "DEMO_CAMPAIGN", ("branin", "campaign.yaml"))  # stands in for the demo's file
    data_dir = tmp_path / "data"
    assert main(["demo", "--budget", "4", "--seed", "1", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    campaign_id = only_campaign(data_dir)
    png, csv_path = data_dir / "exports" / f"{campaign_id}.png", data_dir / "exports" / f"{campaign_id}.csv"
    assert f"plot:   {png}" in out and f"export: {csv_path}" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert len(csv_path.read_text().splitlines()) == 1 + 4


def test_demo_without_its_campaign_says_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdl.cli import run

    monkeypatch.setattr(run, "DEMO_CAMPAIGN", ("no_such_demo", "campaign.yaml"))
    assert main(["demo", "--data-dir", str(tmp_path / "data")]) == 1
    assert (
        "the demo campaign experiments/no_such_demo/campaign.yaml is not installed" in capsys.readouterr().err
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "command", ["run", "demo", "schema", "validate", "campaigns", "show", "export", "plot"]
)
def test_every_command_explains_itself(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: sdl {command}" in text and "--data-dir" in text and "--verbose" in text
    description = text.split("\n\n")[1]
    assert len(description) > 50 and not description.startswith(("options", "positional"))
