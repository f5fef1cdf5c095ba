"""Warm starts: earlier campaigns' experiments that seed a new campaign's optimizer.

A campaign file may name earlier campaigns (``warm_start: [{campaign: ID}, {package: DIR}]``), in this
store or in a data package `sdl export` wrote. Their *compatible* experiments are copied into the new
campaign's record when it is created, and its optimizer sees them before its own (so it skips the initial
design it no longer needs). Compatible means:

* the same parameter names, each of the same type, with units that convert (``mL`` values arrive as
  ``µL``), and every value inside this campaign's range (or among its choices) and constraints;
* the same fixed conditions (``conditions``: a total volume, a temperature, a path length), compared in
  this campaign's units, unless the warm start names them under ``may_differ``: a condition only one of
  the two campaigns declares does not match, since nothing says what it was;
* done experiments that measured every objective (their scalar is recomputed by this campaign's own
  objectives), and failed ones, which arrive as failures: a recipe that failed before will fail again.

Faulted and interrupted experiments say nothing about their recipe and are left out, as in a campaign's
own history. What was taken and what was left, and why, is reported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdl.exports import PackageError, read_package
from sdl.space import IntegerParameter, RealParameter
from sdl.space.units import UnitsError, conversion, same_units
from sdl.spec.campaign import Campaign, WarmStart
from sdl.store import Store, UnknownCampaign


class WarmStartError(ValueError):
    """A warm-start source that cannot be used at all (unknown, unreadable, or incompatible)."""


@dataclass
class WarmStartReport:
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: per source, how many experiments were taken and why the others were left out
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Source:
    label: str
    campaign: Campaign
    experiments: list[dict[str, Any]]  # raw experiment rows (status, recipe_json, measurements_json...)


def resolve(campaign: Campaign, store: Store, base_dir: Path | None) -> WarmStartReport:
    """The warm-start rows for ``campaign`` from its sources; raises :class:`WarmStartError` when a source
    cannot be read or has nothing compatible."""
    report = WarmStartReport()
    for source_spec in campaign.warm_start:
        source = _load(source_spec, store, base_dir)
        conditions = compare_conditions(campaign, source, source_spec.may_differ)
        taken, skipped = compatible_rows(campaign, source)
        if conditions.different:
            # Fixed conditions hold for every experiment: none of them was run under this campaign's.
            why = f"run at {'; '.join(conditions.different)}"
            skipped = {why: len(source.experiments)}
            taken = []
        if not taken:
            reasons = (
                "; ".join(f"{n} x {why}" for why, n in skipped.items()) or "it has no finished experiment"
            )
            hint = (
                " (list a condition under the warm start's may_differ if its difference does not matter)"
                if conditions.different
                else ""
            )
            raise WarmStartError(
                f"warm_start {source_spec.text()}: no compatible experiment ({reasons}){hint}"
            )
        if conditions.allowed:
            for row in taken:
                row["source"] += f" ({'; '.join(conditions.ran_at)})"
        report.rows += taken
        left = ", ".join(f"{n} {why}" for why, n in skipped.items())
        report.notes.append(
            f"warm start from {source.label}: {len(taken)} experiment(s)"
            + (f"; left out: {left}" if left else "")
            + (f"; conditions: {'; '.join(conditions.allowed)}" if conditions.allowed else "")
        )
    return report


@dataclass
class ConditionCheck:
    #: conditions that differ and may not: 'total_volume = 900 µL (this campaign: 1500 µL)'
    different: list[str] = field(default_factory=list[str])
    #: conditions that differ and may: 'total_volume = 900 µL there, 1500 µL here (may differ)'
    allowed: list[str] = field(default_factory=list[str])
    #: the source's value of each allowed difference: 'total_volume = 900 µL'
    ran_at: list[str] = field(default_factory=list[str])


def compare_conditions(campaign: Campaign, source: _Source, may_differ: list[str]) -> ConditionCheck:
    """How the source's fixed conditions compare with this campaign's (in this campaign's units)."""
    mine, theirs = campaign.conditions, source.campaign.conditions
    unknown = sorted(set(may_differ) - set(mine) - set(theirs))
    if unknown:
        known = ", ".join(sorted(set(mine) | set(theirs))) or "none"
        raise WarmStartError(
            f"warm_start {source.label}: may_differ names {', '.join(unknown)}, which neither campaign "
            f"declares as a condition (conditions: {known})"
        )
    here_values, there_values = campaign.condition_values(), source.campaign.condition_values()
    check = ConditionCheck()
    for name in sorted(set(mine) | set(theirs)):
        here = _quantity(here_values[name], mine[name].units) if name in mine else None
        there = _quantity(there_values[name], theirs[name].units) if name in theirs else None
        if name not in theirs:
            what, ran = f"{name} unknown (this campaign: {here})", f"{name} unknown"
        elif name not in mine:
            what, ran = f"{name} = {there} (this campaign does not say)", f"{name} = {there}"
        elif _same(there_values[name], theirs[name].units, here_values[name], mine[name].units):
            continue
        else:
            what, ran = f"{name} = {there} (this campaign: {here})", f"{name} = {there}"
        if name in may_differ:
            check.allowed.append(f"{ran} there, {here or 'not said'} here (may differ)")
            check.ran_at.append(ran)
        else:
            check.different.append(what)
    return check


def _quantity(value: Any, units: str) -> str:
    return f"{value:g} {units}".strip() if isinstance(value, int | float) else f"{value} {units}".strip()


def _same(there: Any, there_units: str, here: Any, here_units: str) -> bool:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (there, here))
    if not numbers:
        return there == here and same_units(there_units, here_units)
    try:
        converted = conversion(there_units, here_units)(there)
    except UnitsError:
        return False
    return math.isclose(converted, here, rel_tol=1e-9, abs_tol=1e-12)


def _load(spec: WarmStart, store: Store, base_dir: Path | None) -> _Source:
    if spec.campaign is not None:
        try:
            rows = store.campaign_rows(spec.campaign)
        except UnknownCampaign as exc:
            raise WarmStartError(f"warm_start: {exc}") from None
        label = f"campaign {spec.campaign}"
    else:
        assert spec.package is not None
        path = spec.package if spec.package.is_absolute() or base_dir is None else base_dir / spec.package
        try:
            rows, _ = read_package(path)
        except PackageError as exc:
            raise WarmStartError(f"warm_start: {exc}") from None
        label = f"package {path} (campaign {rows.campaign['id']})"
    earlier = Campaign.model_validate(json.loads(rows.campaign["spec_json"]))
    return _Source(label, earlier, rows.experiments)


def compatible_rows(campaign: Campaign, source: _Source) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The source's experiments this campaign can learn from, in its units; and why others were left out."""
    skipped: dict[str, int] = {}

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    mine = {p.name: p for p in campaign.parameters}
    theirs = {p.name: p for p in source.campaign.parameters}
    if set(mine) != set(theirs):
        raise WarmStartError(
            f"warm_start {source.label}: its parameters ({', '.join(sorted(theirs))}) "
            "are not this campaign's "
            f"({', '.join(sorted(mine))})"
        )
    converters = {}
    for name, p in mine.items():
        q = theirs[name]
        if p.type != q.type:
            raise WarmStartError(
                f"warm_start {source.label}: parameter {name!r} is {q.type} there, {p.type} here"
            )
        try:
            converters[name] = conversion(getattr(q, "units", ""), getattr(p, "units", ""))
        except UnitsError as exc:
            raise WarmStartError(f"warm_start {source.label}: parameter {name!r}: {exc}") from None
    measured = {o.measurement for o in campaign.objectives}
    measurement_converters = {}
    for name in measured:
        here = campaign.measurement_meaning(name).units
        there = source.campaign.measurement_meaning(name).units
        try:
            measurement_converters[name] = conversion(there, here)
        except UnitsError as exc:
            raise WarmStartError(f"warm_start {source.label}: measurement {name!r}: {exc}") from None

    taken = []
    for e in source.experiments:
        if e["status"] not in ("done", "failed"):
            skip(f"{e['status']} (says nothing about its recipe)")
            continue
        recipe = {k: converters[k](v) for k, v in json.loads(e["recipe_json"]).items() if k in converters}
        recipe = {k: _as_type(mine[k], v) for k, v in recipe.items()}
        if not all(mine[k].contains(v) for k, v in recipe.items()) or len(recipe) != len(mine):
            skip("outside this campaign's ranges")
            continue
        if not campaign.space.satisfies_constraints(recipe):
            skip("outside this campaign's constraints")
            continue
        row = {
            "source": f"{source.label} experiment {e['seq']}",
            "status": e["status"],
            "recipe": recipe,
            "measurements": None,
            "failure": e.get("failure"),
        }
        if e["status"] == "done":
            measurements = json.loads(e["measurements_json"] or "{}")
            if not all(isinstance(measurements.get(m), int | float) for m in measured):
                skip("without every objective's measurement")
                continue
            for m in measured:
                measurements[m] = measurement_converters[m](measurements[m])
            row["measurements"] = measurements
        taken.append(row)
    return taken, skipped


def _as_type(parameter: Any, value: Any) -> Any:
    if isinstance(parameter, IntegerParameter) and isinstance(value, float) and value.is_integer():
        return int(value)
    if (
        isinstance(parameter, RealParameter)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        # A unit conversion may land a bound's value a rounding error outside it
        # (0.5 mL -> 500.00000000000006 µL).
        value = float(value)
        for bound in (parameter.low, parameter.high):
            if abs(value - bound) <= 1e-9 * max(1.0, abs(bound)):
                return bound
    return value
