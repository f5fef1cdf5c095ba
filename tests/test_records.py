"""Records that outlive a campaign: declared meaning, provenance, open exports, import, warm starts."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import frictionless
import pyarrow.parquet as pq
import pytest

from sdl.cli import main
from sdl.exports import import_package, read_documents, write_package
from sdl.loop.foreground import run_campaign
from sdl.loop.lifecycle import start_campaign
from sdl.loop.proposing import decide_next, optimizer_for
from sdl.loop.warmstart import WarmStartError
from sdl.space.units import UnitsError, canonical_units, conversion, parse_quantity
from sdl.spec.campaign import Campaign
from sdl.spec.loading import CampaignError, LoadedCampaign, load_campaign
from sdl.spec.status import Cause, ExperimentStatus
from sdl.store import Store

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
DEMO_INSTRUMENTS = {"dye_pumps", "water_pump", "arm", "spectrometer"}


def bowl(recipe: dict[str, Any], fail_above: float = 2.0, scale: float = 1.0) -> dict:
    """(x - 0.3)^2 + (y - 0.6)^2 with x in units ``scale`` times the campaign's; fails when x is large."""
    x = recipe["x"] * scale
    if x > fail_above:
        raise ValueError(f"x={x:.3f} overflows the vial")
    return {"loss": (x - 0.3) ** 2 + (recipe["y"] - 0.6) ** 2, "x_seen": x}


BASE: dict[str, Any] = {
    "name": "bowl",
    "parameters": [
        {"name": "x", "type": "real", "low": 0.0, "high": 1.0, "units": "mL", "stage": "composition"},
        {"name": "y", "type": "real", "low": 0.0, "high": 1.0, "stage": "process"},
    ],
    "objectives": [{"measurement": "loss", "goal": "minimize"}],
    "measurements": {"loss": {"units": "mL**2", "description": "squared distance from the bowl's bottom"}},
    "budget": {"max_experiments": 10, "max_consecutive_failures": None},
    "optimizer": {"kind": "bayesian", "initial_design": 5, "seed": 3},
    "procedure": {"function": "test_records:bowl", "options": {"fail_above": 0.7}},
}


def spec(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = out
        for key in parents:
            target = target[key]
        target[leaf] = value
    return out


def loaded(tmp_path: Path, data: dict[str, Any]) -> LoadedCampaign:
    return LoadedCampaign(campaign=Campaign.model_validate(data), path=tmp_path / "bowl.yaml", source="")


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS_DIR))


@pytest.fixture
def store(tmp_path: Path, backend):
    """A store on each backend (conftest.py): records are exported from and imported into both."""
    with Store(backend.bind(tmp_path / "data")) as store:
        yield store


# -- declared meaning --------------------------------------------------------------------------------------


def test_units_are_one_whatever_their_spelling_and_convert():
    assert canonical_units("µL") == canonical_units("uL") == canonical_units("microliter")
    assert conversion("mL", "uL")(0.25) == pytest.approx(250.0)
    assert canonical_units("kg m-3 h-1") == canonical_units("kg/m**3/h")  # an old campaign file's spelling
    assert canonical_units("absorbance") == canonical_units("AU")
    assert parse_quantity("200 µM").to("mol/L").magnitude == pytest.approx(2e-4)
    with pytest.raises(UnitsError, match="does not convert"):
        conversion("mL", "s")


def test_a_misspelt_unit_is_named_with_its_file_and_line(tmp_path: Path):
    path = tmp_path / "campaign.yaml"
    text = (ROOT / "experiments" / "branin" / "campaign.yaml").read_text()
    path.write_text(text.replace("type: real", "type: real, units: blorps", 1))
    with pytest.raises(CampaignError) as caught:
        load_campaign(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}:") and "parameters[0].units" in problem and "blorps" in problem


def test_materials_and_conditions_are_checked_against_the_campaign():
    with pytest.raises(ValueError, match="names material 'dye', which `materials` does not declare"):
        Campaign.model_validate(
            spec(parameters=[{**BASE["parameters"][0], "material": "dye"}, BASE["parameters"][1]])
        )
    with pytest.raises(ValueError, match="reads procedure option 'volume', which is not set"):
        Campaign.model_validate(spec(conditions={"total": {"option": "volume", "units": "uL"}}))
    with pytest.raises(ValueError, match=r"says units 'mL' but measurements.loss says 'mL\*\*2'"):
        Campaign.model_validate(spec(objectives=[{"measurement": "loss", "units": "mL"}]))
    campaign = Campaign.model_validate(
        spec(
            materials={"dye": {"supplier": "Acme", "lot": "A1", "concentration": "0.2 mM"}},
            parameters=[{**BASE["parameters"][0], "material": "dye"}, BASE["parameters"][1]],
            conditions={"temperature": {"value": 25, "units": "degC"}, "fails": {"option": "fail_above"}},
        )
    )
    assert campaign.condition_values() == {"temperature": 25, "fails": 0.7}
    assert campaign.measurement_meaning("loss").stage == "property"


def test_every_example_campaign_still_loads():
    paths = sorted((ROOT / "experiments").glob("*/campaign.yaml"))
    # The folders the README's tables name: a glob that finds none of them would pass without loading any.
    named = {"color_matching", "branin", "snar_flow", "mobile_chemist", "thin_film_ada"}
    assert named <= {p.parent.name for p in paths}, f"found only {[str(p) for p in paths]}"
    for path in paths:
        load_campaign(path)


# -- a campaign with failures: export, validate, import, compare ---------------------------------------------


def assert_same_record(source: Store, source_id: str, target: Store, target_id: str) -> None:
    """Every row of the campaign is in the other store as it was; only the experiments' ids differ."""
    a, b = source.campaign_rows(source_id), target.campaign_rows(target_id)
    skip = {"id", "imported_from"}
    assert {k: v for k, v in a.campaign.items() if k not in skip} == {
        k: v for k, v in b.campaign.items() if k not in skip
    }
    ids = {x["id"]: y["id"] for x, y in zip(a.experiments, b.experiments, strict=True)}
    for x, y in zip(a.experiments, b.experiments, strict=True):
        assert {**x, "id": ids[x["id"]], "retry_of": ids.get(x["retry_of"])} == y
    for table, rows in a.tables.items():
        journal = (
            {x["id"]: y["id"] for x, y in zip(rows, b.tables[table], strict=True)}
            if table == "journal"
            else {}
        )
        mapped = []
        for row in rows:
            row = {**row, "experiment_id": ids[row["experiment_id"]]}
            if table == "journal" and row["ref"] is not None:
                row["ref"] = journal[row["ref"]]
            mapped.append(row)
        assert [{k: v for k, v in r.items() if k != "id"} for r in mapped] == [
            {k: v for k, v in r.items() if k != "id"} for r in b.tables[table]
        ], table
    assert {ids[k]: v for k, v in a.documents.items()} == b.documents
    assert a.prior == b.prior
    for x, y in zip(source.experiments(source_id), target.experiments(target_id), strict=True):
        assert x.decision == y.decision and x.status == y.status and x.failure == y.failure
        assert source.provenance(x.id) == target.provenance(y.id)
        assert source.journal(x.id) == [] or len(source.journal(x.id)) == len(target.journal(y.id))


def validate(package: Path) -> None:
    report = frictionless.validate(str(package / "datapackage.json"))
    errors = [*report.errors, *(e for task in report.tasks for e in task.errors)]
    assert report.valid, [(e.type, e.message) for e in errors]


def test_a_campaign_with_failures_round_trips_through_a_data_package(store: Store, tmp_path: Path, backend):
    campaign_id = start_campaign(store, loaded(tmp_path, spec()), submitted_by="ada")
    run_campaign(store, campaign_id)
    # and one cut short: an interrupted experiment keeps its cause through the round trip too
    decision = store.experiments(campaign_id)[0].decision
    cut_short = store.add_proposal(campaign_id, {"x": 0.2, "y": 0.2}, decision)
    store.mark_interrupted(cut_short.id, "dropped", Cause.DROPPED)
    history = store.experiments(campaign_id)
    assert {e.status for e in history} == {
        ExperimentStatus.DONE,
        ExperimentStatus.FAILED,
        ExperimentStatus.INTERRUPTED,
    }
    package = tmp_path / "package"
    write_package(store, campaign_id, package)
    validate(package)

    descriptor = json.loads((package / "datapackage.json").read_text())
    fields = {f["name"]: f for f in descriptor["resources"][0]["schema"]["fields"]}
    assert fields["x"] == {
        "name": "x",
        "type": "number",
        "units": "mL",
        "stage": "composition",
        "sdl:kind": "parameter",
    }
    assert fields["loss"]["stage"] == "property" and fields["loss"]["units"] == "mL**2"
    assert fields["failure"]["type"] == "string" and fields["finished_at"]["type"] == "datetime"
    package_read = frictionless.Package(str(package / "datapackage.json"))
    rows = package_read.get_table_resource("experiments").read_rows()
    assert [r["status"] for r in rows] == [e.status.value for e in history]
    # The CSV holds every float exactly (frictionless reads numbers as Decimal).
    assert [None if r["loss"] is None else float(r["loss"]) for r in rows] == [
        (e.measurements or {}).get("loss") for e in history
    ]

    with Store(backend.bind(tmp_path / "elsewhere")) as other:
        assert import_package(other, package) == campaign_id
        assert_same_record(store, campaign_id, other, campaign_id)
        assert other.campaign(campaign_id).imported_from["campaign"] == campaign_id
        *ran, interrupted = other.experiments(campaign_id)
        assert interrupted.status is ExperimentStatus.INTERRUPTED
        assert interrupted.cause is Cause.DROPPED and interrupted.failure == "dropped"
        for experiment in ran:  # (the interrupted one was made by hand here, without provenance)
            provenance = other.provenance(experiment.id)
            assert provenance is not None and provenance["campaign"]["submitted_by"] == "ada"


def test_sdl_import_refuses_a_taken_id_and_takes_another(store: Store, tmp_path: Path, capsys):
    campaign_id = start_campaign(store, loaded(tmp_path, spec(budget__max_experiments=3)))
    run_campaign(store, campaign_id)
    store.checkpoint()
    package = tmp_path / "package"
    assert (
        main(
            [
                "export",
                campaign_id,
                "--format",
                "datapackage",
                "-o",
                str(package),
                "--data-dir",
                str(tmp_path / "data"),
            ]
        )
        == 0
    )
    assert main(["import", str(package), "--data-dir", str(tmp_path / "data")]) == 2
    assert "already holds a campaign" in capsys.readouterr().err
    assert main(["import", str(package), "--as", "copy-1", "--data-dir", str(tmp_path / "data")]) == 0
    assert_same_record(store, campaign_id, store, "copy-1")
    assert (
        main(
            [
                "export",
                campaign_id,
                "--format",
                "datapackage",
                "-o",
                str(package),
                "--data-dir",
                str(tmp_path / "data"),
            ]
        )
        == 2
    )


# -- the demo: provenance read over the protocols, every export --------------------------------------------


def test_every_demo_experiment_has_provenance_with_the_instruments_identity(demo_record):
    data, campaign_id = demo_record
    with Store(data, read_only=True) as store:
        experiments = store.experiments(campaign_id)
        assert experiments and all(e.status is ExperimentStatus.DONE for e in experiments)
        for e in experiments:
            p = store.provenance(e.id)
            assert p is not None
            assert p["software"]["sdl"] and p["software"]["python"] and p["software"]["packages"]["bluesky"]
            assert len(p["campaign"]["file_sha256"]) == 64 and len(p["lab"]["sha256"]) == 64
            assert len(p["lab"]["simulated_file_sha256"]) == 64
            instruments = p["instruments"]
            assert set(instruments) == DEMO_INSTRUMENTS
            assert all(i["driver_version"] for i in instruments.values())
            # What the simulated instruments answer over their own protocols.
            assert instruments["arm"]["identity"] == {
                "model": "UR5",
                "serial": "20185500001",
                "firmware": instruments["arm"]["identity"]["firmware"],
            }
            assert instruments["arm"]["identity"]["firmware"].startswith("URSoftware")
            assert instruments["spectrometer"]["identity"]["serial"] == "HDX01234"
            assert instruments["spectrometer"]["identity"]["product_id"] == "0x2003"
            assert instruments["dye_pumps"]["identity"]["model"] == "NE1000"
            assert {pump["address"] for pump in instruments["dye_pumps"]["identity"]["pumps"].values()} == {
                0,
                1,
                2,
            }
            assert instruments["water_pump"]["identity"]["firmware"] == "XCALIBUR-SIM 1.0"
            # The rest of the story is in the record already: decision, transitions, who submitted.
            assert e.decision is not None
            assert [t.to_status.value for t in store.transitions(e.id)] == ["proposed", "running", "done"]


def test_provenance_names_the_git_commit_of_the_campaign_folder_and_whether_it_was_changed(
    store: Store, tmp_path: Path
):
    import subprocess

    folder = tmp_path / "lab-notebook"
    folder.mkdir()
    (folder / "notes.txt").write_text("first\n")

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(folder), "-c", "user.name=Ada", "-c", "user.email=ada@example.org", *args],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    git("init", "-q")
    git("add", "notes.txt")
    git("commit", "-q", "-m", "notes")
    commit = git("rev-parse", "HEAD")
    one = Campaign.model_validate(spec(budget__max_experiments=1))
    in_git = LoadedCampaign(campaign=one, path=folder / "bowl.yaml", source="")
    clean = start_campaign(store, in_git)
    run_campaign(store, clean)
    (folder / "notes.txt").write_text("changed\n")
    dirty = start_campaign(store, in_git)
    run_campaign(store, dirty)
    outside = start_campaign(store, loaded(tmp_path, spec(budget__max_experiments=1)))
    run_campaign(store, outside)
    first = [store.experiments(c)[0] for c in (clean, dirty, outside)]
    assert [store.provenance(e.id)["campaign"]["git"] for e in first] == [
        {"commit": commit, "dirty": False, "folder": str(folder)},
        {"commit": commit, "dirty": True, "folder": str(folder)},
        None,
    ]


def test_the_demo_data_package_validates_and_round_trips_with_nothing_lost(demo_record, tmp_path: Path):
    data, campaign_id = demo_record
    package = tmp_path / "demo"
    with Store(data, read_only=True) as store:
        write_package(store, campaign_id, package)
        validate(package)
        descriptor = json.loads((package / "datapackage.json").read_text())
        fields = {f["name"]: f for f in descriptor["resources"][0]["schema"]["fields"]}
        for name in ("yellow", "red", "blue", "total_volume", "path_length", "integration_time", "distance",
                     "peak_absorbance"):  # fmt: skip
            assert (
                fields[name].get("stage") and fields[name].get("units") and fields[name].get("description")
            ), name
        assert fields["yellow"]["material"] == "yellow_stock" and fields["yellow"]["units"] == "µL"
        assert descriptor["sdl:materials"]["blue_stock"]["concentration"] == "50 µM"
        documents = sorted((package / "documents").glob("*.jsonl"))
        assert len(documents) == len(store.experiments(campaign_id))
        for path, e in zip(documents, store.experiments(campaign_id), strict=True):
            assert read_documents(path) == store.documents(e.id)
        with Store(tmp_path / "other") as other:
            import_package(other, package)
            assert_same_record(store, campaign_id, other, campaign_id)


def test_the_demo_as_parquet_carries_the_table_schema(demo_record, tmp_path: Path):
    data, campaign_id = demo_record
    path = tmp_path / "demo.parquet"
    assert main(["export", campaign_id, "--format", "parquet", "-o", str(path), "--data-dir", str(data)]) == 0
    table = pq.read_table(path)
    schema = json.loads(table.schema.metadata[b"sdl:schema"])
    assert [f["name"] for f in schema["fields"]] == table.column_names
    assert table.schema.field("yellow").metadata[b"units"] == "µL".encode()
    assert table.schema.field("distance").metadata[b"stage"] == b"property"
    assert table.num_rows == len(table.column("experiment")) > 0
    assert str(table.schema.field("finished_at").type) == "timestamp[us, tz=UTC]"


# -- warm starts -------------------------------------------------------------------------------------------


def test_a_warm_start_copies_compatible_experiments_converting_units(store: Store, tmp_path: Path):
    source = start_campaign(store, loaded(tmp_path, spec(budget__max_experiments=8)))
    run_campaign(store, source)
    earlier = store.experiments(source)
    # The same chemistry in µL, over a narrower x range: values convert, those outside are left out.
    data = spec(warm_start=[{"campaign": source}])
    data["parameters"][0].update(units="uL", high=600.0)
    data["procedure"]["options"]["scale"] = 1e-3
    data["measurements"]["loss"]["units"] = "uL**2"
    warm = start_campaign(store, loaded(tmp_path, data))
    prior = store.prior_observations(warm)
    inside = [
        e
        for e in earlier
        if e.recipe["x"] <= 0.6 and e.status in (ExperimentStatus.DONE, ExperimentStatus.FAILED)
    ]
    assert len(prior) == len(inside) > 0
    for row, e in zip(prior, inside, strict=True):
        assert row["recipe"]["x"] == pytest.approx(e.recipe["x"] * 1000) and row["status"] == e.status.value
        assert row["source"] == f"campaign {source} experiment {e.seq}"
        if row["status"] == "done":
            assert row["measurements"]["loss"] == pytest.approx(e.measurements["loss"] * 1e6)
    # Seeded past its initial design, the first proposal already comes from the model.
    campaign = Campaign.model_validate(data)
    first = decide_next(campaign, optimizer_for(campaign, prior), [])
    assert first.decision.model not in ("sobol", "lhs")
    cold = decide_next(campaign, optimizer_for(campaign), [])
    assert cold.decision.model == "sobol"


def test_failures_arrive_as_failures_and_an_incompatible_source_is_refused(store: Store, tmp_path: Path):
    source = start_campaign(store, loaded(tmp_path, spec(budget__max_experiments=6)))
    run_campaign(store, source)
    decision = store.experiments(source)[0].decision
    dropped = store.add_proposal(source, {"x": 0.1, "y": 0.1}, decision)
    store.mark_interrupted(dropped.id, "dropped", Cause.DROPPED)
    warm = start_campaign(store, loaded(tmp_path, spec(warm_start=[{"campaign": source}])))
    failed = [e for e in store.experiments(source) if e.status is ExperimentStatus.FAILED]
    prior = store.prior_observations(warm)
    assert [r for r in prior if r["status"] == "failed"] and len(prior) == 6
    assert sorted(r["failure"] for r in prior if r["status"] == "failed") == sorted(e.failure for e in failed)
    other = spec(warm_start=[{"campaign": source}])
    other["parameters"][1]["name"] = "z"
    with pytest.raises(WarmStartError, match="its parameters"):
        start_campaign(store, loaded(tmp_path, other))
    with pytest.raises(WarmStartError, match="no campaign 'nope'"):
        start_campaign(store, loaded(tmp_path, spec(warm_start=[{"campaign": "nope"}])))
    wrong_units = spec(warm_start=[{"campaign": source}])
    wrong_units["parameters"][0]["units"] = "s"
    with pytest.raises(WarmStartError, match="does not convert"):
        start_campaign(store, loaded(tmp_path, wrong_units))


def test_a_warm_start_from_an_exported_package(store: Store, tmp_path: Path):
    source = start_campaign(store, loaded(tmp_path, spec(budget__max_experiments=5)))
    run_campaign(store, source)
    write_package(store, source, tmp_path / "earlier")
    with Store(tmp_path / "fresh") as fresh:
        warm = start_campaign(fresh, loaded(tmp_path, spec(warm_start=[{"package": "earlier"}])))
        assert len(fresh.prior_observations(warm)) == 5
        assert fresh.prior_observations(warm)[0]["source"].startswith(f"package {tmp_path / 'earlier'}")


# -- reading the record with its declared meaning ----------------------------------------------------------


def test_sdl_show_gives_every_value_its_declared_units_and_every_column_its_stage(
    demo_record, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    data, campaign_id = demo_record
    assert main(["show", campaign_id, "--data-dir", str(data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    columns = lines[lines.index(next(x for x in lines if x.strip() == "columns")) :]

    def row(name: str) -> list[str]:
        line = next(x for x in columns if x.startswith(f"│ {name} "))
        return [cell.strip() for cell in line.strip("│").split("│")]

    assert row("yellow") == [
        "yellow",
        "parameter",
        "µL",
        "composition",
        "volume of yellow stock dispensed into the vial (yellow_stock: 200 µM, simulated bench, "
        "lot sim-world-7)",
    ]
    assert row("path_length")[1:4] == ["condition = 1", "cm", "process"]
    assert row("distance")[1:4] == ["measurement", "absorbance", "property"]
    text = "\n".join(lines)
    assert re.search(r"best recipe +│ yellow=[0-9.]+ µL, red=[0-9.]+ µL, blue=[0-9.]+ µL", text)
    assert re.search(r"│ 1 +│ done +│ yellow=[0-9.]+ µL.*│ distance=[0-9.]+ absorbance", text)


def test_the_plot_labels_its_axes_with_the_declared_units(demo_record, tmp_path: Path, monkeypatch):
    from matplotlib.figure import Figure

    labels: list[str] = []

    def record_labels(figure: Figure, *args: Any, **kwargs: Any) -> None:
        labels.extend(ax.get_ylabel() for ax in figure.axes)

    monkeypatch.setattr(Figure, "savefig", record_labels)
    data, campaign_id = demo_record
    assert main(["plot", campaign_id, "-o", str(tmp_path / "p.png"), "--data-dir", str(data)]) == 0
    assert {"distance [absorbance]", "yellow [µL]", "red [µL]", "blue [µL]"} <= set(labels)


def test_the_demo_documents_export_is_event_model_any_bluesky_tool_reads(demo_record, tmp_path: Path):
    from event_model import DocumentNames, schema_validators

    data, campaign_id = demo_record
    out = tmp_path / "documents"
    command = ["export", campaign_id, "--format", "documents", "-o", str(out), "--data-dir", str(data)]
    assert main(command) == 0
    with Store(data, read_only=True) as store:
        experiments = store.experiments(campaign_id)
        files = sorted(out.glob("*.jsonl"))
        assert [f.name for f in files] == [f"experiment-{e.seq:04d}.jsonl" for e in experiments]
        for path, e in zip(files, experiments, strict=True):
            documents = read_documents(path)
            assert documents == store.documents(e.id)
            assert documents[0][0] == "start" and documents[-1][0] == "stop"
            for name, doc in documents:
                schema_validators[DocumentNames[name]].validate(doc)
