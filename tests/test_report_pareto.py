"""A two-objective campaign file end to end: `sdl show` lists the Pareto front, `sdl plot` draws it, and
exports mark the non-dominated experiments."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sdl.cli import main
from sdl.optimizer import pareto_mask
from sdl.spec.loading import load_campaign
from sdl.store import Store

ROOT = Path(__file__).resolve().parents[1]
SNAR = ROOT / "experiments" / "snar_flow" / "campaign.yaml"


def test_snar_campaign_shows_plots_and_exports_its_pareto_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from sdl.cli import main; sys.exit(main())", "run", str(SNAR),
         "--budget", "14", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Store(data_dir) as store:
        (record,) = store.campaigns()
        history = store.experiments(record.id)

    assert main(["export", record.id, "--data-dir", str(data_dir)]) == 0
    # Columns are labelled with their units ('sty [kg m-3 h-1]'); the names are before the bracket.
    rows = [{k.split(" [")[0]: v for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(capsys.readouterr().out))]  # fmt: skip
    assert "pareto" in rows[0]
    losses = np.array([[-float(r["sty"]), float(r["e_factor"])] for r in rows])
    marked = [r["pareto"] == "true" for r in rows]
    assert marked == pareto_mask(losses).tolist() and any(marked)

    assert main(["show", record.id, "--data-dir", str(data_dir)]) == 0
    shown = capsys.readouterr().out
    assert f"Pareto front: {sum(marked)} non-dominated experiment(s), hypervolume" in shown
    assert "reference: sty 5000, e_factor 12" in shown

    png = tmp_path / "snar.png"
    assert main(["plot", record.id, "-o", str(png), "--data-dir", str(data_dir)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    campaign = load_campaign(SNAR).campaign
    assert campaign.multi_objective == "pareto" and len(history) == 14
    assert {e.decision.model for e in history if e.decision} == {"sobol", "gp-pareto"}
