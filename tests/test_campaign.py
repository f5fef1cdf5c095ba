"""Campaign files: every kind of mistake gets a message naming the file, line, field and allowed values."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from sdl.cli import main
from sdl.spec.campaign import Campaign, Objective
from sdl.spec.loading import CampaignError, load_campaign

GOOD = """\
name: branin-test
parameters:
  - {name: x1, type: real, low: -5.0, high: 10.0}
  - {name: x2, type: real, low: 0.0, high: 15.0}
objectives:
  - {measurement: branin, goal: minimize}
budget:
  max_experiments: 10
optimizer:
  kind: bayesian
procedure:
  function: experiments.branin.procedure:measure
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(CampaignError) as info:
        load_campaign(path)
    assert info.value.path == path
    return info.value.problems


def only(tmp_path: Path, text: str) -> str:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def test_a_good_file_loads(tmp_path: Path) -> None:
    loaded = load_campaign(write(tmp_path, GOOD))
    assert loaded.campaign.space.names == ["x1", "x2"]
    assert loaded.campaign.optimizer.kind == "bayesian"
    assert loaded.base_dir == tmp_path.resolve()


def test_the_packaged_branin_campaign_is_valid() -> None:
    path = Path(__file__).resolve().parents[1] / "experiments" / "branin" / "campaign.yaml"
    assert load_campaign(path).campaign.budget.max_wall_time == 600


def test_inverted_bounds(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("low: -5.0, high: 10.0", "low: 10.0, high: -5.0"))
    assert message.endswith("campaign.yaml:3: parameters[0]: low (10.0) must be less than high (-5.0)")


def test_log_scale_needs_positive_bounds(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("low: 0.0, high: 15.0}", "low: 0.0, high: 15.0, log: true}"))
    assert "campaign.yaml:4: parameters[1]: log scale needs low > 0, got 0.0" in message


def test_unknown_parameter_type(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("type: real, low: -5.0", "type: float, low: -5.0"))
    assert "campaign.yaml:3: parameters[0]: unknown type 'float'" in message
    assert "'real', 'integer', 'categorical'" in message


def test_missing_parameter_type(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("type: real, low: -5.0, ", ""))
    assert "parameters[0]: missing `type` (one of 'real', 'integer', 'categorical')" in message


def test_repeated_parameter_names(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("name: x2", "name: x1"))
    assert "campaign.yaml:1: parameter names must be unique; repeated: x1" in message


def test_unknown_optimizer_kind_lists_the_allowed_ones(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("kind: bayesian", "kind: bayes"))
    assert message.endswith(
        "campaign.yaml:10: optimizer.kind: "
        "Input should be 'bayesian', 'random', 'grid' or 'skopt' (got 'bayes')"
    )


def test_misspelt_field_lists_the_allowed_ones(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("max_experiments: 10", "max_experiments: 10\n  max_experiment: 5"))
    assert "campaign.yaml:9: budget.max_experiment: unknown field 'max_experiment'" in message
    assert "(allowed: max_experiments, max_wall_time, stop_when, max_consecutive_failures)" in message


def test_misspelt_field_inside_a_parameter(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("high: 10.0}", "high: 10.0, unit: mm}"))
    assert (
        "parameters[0].unit: unknown field 'unit' "
        "(allowed: name, description, stage, units, material, type, low, high, log)" in (message)
    )


def test_missing_section(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("budget:\n  max_experiments: 10\n", ""))
    assert message.endswith("campaign.yaml:1: budget: missing required field 'budget'")


def test_wrong_type_shows_what_was_given(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("max_experiments: 10", "max_experiments: ten"))
    assert "budget.max_experiments: Input should be a valid integer" in message and "(got 'ten')" in message


def test_bad_duration(tmp_path: Path) -> None:
    message = only(
        tmp_path, GOOD.replace("max_experiments: 10", "max_experiments: 10\n  max_wall_time: 2 days")
    )
    assert (
        "budget.max_wall_time: not a duration: '2 days' (use seconds, or e.g. '90s', '45m', '2h', '1h30m')"
        in (message)
    )


def test_target_goal_needs_a_target(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("goal: minimize", "goal: target"))
    assert "campaign.yaml:6: objectives[0]: goal 'target' needs a `target` value" in message


def test_stop_rule_must_name_an_objective(tmp_path: Path) -> None:
    message = only(
        tmp_path, GOOD.replace("max_experiments: 10", "max_experiments: 10\n  stop_when: {cost: 1}")
    )
    assert "budget.stop_when names cost, which is not an objective (objectives: branin)" in message


def test_malformed_import_path(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("experiments.branin.procedure:measure", "experiments/branin.py"))
    assert message.endswith(
        "campaign.yaml:12: procedure.function: 'experiments/branin.py' is not an import path "
        "'package.module:function'"
    )


def test_import_path_whose_module_does_not_exist(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("experiments.branin.procedure:measure", "experiments.nope:measure"))
    assert (
        "campaign.yaml:12: procedure.function: import path 'experiments.nope:measure' does not resolve"
        in message
    )
    assert "cannot import module 'experiments.nope'" in message


def test_import_path_whose_function_does_not_exist(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("procedure:measure", "procedure:mesure"))
    assert "module 'experiments.branin.procedure' has no attribute 'mesure'" in message


def test_modules_next_to_the_campaign_file_are_importable(tmp_path: Path) -> None:
    (tmp_path / "my_procedure_for_sdl_tests.py").write_text("def run(recipe):\n    return {'branin': 1.0}\n")
    text = GOOD.replace("experiments.branin.procedure:measure", "my_procedure_for_sdl_tests:run")
    assert (
        load_campaign(write(tmp_path, text)).campaign.procedure.function == "my_procedure_for_sdl_tests:run"
    )


def test_both_plan_and_function(tmp_path: Path) -> None:
    text = GOOD + "  plan: experiments.branin.procedure:measure\n"
    message = only(tmp_path, text)
    assert (
        "procedure: give exactly one of `plan` (a bluesky plan) or `function` (a plain function)" in message
    )


def test_plan_without_measurement_rules(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("function:", "plan:"))
    assert (
        "procedure: a plan needs `measurements` rules or an `extractor` to compute the objectives" in message
    )


LAB = """\
  measurements:
    branin: {field: det}
lab:
  simulated: lab.yaml
  instruments:
    pump:
      driver: test_campaign:make_nothing
      address: "{pump.pump}"
    arm:
      driver: test_campaign:make_nothing
      address: {dashboard: "{arm.dashboard}", gripper: "{gripper.socket}"}
"""
#: A simulated lab with a pump and an arm, as `python -m simulators endpoints` accepts it.
SIMULATED_LAB = """\
world:
  stocks: {dye: {}}
  stations: {out: {}}
instruments:
  pump:
    kind: ne1000
    pumps: [{address: 0, diameter_mm: 14.57, syringe_volume_ul: 10000, reagent: dye, outlet: out}]
  arm: {kind: ur}
"""


def make_nothing(name: str, address: object, **options: object) -> object:
    """A driver that builds a device and nothing more (validation builds every device offline)."""
    return SimpleNamespace(name=name, address=address)


def test_unknown_instrument_in_an_address(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(SIMULATED_LAB)
    message = only(tmp_path, GOOD.replace("function:", "plan:") + LAB)
    assert (
        "campaign.yaml:15: lab: instrument 'arm' refers to unknown instrument 'gripper' in its address"
        in message
    )
    assert "(declared instruments: arm, pump)" in message


def test_instrument_the_simulated_lab_does_not_have(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(SIMULATED_LAB)
    text = GOOD.replace("function:", "plan:") + LAB.replace('"{gripper.socket}"', '"{arm.gripper}"')
    message = only(
        tmp_path, text.replace("    pump:\n", "    pumps:\n").replace("{pump.pump}", "{pumps.pump}")
    )
    assert message.endswith(
        "campaign.yaml:20: lab.instruments.pumps.address: '{pumps.pump}' is not served by lab.yaml: "
        "it has arm, bench, pump"
    )


def test_an_endpoint_the_simulated_instrument_does_not_serve(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(SIMULATED_LAB)
    text = GOOD.replace("function:", "plan:") + LAB.replace('"{gripper.socket}"', '"{arm.nosuchendpoint}"')
    message = only(tmp_path, text)
    assert message.endswith(
        "campaign.yaml:23: lab.instruments.arm.address: '{arm.nosuchendpoint}' is not served by lab.yaml: "
        "arm serves arm.dashboard, arm.gripper, arm.primary, arm.realtime, arm.rtde, arm.script"
    )


def test_driver_that_does_not_resolve(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(SIMULATED_LAB)
    text = GOOD.replace("function:", "plan:") + LAB.replace('"{gripper.socket}"', '"{arm.gripper}"')
    text = text.replace(
        'driver: test_campaign:make_nothing\n      address: "{pump',
        'driver: drivers.nope:make\n      address: "{pump',
    )
    message = only(tmp_path, text)
    assert (
        "campaign.yaml:19: lab.instruments.pump.driver: driver 'drivers.nope:make' does not resolve"
        in message
    )


def test_driver_options_are_checked_by_building_the_device_offline(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(SIMULATED_LAB)
    text = GOOD.replace("function:", "plan:") + LAB.replace('"{gripper.socket}"', '"{arm.gripper}"')
    text = text.replace(
        'driver: test_campaign:make_nothing\n      address: "{pump.pump}"',
        'driver: ne1000\n      address: "{pump.pump}"\n      options:\n        pumps:\n'
        "          dye: {address: 0, diameter_mm: 14.57, syringe_volume_ul: 10000, max_rate_ul_min: 5000,"
        " rate_ul_min: 9000}",
    )
    message = only(tmp_path, text)
    assert "campaign.yaml:21: lab.instruments.pump.options" in message and "9000" in message, message


def test_missing_simulated_lab_file(tmp_path: Path) -> None:
    text = GOOD.replace("function:", "plan:") + LAB.replace('"{gripper.socket}"', '"{arm.gripper}"')
    message = only(tmp_path, text)
    assert "campaign.yaml:16: lab.simulated: simulated lab file not found:" in message


def test_placeholders_need_a_simulated_lab(tmp_path: Path) -> None:
    text = GOOD.replace("function:", "plan:") + LAB.replace("  simulated: lab.yaml\n", "")
    text = text.replace('"{gripper.socket}"', '"{arm.gripper}"')
    message = only(tmp_path, text)
    assert "placeholders but no `simulated` lab fills them" in message


def test_several_mistakes_are_all_reported(tmp_path: Path) -> None:
    text = GOOD.replace("kind: bayesian", "kind: bayes").replace("low: -5.0, high: 10.0", "low: 9, high: 1")
    found = problems(tmp_path, text)
    assert len(found) == 2
    assert any("optimizer.kind" in p for p in found) and any("parameters[0]" in p for p in found)


def test_invalid_yaml(tmp_path: Path) -> None:
    message = only(tmp_path, GOOD.replace("budget:\n", "budget: [\n"))
    assert "campaign.yaml:" in message and "not valid YAML" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "a campaign file must be a YAML mapping" in only(tmp_path, "- just\n- a list\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match="cannot read campaign file"):
        load_campaign(tmp_path / "nope.yaml")


# -- scalarisation and stopping ------------------------------------------------------------------------


def test_objectives_scalarise_to_a_weighted_sum_to_minimise() -> None:
    campaign = Campaign.model_validate(
        {
            "name": "c",
            "parameters": [{"name": "x", "type": "real", "low": 0, "high": 1}],
            "objectives": [
                {"measurement": "cost", "goal": "minimize", "weight": 2},
                {"measurement": "yield_", "goal": "maximize"},
                {"measurement": "hue", "goal": "target", "target": 0.5, "weight": 10},
            ],
            "budget": {"max_experiments": 3, "stop_when": {"hue": 0.01, "yield_": 0.9}},
            "procedure": {"function": "m:f"},
        }
    )
    assert campaign.scalarise({"cost": 1.0, "yield_": 0.8, "hue": 0.7}) == pytest.approx(2 - 0.8 + 10 * 0.2)
    assert campaign.target_reached({"cost": 9.0, "yield_": 0.95, "hue": 0.505})
    assert not campaign.target_reached({"cost": 9.0, "yield_": 0.85, "hue": 0.505})
    with pytest.raises(ValueError, match="measurement 'hue' is missing or not a number"):
        campaign.scalarise({"cost": 1.0, "yield_": 0.8})
    assert Objective(measurement="a", goal="maximize").better(2.0, 1.0)


def test_durations_accept_seconds_and_units() -> None:
    base = {"max_experiments": 1}
    from sdl.spec.campaign import Budget

    assert Budget.model_validate({**base, "max_wall_time": 90}).max_wall_time == 90
    assert Budget.model_validate({**base, "max_wall_time": "1h30m"}).max_wall_time == 5400
    assert Budget.model_validate({**base, "max_wall_time": "45s"}).max_wall_time == 45


# -- the commands ----------------------------------------------------------------------------------------


def test_sdl_schema_prints_a_json_schema_with_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["required"]) == {"name", "parameters", "objectives", "budget", "procedure"}
    assert "bluesky plan" in json.dumps(schema["$defs"]["Procedure"]).lower()


def test_sdl_validate_ok_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(write(tmp_path, GOOD))]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["validate", str(write(tmp_path, GOOD.replace("kind: bayesian", "kind: bayes")))]) == 2
    err = capsys.readouterr().err
    assert "optimizer.kind: Input should be 'bayesian', 'random', 'grid' or 'skopt'" in err


def test_sdl_run_with_a_bad_file_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace("low: -5.0, high: 10.0", "low: 10.0, high: -5.0"))
    data_dir = tmp_path / "data"
    assert main(["run", str(path), "--data-dir", str(data_dir)]) == 2
    assert "parameters[0]: low (10.0) must be less than high (-5.0)" in capsys.readouterr().err
    assert not data_dir.exists()
