"""A person's hands on the simulated bench: refill, load, empty, replace — and the bench's true state.

Every simulated lab serves one more endpoint besides its instruments', ``bench.hands`` (``hands`` when
one instrument is served alone), listed with them. It speaks a line protocol a person can type into
``nc`` and a test acting as the operator can script: one command a line (at most 4096 bytes, words
split as a shell would, so a lot may be quoted), each answered by one line of JSON — ``{"ok": true,
...}``, or ``{"ok": false, "error": "..."}`` naming what was wrong and what is allowed::

    refill stock=red volume_ul=50000 lot=R-0413      a new bottle of lot R-0413 holding 50 mL
    refill stock=red volume_ul=50000                 the same lot, topped up to 50 mL
    refill syringe=dye_pumps:red volume_ul=10000     fill the pump's syringe to 10 mL from its stock
    refill syringe=dye_pumps:1 volume_ul=10000 lot=R-0413   ... from a new bottle of lot R-0413
    replace syringe=dye_pumps:1 volume_ul=10000      a new syringe (the old one and its content go)
    load feeder=feeder count=48 lot=V-7              a fresh rack of 48 vials in the feeder
    empty waste=waste                                 the waste container emptied
    state                                             the bench's own accounting (below)
    vials from=0 limit=100                            the vials the feeders gave out, in order
    help

A syringe is named ``INSTRUMENT:PUMP`` (the pump's address, or the reagent it holds when only one pump
on the line holds it); a pump that is moving is refused (a person stops it first). Nothing here
speaks on an instrument's wire: a refilled syringe or a loaded feeder is noticed by a driver only
when it is told (``device.set_contents``), as in a real lab.

``state`` answers the simulator's own accounting, for tests to hold the drivers' counts against:
``{"ok", "time", "stocks": {NAME: {volume_ul (None: unlimited), lot, origin, drawn_ul, returned_ul,
concentrations}}, "feeders": {NAME: {count, lot, slot, taken}}, "waste": {NAME: {volume_ul, vials,
capacity_ul, capacity_vials, overflowed_ul, overflowed_vials, emptied_ul, emptied_vials}}, "vials":
{taken, discarded}, "instruments": {NAME: ...}}`` where an NE-1000 line reports ``{"syringes":
{ADDRESS: {plunger_ul, liquid_ul, sources, delivered_ul, travel_ul, removed_ul, ...}}}``, a Cavro pump
``{"syringe": {plunger_ul, liquid_ul, drawn_ul, pushed_ul: {PORT: µL}, ...}}`` and an arm what its
gripper holds. ``vials`` lists ``{index, vessel, feeder, slot, lot, volume_ul, sources: {STOCK@LOT:
µL}, where}``: what each vial received, from which stock and lot.

The endpoint is no more privileged than the instruments' own (a simulated pump's port takes ``RUN``
from anyone who can reach it): it listens where they do, by default on loopback only.

    hands = HandsClient(urls["bench.hands"])          # or: python -m simulators hands URL refill ...
    hands.refill_stock("red", 50000, lot="R-0413")
    state = hands.state()
"""

from __future__ import annotations

import json
import math
import shlex
import socket
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import serial

from simulators.base import Simulator
from simulators.stream import Stream
from simulators.world import World, describe_stock

#: The instrument name the bench's own endpoint is listed under (a lab's instruments may not use it).
BENCH = "bench"
ENDPOINT = "hands"
MAX_LINE = 4096
MAX_VOLUME_UL = 1e9
MAX_COUNT = 1_000_000
MAX_VIALS_PER_REPLY = 1000
#: What a client reads of one reply at most (a thousand vials fit easily).
MAX_REPLY = 16 * 1024 * 1024

#: Each command's arguments: required, then optional.
COMMANDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "help": ((), ()),
    "state": ((), ()),
    "vials": ((), ("from", "limit")),
    "refill": (("volume_ul",), ("stock", "syringe", "lot")),
    "replace": (("syringe", "volume_ul"), ("lot",)),
    "load": (("feeder", "count"), ("lot",)),
    "empty": (("waste",), ()),
}
HELP = [
    "refill stock=NAME volume_ul=V [lot=L]",
    "refill syringe=INSTRUMENT:PUMP volume_ul=V [lot=L]",
    "replace syringe=INSTRUMENT:PUMP volume_ul=V [lot=L]",
    "load feeder=NAME count=N [lot=L]",
    "empty waste=NAME",
    "state",
    "vials [from=N] [limit=M]",
    "help",
]


class HandsError(ValueError):
    """A command a person cannot carry out, with why and what is allowed."""


def parse(line: str) -> tuple[str, dict[str, str]]:
    """``verb key=value ...`` -> (verb, arguments); HandsError for anything else."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise HandsError(f"cannot split the line into words: {exc}") from None
    if not words:
        raise HandsError("an empty command")
    verb, arguments = words[0].lower(), {}
    if verb not in COMMANDS:
        raise HandsError(f"unknown command {words[0]!r}; commands: {', '.join(COMMANDS)}")
    required, optional = COMMANDS[verb]
    for word in words[1:]:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise HandsError(f"{verb}: {word!r} is not KEY=VALUE")
        if key not in required and key not in optional:
            raise HandsError(f"{verb}: unknown argument {key!r}; allowed: {', '.join(required + optional)}")
        if key in arguments:
            raise HandsError(f"{verb}: {key} given twice")
        arguments[key] = value
    missing = [key for key in required if key not in arguments]
    if missing:
        raise HandsError(f"{verb}: missing {', '.join(missing)}")
    return verb, arguments


def _volume(arguments: Mapping[str, str], key: str = "volume_ul") -> float:
    try:
        value = float(arguments[key])
    except ValueError:
        raise HandsError(f"{key}: expected a number of µL, got {arguments[key]!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_VOLUME_UL:
        raise HandsError(f"{key}: expected 0..{MAX_VOLUME_UL:g} µL, got {arguments[key]!r}")
    return value


def _whole(arguments: Mapping[str, str], key: str, default: int, high: int = MAX_COUNT) -> int:
    if key not in arguments:
        return default
    text = arguments[key]
    if not text.isdigit() or int(text) > high:
        raise HandsError(f"{key}: expected a whole number 0..{high}, got {text!r}")
    return int(text)


def _lot(arguments: Mapping[str, str]) -> str | None:
    lot = arguments.get("lot")
    if lot is not None and (not lot or len(lot) > 64 or not lot.isprintable()):
        raise HandsError(f"lot: 1-64 printable characters, got {lot!r}")
    return lot


def _finite(value: Any) -> Any:
    """JSON without NaN or infinity (an unlimited amount is None)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]  # pyright: ignore[reportUnknownVariableType]
    return value


class Bench(Simulator):
    """The ``hands`` endpoint of a lab: acts on its world and its instruments, never on their wires."""

    kind = BENCH
    endpoints = (ENDPOINT,)
    instrument_faults: ClassVar[dict[str, str]] = {}

    def __init__(self, world: World, instruments: Mapping[str, Simulator]):
        super().__init__(world, name=BENCH)
        self.instruments = dict(instruments)

    async def serve(self, endpoint: str, stream: Stream) -> None:
        overlong = False
        while True:
            line = await stream.read_until(b"\n")
            if not line.endswith(b"\n"):  # the stream threw away the start of a line too long to buffer
                overlong = True
                continue
            self.record(endpoint, line[:MAX_LINE])
            if overlong or len(line) > MAX_LINE:
                overlong = False
                reply: dict[str, Any] = {"ok": False, "error": f"a command is at most {MAX_LINE} bytes"}
            else:
                try:
                    text = line.decode("utf-8").strip()
                except UnicodeDecodeError:
                    text, reply = "", {"ok": False, "error": "a command is UTF-8 text"}
                else:
                    if not text:
                        continue
                    reply = self.perform(text)
            await stream.send((json.dumps(_finite(reply), allow_nan=False) + "\n").encode(), faultable=False)

    def perform(self, line: str) -> dict[str, Any]:
        """Carry out one command line; the reply (``ok`` False with the reason when it cannot be done)."""
        try:
            verb, arguments = parse(line)
            return {"ok": True, **getattr(self, f"_{verb}")(arguments)}
        except (HandsError, KeyError, ValueError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return {"ok": False, "error": str(message)}

    # -- commands ----------------------------------------------------------------------------------
    def _help(self, arguments: Mapping[str, str]) -> dict[str, Any]:
        return {"commands": HELP}

    def _state(self, arguments: Mapping[str, str]) -> dict[str, Any]:
        state = self.world.state()
        state["instruments"] = {name: sim.bench_state() for name, sim in self.instruments.items()}
        return state

    def _vials(self, arguments: Mapping[str, str]) -> dict[str, Any]:
        start = _whole(arguments, "from", 0)
        limit = _whole(arguments, "limit", 100, MAX_VIALS_PER_REPLY)
        places: dict[int, str] = {id(v): "waste" for v in self.world.discarded}
        for name, station in self.world.stations.items():
            if station.vessel is not None:
                places[id(station.vessel)] = name
        vials = self.world.vials[start : start + limit]
        listed = [
            {"index": start + i, **vial.describe(), "where": places.get(id(vial), "elsewhere")}
            for i, vial in enumerate(vials)
        ]
        return {"from": start, "total": len(self.world.vials), "vials": listed}

    def _refill(self, arguments: Mapping[str, str]) -> dict[str, Any]:
        volume, lot = _volume(arguments), _lot(arguments)
        if ("stock" in arguments) == ("syringe" in arguments):
            raise HandsError("refill: give stock=NAME or syringe=INSTRUMENT:PUMP")
        if "stock" in arguments:
            stock = self.world.refill_stock(arguments["stock"], volume, lot)
            return {"stock": stock.name, **describe_stock(stock)}
        return self._fill_syringe(arguments["syringe"], volume, lot, replace=False)

    def _replace(self, arguments: Mapping[str, str]) -> dict[str, Any]:
        return self._fill_syringe(arguments["syringe"], _volume(arguments), _lot(arguments), replace=True)

    def _fill_syringe(self, target: str, volume: float, lot: str | None, *, replace: bool) -> dict[str, Any]:
        instrument, colon, part = target.rpartition(":")
        if not colon:
            instrument, part = (next(iter(self.instruments)) if len(self.instruments) == 1 else ""), target
        if instrument not in self.instruments:
            raise HandsError(f"syringe={target!r}: name it INSTRUMENT:PUMP; instruments: "
                             f"{', '.join(self.instruments)}")  # fmt: skip
        state = self.instruments[instrument].refill(part, volume, lot=lot, replace=replace)
        return {"syringe": f"{instrument}:{part}", **state}

    def _load(self, arguments: Mapping[str, str]) -> dict[str, Any]:
        feeder = self.world.load_feeder(arguments["feeder"], _whole(arguments, "count", 0), _lot(arguments))
        return {"feeder": feeder.name, **feeder.describe()}

    def _empty(self, arguments: Mapping[str, str]) -> dict[str, Any]:
        waste = self.world.empty_waste(arguments["waste"])
        return {"waste": waste.name, **waste.describe()}


class HandsRefused(RuntimeError):
    """The bench answered ``ok: false``: the command could not be carried out."""


class HandsClient:
    """A person at the bench, scripted: each method sends one command and returns the JSON reply.

    ``url`` is what the lab lists for ``bench.hands`` (``socket://host:port`` or a pty's path).
    """

    def __init__(self, url: str, *, timeout: float = 10.0):
        self.url = url
        self.timeout = timeout

    def request(self, line: str) -> dict[str, Any]:
        """Send one command line; the reply, or HandsRefused with the bench's reason."""
        data = line.rstrip("\n").encode() + b"\n"
        answer = self._tcp(data) if self.url.startswith("socket://") else self._serial(data)
        if not answer.endswith(b"\n"):
            raise TimeoutError(f"{self.url}: no whole answer to {line!r} within {self.timeout} s")
        reply: dict[str, Any] = json.loads(answer)
        if not reply.get("ok"):
            raise HandsRefused(f"{line}: {reply.get('error')}")
        return reply

    def _tcp(self, data: bytes) -> bytes:
        # A plain socket: pyserial's socket:// waits 0.3 s on close.
        where = urlsplit(self.url)
        with socket.create_connection((where.hostname, where.port), timeout=self.timeout) as conn:
            conn.sendall(data)
            answer = b""
            while not answer.endswith(b"\n") and len(answer) < MAX_REPLY:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
        return answer

    def _serial(self, data: bytes) -> bytes:
        port = serial.serial_for_url(self.url, timeout=self.timeout)
        try:
            port.reset_input_buffer()  # a pty keeps what an earlier client left unread
            port.write(data)
            return port.readline(MAX_REPLY)
        finally:
            port.close()

    def state(self) -> dict[str, Any]:
        return self.request("state")

    def vials(self, start: int = 0, limit: int = MAX_VIALS_PER_REPLY) -> list[dict[str, Any]]:
        """Every vial the feeders gave out from ``start`` on (as many requests as it takes)."""
        listed: list[dict[str, Any]] = []
        while True:
            reply = self.request(f"vials from={start + len(listed)} limit={limit}")
            listed += reply["vials"]
            if not reply["vials"] or start + len(listed) >= reply["total"]:
                return listed

    def refill_stock(self, stock: str, volume_ul: float, *, lot: str | None = None) -> dict[str, Any]:
        return self.request(_command("refill", stock=stock, volume_ul=volume_ul, lot=lot))

    def refill_syringe(self, syringe: str, volume_ul: float, *, lot: str | None = None) -> dict[str, Any]:
        return self.request(_command("refill", syringe=syringe, volume_ul=volume_ul, lot=lot))

    def replace_syringe(self, syringe: str, volume_ul: float, *, lot: str | None = None) -> dict[str, Any]:
        return self.request(_command("replace", syringe=syringe, volume_ul=volume_ul, lot=lot))

    def load_feeder(self, feeder: str, count: int, *, lot: str | None = None) -> dict[str, Any]:
        return self.request(_command("load", feeder=feeder, count=count, lot=lot))

    def empty_waste(self, waste: str) -> dict[str, Any]:
        return self.request(_command("empty", waste=waste))


def _command(verb: str, **arguments: Any) -> str:
    words = [verb] + [f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"
                      for key, value in arguments.items() if value is not None]  # fmt: skip
    return shlex.join(words)


def main(argv: list[str]) -> int:
    """``python -m simulators hands URL COMMAND...``: one command, its JSON reply on stdout.

    Exit 0 when done, 1 when the bench refused it (the reason on stderr), 2 for a bad invocation.
    """
    import sys

    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print("usage: python -m simulators hands URL COMMAND [KEY=VALUE ...]\ncommands:\n  "
              + "\n  ".join(HELP), file=sys.stderr)  # fmt: skip
        return 2
    try:
        reply = HandsClient(argv[0]).request(shlex.join(argv[1:]))
    except HandsRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except (OSError, serial.SerialException, json.JSONDecodeError) as exc:
        print(f"error: {argv[0]}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(reply, indent=2))
    return 0


__all__ = ["BENCH", "ENDPOINT", "Bench", "HandsClient", "HandsError", "HandsRefused", "main", "parse"]
