"""Generate docs/api.md from the API's models: `python -m sdl.api.docs > docs/api.md`.

A test compares the file with this output, so the reference cannot drift from the code.
"""

from __future__ import annotations

import sys
import types
import typing
from enum import StrEnum
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sdl.api import models as m
from sdl.api import server, wire

HEADER = """\
# The lab service's API

`sdl daemon` serves this API over 0MQ (a ROUTER socket; default `tcp://127.0.0.1:60715`).
Each request is one JSON object in one frame (a DEALER client sends an empty delimiter frame first), each
reply one JSON object:

```json
{"method": "campaign.pause", "id": 7, "user": "ana", "params": {"campaign_id": "color-matching-1a2b3c"}}
{"id": 7, "ok": true, "result": {"campaign_id": "color-matching-1a2b3c", "state": "paused"}}
{"id": 7, "ok": false, "error": {"type": "not_found", "message": "no campaign 'x' ...", "details": []}}
```

`sdl.client.Client` wraps it: `client.call(PauseCampaign(campaign_id=...))` returns the reply model or raises
`ApiError`. Every control command (every method above the viewer role) and every refusal is written to the
audit log in the store.

**Events** are published on a PUB socket (default `tcp://127.0.0.1:60716`) as two frames, the topic and an
`EventRecord` in JSON. Every event is written to the store first (while the disk is full, it goes out at
once and is written under the same `seq` when there is room; `events.since` serves it meanwhile); its `seq`
increases by one per event, so a subscriber that sees a gap calls `events.since` to catch up
(`Client.events()` does). Every status change of an experiment in the store is an `experiment.<status>`
event, in the order the changes were committed, whoever made them (a restarted service publishes those made
while it was down). Topics: `lab.started`, `lab.stopping`, `lab.estop`, `lab.alert` (something needs a
person: a full disk, an instrument automatic recovery gave up on; `active` false when it is over),
`workcell.state`, `instrument.state`, `instrument.health`, `campaign.submitted`, `campaign.progress`,
`campaign.finished`, `experiment.proposed`, `experiment.started`, `experiment.done`, `experiment.failed`,
`experiment.faulted`, `experiment.interrupted`.

**Documents**: every run's event-model documents are published the bluesky way, through
`bluesky.callbacks.zmq.Publisher` to a 0MQ proxy (default output `tcp://127.0.0.1:60717`): subscribe with
`bluesky.callbacks.zmq.RemoteDispatcher(address, curve_config=ClientCurve(KEY_SECRET, SERVER_KEY))`.

**E-stop**: `lab.estop` has a socket of its own beside the API (a ROUTER on the API's interface, at a port
of its own: daemon.json's `estop`), served from a 0MQ context of its own, so that nothing sent to the API
socket is received, decrypted or queued ahead of it. Only keys whose role may e-stop get through its
handshake; it answers `lab.estop` as the API socket does (the same checks, audit entry and `lab.estop`
event), one at a time per connection (`busy` for a second one meanwhile), and anything else with
`bad_request`. `sdl.client.Client` sends its e-stops there when the local service's daemon.json names it,
else to the API socket, where an e-stop is still taken ahead of the requests waiting to be parsed.

Roles: **viewer** reads and watches; **operator** also runs campaigns and may always e-stop; **admin** also
manages instruments, clears the e-stop, manages keys and stops the service. An **agent** key (an instrument
PC's `sdl agent`) opens the agents' socket and is refused here. Every socket (API, e-stop,
events, documents) is a CurveZMQ server, on loopback too: a client needs a key pair and the service's
public key (daemon.json's `server_key`). The data directory owner's key (`DATA_DIR/keys/owner.key_secret`,
readable by that account alone) is an admin that `sdl` and `sdl.client.Client` find by themselves; any
other key must be on the allow-list, whose role applies (docs/access.md). A refusal is an `unauthenticated`
or `forbidden` error.

This file is generated from `sdl/api/models.py` by `python -m sdl.api.docs`; do not edit it by hand.
"""


def limits() -> list[str]:
    """The bounds of what a client may send, from the constants that enforce them."""
    w = wire
    return [
        "## Limits",
        "",
        "Everything a client sends is bounded before it is parsed. Past a bound a request gets a typed "
        "error; where 0MQ itself enforces the bound, before the service sees anything, the connection is "
        "closed instead (0MQ clients reconnect by themselves).",
        "",
        "| what | bound | past it |",
        "|---|---|---|",
        f"| a frame on the API socket | {_bytes(w.MAX_FRAME_BYTES)} | the connection is closed "
        "(`ZMQ_MAXMSGSIZE`: nothing of the frame is read, so nothing can answer it); `Client` refuses "
        "to send a request over its limit |",
        f"| messages of one connection waiting to be read | {w.MAX_QUEUED} | 0MQ stops reading that "
        "connection until the service has taken some (the client's sends wait) |",
        f"| a request (its JSON frame) | {_bytes(w.MAX_REQUEST_BYTES)} | `too_large`, unparsed: the reply's "
        f"`id` is read from the request's first {w.PEEK_BYTES} bytes, so put `id` before large values |",
        f"| frames between the connection's routing id and the request | {w.MAX_ENVELOPE_FRAMES}, of at most "
        f'{w.MAX_ENVELOPE_BYTES} bytes each | `too_large`, answered as `[routing id, "", error]` (the '
        "frames are dropped as they are read, not echoed) |",
        "| JSON | RFC 8259: no `NaN` or `Infinity`, nesting at most 200 deep, integers of at most 4300 "
        "digits | `bad_request` |",
        f"| `id` | null, a string of at most {w.MAX_ID_CHARS} characters, or a finite number (integers "
        "within 64 bits); echoed in the reply | `bad_request` (with `id` null) |",
        f"| `user` | a string of at most {w.MAX_USER_CHARS} characters | `bad_request` |",
        "| parameters | as each method's table below says (numbers the store holds: integers up to "
        f"2^63−1) | `invalid_params`, listing at most {w.MAX_DETAILS} mistakes |",
        f"| requests in flight | {server.MAX_CONCURRENT} at once, {server.MAX_PER_PEER} of them from one "
        "connection | `busy` at once, unparsed (retry) |",
        f"| requests over {_bytes(server.SMALL_BYTES)} (parsing one holds the service for milliseconds) | "
        f"{_bytes(server.PARSE_RATE)} a second per key, {_bytes(server.PARSE_BURST)} at once | `busy`, "
        "unparsed (retry); smaller requests are never rationed |",
        f"| an e-stop (`lab.estop`) | up to {_bytes(w.PRIORITY_BYTES)}, one at a time per connection | "
        "never `busy`: it is taken ahead of every request waiting to be parsed |",
        f"| a frame on the e-stop socket | {_bytes(w.PRIORITY_BYTES)} | the connection is closed "
        "(`ZMQ_MAXMSGSIZE`) |",
        f"| a frame a subscriber sends (events, documents) | {_bytes(w.MAX_SUBSCRIBER_FRAME_BYTES)} | "
        "the connection is closed (`ZMQ_MAXMSGSIZE`) |",
        f"| a subscription's prefix | {w.MAX_PREFIX} bytes (topics are shorter) | the connection is cut |",
        f"| subscriptions one connection holds at once | {w.MAX_SUBSCRIPTIONS} | the connection is cut "
        "(a subscriber reconnects and catches up with `events.since`) |",
        f"| subscriber connections of one socket | {w.MAX_SUBSCRIBERS} | a new one is cut |",
        "",
        "0MQ delivers a multipart message whole, and holds all of it until the service reads it: the service "
        "drops the frames past the limit as it reads them, so a message of a million frames keeps the API "
        "socket busy for about a second (the e-stop included), and its memory is returned when it is "
        "dropped. A connection that sends one has left the protocol; bind the API to loopback, or require "
        "CurveZMQ keys (docs/access.md), to choose who can.",
        "",
    ]


def _bytes(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} kB"


def type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    args = get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Annotated:
        return type_name(args[0]) + bounds(args[1:])
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"list[{', '.join(type_name(a) for a in args if a is not Ellipsis)}]"
    if origin is dict:
        return f"dict[{type_name(args[0])}, {type_name(args[1])}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    if annotation is Any:
        return "any"
    anything: object = typing.cast(object, annotation)  # narrowed above to a partly unknown type
    return str(getattr(anything, "__name__", anything))


def default_of(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return f"`{field.get_default(call_default_factory=True, validated_data={})!r}`"
    return f"`{field.default!r}`"


def bounds(rules: typing.Iterable[object]) -> str:
    """Bounds as a model checks them: ``, 0 … 2^63−1`` or ``, ≤ 256 chars``."""
    low: object = None
    high: object = None
    length: int | None = None
    flat: list[object] = []
    for rule in rules:  # annotated-types' Ge, Le, MaxLen, or a Field() holding them
        flat += rule.metadata if isinstance(rule, FieldInfo) else [rule]
    for rule in flat:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
        length = getattr(rule, "max_length", length)
    if length is not None:
        return f", ≤ {length} chars"
    if low is None and high is None:
        return ""
    return f", {_number(low) if low is not None else '…'} … {_number(high) if high is not None else ''}"


def _number(value: object) -> str:
    return "2^63−1" if value == m.MAX_STORE_INT else str(value)


def fields_table(model: type[BaseModel]) -> list[str]:
    if not model.model_fields:
        return ["(no fields)", ""]
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = type_name(field.annotation) + bounds(field.metadata)
        lines.append(f"| `{name}` | {kind} | {default_of(field)} | {field.description or ''} |")
    return [*lines, ""]


def referenced_models() -> list[type[BaseModel]]:
    """Every model a reply refers to, in the order they are met."""
    seen: dict[type[BaseModel], None] = {}

    def walk(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in seen:
            seen[annotation] = None
            for field in annotation.model_fields.values():
                walk(field.annotation)
        for arg in get_args(annotation):
            walk(arg)

    for request in m.METHODS.values():
        for field in request.reply.model_fields.values():
            walk(field.annotation)
    replies = {r.reply for r in m.METHODS.values()}
    return [model for model in seen if model not in replies]


def render() -> str:
    out = [HEADER, *limits(), "## Methods", ""]
    out.append("| method | role | what it does |")
    out.append("|---|---|---|")
    for name, request in m.METHODS.items():
        anchor = name.replace(".", "")
        out.append(f"| [`{name}`](#{anchor}) | {request.role.value} | {_summary(request)} |")
    out.append("")
    for name, request in m.METHODS.items():
        out += [f"### `{name}`", "", f"Role: **{request.role.value}**. {(request.__doc__ or '').strip()}", ""]
        out += ["Parameters:", "", *fields_table(request)]
        out += [f"Reply: `{request.reply.__name__}`", "", *fields_table(request.reply)]
    out += ["## Records", ""]
    for model in referenced_models():
        out += [f"### {model.__name__}", "", (model.__doc__ or "").strip(), "", *fields_table(model)]
    out += ["## Errors", "", "Every error reply carries one `Error`:", "", *fields_table(m.Error)]
    out += ["Error types:", ""]
    for error_type in get_args(m.ErrorType):
        out.append(f"- `{error_type}`")
    return "\n".join(out).rstrip() + "\n"


def _summary(model: type[BaseModel]) -> str:
    """The docstring's first sentence, on one line."""
    text = " ".join((model.__doc__ or "").split())
    return text.split(". ")[0].rstrip(".") + "."


if __name__ == "__main__":
    sys.stdout.write(render())
