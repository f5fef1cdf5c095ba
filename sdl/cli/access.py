"""`sdl keys` (CurveZMQ key pairs, the allow-list of client keys with roles, dashboard tokens) and `sdl audit`
(who asked the lab service for what, and what came of it)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sdl.access.keys import KEYS_FILE, KeyFileError, KeyRing, generate, read_public
from sdl.access.tokens import TOKENS_FILE, TokenFile
from sdl.api import models as m
from sdl.api.client import login_name
from sdl.cli.common import EXIT_OK, BadInput, data_dir_of, open_store
from sdl.cli.control import client_options, connected, run_request


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    client = client_options()
    keys = commands.add_parser(
        "keys",
        parents=[common],
        help="CurveZMQ keys: generate pairs, allow client keys with a role, dashboard tokens",
        description="Manage who may reach the lab service. Every client needs a key pair: the account that "
        "owns the data directory has one made for it (an admin, DATA_DIR/keys/owner.key_secret, found by "
        "itself); anyone else needs their public key on the allow-list with a role: viewer (read, watch), "
        "operator (run campaigns, e-stop) or admin (instruments, clear the e-stop, keys); an instrument PC's "
        "`sdl agent` gets the role agent under its own name (it opens the agents' socket, nothing else). The "
        "allow-list and the tokens file are kept readable by their owner only. add/remove/list edit the "
        "allow-list directly (the running service notices within a second); with --connect they go through "
        "the API, as an admin.",
    )
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    p = actions.add_parser(
        "generate",
        parents=[common],
        help="write a new key pair NAME.key (public) and NAME.key_secret",
        description="Write a new CurveZMQ key pair the way pyzmq's zmq.auth.create_certificates does: "
        "NAME.key (public: give it to the lab's admin) and NAME.key_secret (keep it; mode 600).",
    )
    p.add_argument("name")
    p.add_argument("--dir", type=Path, default=Path("."), help="where to write them (default: here)")
    p.set_defaults(handler=cmd_generate)

    allow_list = argparse.ArgumentParser(add_help=False)
    allow_list.add_argument(
        "--keys", type=Path, metavar="FILE", help="the allow-list (default DATA_DIR/keys.yaml)"
    )

    p = actions.add_parser(
        "add",
        parents=[common, allow_list, client],
        help="allow a client's public key with a role",
        description="Allow a client's public key (its NAME.key file, or the 40-character Z85 key) with a "
        "role. A key of the same name gets the new key and role.",
    )
    p.add_argument("name")
    p.add_argument("public_key", metavar="KEY", help="NAME.key file (or .key_secret), or the Z85 public key")
    p.add_argument("--role", required=True, choices=[r.value for r in m.Role])
    p.set_defaults(handler=cmd_add)

    p = actions.add_parser(
        "remove",
        parents=[common, allow_list, client],
        help="remove a client key: refused from its next request",
        description="Remove a client key from the allow-list. Its next request is refused, even on a "
        "connection it opened before; its event and document subscriptions are dropped.",
    )
    p.add_argument("name")
    p.set_defaults(handler=cmd_remove)

    p = actions.add_parser(
        "list", parents=[common, allow_list, client], help="the allow-list", description="The allow-list."
    )
    p.set_defaults(handler=cmd_list)

    p = actions.add_parser(
        "token",
        parents=[common],
        help="make a dashboard sign-in token for a key",
        description="Make a random sign-in token for the web dashboard, mapped to a key: whoever signs in "
        "with it acts as that key, with the key's role on the allow-list. The token is printed once; only "
        "its SHA-256 is stored. For `sdl dashboard` (a separate process) give the key's NAME.key_secret: "
        "it speaks to the lab service with that key on the token holder's behalf.",
    )
    p.add_argument("name", help="a label for the token (e.g. who holds it)")
    p.add_argument("--key", type=Path, required=True, metavar="FILE", help="NAME.key or NAME.key_secret")
    p.add_argument(
        "--tokens", type=Path, metavar="FILE", help="the tokens file (default DATA_DIR/tokens.yaml)"
    )
    p.set_defaults(handler=cmd_token)

    p = actions.add_parser(
        "revoke",
        parents=[common],
        help="revoke a dashboard sign-in token",
        description="Remove a token: the browser signed in with it is refused from its next request.",
    )
    p.add_argument("name")
    p.add_argument("--tokens", type=Path, metavar="FILE")
    p.set_defaults(handler=cmd_revoke)

    p = commands.add_parser(
        "audit",
        parents=[common, client],
        help="the audit log: every control command and every refusal",
        description="Who asked the lab service for what, when, from where, and the result: every command "
        "above the viewer role, and every refusal (no key, unknown key, removed key, a role too low). Reads "
        "the store in DATA_DIR (read-only), or the service's API with --connect.",
    )
    p.add_argument("--who", help="only this caller (a key name, or local:USER)")
    p.add_argument(
        "--action", help="only this method (campaign.abort), or a prefix ending in '.' (campaign.)"
    )
    p.add_argument("--refused", action="store_true", help="only refusals")
    p.add_argument("--accepted", action="store_true", help="only accepted commands")
    p.add_argument("--since", metavar="ISO_TIME", help="only entries at or after this time")
    p.add_argument("--limit", type=int, default=10000, help="at most this many entries (default 10000)")
    p.add_argument("--format", choices=("table", "csv", "jsonl"), default="table")
    p.add_argument("-o", "--output", type=Path, help="write to this file instead of standard output")
    p.set_defaults(handler=cmd_audit)


# -- keys ----------------------------------------------------------------------------------------------------


def _keyring(args: argparse.Namespace) -> Any:
    return KeyRing(args.keys or data_dir_of(args) / KEYS_FILE)


def _key_error(exc: Exception) -> BadInput:
    return BadInput(str(exc))


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        public, secret = generate(args.dir, args.name)
    except KeyFileError as exc:
        raise _key_error(exc) from None
    print(f"public key: {public}  (for the lab's admin: sdl keys add {args.name} {public.name} --role ...)")
    print(f"secret key: {secret}  (keep it: sdl ... --key {secret})")
    return EXIT_OK


def cmd_add(args: argparse.Namespace) -> int:
    try:
        public_key = read_public(args.public_key)
        if args.connect:
            run_request(args, m.AddKey(name=args.name, public_key=public_key, key_role=m.Role(args.role)))
            print(f"allowed {args.name!r} as {args.role} on the lab service at {args.connect}")
            return EXIT_OK
        entry = _keyring(args).add(args.name, public_key, args.role, by=f"local:{login_name()}")
    except KeyFileError as exc:
        raise _key_error(exc) from None
    print(f"allowed {entry.name!r} as {entry.role.value} in {_keyring(args).path}")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    if args.connect:
        run_request(args, m.RemoveKey(name=args.name))
        print(f"removed {args.name!r} from the lab service at {args.connect}")
        return EXIT_OK
    try:
        _keyring(args).remove(args.name)
    except KeyFileError as exc:
        raise _key_error(exc) from None
    print(f"removed {args.name!r} from {_keyring(args).path}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    if args.connect:
        reply: m.KeyList = run_request(args, m.ListKeys())
        keys, where = reply.keys, f"{reply.path} (on {args.connect})"
    else:
        try:
            ring = _keyring(args)
            keys = [m.KeyInfo(**e.__dict__) for e in ring]
        except KeyFileError as exc:
            raise _key_error(exc) from None
        where = str(ring.path)
    table = Table(title=f"allow-list {where}", title_justify="left")
    for column in ("name", "role", "public key", "added", "by"):
        table.add_column(column)
    for k in keys:
        table.add_row(k.name, k.role.value, k.public_key, k.added_at or "", k.added_by or "")
    Console(width=max(Console().width, 120)).print(table)
    return EXIT_OK


def _tokens(args: argparse.Namespace) -> Any:
    return TokenFile(args.tokens or data_dir_of(args) / TOKENS_FILE)


def cmd_token(args: argparse.Namespace) -> int:
    try:
        tokens = _tokens(args)
        token = tokens.issue(args.name, args.key)
    except KeyFileError as exc:
        raise _key_error(exc) from None
    print(token)
    print(
        f"(sign-in token {args.name!r} for key {args.key}, in {tokens.path}; shown only now)", file=sys.stderr
    )
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    try:
        tokens = _tokens(args)
        tokens.revoke(args.name)
    except KeyFileError as exc:
        raise _key_error(exc) from None
    print(f"revoked token {args.name!r} in {tokens.path}")
    return EXIT_OK


# -- audit ---------------------------------------------------------------------------------------------------

AUDIT_COLUMNS = ("id", "at", "who", "origin", "action", "target", "result", "arguments")


def cmd_audit(args: argparse.Namespace) -> int:
    if args.refused and args.accepted:
        raise BadInput("--refused and --accepted exclude each other")
    if args.limit < 1:
        raise BadInput(f"--limit must be at least 1, got {args.limit}")
    refused = True if args.refused else False if args.accepted else None
    entries = _audit_entries(args, refused)
    if args.format == "table" and args.output is None:
        table = Table(title="audit log", title_justify="left")
        for column in AUDIT_COLUMNS[:-1]:
            table.add_column(column)
        for e in entries:
            table.add_row(str(e.id), e.at, e.who, e.origin or "", e.action, e.target or "", e.result)
        Console(width=max(Console().width, 140)).print(table)
        return EXIT_OK
    text = audit_text(entries, "csv" if args.format == "table" else args.format)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {len(entries)} audit entries to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _audit_entries(args: argparse.Namespace, refused: bool | None) -> list[m.AuditEntry]:
    filters: dict[str, Any] = {
        "who": args.who,
        "action": args.action,
        "refused": refused,
        "since": args.since,
    }
    if args.connect:
        out: list[m.AuditEntry] = []
        with connected(args) as client:
            while len(out) < args.limit:
                batch = client.call(
                    m.ListAudit(
                        after_id=out[-1].id if out else 0, limit=min(10000, args.limit - len(out)), **filters
                    )
                ).entries
                out += batch
                if not batch:
                    break
        return out
    with open_store(args, read_only=True) as store:
        return [m.AuditEntry(**e.__dict__) for e in store.audit_log(limit=args.limit, **filters)]


def audit_text(entries: list[m.AuditEntry], fmt: str) -> str:
    """The audit entries as CSV (arguments as a JSON column) or JSON lines."""
    if fmt == "jsonl":
        return "".join(e.model_dump_json() + "\n" for e in entries)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(AUDIT_COLUMNS)
    for e in entries:
        arguments = json.dumps(e.arguments, sort_keys=True) if e.arguments else ""
        writer.writerow([e.id, e.at, e.who, e.origin or "", e.action, e.target or "", e.result, arguments])
    return buffer.getvalue()
