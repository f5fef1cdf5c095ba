"""A warm start takes only experiments run under this campaign's fixed conditions, unless the campaign says
which conditions may differ; whatever it leaves out, it says why."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from test_records import bowl, loaded, spec

from sdl.cli import main
from sdl.exports import write_package
from sdl.loop.foreground import run_campaign
from sdl.loop.lifecycle import start_campaign
from sdl.loop.warmstart import WarmStartError
from sdl.spec.campaign import Campaign
from sdl.store import Store

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS_DIR))


def in_vial(recipe: dict[str, Any], total_volume: float, fail_above: float = 2.0) -> dict[str, Any]:
    return bowl(recipe, fail_above)


def at(volume_ul: float, units: str = "µL", **changes: Any) -> dict[str, Any]:
    """The bowl campaign run in a vial of ``volume_ul`` (a condition read from the procedure's options)."""
    data = spec(**changes)
    data["procedure"]["function"] = "test_warm_start_conditions:in_vial"
    data["procedure"]["options"]["total_volume"] = volume_ul
    data["conditions"] = {"total_volume": {"option": "total_volume", "units": units, "stage": "composition"},
                          "path_length": {"value": 1.0, "units": "cm"}}  # fmt: skip
    return data


@pytest.fixture
def package_at_900(tmp_path: Path) -> Path:
    """A package of a campaign run at 900 µL, with failures among its experiments."""
    with Store(tmp_path / "source") as store:
        source = start_campaign(store, loaded(tmp_path, at(900, budget__max_experiments=8)))
        run_campaign(store, source)
        assert {e.status.value for e in store.experiments(source)} == {"done", "failed"}
        write_package(store, source, tmp_path / "at-900")
    return tmp_path / "at-900"


def test_a_campaign_at_another_volume_takes_nothing_and_says_why(tmp_path, package_at_900, capsys):
    warm = at(1500, warm_start=[{"package": "at-900"}])
    with Store(tmp_path / "data") as store:
        with pytest.raises(WarmStartError) as refused:
            start_campaign(store, loaded(tmp_path, warm))
        assert store.campaigns() == []
    message = str(refused.value)
    assert "8 x run at total_volume = 900 µL (this campaign: 1500 µL)" in message
    assert "may_differ" in message
    # The same from the command line: exit 2, nothing written.
    path = tmp_path / "warm.yaml"
    import yaml

    path.write_text(yaml.safe_dump(warm, allow_unicode=True), encoding="utf-8")
    assert main(["run", str(path), "--data-dir", str(tmp_path / "cli")]) == 2
    assert "total_volume = 900 µL (this campaign: 1500 µL)" in " ".join(capsys.readouterr().err.split())


def test_the_same_volume_in_other_units_matches(tmp_path, package_at_900):
    with Store(tmp_path / "data") as store:
        same = at(0.9, "mL", warm_start=[{"package": "at-900"}])
        campaign_id = start_campaign(store, loaded(tmp_path, same))
        assert len(store.prior_observations(campaign_id)) == 8


def test_a_condition_the_campaign_lets_differ_is_taken_and_noted(tmp_path, package_at_900, caplog):
    warm = at(1500, warm_start=[{"package": "at-900", "may_differ": ["total_volume"]}])
    with Store(tmp_path / "data") as store, caplog.at_level(logging.INFO, "sdl"):
        campaign_id = start_campaign(store, loaded(tmp_path, warm))
        prior = store.prior_observations(campaign_id)
    assert len(prior) == 8
    assert all(row["source"].endswith("(total_volume = 900 µL)") for row in prior)
    assert "total_volume = 900 µL there, 1500 µL here (may differ)" in caplog.text


def test_a_condition_only_one_side_declares_does_not_match(tmp_path, package_at_900):
    unstated = spec(warm_start=[{"package": "at-900"}])
    with Store(tmp_path / "data") as store:
        with pytest.raises(WarmStartError, match=r"total_volume = 900 µL \(this campaign does not say\)"):
            start_campaign(store, loaded(tmp_path, unstated))
        with pytest.raises(WarmStartError, match="may_differ names volume, which neither campaign"):
            typo = at(900, warm_start=[{"package": "at-900", "may_differ": ["volume"]}])
            start_campaign(store, loaded(tmp_path, typo))


def test_may_differ_is_part_of_the_campaign_file():
    schema = Campaign.model_json_schema()
    assert "may_differ" in schema["$defs"]["WarmStart"]["properties"]
