"""Data packages that cannot be trusted are refused, exports land whole or not at all, and every export
format writes the one experiments table (conditions and units included)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import frictionless
import pytest

from sdl.cli import main
from sdl.exports import datapackage

# -- helpers -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package(demo_record, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo campaign's data package, written once; tests copy it before damaging it."""
    data, campaign_id = demo_record
    out = tmp_path_factory.mktemp("package") / "demo"
    assert export(data, campaign_id, "datapackage", out) == 0
    return out


def export(data: Path, campaign_id: str, fmt: str, output: Path | str) -> int:
    return main(["export", campaign_id, "--format", fmt, "-o", str(output), "--data-dir", str(data)])


def copy(package: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(package, target)
    return target


def rehash(package: Path) -> None:
    """Make the descriptor agree with the files again (as someone editing a package by hand might)."""
    path = package / "datapackage.json"
    descriptor = json.loads(path.read_text())
    for resource in descriptor["resources"]:
        data = (package / resource["path"]).read_bytes()
        resource["bytes"] = len(data)
        resource["hash"] = "sha256:" + hashlib.sha256(data).hexdigest()
    path.write_text(json.dumps(descriptor, indent=1))


def imports(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    data = tmp_path / "target"
    code = main(["import", str(package), "--data-dir", str(data)])
    err = capsys.readouterr().err
    if code != 0:
        assert not data.exists(), "a refused import wrote to the store"
    return code, " ".join(err.split())


# -- 9: every resource's hash is checked ---------------------------------------------------------------------


def test_an_edited_measurement_in_the_record_is_refused_naming_the_file(package, tmp_path, capsys):
    damaged = copy(package, tmp_path)
    record = damaged / "record.json"
    text = record.read_text()
    experiment = json.loads(text)["experiments"][0]
    measured = json.loads(experiment["measurements_json"])
    edited = dict(measured, distance=measured["distance"] / 2)
    record.write_text(text.replace(json.dumps(experiment["measurements_json"]),
                                   json.dumps(json.dumps(edited)), 1))  # fmt: skip
    assert record.read_text() != text
    code, err = imports(damaged, tmp_path, capsys)
    assert code == 2
    assert "record.json" in err and "sha256" in err


def test_an_edited_experiments_table_is_refused_and_the_descriptor_notices(package, tmp_path, capsys):
    damaged = copy(package, tmp_path)
    table = damaged / "experiments.csv"
    rows = list(csv.reader(io.StringIO(table.read_text())))
    header = rows[0]
    rows[1][header.index("yellow")] = "499"
    with table.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    code, err = imports(damaged, tmp_path, capsys)
    assert code == 2 and "experiments.csv" in err and "sha256" in err
    report = frictionless.validate(str(damaged / "datapackage.json"))
    assert not report.valid
    errors = [e for task in report.tasks for e in task.errors]
    assert {e.type for e in errors} & {"hash-count", "byte-count"}, [e.type for e in errors]


def test_a_resource_without_a_hash_is_refused(package, tmp_path, capsys):
    damaged = copy(package, tmp_path)
    path = damaged / "datapackage.json"
    descriptor = json.loads(path.read_text())
    del descriptor["resources"][0]["hash"]
    path.write_text(json.dumps(descriptor))
    code, err = imports(damaged, tmp_path, capsys)
    assert code == 2 and "experiments.csv" in err and "no sha256" in err


# -- 10: damaged packages: a clear message naming the file, exit 2, nothing written --------------------------


def test_a_missing_document_file_is_named(package, tmp_path, capsys):
    damaged = copy(package, tmp_path)
    (damaged / "documents" / "experiment-0002.jsonl").unlink()
    code, err = imports(damaged, tmp_path, capsys)
    assert code == 2
    assert "documents/experiment-0002.jsonl" in err and "missing" in err


def test_a_truncated_document_line_is_named_with_its_file_and_line(package, tmp_path, capsys):
    damaged = copy(package, tmp_path)
    path = damaged / "documents" / "experiment-0003.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2][: len(lines[2]) // 2] + "\n"
    path.write_text("".join(lines))
    code, err = imports(damaged, tmp_path, capsys)
    assert code == 2 and "experiment-0003.jsonl" in err  # the hash tells first
    rehash(damaged)
    code, err = imports(damaged, tmp_path, capsys)
    assert code == 2
    assert "documents/experiment-0003.jsonl:3" in err and "not a JSON (name, document) pair" in err


def test_a_deleted_experiment_row_is_named(package, tmp_path, capsys):
    damaged = copy(package, tmp_path)
    path = damaged / "record.json"
    record = json.loads(path.read_text())
    gone = record["experiments"].pop(1)
    path.write_text(json.dumps(record))
    rehash(damaged)
    code, err = imports(damaged, tmp_path, capsys)
    assert code == 2
    assert "record.json" in err and f"experiment id {gone['id']}" in err


@pytest.mark.parametrize(
    "damage",
    [
        lambda r: r.pop("tables"),
        lambda r: r["experiments"][0].pop("status"),
        lambda r: r["experiments"][0].update(recipe_json="{not json"),
        lambda r: r["tables"]["journal"][0].update(ref=10**9),
        lambda r: r["campaign"].update(spec_json="[]"),
        lambda r: r.update(experiments={}),
    ],
)
def test_a_record_that_does_not_hold_together_is_refused_with_the_reason(package, tmp_path, capsys, damage):
    damaged = copy(package, tmp_path)
    path = damaged / "record.json"
    record = json.loads(path.read_text())
    damage(record)
    path.write_text(json.dumps(record))
    rehash(damaged)
    code, err = imports(damaged, tmp_path, capsys)
    assert code == 2 and "record.json" in err, err


def test_an_intact_package_still_imports(package, tmp_path, capsys):
    code, _ = imports(package, tmp_path, capsys)
    assert code == 0


# -- 11: relative paths, and an export that fails leaves nothing ---------------------------------------------


@pytest.mark.parametrize("fmt", ["datapackage", "documents"])
def test_a_relative_output_directory_works(demo_record, tmp_path, monkeypatch, fmt):
    data, campaign_id = demo_record
    monkeypatch.chdir(tmp_path)
    assert export(data, campaign_id, fmt, "rel-dir") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel-dir"]
    if fmt == "datapackage":
        report = frictionless.validate(str(tmp_path / "rel-dir" / "datapackage.json"))
        assert report.valid


def test_a_failed_export_leaves_nothing_behind(demo_record, tmp_path, monkeypatch, capsys):
    data, campaign_id = demo_record

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datapackage, "write_documents", full)
    monkeypatch.chdir(tmp_path)
    assert export(data, campaign_id, "datapackage", "out") == 1
    assert "No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()  # an empty directory given as the target is still there afterwards
    assert export(data, campaign_id, "datapackage", "empty") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["empty"] and not any((tmp_path / "empty").iterdir())


def test_a_failed_parquet_export_leaves_nothing_behind(demo_record, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    data, campaign_id = demo_record

    def full(table: Any, where: Any, **kwargs: Any) -> None:
        Path(where).write_bytes(b"PAR1")  # a partial file, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    assert export(data, campaign_id, "parquet", tmp_path / "demo.parquet") == 1
    assert list(tmp_path.iterdir()) == []


# -- 12: one table in every format ---------------------------------------------------------------------------


def unlabel(name: str) -> str:
    """'yellow [µL]' -> 'yellow'."""
    return name.split(" [", 1)[0]


def test_csv_jsonl_parquet_and_the_package_write_one_table(demo_record, package, tmp_path, capsys):
    import pyarrow.parquet as pq

    data, campaign_id = demo_record
    descriptor = json.loads((package / "datapackage.json").read_text())
    fields = descriptor["resources"][0]["schema"]["fields"]
    names = [f["name"] for f in fields]
    units = {f["name"]: f.get("units", "") for f in fields}
    assert {"total_volume", "path_length", "integration_time"} <= set(names)
    table = list(csv.DictReader(io.StringIO((package / "experiments.csv").read_text())))

    assert main(["export", campaign_id, "--format", "csv", "--data-dir", str(data)]) == 0
    text = capsys.readouterr().out
    reader = csv.DictReader(io.StringIO(text))
    labels = list(reader.fieldnames or [])
    # Each column's units travel with it: in the label, where a CSV has nowhere else to put them.
    assert [unlabel(x) for x in labels] == names
    assert labels == [f"{n} [{units[n]}]" if units[n] else n for n in names]
    assert [{unlabel(k): v for k, v in row.items()} for row in reader] == table

    assert main(["export", campaign_id, "--format", "jsonl", "--data-dir", str(data)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [list(line) for line in lines] == [labels] * len(table)
    assert [line["total_volume [µL]"] for line in lines] == [1500] * len(table)
    assert [line["integration_time [ms]"] for line in lines] == [100] * len(table)
    for line, row in zip(lines, table, strict=True):
        assert str(line["experiment"]) == row["experiment"]
        assert line["distance [absorbance]"] == float(row["distance"])

    path = tmp_path / "demo.parquet"
    assert export(data, campaign_id, "parquet", path) == 0
    parquet = pq.read_table(path)
    assert parquet.column_names == names
    assert parquet.column("total_volume").to_pylist() == [1500] * len(table)
    assert parquet.schema.field("integration_time").metadata[b"units"] == b"ms"
