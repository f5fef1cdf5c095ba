"""One campaign lifecycle — start, adopt with recovery, close — whoever calls it.

A campaign an `sdl run` left behind when it was killed is adopted by `sdl run --resume` and by the lab
service's `resume` in the same way: the experiment it abandoned mid-run becomes interrupted (cause crash,
never re-run silently), spends no budget, and the campaign then finishes and closes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from sdl.api import models as m
from sdl.spec.status import CampaignStatus, Cause, ExperimentStatus
from sdl.store import Store
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def killed_foreground_run(tmp_path: Path, budget: int) -> tuple[Path, str, int]:
    """`sdl run` of a campaign whose first experiment never ends, killed (SIGKILL) while it runs: the data
    directory, the campaign id and the abandoned experiment's id."""
    gate = tmp_path / "gate"
    gate.mkdir()
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(
        textwrap.dedent(
            f"""\
            name: left-behind
            parameters:
              - {{name: x, type: real, low: 0.0, high: 1.0}}
              - {{name: y, type: real, low: 0.0, high: 1.0}}
            objectives: [{{measurement: loss}}]
            budget: {{max_experiments: {budget}}}
            optimizer: {{kind: random, seed: 2}}
            procedure:
              function: daemon_procedures:gated
              options: {{gate: {str(gate)!r}}}
            """
        )
    )
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    run = subprocess.Popen(
        [sys.executable, "-m", "sdl", "run", str(campaign), "--data-dir", str(data)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: any(gate.glob("running-*")), 120, "the first experiment to start")
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    (gate / "open").write_text("")  # the experiments the service runs end at once
    with Store(data, read_only=True) as store:
        (record,) = store.campaigns()
        (abandoned,) = store.experiments(record.id)
        assert record.status is CampaignStatus.RUNNING and abandoned.status is ExperimentStatus.RUNNING
    return data, record.id, abandoned.id


def test_a_campaign_a_killed_sdl_run_left_is_recovered_and_closed_by_the_services_resume(
    tmp_path: Path,
) -> None:
    data, campaign_id, abandoned = killed_foreground_run(tmp_path, budget=3)
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: compute\nworkcells:\n  w1: {}\n")
    with LabServiceProcess(lab, data, pythonpath=[TESTS, ROOT]).start() as service:
        # A foreground run's campaign is not the service's to adopt at start: only an operator's resume.
        reply = service.call(m.ResumeCampaign(campaign_id=campaign_id))
        assert reply.state == "running"
        wait_for(
            lambda: service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.status != "running",
            120,
            f"the resumed campaign to close (log: {service.log})",
        )
        summary = service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign
        experiments = service.call(m.ListExperiments(campaign_id=campaign_id)).experiments
    assert summary.status == "completed", summary
    first = experiments[0]
    assert first.id == abandoned and first.status == "interrupted" and first.cause == Cause.CRASH.value
    assert [e.status for e in experiments[1:]] == ["done"] * 3  # the interrupted one spent no budget
    with Store(data, read_only=True) as store:
        assert store.campaign(campaign_id).owner is None  # released when it closed
