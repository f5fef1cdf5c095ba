"""Simulated network of New Era syringe pumps (NE-1000 family) on one serial line.

Config (the ``pumps`` list; every key but ``fill_ul``, ``rate_ul_min`` and ``model`` is required)::

    pumps:
      - {address: 0, diameter_mm: 14.57, syringe_volume_ul: 10000, reagent: yellow, outlet: dispense,
         model: NE1000, fill_ul: 10000, rate_ul_min: 1000}

``reagent`` names the stock the syringe is filled from (``fill_ul`` of it at power-up, the whole
syringe by default; a person refills it through ``simulators.hands``), ``outlet`` the station (or
``stock:NAME``) its line delivers to. A syringe pushed to the end of its travel stalls (``A?S``), as
the real pump's stall detection stops it. All pumps share the one endpoint ``pump``; requests carry
the address and so do replies. The pumps answer only when spoken to (see docs/instruments/ne1000.md
for deviations).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from drivers.newera import codec
from simulators.base import ConfigError, Simulator, register
from simulators.faults import FaultPlan
from simulators.ne1000.pump import SimulatedPump
from simulators.stream import Stream
from simulators.world import World

log = logging.getLogger(__name__)

_PUMP_KEYS = {
    "address",
    "diameter_mm",
    "syringe_volume_ul",
    "reagent",
    "outlet",
    "model",
    "fill_ul",
    "rate_ul_min",
}
_REQUIRED = ("address", "diameter_mm", "syringe_volume_ul", "reagent", "outlet")
#: The manual's inter-byte timeout for safe-mode packets: an incomplete packet is dropped after it.
INTER_BYTE_TIMEOUT_S = 0.5


@register
class NE1000Simulator(Simulator):
    kind = "ne1000"
    endpoints = ("pump",)
    instrument_faults: ClassVar[dict[str, str]] = {
        "stall": "the motor stalls halfway through a move (opportunity: each RUN that starts a move); "
        "the next reply carries A?S",
        "reset": "a pump power-cycles on receiving a command (opportunity: each command a pump handles): "
        "motion stops, settings revert to their power-up values, the reply is A?R",
    }

    def __init__(
        self,
        world: World,
        config: Mapping[str, Any] | None = None,
        faults: FaultPlan | None = None,
        *,
        name: str | None = None,
    ):
        super().__init__(world, config, faults, name=name)
        unknown = set(self.config) - {"pumps"}
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))}; allowed: pumps")
        specs = self.config.get("pumps")
        if not isinstance(specs, list) or not specs:
            raise ConfigError("pumps: give a list of pumps, e.g. [{address: 0, diameter_mm: 14.57, ...}]")
        self.pumps: dict[int, SimulatedPump] = {}
        for index, spec in enumerate(specs):
            pump = self._build_pump(index, spec)
            if pump.address in self.pumps:
                raise ConfigError(
                    f"pumps[{index}].address: {pump.address} is used twice; addresses must differ"
                )
            self.pumps[pump.address] = pump
        #: Complete packets received, for tests that prove a refused request left the wire silent.
        self.packets_received = 0
        world.add_settler(self.settle)

    def _build_pump(self, index: int, spec: Any) -> SimulatedPump:
        where = f"pumps[{index}]"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}: a pump is a mapping with keys {', '.join(_REQUIRED)}")
        unknown = set(spec) - _PUMP_KEYS
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(_PUMP_KEYS))}"
            )
        missing = [key for key in _REQUIRED if key not in spec]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        try:
            address = int(spec["address"])
            model = codec.pump_model(str(spec.get("model", "NE1000")))
            diameter = float(spec["diameter_mm"])
            volume = float(spec["syringe_volume_ul"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not 0 <= address <= 99:
            raise ConfigError(f"{where}.address: {address} is outside 0–99")
        if not model.min_diameter_mm <= diameter <= model.max_diameter_mm:
            raise ConfigError(
                f"{where}.diameter_mm: {diameter} is outside {model.min_diameter_mm}–{model.max_diameter_mm}"
            )
        if not volume > 0:
            raise ConfigError(f"{where}.syringe_volume_ul: must be > 0, not {volume}")
        if not 0 <= float(spec.get("fill_ul", volume)) <= volume:
            raise ConfigError(f"{where}.fill_ul: must be between 0 and syringe_volume_ul ({volume})")
        try:
            return SimulatedPump(self.world, dict(spec), name=f"{self.name}[{address:02d}]")
        except KeyError as exc:
            raise ConfigError(f"{where}: {exc.args[0]}") from None

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        # The colour-matching bench: three dye pumps at addresses 0–2 on one line.
        return {
            "pumps": [
                {
                    "address": address,
                    "diameter_mm": 14.57,
                    "syringe_volume_ul": 10000,
                    "reagent": dye,
                    "outlet": "dispense",
                }
                for address, dye in enumerate(("yellow", "red", "blue"))
            ]
        }

    def settle(self, now: float) -> None:
        for pump in self.pumps.values():
            pump.settle(now)

    # -- a person's hands ------------------------------------------------------------------------------
    def pump(self, part: str) -> SimulatedPump:
        """A pump by address (``1``) or by the reagent it holds (``red``, when only one pump holds it)."""
        if part.isdigit() and int(part) in self.pumps:
            return self.pumps[int(part)]
        holding = [pump for pump in self.pumps.values() if pump.reagent.name == part]
        if len(holding) == 1:
            return holding[0]
        choices = ", ".join(f"{a} ({p.reagent.name})" for a, p in sorted(self.pumps.items()))
        raise KeyError(f"{self.name} has no pump {part!r}" + (" alone" if holding else "")
                       + f"; pumps: {choices}")  # fmt: skip

    def refill(self, part: str, volume_ul: float, *, lot: str | None, replace: bool) -> dict[str, Any]:
        self.settle(self.world.now())
        return self.pump(part).refill(volume_ul, lot=lot, replace=replace)

    def bench_state(self) -> dict[str, Any]:
        self.settle(self.world.now())
        return {"syringes": {str(address): pump.describe() for address, pump in sorted(self.pumps.items())}}

    # -- the line -----------------------------------------------------------------------------------
    async def serve(self, endpoint: str, stream: Stream) -> None:
        buffer = bytearray()
        while True:
            kind, packet = await self._next_packet(stream, buffer)
            for reply in self._answer(kind, packet):
                await stream.send(reply)

    async def _next_packet(self, stream: Stream, buffer: bytearray) -> tuple[str, bytes]:
        while True:
            if buffer and buffer[0] == codec.STX:
                if len(buffer) >= 2 and buffer[1] < 5:
                    del buffer[0]  # a length no packet can have: not a packet start after all
                    continue
                if len(buffer) >= 2 and len(buffer) >= 1 + buffer[1]:
                    size = 1 + buffer[1]
                    packet = bytes(buffer[:size])
                    del buffer[:size]
                    return "safe", packet
                try:
                    buffer += await asyncio.wait_for(stream.read_some(), INTER_BYTE_TIMEOUT_S)
                except TimeoutError:
                    log.info("%s: incomplete safe-mode packet dropped: %r", self.name, bytes(buffer))
                    buffer.clear()
                continue
            end = buffer.find(b"\r")
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                return "basic", line
            if len(buffer) > 4096:
                buffer.clear()  # a terminal streaming garbage without carriage returns
            buffer += await stream.read_some()

    def _answer(self, kind: str, packet: bytes) -> list[bytes]:
        self.record("pump", packet)
        now = self.world.now()
        self.settle(now)
        safe = kind == "safe"
        if safe:
            try:
                data = codec.unframe_safe(packet)
            except codec.CodecError as exc:
                log.info("%s: bad packet %r: %s", self.name, packet, exc)
                pump = next(
                    (p for p in self.pumps.values() if p.safe_timeout_s), next(iter(self.pumps.values()))
                )
                reply = codec.Reply(pump.address, pump.status_char(), error="COM")
                return [codec.encode_reply(reply, safe=bool(pump.safe_timeout_s))]
        else:
            data = packet
        request = codec.parse_request(data)
        self.packets_received += 1
        if request.address is None or request.address == "*":
            # Every pump takes it; on a real multi-pump line their replies would collide.
            targets = [self.pumps[a] for a in sorted(self.pumps)]
        else:
            targets = [self.pumps[request.address]] if request.address in self.pumps else []
        replies = []
        for pump in targets:
            if pump.safe_timeout_s and not safe:
                continue  # a pump in safe mode ignores basic-mode packets
            reply = pump.handle(request, now, self.faults)
            replies.append(codec.encode_reply(reply, safe=bool(pump.safe_timeout_s)))
        return replies
