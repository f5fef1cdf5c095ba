"""Commands that talk to the lab service: submit, status, watch, pause, resume, stop, abort, budget, estop,
instruments, quarantine, release. Each takes --connect URL (default: the service of --data-dir).

Without a lab service these fail at once, before the client and the API's models are imported: each
command imports what it uses when it runs (sdl/cli/__init__.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdl.api.local import INFO_FILE, ServiceUnavailable, local_service, service_info
from sdl.cli.common import EXIT_FAILURE, EXIT_OK, BadInput, data_dir_of

if TYPE_CHECKING:
    from rich.table import Table

    from sdl.api import models as m
    from sdl.api.client import Client


def adder(commands: Any, common: argparse.ArgumentParser) -> Callable[..., argparse.ArgumentParser]:
    """``add(name, help, description, handler)``: a command that reaches the lab service."""
    client = client_options()

    def add(name: str, help: str, description: str, handler: Any) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=[common, client], help=help, description=description)
        parser.set_defaults(handler=handler)
        return parser

    return add


def typed_request(method: str, arguments: Mapping[str, str], **fields: Any) -> Any:
    """The request model named ``method`` with ``fields``; a value it refuses is the user's mistake, said
    with the argument that gave it (``arguments``: field -> argument; call once connected: this imports the
    API's models)."""
    from pydantic import ValidationError

    from sdl.api import models as m

    model: type[m.Request] = getattr(m, method)
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = [
            f"{arguments.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else method}: {e['msg']}"
            for e in exc.errors()
        ]
        raise BadInput("; ".join(problems)) from None


def when(at: str | None) -> str:
    """A stored time (ISO 8601, UTC) to the second: '2026-03-02 14:05:09'."""
    return at[:19].replace("T", " ") if at else ""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    add = adder(commands, common)

    p = add(
        "submit",
        "submit a campaign to the lab service",
        "Validate a campaign file on the lab service and queue it; it starts on every free workcell that "
        "provides the devices and capabilities it requires. Prints the campaign id. Mistakes in the file are "
        "reported like `sdl validate` does (exit 2).",
        cmd_submit,
    )
    p.add_argument("file", type=Path)
    p.add_argument("--seed", type=int, help="override optimizer.seed")
    p.add_argument("--budget", type=int, metavar="N", help="override budget.max_experiments")
    p.add_argument("--watch", action="store_true", help="then follow its progress until it ends")

    add(
        "status",
        "the lab at a glance",
        "Workcells, instruments, the e-stop and running campaigns.",
        cmd_status,
    )

    p = add(
        "watch",
        "follow a campaign (or the whole lab) live",
        "Follow one campaign's progress from the service's events, with the same display as `sdl run`, "
        "until it ends; without CAMPAIGN_ID, print every event of the lab as it happens (Ctrl-C to stop).",
        cmd_watch,
    )
    p.add_argument("campaign_id", nargs="?", metavar="CAMPAIGN_ID")

    for name, model, text in (
        ("pause", "PauseCampaign", "finish the experiments in flight, start no new ones"),
        ("resume", "ResumeCampaign", "start experiments again (a paused, stopped or stale campaign)"),
        ("stop", "StopCampaign", "stop after the experiments in flight (the campaign ends interrupted)"),
        ("abort", "AbortCampaign", "abort the campaign's experiments now: every moving device is stopped"),
    ):
        p = add(name, text, f"{text[0].upper()}{text[1:]}.", cmd_campaign_control)
        p.add_argument("campaign_id", metavar="CAMPAIGN_ID")
        p.set_defaults(model=model)

    p = add(
        "budget", "change a campaign's budget", "Set a campaign's total number of experiments.", cmd_budget
    )
    p.add_argument("campaign_id", metavar="CAMPAIGN_ID")
    p.add_argument("max_experiments", type=int, metavar="N")

    p = add(
        "estop",
        "emergency stop: stop every instrument now",
        "Stop every instrument now (pumps stopped, arm stopped), abort every experiment in flight, and hold "
        "the lab until `sdl estop --clear`.",
        cmd_estop,
    )
    p.add_argument("--clear", action="store_true", help="let the lab take work again")
    p.add_argument("--reason", default="emergency stop from the command line")

    add(
        "instruments",
        "instruments and their health",
        "Each instrument's state, health and lease.",
        cmd_instruments,
    )

    p = add(
        "quarantine",
        "take an instrument out of service",
        "Workcells that need it take no work; the others carry on.",
        cmd_quarantine,
    )
    p.add_argument("instrument")
    p.add_argument("--reason", default="quarantined by the operator")

    p = add(
        "release",
        "put an instrument back in service",
        "After the driver's recovery and health check pass (or at once with --no-check).",
        cmd_release,
    )
    p.add_argument("instrument")
    p.add_argument("--no-check", action="store_true", help="release without a recovery and health check")


def client_options() -> argparse.ArgumentParser:
    """--connect, --key and --server-key: every command that talks to the lab service takes them."""
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--connect", metavar="URL", help="the lab service's API address (default: from DATA_DIR/daemon.json)"
    )
    client.add_argument(
        "--key",
        metavar="FILE",
        help="your CurveZMQ key pair, NAME.key_secret from `sdl keys generate` (default: $SDL_KEY, else "
        "the data directory owner's key, DATA_DIR/keys/owner.key_secret, if this account may read it)",
    )
    client.add_argument(
        "--server-key",
        metavar="FILE",
        help="the service's public key, its DATA_DIR/keys/server.key (default: $SDL_SERVER_KEY, or the "
        "local service's daemon.json)",
    )
    return client


@contextmanager
def connected(args: argparse.Namespace) -> Iterator[Client]:
    """A client of the service at --connect, else of the one that keeps --data-dir: if that directory has no
    record of a running service, this fails at once, saying how to start one."""
    data_dir = data_dir_of(args)
    address = args.connect or local_service(data_dir)
    from sdl.api.client import Client, Credentials  # 0MQ and the API's models, once there is a service

    credentials = Credentials.load(args.key, args.server_key, data_dir=data_dir)
    try:
        with Client(address, credentials=credentials) as client:
            yield client
    except ServiceUnavailable as exc:
        if args.connect:
            raise
        pid = service_info(data_dir).get("pid")
        raise ServiceUnavailable(
            f"{exc}; {data_dir / INFO_FILE} names process {pid}, which is running: the lab service may be "
            "stuck, or still starting"
        ) from None


def run_request(args: argparse.Namespace, request: m.Request) -> Any:
    with connected(args) as client:
        return client.call(request)


def ask(args: argparse.Namespace, method: str, **fields: Any) -> Any:
    """Call the API method whose request model (in sdl.api.models) is named ``method``, with ``fields``:
    the models are imported once a service is known to be there."""
    with connected(args) as client:
        from sdl.api import models as m

        model: type[m.Request] = getattr(m, method)
        return client.call(model(**fields))


def cmd_submit(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise BadInput(f"{args.file}: no such campaign file")
    with connected(args) as client:
        reply = client.submit(args.file, seed=args.seed, budget=args.budget)
        print(f"submitted campaign {reply.campaign_id}")
        for note in reply.notes:
            print(f"note: {note}")
        if args.watch:
            return watch_campaign(client, reply.campaign_id)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    status: m.StatusReply = ask(args, "Status")
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    out = Console(width=max(Console().width, 120))
    estop = (
        f"E-STOP ACTIVE: {status.estop.reason} (by {status.estop.by})" if status.estop.active else "no e-stop"
    )
    where = f" on {status.host}" if status.host else ""
    out.print(f"lab [bold]{status.lab}[/] (process {status.pid}{where}, since {status.started_at}); {estop}")
    standbys = [f"{s.host} (process {s.pid})" for s in status.standbys]
    out.print(f"standby: {', '.join(standbys) or 'none (`sdl daemon --standby` on a second machine)'}",
              highlight=False)  # fmt: skip
    for agent in status.agents:
        if agent.reachable:
            state = f"on {agent.host}, reachable"
        elif agent.silent_s is None:
            state = "not connected yet (`sdl agent` on its PC)"
        else:
            state = (
                f"UNREACHABLE for {agent.silent_s:.0f} s, {agent.unacknowledged} message(s) waiting for it"
            )
        out.print(f"agent {agent.name} ({', '.join(agent.workcells)}): {state}", highlight=False)
    for alert in status.alerts:
        out.print(f"[bold red]ALERT[/] (since {alert.since}): {escape(alert.message)}")
    dashboard = status.http_address or "none (`sdl daemon --http HOST:PORT` serves one, or `sdl dashboard`)"
    out.print(f"dashboard: {dashboard}", highlight=False)
    table = Table(title="workcells", title_justify="left")
    for column in ("workcell", "state", "campaign", "experiment", "devices", "restarts"):
        table.add_column(column)
    for w in status.workcells:
        state = w.state + (f" ({', '.join(w.blocked_by)})" if w.blocked_by else "")
        devices = ", ".join(f"{k}={v}" for k, v in w.devices.items())
        table.add_row(w.name, state, w.campaign_id or "", str(w.experiment or ""), devices, str(w.restarts))
    out.print(table)
    out.print(instruments_table(status.instruments))
    table = Table(title="campaigns running", title_justify="left")
    for column in ("id", "name", "state", "spent/budget", "best"):
        table.add_column(column)
    for c in status.campaigns:
        best = ", ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in (c.best.objectives if c.best else {}).items()
        )
        if c.best is not None:
            best = f"{best} (#{c.best.experiment})"
        elif c.front:  # a Pareto campaign: its front, not one best
            best = f"front of {len(c.front)}: " + ", ".join(f"#{b.experiment}" for b in c.front[:8])
        table.add_row(c.id, c.name, c.state, f"{c.spent}/{c.budget}", best or "-")
    out.print(table)
    return EXIT_OK


def instruments_table(instruments: list[m.InstrumentStatus]) -> Table:
    from rich.table import Table

    table = Table(title="instruments", title_justify="left")
    for column in ("instrument", "state", "reason", "leased to", "open in", "faults (in a row)", "retries"):
        table.add_column(column)
    for i in instruments:
        lease = f"#{i.leased_to} ({i.leased_by})" if i.leased_to else ""
        faults = f"{i.faults} ({i.consecutive_faults})"
        table.add_row(
            i.name, i.state, i.reason or "", lease, ", ".join(i.connected_in), faults, str(i.retries)
        )
    return table


def cmd_instruments(args: argparse.Namespace) -> int:
    reply: m.InstrumentList = ask(args, "ListInstruments")
    from rich.console import Console

    Console(width=max(Console().width, 120)).print(instruments_table(reply.instruments))
    return EXIT_OK


def cmd_campaign_control(args: argparse.Namespace) -> int:
    reply: m.CampaignStateReply = ask(args, args.model, campaign_id=args.campaign_id)
    print(f"campaign {reply.campaign_id}: {reply.state}")
    return EXIT_OK


def cmd_budget(args: argparse.Namespace) -> int:
    if args.max_experiments < 1:
        raise BadInput(f"the budget must be at least 1, got {args.max_experiments}")
    reply = ask(args, "SetBudget", campaign_id=args.campaign_id, max_experiments=args.max_experiments)
    print(f"campaign {reply.campaign_id}: {reply.state}, budget {args.max_experiments}")
    return EXIT_OK


def cmd_estop(args: argparse.Namespace) -> int:
    reply = ask(args, "ClearEStop") if args.clear else ask(args, "EStop", reason=args.reason)
    print(reply.message)
    return EXIT_OK


def cmd_quarantine(args: argparse.Namespace) -> int:
    print(ask(args, "QuarantineInstrument", name=args.instrument, reason=args.reason).message)
    return EXIT_OK


def cmd_release(args: argparse.Namespace) -> int:
    with connected(args) as client:  # a release with a check replies once the check is done
        from sdl.api import models as m

        reply = client.call(
            m.ReleaseInstrument(name=args.instrument, check=not args.no_check), timeout=m.RELEASE_CHECK_S + 15
        )
    print(reply.message)
    return EXIT_OK


# -- watching ------------------------------------------------------------------------------------------------


def cmd_watch(args: argparse.Namespace) -> int:
    with connected(args) as client:
        if args.campaign_id:
            return watch_campaign(client, args.campaign_id)
        from rich.console import Console

        out = Console(soft_wrap=True)
        for event in client.events():
            line = (
                f"{event.at[11:19]} #{event.seq} {event.topic} {event.campaign_id or ''} {_brief(event.body)}"
            )
            out.print(line, highlight=False, markup=False)
    return EXIT_OK


def _brief(body: dict[str, Any]) -> str:
    keys = ("seq", "status", "state", "workcell", "instrument", "reason", "failure", "spent", "budget")
    return " ".join(f"{k}={body[k]}" for k in keys if body.get(k) not in (None, "", [], {}))


def watch_campaign(client: Client, campaign_id: str) -> int:
    """Live progress of one campaign from the service's events, until it ends; exit 1 if it failed."""
    from rich.console import Console

    from sdl.api import models as m
    from sdl.cli.progress import CampaignProgress
    from sdl.spec.campaign import Campaign
    from sdl.spec.status import CampaignStatus

    detail: m.CampaignDetail = client.call(m.ShowCampaign(campaign_id=campaign_id))
    campaign = Campaign.model_validate(detail.spec)
    since = client.call(m.EventsSince(seq=0, limit=1)).last
    history = _history(client, campaign_id)
    out = Console(soft_wrap=True)
    out.print(f"campaign [bold]{campaign_id}[/] ({campaign.name}): {detail.campaign.state}", highlight=False)
    if detail.campaign.status is not CampaignStatus.RUNNING:
        return EXIT_OK if detail.campaign.status is CampaignStatus.COMPLETED else EXIT_FAILURE
    with CampaignProgress(out, campaign, history) as progress:
        for event in client.events(since, campaign_id=campaign_id):
            if event.topic == "experiment.started":
                progress.experiment_started(m.ExperimentSummary(**_summary_fields(event.body, campaign_id)))
            elif event.topic.startswith("experiment.") and event.body.get("status") not in (
                "proposed",
                "running",
            ):
                history = _history(client, campaign_id)
                finished = next((e for e in history if e.id == event.body.get("experiment_id")), None)
                if finished is not None:
                    progress.experiment_finished(finished, history)
            elif event.topic == "campaign.finished":
                out.print(f"campaign {event.body['status']}: {event.body['reason']}", highlight=False)
                return EXIT_OK if event.body["status"] == "completed" else EXIT_FAILURE
    return EXIT_OK


def _summary_fields(body: dict[str, Any], campaign_id: str) -> dict[str, Any]:
    return {
        "id": body["experiment_id"],
        "campaign_id": campaign_id,
        "seq": body["seq"],
        "status": body["status"],
        "recipe": body.get("recipe") or {},
        "proposed_at": "",
    }


def _history(client: Client, campaign_id: str) -> list[m.ExperimentSummary]:
    from sdl.api import models as m

    reply: m.ExperimentList = client.call(m.ListExperiments(campaign_id=campaign_id, limit=10000))
    return reply.experiments
