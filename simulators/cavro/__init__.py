"""Tecan Cavro XCalibur-class syringe pump with a distribution valve, DT protocol (kind ``cavro``).

Config (all optional; ``default_config`` serves water from the default bench)::

    address: 1                 # DT address: 1..15 or '1'..'?' (1 = address switch 0)
    syringe_volume_ul: 1000
    valve_ports: 6
    ports: {1: "stock:water", 2: "station:dispense", 3: "station:waste"}   # port -> world holder
    resolution: standard       # standard (N0, 3000 increments) | fine (N1) | microstep (N2), at power-up
    init_output_port: 3        # where Z/Y push the syringe's content (default: the last port)
    init_duration_s: 2.5       # how long Z/Y/W take
    valve_switch_s: 0.25       # how long one valve move takes
    firmware: "..."            # what '&' and '?23' answer

A port's stock that runs dry gives what it has left and then air: the pump draws air without a word
(the XCalibur has no sensor for it), so the vial receives less liquid than the plunger moved, and
its spectrum shows it. The stock is refilled by a person (``simulators.hands``: ``refill stock=...``).

Faults (besides drop/garble/partial/silent on replies): ``plunger-overload`` (opportunity: each
plunger move that starts; it stalls half-way with error 9), ``valve-overload`` (each valve move;
the valve stays put, error 10), ``init-failure`` (each Z/Y/W; error 1 when it ends). After 9 or 10
the pump answers every move with the same error until it is initialised again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from drivers.cavro import codec
from simulators.base import ConfigError, Simulator, register
from simulators.cavro.pump import CavroPump
from simulators.stream import Stream

__all__ = ["CavroPump", "CavroSimulator"]

_KEYS = {
    "address",
    "syringe_volume_ul",
    "valve_ports",
    "ports",
    "resolution",
    "init_output_port",
    "init_duration_s",
    "valve_switch_s",
    "firmware",
}


@register
class CavroSimulator(Simulator):
    kind = "cavro"
    endpoints = ("pump",)
    instrument_faults: ClassVar[dict[str, str]] = {
        "plunger-overload": "a plunger move stalls half-way: error 9 (opportunity: a plunger move)",
        "valve-overload": "a valve move stalls: error 10 (opportunity: a valve move)",
        "init-failure": "an initialisation fails: error 1 (opportunity: a Z/Y/W initialisation)",
    }

    def __init__(self, world: Any, config: Mapping[str, Any] | None = None, faults: Any = None, **kw: Any):
        super().__init__(world, config, faults, **kw)
        self.pump = self._build(self.config)
        world.add_settler(self.pump.advance)

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "address": 1,
            "syringe_volume_ul": 1000,
            "valve_ports": 6,
            "ports": {1: "stock:water", 2: "station:dispense", 3: "station:waste"},
            "resolution": "standard",
            "init_output_port": 3,
        }

    def _build(self, config: dict[str, Any]) -> CavroPump:
        unknown = set(config) - _KEYS
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_KEYS))}"
            )
        try:
            address = codec.address_char(config.get("address", 1))
        except ValueError as exc:
            raise ConfigError(f"address: {exc}") from None
        volume = _number(config, "syringe_volume_ul", 1000.0)
        ports = int(_number(config, "valve_ports", 6))
        if not 2 <= ports <= 12:
            raise ConfigError(f"valve_ports: a distribution valve has 2..12 ports, not {ports}")
        holders = {}
        for port, ref in dict(config.get("ports") or {}).items():
            try:
                number = int(port)
            except (TypeError, ValueError):
                raise ConfigError(f"ports: port {port!r} is not a number 1..{ports}") from None
            if not 1 <= number <= ports:
                raise ConfigError(f"ports: port {number} is outside 1..{ports} (valve_ports)")
            try:
                holders[number] = self.world.holder(str(ref))
            except KeyError as exc:
                raise ConfigError(f"ports.{number}: {exc.args[0]}") from None
        try:
            resolution = codec.resolution_mode(config.get("resolution", "standard"))
        except ValueError as exc:
            raise ConfigError(f"resolution: {exc}") from None
        output = int(_number(config, "init_output_port", ports))
        if not 1 <= output <= ports:
            raise ConfigError(f"init_output_port: must be a port 1..{ports}, not {output}")
        return CavroPump(
            address=address,
            syringe_volume_ul=volume,
            valve_ports=ports,
            holders=holders,
            resolution=resolution,
            firmware=str(config.get("firmware", "XCALIBUR-SIM 1.0")),
            init_duration_s=_number(config, "init_duration_s", 2.5, minimum=0.0),
            valve_switch_s=_number(config, "valve_switch_s", 0.25, minimum=0.0),
            init_output_port=output,
            fires=self.faults.fires,
            log=self.log,
        )

    def bench_state(self) -> dict[str, Any]:
        self.pump.advance(self.world.now())
        return {"syringe": self.pump.describe()}

    async def serve(self, endpoint: str, stream: Stream) -> None:
        while True:
            line = await stream.read_until(codec.REQUEST_END)
            self.record(endpoint, line)
            try:
                request = codec.decode_request(line)
            except codec.FrameError:
                continue  # the pump ignores what is not a request addressed with '/'
            reply = self.pump.handle(request, self.world.clock.now())
            if reply is not None:
                await stream.send(reply)


def _number(config: Mapping[str, Any], key: str, default: float, *, minimum: float | None = None) -> float:
    value = config.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    low = 0.0 if minimum is None else minimum
    if number < low or (minimum is None and number == 0):
        raise ConfigError(f"{key}: must be {'> 0' if minimum is None else f'>= {low:g}'}, got {value!r}")
    return number
