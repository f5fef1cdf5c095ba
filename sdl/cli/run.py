"""`sdl run` and `sdl demo`: run a campaign in the foreground, with Ctrl-C and SIGTERM stopping it cleanly."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from sdl.api.convert import experiment_summaries
from sdl.api.models import ListInstruments, ListWorkcells
from sdl.cli.common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, BadInput, data_dir_of, open_store
from sdl.cli.control import instruments_table, watch_campaign
from sdl.cli.progress import CampaignProgress, Shown, result_line, summary_table
from sdl.daemon.launch import LabServiceProcess
from sdl.exports import report
from sdl.exports.table import export_text
from sdl.exports.tiled import LivePublisher, TiledUnavailable, stored_run, tiled_client
from sdl.loop.foreground import ForegroundRun, run_campaign
from sdl.loop.lifecycle import campaign_of, new_run_owner, resume, start_campaign, with_overrides
from sdl.spec.loading import load_campaign
from sdl.spec.status import CampaignStatus
from sdl.store import Store

log = logging.getLogger(__name__)

DEMO_CAMPAIGN = ("color_matching", "campaign.yaml")


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "run",
        parents=[common],
        help="run a campaign in the foreground",
        description="Validate a campaign file, record it in the store and run it until its budget is spent, "
        "its target reached, or Ctrl-C. Ctrl-C (or SIGTERM) stops cleanly: the RunEngine aborts the plan "
        "(moving devices get stop()), the experiment in flight is marked interrupted, and the exit code is "
        "130. Continue later with `sdl run --resume CAMPAIGN_ID`. Exit code 1 when the campaign failed "
        "(too many failures in a row, or not a single successful experiment).",
    )
    p.add_argument("file", nargs="?", type=Path, help="campaign file (YAML; see `sdl schema`)")
    p.add_argument("--resume", metavar="CAMPAIGN_ID", help="continue a stopped or crashed campaign")
    p.add_argument("--seed", type=int, help="override optimizer.seed")
    p.add_argument(
        "--budget",
        type=int,
        metavar="N",
        help="set budget.max_experiments to N; with --resume, N is the new total (e.g. 40 to run 10 "
        "more experiments of a finished 30-experiment campaign)",
    )
    p.add_argument(
        "--tiled",
        metavar="URL",
        help="also publish every run's documents live to this Tiled server (API key: $TILED_API_KEY); "
        "if it fails mid-campaign the store still has everything (`sdl publish` sends it later)",
    )
    p.set_defaults(handler=cmd_run)

    d = commands.add_parser(
        "demo",
        parents=[common],
        help="run the packaged colour-matching demo on the simulated lab",
        description="Start the simulated lab, run the packaged demo campaign "
        "(experiments/color_matching/campaign.yaml), then write a CSV export and a PNG plot and print "
        "where they went.",
    )
    d.add_argument("--seed", type=int, help="override optimizer.seed")
    d.add_argument("--budget", type=int, metavar="N", help="override budget.max_experiments")
    d.add_argument(
        "--lab-service",
        action="store_true",
        help="run it through the lab service instead, on the two-station lab (experiments/two_stations: two "
        "dispense stations sharing one arm and one spectrometer): start `sdl daemon`, submit the campaign, "
        "follow it, show the lab, stop the service",
    )
    d.set_defaults(handler=cmd_demo)


@contextmanager
def signal_guard(run: ForegroundRun) -> Iterator[None]:
    """Route Ctrl-C and SIGTERM to a clean stop, recording which signal; a second one stops at once."""
    calls = 0

    def handle(signum: int, frame: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        log.warning("%s: stopping the experiment in flight (again to force)", name)
        # A plain function cannot be aborted from outside; an exception is the only way to stop it.
        in_function = run.in_function
        run.interrupt(f"interrupted by the operator ({'Ctrl-C' if signum == signal.SIGINT else name})")
        if in_function:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_budget(budget: int | None) -> None:
    if budget is not None and budget < 1:
        raise BadInput(f"--budget must be at least 1, got {budget}")


def cmd_run(args: argparse.Namespace) -> int:
    _check_budget(args.budget)
    with _tiled(getattr(args, "tiled", None)) as client:
        return _run(args, client)


@contextmanager
def _tiled(uri: str | None) -> Iterator[Any]:
    """A Tiled client when --tiled is given (the server is reached before anything is written)."""
    if uri is None:
        yield None
        return

    try:
        client = tiled_client(uri)
    except TiledUnavailable as exc:
        raise BadInput(f"--tiled: {exc}") from None
    try:
        yield client
    finally:
        client.context.close()


def _run(args: argparse.Namespace, client: Any) -> int:
    owner = new_run_owner()
    if args.resume:
        if args.file is not None or args.seed is not None:
            raise BadInput(
                "--resume takes a campaign id (and optionally --budget): its file and seed are recorded"
            )
        store = open_store(args, create=False)
        store.campaign(args.resume)
        resume(store, args.resume, owner)
        if args.budget is not None:
            campaign, _ = campaign_of(store, args.resume)
            changed = with_overrides(campaign, max_experiments=args.budget)
            store.set_budget(args.resume, changed.model_dump(mode="json"), args.budget)
        campaign_id = args.resume
    else:
        if args.file is None:
            raise BadInput("give a campaign FILE to run, or --resume CAMPAIGN_ID")
        loaded = load_campaign(args.file)  # every check before anything is written
        store = open_store(args, create=True)
        campaign_id = start_campaign(store, loaded, owner=owner, seed=args.seed, max_experiments=args.budget)
    out = Console(soft_wrap=True)
    with store:
        if client is None:
            return execute(store, campaign_id, owner, out)
        # Live publishing on a thread of its own: a Tiled outage costs no experiment, its runs wait in
        # the store and go out when the server answers again (`sdl.exports.tiled`).
        publisher = LivePublisher(client, lambda start: stored_run(store, start))
        try:
            return execute(store, campaign_id, owner, out, publish=publisher)
        finally:
            publisher.close()
            for line in publisher.summary(args.tiled, store.data_dir):
                out.print(line, highlight=False)


def execute(store: Store, campaign_id: str, owner: str, out: Console, publish: Any = None) -> int:
    campaign, _ = campaign_of(store, campaign_id)
    out.print(f"campaign [bold]{campaign_id}[/] ({campaign.name}), record in {store.where}", highlight=False)
    progress = CampaignProgress(out, campaign, experiment_summaries(store.experiments(campaign_id)))
    forced, result = False, None
    try:
        with progress:
            result = run_campaign(
                store, campaign_id, owner, observer=Shown(progress), guard=signal_guard, publish=publish
            )
    except KeyboardInterrupt:
        forced = True
    record = store.campaign(campaign_id)
    out.print(summary_table(record, campaign, experiment_summaries(store.experiments(campaign_id))))
    if not forced and result is not None and result.out_of_service is not None:
        out.print(f"stopped: {record.stop_reason}", highlight=False)
        out.print(
            f"fix {result.out_of_service}, then continue with: sdl run --resume {campaign_id} "
            f"--data-dir {store.data_dir}",
            highlight=False,
        )
        return EXIT_FAILURE
    if forced or record.status is CampaignStatus.INTERRUPTED:
        out.print(
            f"interrupted; continue with: sdl run --resume {campaign_id} --data-dir {store.data_dir}",
            highlight=False,
        )
        return EXIT_INTERRUPTED
    if record.status is CampaignStatus.FAILED:
        took = f" after {result.elapsed:.1f} s" if result is not None else ""
        out.print(f"campaign failed{took}: {record.stop_reason}", highlight=False)
        return EXIT_FAILURE
    if result is not None:
        out.print(result_line(result), highlight=False)
    out.print(
        f"export with: sdl export {campaign_id} --format csv --data-dir {store.data_dir}", highlight=False
    )
    return EXIT_OK


def demo_campaign_path() -> Path:
    """The packaged demo campaign, found through the `experiments` package without importing it."""
    spec = importlib.util.find_spec("experiments")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location).joinpath(*DEMO_CAMPAIGN)
        if candidate.is_file():
            return candidate
    where = ", ".join(locations) or "no `experiments` package installed"
    raise FileNotFoundError(
        f"the demo campaign experiments/{'/'.join(DEMO_CAMPAIGN)} is not installed ({where})"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    _check_budget(args.budget)
    if args.lab_service:
        return demo_lab_service(args)
    path = demo_campaign_path()
    loaded = load_campaign(path)
    owner = new_run_owner()
    with open_store(args, create=True) as store:
        campaign_id = start_campaign(store, loaded, owner=owner, seed=args.seed, max_experiments=args.budget)
        out = Console(soft_wrap=True)
        code = execute(store, campaign_id, owner, out)
        campaign, _ = campaign_of(store, campaign_id)
        history = experiment_summaries(store.experiments(campaign_id))
        exports = data_dir_of(args) / "exports"
        exports.mkdir(parents=True, exist_ok=True)
        csv_path = exports / f"{campaign_id}.csv"
        csv_path.write_text(export_text(campaign, history, "csv"), encoding="utf-8")
        png_path = report.plot(campaign, history, exports / f"{campaign_id}.png", title=f"{campaign_id}")
        out.print(f"plot:   {png_path}", highlight=False)
        out.print(f"export: {csv_path}", highlight=False)
    return code


def demo_lab_service(args: argparse.Namespace) -> int:
    """The demo through `sdl daemon` on the two-station lab: the stations overlap, sharing the arm and the
    spectrometer one experiment at a time."""

    lab = demo_campaign_path().parents[1] / "two_stations" / "lab.yaml"
    data_dir = data_dir_of(args)
    out = Console(soft_wrap=True)
    out.print(f"starting the lab service on {lab} (log: {data_dir}-daemon.log)", highlight=False)
    service = LabServiceProcess(lab, data_dir)
    with service.start(timeout=120), service.client() as client:
        reply = client.submit(demo_campaign_path(), seed=args.seed, budget=args.budget)
        out.print(f"submitted campaign {reply.campaign_id} to the lab at {service.address}", highlight=False)
        code = watch_campaign(client, reply.campaign_id)
        workcells = client.call(ListWorkcells()).workcells
        out.print(instruments_table(client.call(ListInstruments()).instruments))
    with Store(data_dir, read_only=True) as store:
        campaign, _ = campaign_of(store, reply.campaign_id)
        history = experiment_summaries(store.experiments(reply.campaign_id))
    by_station = {w.name: sum(e.workcell == w.name for e in history) for w in workcells}
    stations = ", ".join(f"{n} on {name}" for name, n in by_station.items())
    out.print(f"{report.spent(history)} experiments: {stations}; the service is stopped", highlight=False)
    exports = data_dir / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    png = report.plot(campaign, history, exports / f"{reply.campaign_id}.png", title=reply.campaign_id)
    out.print(f"plot:   {png}", highlight=False)
    out.print(f"record: {data_dir} (sdl show {reply.campaign_id} --data-dir {data_dir})", highlight=False)
    return code
