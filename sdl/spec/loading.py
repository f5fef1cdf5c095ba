"""Read a campaign file and explain every mistake in it by file, line, field path and allowed values."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sdl.spec.campaign import (
    DRIVER_PATTERN,
    IDENTIFIER,
    IMPORT_PATH_PATTERN,
    Campaign,
    Instrument,
    MissingMeasurement,
)
from sdl.spec.importpaths import UnresolvedImport, resolve
from sdl.spec.preflight import check_drivers, check_placeholders

_PATTERN_MEANING = {
    IMPORT_PATH_PATTERN: "an import path 'package.module:function'",
    DRIVER_PATTERN: "a driver's name (like ne1000) or an import path 'package.module:make_device'",
    IDENTIFIER: "an identifier (letters, digits and _, not starting with a digit)",
}


#: The YAML files sdl reads, by kind: what each looks like, and what it is for.
KINDS = {
    "campaign": "a campaign file (name:, parameters:, objectives:, budget:, procedure:), for `sdl run`, "
    "`sdl submit` and `sdl validate`",
    "lab": "a lab file (instruments: and workcells:), for `sdl daemon --lab`",
    "simulated lab": "a simulated lab file (world:, and instruments with a kind:), the bench that "
    "`python -m simulators lab` serves; a lab file or a campaign's lab: names it with `simulated:`",
}


def file_kind(data: Mapping[str, Any]) -> str | None:
    """Which kind of :data:`KINDS` a YAML mapping looks like (None: none of them)."""
    if {"parameters", "objectives", "procedure"} & data.keys():
        return "campaign"
    if "workcells" in data:
        return "lab"
    instruments = data.get("instruments")
    kinds = isinstance(instruments, dict) and any(
        isinstance(spec, dict) and "kind" in spec for spec in instruments.values()
    )
    if "world" in data or kinds:
        return "simulated lab"
    return None


def wrong_kind(path: Path, data: Mapping[str, Any], expected: str) -> str | None:
    """For a file that does not validate as ``expected``: say so if it is a file of another kind."""
    kind = file_kind(data)
    if kind is None or kind == expected:
        return None
    return f"{path}: this is {KINDS[kind]}; expected {KINDS[expected]}"


class CampaignError(ValueError):
    """A campaign file that cannot be used; ``problems`` holds one located message per mistake."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = Path(path)
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class LoadedCampaign:
    campaign: Campaign
    path: Path
    source: str

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def load_campaign(path: Path | str, *, check_imports: bool = True) -> LoadedCampaign:
    """Parse and validate a campaign file; raise :class:`CampaignError` listing every problem found."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CampaignError(path, [f"{path}: cannot read campaign file: {exc.strerror or exc}"]) from None
    return load_campaign_text(source, path, check_imports=check_imports)


def load_campaign_text(source: str, path: Path | str, *, check_imports: bool = True) -> LoadedCampaign:
    """Validate a campaign file's text as if read from ``path`` (its folder is where procedures import
    from); raise :class:`CampaignError` listing every problem found."""
    path = Path(path)
    try:
        root = yaml.compose(source)
        data = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise CampaignError(path, [f"{where}: not valid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise CampaignError(
            path, [f"{path}: a campaign file must be a YAML mapping (name:, parameters:, ...)"]
        )
    try:
        campaign = Campaign.model_validate(data)
    except ValidationError as exc:
        other = wrong_kind(path, data, "campaign")
        problems = [other] if other else [describe_error(path, root, error) for error in exc.errors()]
        raise CampaignError(path, problems) from None
    campaign = _resolve_paths(path, root, campaign)
    problems = check_lease_on_demand(campaign)
    if problems:
        raise CampaignError(path, [locate(path, root, loc, msg) for loc, msg in problems])
    if check_imports:
        problems = check_import_paths(campaign, path.parent)
        if not problems:
            problems = check_procedure_options(campaign, path.parent)
        problems += check_lab(
            campaign.lab.instruments, campaign.lab.simulated, path.parent, ("lab", "instruments")
        )
        if problems:
            raise CampaignError(path, [locate(path, root, loc, msg) for loc, msg in problems])
    return LoadedCampaign(campaign=campaign, path=path.resolve(), source=source)


def check_lab(
    instruments: Mapping[str, Instrument], simulated: Path | None, base_dir: Path | None, at: tuple[Any, ...]
) -> list[tuple[tuple[Any, ...], str]]:
    """The instruments' drivers and options (built offline) and, for a simulated lab, their placeholders;
    each problem located under ``at``."""
    problems = check_drivers(instruments, base_dir)
    if simulated is not None:
        problems += check_placeholders(instruments, simulated)
    return [((*at, *loc) if loc else ("lab", "simulated") if at[0] == "lab" else ("simulated",), msg)
            for loc, msg in problems]  # fmt: skip


def check_lease_on_demand(campaign: Campaign) -> list[tuple[tuple[Any, ...], str]]:
    """Every device in procedure.lease_on_demand is one the plan is handed (a name that is not would be
    leased for the whole experiment, and a plan that then asks for it would wait on itself)."""
    procedure = campaign.procedure
    if procedure.lease_on_demand and procedure.plan is None:
        return [(("procedure", "lease_on_demand"), "is for plans: a function is handed no devices to lease")]
    devices = campaign.device_roles
    allowed = ", ".join(devices) or "none: give requires.devices or lab.instruments"
    return [
        (("procedure", "lease_on_demand", i), f"unknown device {name!r} (the plan's devices: {allowed})")
        for i, name in enumerate(procedure.lease_on_demand)
        if name not in devices
    ]


def check_procedure_options(
    campaign: Campaign, base_dir: Path | None, options: Mapping[str, Any] | None = None
) -> list[tuple[tuple[Any, ...], str]]:
    """procedure.options (or ``options``) checked against the plan's or function's own signature, before
    anything runs."""
    procedure = campaign.procedure
    given = procedure.options if options is None else options
    target = procedure.plan or procedure.function or ""
    function = resolve(target, base_dir)
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin or C function: nothing to check against
        return []
    positional = ["recipe", "devices"] if procedure.plan else ["recipe"]
    try:
        signature.bind(*([None] * len(positional)), **given)
    except TypeError as exc:
        params = list(signature.parameters.values())
        leading = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        leading = leading[: len(positional)]
        accepted = [
            p.name for p in params if p not in leading and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
        unknown = [] if takes_any else sorted(set(given) - set(accepted))
        kind = "plan" if procedure.plan else "function"
        if unknown:
            allowed = ", ".join(accepted) or "no options"
            message = f"{kind} {target} takes no option(s) {', '.join(unknown)} (it takes: {allowed})"
            return [(("procedure", "options", unknown[0]), message)]
        return [(("procedure", "options"), f"{kind} {target} cannot be called with these options: {exc}")]
    return []


def check_import_paths(campaign: Campaign, base_dir: Path | None) -> list[tuple[tuple[Any, ...], str]]:
    """Every import path in the campaign that does not resolve, as (field location, message)."""
    paths: list[tuple[tuple[Any, ...], str]] = []
    for key in ("plan", "function", "extractor"):
        value = getattr(campaign.procedure, key)
        if value is not None:
            paths.append((("procedure", key), value))
    problems = []
    for loc, value in paths:
        try:
            resolve(value, base_dir)
        except UnresolvedImport as exc:
            problems.append((loc, f"import path {value!r} does not resolve: {exc}"))
    return problems


def _resolve_paths(path: Path, root: yaml.Node | None, campaign: Campaign) -> Campaign:
    simulated = campaign.lab.simulated
    if simulated is None:
        return campaign
    full = simulated if simulated.is_absolute() else (path.parent / simulated)
    if not full.is_file():
        msg = f"simulated lab file not found: {full}"
        raise CampaignError(path, [locate(path, root, ("lab", "simulated"), msg)])
    lab = campaign.lab.model_copy(update={"simulated": full.resolve()})
    return campaign.model_copy(update={"lab": lab})


def describe_error(path: Path, root: yaml.Node | None, error: Any, model: type[BaseModel] = Campaign) -> str:
    """One pydantic error as 'file:line: field.path: message (allowed: ...)'."""
    loc = tuple(error["loc"])
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    got = error.get("input")
    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1], model)
        message = f"unknown field {loc[-1]!r}" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    elif kind == "missing":
        message = f"missing required field {loc[-1]!r}"
    elif kind == "union_tag_not_found":
        message = "missing `type` (one of 'real', 'integer', 'categorical')"
    elif kind == "union_tag_invalid":
        message = f"unknown type {error['ctx']['tag']!r} (allowed: {error['ctx']['expected_tags']})"
    elif kind == "string_pattern_mismatch":
        meaning = _PATTERN_MEANING.get(error["ctx"]["pattern"], f"matching {error['ctx']['pattern']}")
        message = f"{got!r} is not {meaning}"
    elif kind in ("literal_error", "enum") or kind.endswith("_type") or kind.endswith("_parsing"):
        message = f"{message} (got {got!r})"
    return locate(path, root, loc, message)


def locate(path: Path, root: yaml.Node | None, loc: tuple[Any, ...], message: str) -> str:
    line = _line_of(root, loc)
    where = f"{path}:{line}" if line else str(path)
    field = format_loc(loc)
    return f"{where}: {field}: {message}" if field else f"{where}: {message}"


def format_loc(loc: tuple[Any, ...]) -> str:
    """('parameters', 0, 'real', 'low') -> 'parameters[0].low' (union tags dropped)."""
    out = ""
    previous: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif (
            previous is not None and isinstance(previous, int) and part in ("real", "integer", "categorical")
        ):
            pass  # pydantic's discriminator tag, not a field of the file
        else:
            out += f".{part}" if out else str(part)
        previous = part
    return out


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    line = key.start_mark.line + 1
                    node = value
                    break
            # otherwise a union tag or a missing field: keep the parent's line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _fields_at(loc: tuple[Any, ...], model: type[BaseModel] = Campaign) -> list[str]:
    """The field names allowed at ``loc`` in ``model`` (for 'unknown field' messages)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp, part)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if part in tp.model_fields:
                tp = tp.model_fields[part].annotation
            continue  # a discriminator tag: the union was already narrowed by _unwrap
        origin = typing.get_origin(tp)
        if origin is list and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return []
    tp = _unwrap(tp, None)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _unwrap(tp: Any, tag: Any) -> Any:
    """Strip Annotated/Optional, and pick the union member whose `type` literal is ``tag``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            tagged = [m for m in models if "type" in m.model_fields and m.model_fields["type"].default == tag]
            if tagged:
                return tagged[0]
            if len(members) == 1 or models:
                tp = models[0] if models else members[0]
            else:
                return tp
        else:
            return tp


def centre_recipe(campaign: Campaign) -> dict[str, Any]:
    """The middle of the search space: midpoints (geometric for log scales), the first category."""
    recipe: dict[str, Any] = {}
    for p in campaign.parameters:
        if p.type == "real":
            recipe[p.name] = (p.low * p.high) ** 0.5 if p.log else (p.low + p.high) / 2
        elif p.type == "integer":
            recipe[p.name] = (p.low + p.high) // 2
        else:
            recipe[p.name] = p.choices[0]
    return recipe


def dry_run(loaded: LoadedCampaign) -> str:
    """Call a plain-function procedure once at the centre of the space and check what it measures.

    Raises :class:`CampaignError` naming each objective or stop_when measurement that does not come back
    as a number; returns a one-line report otherwise. A plan needs instruments, so it is not dry-run here.
    """
    campaign, path = loaded.campaign, loaded.path
    if campaign.procedure.function is None:
        return "dry run: skipped (a plan needs its instruments; `sdl run` against the simulated lab tries it)"
    recipe = centre_recipe(campaign)
    function = resolve(campaign.procedure.function, loaded.base_dir)
    try:
        result = function(dict(recipe), **campaign.procedure.options)
    except Exception as exc:
        raise CampaignError(
            path,
            [f"{path}: dry run: {campaign.procedure.function}({recipe}) raised {type(exc).__name__}: {exc}"],
        ) from None
    if not isinstance(result, dict):
        raise CampaignError(
            path,
            [f"{path}: dry run: the procedure returned {type(result).__name__}, not a dict of measurements"],
        )
    problems = []
    names = [o.measurement for o in campaign.objectives] + list(campaign.budget.stop_when)
    by_name = {o.measurement: o for o in campaign.objectives}
    for name in dict.fromkeys(names):
        try:
            campaign.value_of(by_name[name], result)
        except MissingMeasurement as exc:
            problems.append(f"{path}: dry run at {recipe}: {exc}")
    if problems:
        raise CampaignError(path, problems)
    shown = ", ".join(f"{k}={v!r}" for k, v in result.items())
    return f"dry run at {recipe}: ok ({shown})"
