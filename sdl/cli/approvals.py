"""Commands for proposals that wait for an operator: approvals (what waits), approve and reject. A campaign
whose file says `approval: {require: all|first|outside}` has its proposals wait (pending) until an operator
approves one (the next free workcell runs it) or rejects it (it ends failed, and the optimizer learns it as a
failure). Each takes --connect URL (default: the service of --data-dir).

Without a lab service these fail at once, before the client and the API's models are imported: each
command imports what it uses when it runs (sdl/cli/__init__.py).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from sdl.cli.common import EXIT_OK
from sdl.cli.control import adder, connected, typed_request, when

if TYPE_CHECKING:
    from sdl.api import models as m
    from sdl.api.client import Client

#: Request fields by the argument that gives them, for a value the API's models refuse.
ARGUMENTS = {"experiment_id": "EXPERIMENT_ID", "campaign_id": "--campaign", "reason": "--reason"}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    add = adder(commands, common)

    p = add(
        "approvals",
        "proposals waiting for an operator's approval",
        "The proposals that wait for an operator before they run, oldest first: a campaign whose file says "
        "`approval: {require: all|first|outside}` has every proposal, its first N, or those outside its safe "
        "region wait. Each row gives the experiment id to answer it with (`sdl approve EXPERIMENT_ID`, `sdl "
        "reject EXPERIMENT_ID --reason TEXT`), its campaign and number there, its recipe, and why it waits. "
        "With --all, the decided ones too: approved or rejected, by whom and why.",
        cmd_approvals,
    )
    p.add_argument("--campaign", metavar="ID", help="only this campaign's proposals")
    p.add_argument("--all", action="store_true", help="the approved and rejected proposals too")

    p = add(
        "approve",
        "let a waiting proposal run",
        "Let a proposal that waits for approval run: the next free workcell that can run it takes it. The "
        "decision is recorded with who made it (and --reason), and in the audit log.",
        cmd_approve,
    )
    p.add_argument("experiment_id", type=int, metavar="EXPERIMENT_ID", help="the proposal (`sdl approvals`)")
    p.add_argument("--reason", metavar="TEXT", help="why, for the record")

    p = add(
        "reject",
        "refuse a waiting proposal (recorded as a failure)",
        "Refuse a proposal that waits for approval: it never runs, and ends failed with 'rejected by WHO: "
        "REASON'. The optimizer learns it as a failure (and proposes elsewhere); it spends one experiment of "
        "the campaign's budget.",
        cmd_reject,
    )
    p.add_argument("experiment_id", type=int, metavar="EXPERIMENT_ID", help="the proposal (`sdl approvals`)")
    p.add_argument("--reason", metavar="TEXT", required=True, help="why (required): the experiment's failure")


# -- requests ------------------------------------------------------------------------------------------------


def call(client: Client, method: str, **fields: Any) -> Any:
    return client.call(typed_request(method, ARGUMENTS, **fields))


def compact(recipe: dict[str, Any]) -> str:
    """A recipe in a few characters: 'x=0.3137 y=0.7 solvent=water'."""
    return " ".join(f"{k}={f'{v:.4g}' if isinstance(v, float) else v}" for k, v in recipe.items())


def named(proposal: m.Proposal) -> str:
    """'proposal 7 of bowl-1a2b': its number in its campaign."""
    return f"proposal {proposal.seq} of {proposal.campaign_id}"


# -- commands ------------------------------------------------------------------------------------------------


def cmd_approvals(args: argparse.Namespace) -> int:
    with connected(args) as client:
        reply: m.ProposalList = call(client, "ListApprovals", campaign_id=args.campaign, all=args.all)
    from rich.console import Console
    from rich.table import Table

    out = Console(width=max(Console().width, 140))
    of = f" of campaign {args.campaign}" if args.campaign else ""
    if not reply.proposals:
        what = (
            f"no proposals{of} have asked for approval" if args.all else f"no proposals{of} wait for approval"
        )
        out.print(what, highlight=False)
        return EXIT_OK
    table = Table(title="proposals" if args.all else "waiting for approval", title_justify="left")
    columns = ["experiment", "campaign", "seq", "recipe", "why", "asked (UTC)"]
    for column in [*columns, "state", "by", "reason"] if args.all else columns:
        table.add_column(column)
    for p in reply.proposals:
        row = [str(p.experiment_id), p.campaign_id, str(p.seq), compact(p.recipe), p.why, when(p.asked_at)]
        if args.all:
            row += [p.state, p.decided_by or "", p.reason or ""]
        table.add_row(*row, style="yellow" if args.all and p.state == "pending" else None)
    out.print(table)
    if any(p.state == "pending" for p in reply.proposals):
        out.print(
            "`sdl approve EXPERIMENT_ID` lets one run, `sdl reject EXPERIMENT_ID --reason TEXT` refuses it",
            highlight=False,
        )
    return EXIT_OK


def cmd_approve(args: argparse.Namespace) -> int:
    with connected(args) as client:
        proposal: m.Proposal = call(
            client, "ApproveProposal", experiment_id=args.experiment_id, reason=args.reason
        )
    print(f"{named(proposal)} approved: it runs on the next free workcell")
    return EXIT_OK


def cmd_reject(args: argparse.Namespace) -> int:
    with connected(args) as client:
        proposal: m.Proposal = call(
            client, "RejectProposal", experiment_id=args.experiment_id, reason=args.reason
        )
    print(f"{named(proposal)} rejected: {proposal.reason} (recorded as a failure)")
    return EXIT_OK
