"""Read-only commands: schema, validate, campaigns, show, export, plot."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sdl.cli import EXIT_OK, BadInput, data_dir_of
from sdl.cli.progress import fmt_recipe, fmt_value, summary_table
from sdl.executor import best_experiment, counts_toward_budget
from sdl.runner import campaign_of, runner_alive
from sdl.status import CampaignStatus
from sdl.store import CampaignRecord, Store


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "schema",
        parents=[common],
        help="print the campaign file's JSON Schema",
        description="Print the JSON Schema of campaign files, with a description of every field "
        "(for editors, review and documentation).",
    )
    p.set_defaults(handler=cmd_schema)

    p = commands.add_parser(
        "validate",
        parents=[common],
        help="check a campaign file",
        description="Validate a campaign file, including that its import paths resolve. Prints every mistake "
        "with its file, line and field path; exit code 2 if any.",
    )
    p.add_argument("file", type=Path, help="campaign file (YAML)")
    p.set_defaults(handler=cmd_validate)

    p = commands.add_parser(
        "campaigns",
        parents=[common],
        help="list the campaigns in the store",
        description="List campaigns: id, name, status, experiments done/budget, best value, start time.",
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
    p.set_defaults(handler=cmd_show)

    p = commands.add_parser(
        "export",
        parents=[common],
        help="export a campaign's history as CSV or JSON lines",
        description="One row per experiment: recipe columns, measurement columns, status, objective, failure "
        "and the optimizer's decision. Writes to stdout unless -o is given.",
    )
    p.add_argument("campaign_id", metavar="CAMPAIGN_ID")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="output format (default: csv)")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
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
    p.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")
    p.set_defaults(handler=cmd_plot)


def _open_store(args: argparse.Namespace) -> Store:
    data_dir = data_dir_of(args)
    if not Store.exists(data_dir):
        raise BadInput(f"no store in {data_dir} (give --data-dir, or run a campaign first)")
    return Store(data_dir)


def cmd_schema(args: argparse.Namespace) -> int:
    from sdl.campaign import Campaign

    print(json.dumps(Campaign.model_json_schema(), indent=2))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from sdl.loading import load_campaign

    loaded = load_campaign(args.file)
    c = loaded.campaign
    kind = f"plan {c.procedure.plan}" if c.procedure.plan else f"function {c.procedure.function}"
    print(
        f"{args.file}: ok: {c.name!r}, {len(c.parameters)} parameters, {len(c.objectives)} objective(s), "
        f"{c.budget.max_experiments} experiments, optimizer {c.optimizer.kind}, {kind}, "
        f"{len(c.lab.instruments)} instrument(s)"
    )
    return EXIT_OK


def status_text(record: CampaignRecord) -> str:
    if record.status is CampaignStatus.RUNNING and not runner_alive(record.runner_pid, record.runner_host):
        return "stale (its process is gone; resume it)"
    return record.status.value


def cmd_campaigns(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        table = Table(title=f"campaigns in {store.path}", title_justify="left")
        for column in ("id", "name", "status", "done/budget", "best", "started"):
            table.add_column(column)
        for record in store.campaigns():
            history = store.experiments(record.id)
            best = best_experiment(history)
            spent = sum(counts_toward_budget(e) for e in history)
            table.add_row(
                record.id,
                record.name,
                status_text(record),
                f"{spent}/{record.max_experiments}",
                fmt_value(best.objective) if best else "-",
                (record.started_at or "")[:19].replace("T", " "),
            )
        Console(width=max(Console().width, 120)).print(table)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        record = store.campaign(args.campaign_id)
        campaign, _ = campaign_of(store, args.campaign_id)
        history = store.experiments(args.campaign_id)
        out = Console(width=max(Console().width, 120))
        out.print(summary_table(record, campaign, history))
        out.print(
            f"file {record.source_path}; optimizer {campaign.optimizer.kind} "
            f"(seed {campaign.optimizer.seed}); "
            f"started {record.started_at}; finished {record.finished_at or '-'}",
            highlight=False,
        )
        table = Table(title="experiments", title_justify="left")
        for column in ("#", "status", "recipe", "objective", "measurements / failure", "model"):
            table.add_column(column)
        for e in history:
            detail = fmt_recipe(e.measurements or {}) if e.measurements else ""
            if e.failure:
                detail = f"{detail} {e.failure}".strip()
            table.add_row(
                str(e.seq),
                e.status.value,
                fmt_recipe(e.recipe),
                fmt_value(e.objective),
                detail,
                e.decision.model if e.decision else "",
            )
        out.print(table)
        _print_front(out, campaign, history)
    return EXIT_OK


def _print_front(out: Console, campaign: Any, history: list[Any]) -> None:
    """With several objectives: the non-dominated experiments and the hypervolume they span."""
    from sdl import report

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
    from sdl import report

    with _open_store(args) as store:
        store.campaign(args.campaign_id)
        campaign, _ = campaign_of(store, args.campaign_id)
        text = report.export_text(campaign, store.experiments(args.campaign_id), args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    from sdl import report

    if args.output.suffix.lower() != ".png":
        raise BadInput(f"the plot is a PNG: give -o FILE.png, not {args.output}")
    with _open_store(args) as store:
        store.campaign(args.campaign_id)
        campaign, _ = campaign_of(store, args.campaign_id)
        path = report.plot(campaign, store.experiments(args.campaign_id), args.output, title=args.campaign_id)
    print(f"wrote {path}")
    return EXIT_OK
