"""A campaign recorded in PostgreSQL end to end: `sdl run --store URL`, then read back with `sdl show` and
`sdl export` from another data directory that names the same database, as another host would."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from postgres_server import PostgresServer

from sdl.cli import main
from sdl.store import DB_FILENAME, STORE_SETTING, Store

ROOT = Path(__file__).resolve().parents[1]
BRANIN = ROOT / "experiments" / "branin" / "campaign.yaml"
SDL = [sys.executable, "-c", "import sys; from sdl.cli import main; sys.exit(main())"]


def test_a_campaign_recorded_in_postgresql_is_read_back_from_another_data_dir(
    postgres: PostgresServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres.database()
    lab = tmp_path / "lab"
    done = subprocess.run(
        [*SDL, "run", str(BRANIN), "--budget", "8", "--seed", "4", "--data-dir", str(lab), "--store", url],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "budget spent: 8 of 8 experiments" in done.stdout and url in done.stdout
    assert (lab / STORE_SETTING).read_text().strip() == url and not (lab / DB_FILENAME).exists()

    elsewhere = tmp_path / "elsewhere"  # another host's data directory, naming the same database
    assert main(["campaigns", "--data-dir", str(elsewhere), "--store", url]) == 0
    listing = capsys.readouterr().out
    with Store(lab, read_only=True) as store:
        (record,) = store.campaigns()
        transitions = [store.transitions(e.id) for e in store.experiments(record.id)]
    assert record.id in listing and "8/8" in listing and "completed" in listing
    assert all([t.to_status.value for t in ts] == ["proposed", "running", "done"] for ts in transitions)

    assert main(["show", record.id, "--data-dir", str(elsewhere)]) == 0
    assert "optimizer bayesian (seed 4)" in capsys.readouterr().out
    assert main(["export", record.id, "--format", "csv", "--data-dir", str(elsewhere)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["experiment"] for r in rows] == [str(i) for i in range(1, 9)]
    assert {r["status"] for r in rows} == {"done"}

    # SQLite's online backup has no meaning here: the operator is sent to the server's own tools.
    assert main(["backup", str(tmp_path / "copy.sqlite3"), "--data-dir", str(lab)]) == 2
    assert "pg_dump" in capsys.readouterr().err


def test_a_data_dir_with_an_sqlite_store_is_not_silently_pointed_elsewhere(
    postgres: PostgresServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store(tmp_path / "lab") as store:
        store.create_campaign(name="here", spec={}, seed=0, max_experiments=1)
    assert main(["campaigns", "--data-dir", str(tmp_path / "lab"), "--store", postgres.database()]) == 2
    assert "already holds an SQLite store" in capsys.readouterr().err
    assert not (tmp_path / "lab" / STORE_SETTING).exists()
