"""Commands that read the record (schema, validate, campaigns, show, export, plot), and the few that tidy
it (delete, backup). Reading commands open the store read-only: they work on a read-only directory and
never change a byte of it."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from sdl.api.convert import campaign_state, experiment_summaries, experiment_summary, recorded_history
from sdl.api.models import ExperimentSummary
from sdl.cli.common import EXIT_OK, BadInput, open_store
from sdl.cli.progress import declared_units, fmt_best, fmt_objectives, fmt_recipe, fmt_value, summary_table
from sdl.exports import report, write_documents, write_package, write_parquet
from sdl.exports.atomic import new_directory, new_file
from sdl.exports.table import described_columns, export_text
from sdl.loop.lifecycle import campaign_of
from sdl.spec.campaign import Campaign
from sdl.spec.lab import LabSpec, load_lab
from sdl.spec.loading import dry_run, load_campaign
from sdl.spec.status import ExperimentStatus
from sdl.store import unacknowledged


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "schema",
        parents=[common],
        help="print the campaign file's (or the lab file's) JSON Schema",
        description="Print the JSON Schema of campaign files (or, with --lab, of lab files for "
        "`sdl daemon`), with a description of every field (for editors, review and documentation).",
    )
    p.add_argument("--lab", action="store_true", help="the lab file's schema instead")
    p.set_defaults(handler=cmd_schema)

    p = commands.add_parser(
        "validate",
        parents=[common],
        help="check a campaign file or a lab file",
        description="Validate a campaign file: every field, that its import paths resolve, that the "
        "procedure accepts its options, that every device builds offline with its driver options, and that "
        "address placeholders name endpoints the simulated lab serves. A lab file (one with workcells:) is "
        "checked the same way. Prints every mistake with its file, line and field path; exit code 2 if "
        "any. With --dry-run, a plain-function procedure is also called once at the centre of the search "
        "space, and every objective and stop_when measurement must come back as a number; with --lab, the "
        "campaign must fit a workcell of that lab.",
    )
    p.add_argument("file", type=Path, help="campaign file or lab file (YAML)")
    p.add_argument("--lab", type=Path, metavar="LAB", help="check that a workcell of this lab can run it")
    p.add_argument(
        "--dry-run", action="store_true", help="call a function procedure once at the centre of the space"
    )
    p.set_defaults(handler=cmd_validate)

    p = commands.add_parser(
        "campaigns",
        parents=[common],
        help="list the campaigns in the store",
        description="List campaigns: id, name, state, experiments done and failed against the budget, the "
        "best value, start time. A campaign whose process died without closing it shows as stale.",
    )
    p.set_defaults(handler=cmd_campaigns)

    p = commands.add_parser(
        "show",
        parents=[common],
        help="show one campaign and its experiments",
        description="Show a campaign's settings, summary and every experiment with its status and result; "
        "with several objectives, the Pareto front and its hypervolume.",
    )
    p.add_argument("campaign_id", metavar="CAMPAIGN_ID")
    p.add_argument(
        "--experiment",
        type=int,
        metavar="N",
        help="show experiment N in full: its status changes, its command journal (what was sent to which "
        "instrument, what was acknowledged: after a crash, what was in flight), its documents and decision",
    )
    p.set_defaults(handler=cmd_show)

    p = commands.add_parser(
        "export",
        parents=[common],
        help="export a campaign: CSV, JSON lines, a data package, Parquet, or its bluesky documents",
        description="csv, jsonl: one row per experiment: recipe columns, fixed conditions, measurement "
        "columns (the objectives' own values, in their own direction), status, the minimised scalar `loss`, "
        "failure and its cause, and the optimizer's decision; to stdout unless -o is given. "
        "datapackage: a Frictionless data package in the new directory -o DIR: the same table with each "
        "column's type, units, stage and description, the transitions, the instruments' identities, every "
        "run's documents and the whole record (`sdl import DIR` loads it into another store). "
        "parquet: the table as -o FILE.parquet, its schema in the file's metadata. "
        "documents: each experiment's bluesky documents as JSON lines in -o DIR.",
    )
    p.add_argument("campaign_id", metavar="CAMPAIGN_ID")
    p.add_argument(
        "--format",
        choices=("csv", "jsonl", "datapackage", "parquet", "documents"),
        default="csv",
        help="output format (default: csv)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="file (csv, jsonl, parquet) or new directory (datapackage, documents)",
    )
    p.set_defaults(handler=cmd_export)

    p = commands.add_parser(
        "plot",
        parents=[common],
        help="plot a campaign's progress to a PNG",
        description="Plot best-so-far vs experiment for each objective, parameter coverage "
        "(each parameter vs experiment, coloured by the first objective) and, with several objectives, "
        "the Pareto front.",
    )
    p.add_argument("campaign_id", metavar="CAMPAIGN_ID")
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="PNG file to write (its directory must exist)"
    )
    p.set_defaults(handler=cmd_plot)

    p = commands.add_parser(
        "delete",
        parents=[common],
        help="delete a campaign and everything recorded for it",
        description="Delete a campaign, its experiments, documents and journal from the store (e.g. one that "
        "failed before its first experiment). Asks for confirmation unless --yes. Refused while a process "
        "is running the campaign.",
    )
    p.add_argument("campaign_id", metavar="CAMPAIGN_ID")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation (for scripts)")
    p.set_defaults(handler=cmd_delete)

    p = commands.add_parser(
        "backup",
        parents=[common],
        help="copy the whole store, safely, even while campaigns run",
        description="Write a consistent copy of the store with SQLite's online backup (safe while the lab "
        "service or `sdl run` is writing). DEST is a new file, or an existing directory to put "
        "sdl.sqlite3 in. Restore by pointing --data-dir at a directory holding the copy as sdl.sqlite3.",
    )
    p.add_argument("destination", metavar="DEST", type=Path)
    p.set_defaults(handler=cmd_backup)


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps((LabSpec if args.lab else Campaign).model_json_schema(), indent=2))
    return EXIT_OK


def _is_lab_file(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False  # the campaign loader reports it with its line
    return isinstance(data, dict) and "workcells" in data and "parameters" not in data


def cmd_validate(args: argparse.Namespace) -> int:
    if _is_lab_file(args.file):
        lab = load_lab(args.file)
        cells = ", ".join(
            f"{name} ({', '.join(w.devices) or 'no devices'})" for name, w in lab.workcells.items()
        )
        print(f"{args.file}: ok: lab {lab.name!r}, {len(lab.instruments)} instrument(s), workcells {cells}")
        return EXIT_OK
    loaded = load_campaign(args.file)
    if args.lab is not None:
        lab = load_lab(args.lab)
        reasons = {w: lab.why_not(w, loaded.campaign, loaded.base_dir) for w in lab.workcells}
        if all(reasons.values()):
            details = "; ".join(f"{w}: {', '.join(r)}" for w, r in reasons.items())
            raise BadInput(
                f"{args.file}: no workcell of lab {lab.name!r} ({args.lab}) can run it ({details})"
            )
        from sdl.daemon.stock import NeedsError, declared, outlook

        fitting = [w for w, r in reasons.items() if not r]
        try:
            notes = outlook(loaded.campaign, lab, fitting, declared(lab), loaded.base_dir)
        except NeedsError as exc:
            raise BadInput(f"{args.file}: {exc}") from None
        for note in notes:  # against what the lab file declares (the store's figures may be lower by now)
            print(f"note: {note}")
    c = loaded.campaign
    kind = f"plan {c.procedure.plan}" if c.procedure.plan else f"function {c.procedure.function}"
    print(
        f"{args.file}: ok: {c.name!r}, {len(c.parameters)} parameters, {len(c.objectives)} objective(s), "
        f"{c.budget.max_experiments} experiments, optimizer {c.optimizer.kind}, {kind}, "
        f"{len(c.lab.instruments)} instrument(s)"
    )
    if args.dry_run:
        print(dry_run(loaded))
    return EXIT_OK


def _output_path(path: Path) -> Path:
    """Refuse an output path whose directory does not exist, rather than create directories anywhere."""
    parent = path.expanduser().parent
    if not parent.is_dir():
        raise BadInput(f"cannot write {path}: the directory {parent} does not exist (create it first)")
    return path


def cmd_campaigns(args: argparse.Namespace) -> int:
    with open_store(args, read_only=True) as store:
        table = Table(title=f"campaigns in {store.where}", title_justify="left")
        for column in ("id", "name", "state", "done", "failed", "faulted", "budget", "best", "started"):
            table.add_column(column)
        for record in store.campaigns():
            campaign, _ = campaign_of(store, record.id)
            history = experiment_summaries(store.experiments(record.id))
            table.add_row(
                record.id,
                record.name,
                campaign_state(record),
                str(sum(e.status is ExperimentStatus.DONE for e in history)),
                str(sum(e.status is ExperimentStatus.FAILED for e in history)),
                str(sum(e.status is ExperimentStatus.FAULTED for e in history)),
                f"{report.spent(history)}/{record.max_experiments}",
                fmt_best(campaign, history),
                (record.started_at or "")[:19].replace("T", " "),
            )
        Console(width=max(Console().width, 140)).print(table)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    if args.experiment is not None:
        return show_experiment(args)
    with open_store(args, read_only=True) as store:
        record = store.campaign(args.campaign_id)
        campaign, _ = campaign_of(store, args.campaign_id)
        history = experiment_summaries(store.experiments(args.campaign_id))
        out = Console(width=max(Console().width, 120))
        out.print(summary_table(record, campaign, history))
        out.print(
            f"file {record.source_path}; optimizer {campaign.optimizer.kind} "
            f"(seed {campaign.optimizer.seed}); "
            f"started {record.started_at}; finished {record.finished_at or '-'}",
            highlight=False,
        )
        _print_columns(out, campaign, history)
        units = declared_units(campaign)
        table = Table(title="experiments", title_justify="left")
        for column in ("#", "status", "recipe", "objectives", "measurements / failure", "model"):
            table.add_column(column)
        for e in history:
            detail = fmt_recipe(e.measurements or {}, units) if e.measurements else ""
            if e.failure:
                detail = f"{detail} {e.failure}".strip()
            table.add_row(
                str(e.seq),
                e.status.value,
                fmt_recipe(e.recipe, units),
                fmt_objectives(campaign, e) if e.status is ExperimentStatus.DONE else "",
                detail,
                e.decision.model if e.decision else "",
            )
        out.print(table)
        _print_front(out, campaign, history)
    return EXIT_OK


def show_experiment(args: argparse.Namespace) -> int:
    """One experiment in full: how it went, what it sent, what came back."""

    with open_store(args, read_only=True) as store:
        store.campaign(args.campaign_id)
        found = [e for e in store.experiments(args.campaign_id) if e.seq == args.experiment]
        if not found:
            raise BadInput(f"campaign {args.campaign_id} has no experiment {args.experiment}")
        e = experiment_summary(found[0], store.consumption(args.campaign_id))
        transitions = store.transitions(e.id)
        journal = store.journal(e.id)
        documents = store.documents(e.id)
    out = Console(width=max(Console().width, 120))
    head = f"experiment {e.seq} of {e.campaign_id}: {e.status.value}"
    if e.cause is not None:
        head += f" (cause: {e.cause.value})"
    out.print(head, highlight=False)
    out.print(f"recipe: {fmt_recipe(e.recipe)}", highlight=False)
    if e.measurements:
        out.print(f"measurements: {fmt_recipe(e.measurements)}", highlight=False)
    if e.failure:
        out.print(f"why: {e.failure}", highlight=False)
    if e.fault_instrument:
        out.print(f"instrument fault: {e.fault_instrument} ({e.fault_kind})", highlight=False)
    if e.used:
        used = "; ".join(f"{u.stock} {u.amount:g} {u.unit} ({u.lot or 'no lot'})" for u in e.used)
        out.print(f"used: {used}", highlight=False)
    if e.workcell:
        out.print(f"workcell: {e.workcell}; retry of experiment id {e.retry_of}" if e.retry_of else
                  f"workcell: {e.workcell}", highlight=False)  # fmt: skip
    if e.decision is not None:
        d = e.decision
        how = f"{d.model} ({d.acquisition})" if d.acquisition else d.model
        out.print(f"decision: {how} in {d.seconds:.3f} s, "
                  f"{d.n_observations} observations, {d.n_pending} pending", highlight=False)  # fmt: skip
    for t in transitions:
        out.print(f"  {t.at[:23]}  {t.from_status.value if t.from_status else '':>9} -> {t.to_status.value}"
                  + (f"  ({t.note})" if t.note else ""), highlight=False)  # fmt: skip
    table = Table(title=f"command journal ({len(journal)} lines)", title_justify="left")
    for column in ("time", "entry", "command", "instrument", "device", "detail"):
        table.add_column(column)
    for j in journal:
        at = dt.datetime.fromtimestamp(j.at, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
        table.add_row(at, j.entry, j.command, j.instrument or "", j.device or "", j.detail or "")
    out.print(table)
    open_commands = unacknowledged(journal)
    if open_commands:
        listed = ", ".join(f"{j.command} {j.device or j.instrument}" for j in open_commands)
        out.print(f"[yellow]sent and never acknowledged:[/] {listed}", highlight=False)
    names = [name for name, _ in documents]
    kinds = f" ({', '.join(dict.fromkeys(names))})" if names else ""
    out.print(f"documents: {len(documents)}{kinds}", highlight=False)
    return EXIT_OK


def _print_columns(out: Console, campaign: Campaign, history: list[ExperimentSummary]) -> None:
    """What each recipe, condition and measurement column means, when the campaign declares anything."""
    columns = [c for c in described_columns(campaign, history) if c.kind != "record"]
    if not any(c.units or c.stage or c.description or c.material for c in columns):
        return
    values = campaign.condition_values()
    table = Table(title="columns", title_justify="left")
    for header in ("column", "kind", "units", "stage", "description"):
        table.add_column(header)
    for c in columns:
        kind = f"{c.kind} = {fmt_value(values[c.name])}" if c.kind == "condition" else c.kind
        description = c.description
        if c.material:
            m = campaign.materials[c.material]
            facts = ", ".join(x for x in (m.concentration, m.supplier, f"lot {m.lot}" if m.lot else "") if x)
            description = (
                f"{description} ({c.material}: {facts})" if facts else f"{description} ({c.material})"
            )
        table.add_row(c.name, kind, c.units, c.stage or "", description.strip())
    out.print(table)


def _print_front(out: Console, campaign: Campaign, history: list[ExperimentSummary]) -> None:
    """With several objectives: the non-dominated experiments and the hypervolume they span."""
    pareto = report.front(campaign, history)
    if pareto is None:
        return
    names = [o.measurement for o in campaign.objectives]
    reference = ", ".join(f"{k} {fmt_value(v)}" for k, v in pareto.reference.items())
    table = Table(
        title=f"Pareto front: {len(pareto.experiments)} non-dominated experiment(s), "
        f"hypervolume {pareto.hypervolume:.6g} (reference: {reference})",
        title_justify="left",
    )
    headers = [f"{o.measurement} ({o.goal})" for o in campaign.objectives]
    for column in ("#", *headers, "recipe"):
        table.add_column(column)
    for e in pareto.experiments:
        m = e.measurements or {}
        table.add_row(str(e.seq), *(fmt_value(m.get(n)) for n in names), fmt_recipe(e.recipe))
    out.print(table)


def cmd_export(args: argparse.Namespace) -> int:
    if args.format in ("datapackage", "parquet", "documents"):
        return _export_open_format(args)
    output = _output_path(args.output) if args.output is not None else None
    with open_store(args, read_only=True) as store:
        store.campaign(args.campaign_id)
        campaign, _ = campaign_of(store, args.campaign_id)
        text = export_text(campaign, recorded_history(store, args.campaign_id), args.format)
    if output is None:
        sys.stdout.write(text)
    else:
        with new_file(output) as partial:
            partial.write_text(text, encoding="utf-8")
        print(f"wrote {output}")
    return EXIT_OK


def _export_open_format(args: argparse.Namespace) -> int:
    """Written beside the target under a temporary name and renamed into place: a failed export leaves
    nothing (`sdl.exports.atomic`)."""
    if args.output is None:
        what = "FILE.parquet" if args.format == "parquet" else "DIR (a new directory)"
        raise BadInput(f"--format {args.format} writes files: give -o {what}")
    output = _output_path(args.output)
    if args.format != "parquet" and output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise BadInput(f"{output} exists and is not an empty directory; choose a new directory")
    with open_store(args, read_only=True) as store:
        store.campaign(args.campaign_id)
        campaign, _ = campaign_of(store, args.campaign_id)
        history = store.experiments(args.campaign_id)
        if args.format == "datapackage":
            written = write_package(store, args.campaign_id, output)
        elif args.format == "parquet":
            with new_file(output) as partial:
                write_parquet(campaign, recorded_history(store, args.campaign_id), partial, args.campaign_id)
            written = output
        else:
            with new_directory(output) as partial:
                files = write_documents(store, history, partial)
            written = output
            print(f"{len(files)} experiment(s) with documents")
    print(f"wrote {written}")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    if args.output.suffix.lower() != ".png":
        raise BadInput(f"the plot is a PNG: give -o FILE.png, not {args.output}")
    output = _output_path(args.output)
    with open_store(args, read_only=True) as store:
        store.campaign(args.campaign_id)
        campaign, _ = campaign_of(store, args.campaign_id)
        history = experiment_summaries(store.experiments(args.campaign_id))
        path = report.plot(campaign, history, output, title=args.campaign_id)
    print(f"wrote {path}")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        record = store.campaign(args.campaign_id)
        history = store.experiments(args.campaign_id)
        if not args.yes:
            if not sys.stdin.isatty():
                raise BadInput("sdl delete asks for confirmation on a terminal; pass --yes in scripts")
            answer = input(
                f"delete campaign {record.id} ({record.name}, {campaign_state(record)}, "
                f"{len(history)} experiments) and everything recorded for it? [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return EXIT_OK
        store.delete_campaign(args.campaign_id)
    print(f"deleted campaign {args.campaign_id} ({len(history)} experiments)")
    return EXIT_OK


def cmd_backup(args: argparse.Namespace) -> int:
    with open_store(args, read_only=True) as store:
        target = store.backup(args.destination)
    print(f"wrote {target}")
    return EXIT_OK
