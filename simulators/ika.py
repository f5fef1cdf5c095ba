"""IKA RCT digital hotplate stirrer, NAMUR over RS-232 (``ika-rct``, endpoint ``serial``).

A thermal model in two lumps: the plate (heater power in, heat out to the medium and the room)
and the medium on it (heat in from the plate, out to the room), read by the plate's own sensor
(IN_PV_2) and by the PT1000 in the medium (IN_PV_1). The controller regulates the medium with a
proportional-integral law on the heater power, the plate capped below the safety temperature; the
plate runs ahead of the medium, so the medium overshoots a step before it settles. The motor
ramps to its set speed. Physics runs lazily on the world's clock in fixed steps; the medium's
temperature is the temperature of the station the plate stands at (what a chemistry reacts at).

Faithful to the manual: the device answers only queries (``IN_...``, the watchdog commands with
their echo); set commands, START/STOP and RESET answer nothing, and so does anything it does not
know. Watchdog mode 1 (``OUT_WD1@m``) switches heater and motor off when m seconds pass without
the command, and the plate shows Er 2 until ``RESET``: START is ignored meanwhile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from drivers.ika import codec
from drivers.ika.codec import Channel
from simulators.base import ConfigError, Simulator, register
from simulators.stream import Stream
from simulators.world import AMBIENT_C

_DEFAULTS: dict[str, Any] = {
    "station": "hotplate",
    "name": codec.DEVICE_NAME,
    "safety_temperature_c": 340.0,  # the plate's own limit (set on its rear dial; IN_SP_3)
    "heater_power_w": 600.0,
    "plate_heat_capacity_j_k": 450.0,  # the aluminium top plate
    "medium_heat_capacity_j_k": 400.0,  # ~100 mL of water, or a heating block with a coil in it
    "plate_to_medium_w_k": 4.0,
    "plate_lead_k": 15.0,  # the controller keeps the plate at most this far above the set point
    "plate_loss_w_k": 1.2,
    "medium_loss_w_k": 0.25,
    "gain_per_k": 0.08,  # heater power fraction per kelvin the medium is below its set point
    "integral_per_k_s": 0.0006,
    "motor_ramp_rpm_s": 400.0,
    "step_s": 0.5,
}


@register
class IkaRctSimulator(Simulator):
    kind = "ika-rct"
    endpoints = ("serial",)
    instrument_faults: ClassVar[dict[str, str]] = {
        "reset": "the plate power-cycles on receiving a command (opportunity: each command): heater and "
        "motor off, set points back to 0 (operating mode A), then the command is handled",
        "watchdog": "a watchdog-1 event (opportunity: each command): heater and motor off, Er 2 until RESET",
    }

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {"station": "dispense"}

    def __init__(self, world, config=None, faults=None, *, name=None):
        super().__init__(world, config, faults, name=name)
        unknown = set(self.config) - set(_DEFAULTS)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_DEFAULTS))}"
            )
        merged = {**_DEFAULTS, **self.config}
        self.station = str(merged["station"])
        if self.station not in world.stations:
            raise ConfigError(f"station: no station {self.station!r}; stations: {sorted(world.stations)}")
        self.device_name = str(merged["name"])
        for key, value in merged.items():
            if key not in ("station", "name") and not (isinstance(value, int | float) and value > 0):
                raise ConfigError(f"{key}: expected a positive number, got {value!r}")
        self.p = {k: float(v) for k, v in merged.items() if k not in ("station", "name")}
        self.plate_c = self.medium_c = AMBIENT_C
        self.speed_rpm = 0.0
        self.integral = 0.0
        self.watchdog_s: float | None = None
        self.watchdog_last = 0.0
        self.error: str | None = None
        self.power_up()
        self.settled_at = world.now()
        #: Complete requests received, for tests that prove a refused set point left the wire silent.
        self.requests_received = 0
        world.add_settler(self.settle)
        self._publish()

    def power_up(self) -> None:
        """Operating mode A: heater and motor off after power-on, set points 0."""
        self.temperature_setpoint = 0.0
        self.speed_setpoint = 0.0
        self.heating = self.stirring = False
        self.integral = 0.0
        self.watchdog_s = None
        self.error = None

    # -- physics ----------------------------------------------------------------------------------
    def settle(self, now: float) -> None:
        step = self.p["step_s"]
        while self.settled_at < now:
            dt = min(step, now - self.settled_at)
            if self.watchdog_s is not None and self.settled_at + dt >= self.watchdog_last + self.watchdog_s:
                self._watchdog_event()
            self._step(dt)
            self.settled_at += dt
        self._publish()

    def _step(self, dt: float) -> None:
        p = self.p
        power = 0.0
        if self.heating:
            error = self.temperature_setpoint - self.medium_c
            demand = p["gain_per_k"] * error + self.integral
            fraction = min(1.0, max(0.0, demand))
            if 0.0 < demand < 1.0:  # integrate only while not saturated (no wind-up)
                self.integral += p["integral_per_k_s"] * error * dt
            ceiling = min(p["safety_temperature_c"] - 10.0, self.temperature_setpoint + p["plate_lead_k"])
            if self.plate_c >= ceiling:
                fraction = 0.0  # the plate's own limiter: a plate far hotter than wanted overshoots
            power = fraction * p["heater_power_w"]
        to_medium = p["plate_to_medium_w_k"] * (self.plate_c - self.medium_c)
        self.plate_c += (
            dt
            * (power - to_medium - p["plate_loss_w_k"] * (self.plate_c - AMBIENT_C))
            / p["plate_heat_capacity_j_k"]
        )
        self.medium_c += (
            dt
            * (to_medium - p["medium_loss_w_k"] * (self.medium_c - AMBIENT_C))
            / p["medium_heat_capacity_j_k"]
        )
        target = self.speed_setpoint if self.stirring else 0.0
        ramp = p["motor_ramp_rpm_s"] * dt
        self.speed_rpm += max(-ramp, min(ramp, target - self.speed_rpm))

    def _publish(self) -> None:
        station = self.world.stations[self.station]
        station.temperature_c = self.medium_c
        station.stir_rpm = self.speed_rpm

    def _watchdog_event(self) -> None:
        self.log.info("watchdog 1 event: heater and motor off, Er 2")
        self.heating = self.stirring = False
        self.watchdog_s = None
        self.error = "Er 2"

    # -- the line ------------------------------------------------------------------------------------
    async def serve(self, endpoint: str, stream: Stream) -> None:
        while True:
            line = await stream.read_until(b"\n")
            if not line.strip():
                continue
            self.record(endpoint, line)
            reply = self.answer(line)
            if reply is not None:
                await stream.send(reply)

    def answer(self, line: bytes) -> bytes | None:
        now = self.world.now()
        self.settle(now)
        try:
            request = codec.parse_request(line)
        except codec.CodecError:
            return None  # the manual documents no error reply: an unknown line goes unanswered
        self.requests_received += 1
        if self.faults.fires("reset"):
            self.log.info("fault reset (power cycle)")
            self.power_up()
        if self.faults.fires("watchdog"):
            self._watchdog_event()
        reply = self._handle(request, now)
        self._publish()
        return reply

    def _handle(self, request: codec.Request, now: float) -> bytes | None:
        command, argument = request.command, request.argument
        readings = {
            "IN_PV_1": (self.medium_c, Channel.EXTERNAL_TEMPERATURE),
            "IN_PV_2": (self.plate_c, Channel.PLATE_TEMPERATURE),
            "IN_PV_4": (self.speed_rpm, Channel.SPEED),
            "IN_PV_5": (0.0, Channel.VISCOSITY_TREND),
            "IN_SP_1": (self.temperature_setpoint, Channel.EXTERNAL_TEMPERATURE),
            "IN_SP_3": (self.p["safety_temperature_c"], Channel.SAFETY_TEMPERATURE),
            "IN_SP_4": (self.speed_setpoint, Channel.SPEED),
        }
        if command in readings:
            value, channel = readings[command]
            return codec.encode_reading(value, channel)
        if command == "IN_NAME":
            return codec.encode_reply(self.device_name)
        if command == "OUT_SP_1":
            value = _number(argument)
            if value is not None and 0.0 <= value <= codec.MAX_TEMPERATURE_C:
                self.temperature_setpoint = round(value, 1)
                self.integral = 0.0
            return None
        if command == "OUT_SP_4":
            value = _number(argument)
            if value is not None and 0.0 <= value <= codec.MAX_SPEED_RPM:
                self.speed_setpoint = float(round(value))
            return None
        if command in ("START_1", "START_4"):
            if self.error is None:  # Er 2 holds until RESET
                if command == "START_1":
                    self.heating, self.integral = True, 0.0
                else:
                    self.stirring = True
            return None
        if command == "STOP_1":
            self.heating = False
            return None
        if command == "STOP_4":
            self.stirring = False
            return None
        if command == "RESET":
            self.error = None
            self.heating = self.stirring = False
            return None
        if command == "OUT_WD1":
            value = _number(argument)
            low, high = codec.WATCHDOG_RANGE_S
            if value is None or not low <= value <= high:
                return None
            self.watchdog_s, self.watchdog_last = value, now
            return codec.encode_reply(codec.format_number(value, 0))
        return None  # undocumented or unknown: silence, like the device


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def plate_state(simulator: IkaRctSimulator) -> Mapping[str, Any]:
    """What tests read: temperatures, set points, switches, the error shown."""
    return {
        "medium_c": simulator.medium_c,
        "plate_c": simulator.plate_c,
        "speed_rpm": simulator.speed_rpm,
        "temperature_setpoint": simulator.temperature_setpoint,
        "speed_setpoint": simulator.speed_setpoint,
        "heating": simulator.heating,
        "stirring": simulator.stirring,
        "error": simulator.error,
    }


__all__ = ["IkaRctSimulator", "plate_state"]
