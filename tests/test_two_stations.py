"""The two-station lab as its README tells an operator to use it: `sdl daemon --lab
experiments/two_stations/lab.yaml`, then `sdl submit` its campaign, a plain-function campaign, and by
mistake its bench file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdl.api import models as m
from sdl.cli import main
from sdl.spec.lab import load_lab
from sdl.spec.loading import load_campaign
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
STATIONS = ROOT / "experiments" / "two_stations"


def finished(service: LabServiceProcess, campaign_id: str) -> m.CampaignSummary:
    return wait_for(
        lambda: (
            (c := service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running" and c
        ),
        300,
        f"{campaign_id} to end",
    )


def submitted(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().removeprefix("submitted campaign ")


def test_the_two_station_campaign_fits_both_stations_of_its_lab() -> None:
    lab, loaded = load_lab(STATIONS / "lab.yaml"), load_campaign(STATIONS / "campaign.yaml")
    assert {w: lab.why_not(w, loaded.campaign, loaded.base_dir) for w in lab.workcells} == {
        "station_a": [],
        "station_b": [],
    }


def test_its_campaign_and_a_plain_function_run_on_the_two_station_lab(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LabServiceProcess(STATIONS / "lab.yaml", tmp_path / "data", pythonpath=[ROOT]).start() as service:
        connect = ["--connect", service.address, "--data-dir", str(tmp_path / "data")]
        assert main(["submit", str(STATIONS / "campaign.yaml"), "--budget", "2", *connect]) == 0
        colours = submitted(capsys)
        branin_file = ROOT / "experiments" / "branin" / "campaign.yaml"
        assert main(["submit", str(branin_file), "--budget", "4", *connect]) == 0
        branin = submitted(capsys)
        assert main(["submit", str(STATIONS / "bench.yaml"), *connect]) == 2
        err = capsys.readouterr().err
        # what the file is, not the eight schema errors of a campaign file that it is not
        assert err.count("error:") == 2 and "missing required field" not in err, err
        assert "bench.yaml: this is a simulated lab file" in err and "expected a campaign file" in err

        colour_run = finished(service, colours)
        assert (colour_run.status, colour_run.counts) == ("completed", {"done": 2})
        branin_run = finished(service, branin)
        failures = [e.failure for e in service.call(m.ListExperiments(campaign_id=branin)).experiments]
        assert (branin_run.status, branin_run.counts) == ("completed", {"done": 4}), failures
        assert service.stop() == 0
