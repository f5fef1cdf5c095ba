"""Commands that take a record beyond its store: import a data package, publish runs to a Tiled server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sdl.cli.common import EXIT_FAILURE, EXIT_OK, BadInput, open_store
from sdl.exports.datapackage import import_rows, read_package
from sdl.exports.tiled import TiledUnavailable, publish_campaign, tiled_client


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "import",
        parents=[common],
        help="load a campaign's data package into this store",
        description="Load a data package written by `sdl export --format datapackage` into the store under "
        "--data-dir (created if needed): every experiment, failure, decision, document, journal line and "
        "provenance record, as it was. The campaign keeps its id unless --as gives another; a campaign "
        "that was running when exported arrives interrupted. Warm-start a new campaign from it with "
        "`warm_start: [{campaign: ID}]`.",
    )
    p.add_argument(
        "package", metavar="PACKAGE", type=Path, help="the package's directory (or datapackage.json)"
    )
    p.add_argument("--as", dest="new_id", metavar="NEW_ID", help="import under this campaign id")
    p.set_defaults(handler=cmd_import)

    p = commands.add_parser(
        "publish",
        parents=[common],
        help="publish a campaign's runs to a Tiled server",
        description="Send every experiment's bluesky documents to a Tiled server with bluesky's TiledWriter "
        "(runs already there are skipped). The API key comes from --api-key or $TILED_API_KEY. Needs "
        "the Tiled client: pip install 'sdl[tiled]'.",
    )
    p.add_argument("campaign_id", metavar="CAMPAIGN_ID")
    p.add_argument("--tiled", required=True, metavar="URL", help="the Tiled server, e.g. http://host:8000")
    p.add_argument("--api-key", help="the server's API key (default: $TILED_API_KEY)")
    p.set_defaults(handler=cmd_publish)


def cmd_import(args: argparse.Namespace) -> int:
    if not args.package.exists():
        raise BadInput(f"{args.package} does not exist")
    package = read_package(args.package)  # checked whole before the store is opened (or created)
    with open_store(args, create=True) as store:
        campaign_id = import_rows(store, args.package, package, campaign_id=args.new_id)
        n = len(store.experiments(campaign_id))
    print(f"imported campaign {campaign_id} ({n} experiments) into {store.where}")
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    with open_store(args, read_only=True) as store:
        store.campaign(args.campaign_id)
        try:
            client = tiled_client(args.tiled, args.api_key)
        except TiledUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        try:
            result = publish_campaign(store, args.campaign_id, client)
        finally:
            client.context.close()
    for seq, why in result.skipped:
        print(f"experiment {seq}: skipped: {why}")
    print(f"published {len(result.runs)} run(s) of {args.campaign_id} to {args.tiled}")
    return EXIT_OK
