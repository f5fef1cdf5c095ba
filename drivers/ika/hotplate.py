"""One IKA hotplate stirrer (RCT digital; C-MAG HS and RET control-visc speak the same NAMUR set).

    plate = IkaHotplate.connect("/dev/ttyUSB0", max_temperature_c=150)
    plate.heat_to(60.0)                # OUT_SP_1 60.0, START_1, waits until the medium holds 60 °C
    plate.stir_at(500)                 # OUT_SP_4 500, START_4, waits until the motor turns at 500 1/min
    plate.temperature()                # IN_PV_1: the PT1000 in the medium
    plate.stop()                       # STOP_1 and STOP_4, from any thread

Every set point is checked against the configured limits (and the plate's own safety temperature,
read on connect) before a byte is sent. Set commands answer nothing, so each one is read back
(``IN_SP_n``) and resent until the plate holds it; a query is resent after a link fault under the
shared retry policy. ``START_n`` is only sent if nobody called ``stop()`` meanwhile (checked under
the link's lock, which ``stop()`` needs for ``STOP_n``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from drivers.errors import InstrumentError, InstrumentTimeout, ReplyCutShort, SafetyLimitError
from drivers.halt import Halt
from drivers.ika import codec
from drivers.ika.codec import Channel
from drivers.ika.errors import (
    GarbledReply,
    HeaterNotHeating,
    HotplateStopped,
    NoReply,
    SetpointRejected,
    SettingsLost,
    StirringStopped,
    TemperatureNotReached,
)
from drivers.retry import Backoff, FaultEvents, RetryPolicy
from drivers.transport import Transport

log = logging.getLogger(__name__)
T = TypeVar("T")

#: An RCT digital answers within a few ms at 9600 baud.
DEFAULT_REPLY_TIMEOUT = 0.5
#: Set points keep a margin below the plate's safety temperature (its own hardware limit).
SAFETY_MARGIN_K = 25.0
#: The plate runs this much hotter than a medium it is heating: less means the heater is off.
HEATING_SIGN_K = 1.0
#: How long a (re)started heater has to warm the plate that far before it counts as not heating: an
#: RCT's plate takes one or two seconds from cold (600 W into its 450 J/K).
HEATER_GRACE_S = 10.0


class IkaHotplate:
    def __init__(
        self,
        transport: Transport,
        *,
        max_temperature_c: float = codec.MAX_TEMPERATURE_C,
        max_speed_rpm: float = codec.MAX_SPEED_RPM,
        min_speed_rpm: float = 0.0,
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
        retry: RetryPolicy | None = None,
        events: FaultEvents | None = None,
        setpoint_retries: int = 2,
    ):
        if not 0 < max_temperature_c <= codec.MAX_TEMPERATURE_C:
            raise SafetyLimitError(
                f"max_temperature_c {max_temperature_c} is outside the plate's 0–{codec.MAX_TEMPERATURE_C} °C"
            )
        if not 0 <= min_speed_rpm <= max_speed_rpm <= codec.MAX_SPEED_RPM:
            raise SafetyLimitError(
                f"speed limits {min_speed_rpm}–{max_speed_rpm} 1/min are outside 0–{codec.MAX_SPEED_RPM}"
            )
        self.transport = transport
        self.max_temperature_c = float(max_temperature_c)
        self.max_speed_rpm = float(max_speed_rpm)
        self.min_speed_rpm = float(min_speed_rpm)
        transport.reply_timeout = reply_timeout  # the ceiling: the transport learns the line's round trip
        self.retry = retry or RetryPolicy(attempts=3, deadline_s=max(5.0, 4 * reply_timeout))
        self.events = events or FaultEvents(transport.url)
        self.setpoint_retries = setpoint_retries
        #: The plate's safety temperature (IN_SP_3), read by ``configure()``.
        self.safety_temperature_c: float | None = None
        #: Heating and stirring run independently (one action each): a stop of one ends its
        #: operation in progress (heat_to, stir_at) and no later one; ``stop()`` ends both.
        self.heating_halt = Halt()
        self.stirring_halt = Halt()
        self.requests_sent = 0

    @classmethod
    def connect(cls, url: str, *, timeout: float = 1.0, **options: Any) -> IkaHotplate:
        """A hotplate at a pyserial URL, opened with the manual's framing (9600 7E1)."""
        transport = Transport(url, baudrate=codec.BAUDRATE, timeout=timeout, bytesize=codec.BYTESIZE,
                              parity=codec.PARITY, stopbits=codec.STOPBITS)  # fmt: skip
        plate = cls(transport.open(), **options)
        plate.configure()
        return plate

    def __repr__(self) -> str:
        return f"IkaHotplate({self.transport.url!r})"

    @property
    def reply_timeout(self) -> float:
        """The longest wait for a reply, s (the transport waits less once it knows the line)."""
        return self.transport.reply_timeout

    # -- exchanges ---------------------------------------------------------------------------------
    def _query(self, request: bytes, parse: Callable[[bytes], T], what: str) -> T:
        def once() -> T:
            def read(transport: Transport) -> bytes:
                try:
                    return transport.read_until(codec.LINE_END)
                except ReplyCutShort as exc:
                    raise GarbledReply(f"{what}: {exc}") from exc
                except InstrumentTimeout as exc:
                    raise NoReply(f"{what}: no reply within {transport.replies.timeout:.3g} s") from exc

            self._reopen()
            self.requests_sent += 1
            line = self.transport.exchange(request, read)
            try:
                return parse(line)
            except codec.CodecError as exc:
                raise GarbledReply(f"{what}: {exc}") from None

        return self.retry.run(once, transport=self.transport, events=self.events, what=what)

    def _send(self, request: bytes, what: str) -> None:
        """A command that answers nothing; safe to resend (switching on twice leaves it on)."""

        def once() -> None:
            self._reopen()
            self.requests_sent += 1
            self.transport.exchange(request, lambda transport: None)

        self.retry.run(once, transport=self.transport, events=self.events, what=what)

    def _reopen(self) -> None:
        # A link dropped by an earlier call that gave up (or was not allowed to resend) is opened
        # again by the next one, as every driver does; close() is the owner's, by the face.
        if not self.transport.is_open:
            self.transport.open()

    def _reading(self, command: str, channel: Channel) -> float:
        return self._query(
            codec.encode(f"{command}_{int(channel)}"), lambda line: codec.parse_reading(line, channel),
            f"{command}_{int(channel)}",
        )  # fmt: skip

    # -- queries -----------------------------------------------------------------------------------
    def name(self) -> str:
        return self._query(codec.encode("IN_NAME"), codec.reply_text, "IN_NAME")

    def temperature(self) -> float:
        """The medium's temperature (IN_PV_1, the external PT1000), °C."""
        return self._reading("IN_PV", Channel.EXTERNAL_TEMPERATURE)

    def plate_temperature(self) -> float:
        """The plate's own sensor (IN_PV_2), °C."""
        return self._reading("IN_PV", Channel.PLATE_TEMPERATURE)

    def speed(self) -> float:
        """The stirring speed (IN_PV_4), 1/min."""
        return self._reading("IN_PV", Channel.SPEED)

    def temperature_setpoint(self) -> float:
        return self._reading("IN_SP", Channel.EXTERNAL_TEMPERATURE)

    def speed_setpoint(self) -> float:
        return self._reading("IN_SP", Channel.SPEED)

    def read_safety_temperature(self) -> float:
        return self._reading("IN_SP", Channel.SAFETY_TEMPERATURE)

    # -- setup -------------------------------------------------------------------------------------
    def configure(self) -> None:
        """Read the plate's safety temperature: set points stay SAFETY_MARGIN_K below it."""
        self.safety_temperature_c = self.read_safety_temperature()
        log.info("%s: safety temperature %.0f °C", self.transport.url, self.safety_temperature_c)

    def allowed_temperature_c(self) -> float:
        limit = self.max_temperature_c
        if self.safety_temperature_c is not None:
            limit = min(limit, self.safety_temperature_c - SAFETY_MARGIN_K)
        return limit

    def check_temperature(self, value: float) -> float:
        limit = self.allowed_temperature_c()
        if not (math.isfinite(value) and 0.0 <= value <= limit):
            raise SafetyLimitError(
                f"temperature {value!r} °C is outside the allowed 0–{limit:g} °C (max_temperature_c, "
                f"and {SAFETY_MARGIN_K:g} K below the plate's safety temperature)"
            )
        return round(float(value), 1)

    def check_speed(self, value: float) -> float:
        if not (math.isfinite(value) and (value == 0 or self.min_speed_rpm <= value <= self.max_speed_rpm)):
            raise SafetyLimitError(
                f"speed {value!r} 1/min is outside the allowed {self.min_speed_rpm:g}–{self.max_speed_rpm:g} "
                "(or 0 to stop)"
            )
        return float(round(value))

    def set_temperature(self, value: float) -> float:
        """Send the temperature set point and read it back until the plate holds it."""
        return self._set(Channel.EXTERNAL_TEMPERATURE, self.check_temperature(value), 0.05)

    def set_speed(self, value: float) -> float:
        return self._set(Channel.SPEED, self.check_speed(value), 0.5)

    def _set(self, channel: Channel, value: float, tolerance: float) -> float:
        held = math.nan
        for attempt in range(1, self.setpoint_retries + 2):
            self._send(codec.set_point(channel, value), f"OUT_SP_{int(channel)} {value:g}")
            held = self._reading("IN_SP", channel)
            if abs(held - value) <= tolerance:
                return held
            detail = f"OUT_SP_{int(channel)}: holds {held:g}, sent {value:g}"
            self.events.emit("retry", "rejected", detail, attempt)
        raise SetpointRejected(f"OUT_SP_{int(channel)} {value:g}: the plate holds {held:g}")

    def arm_watchdog(self, seconds: int) -> None:
        """Watchdog mode 1: heating and stirring switch off if this is not sent again within ``seconds``."""
        low, high = codec.WATCHDOG_RANGE_S
        if not (isinstance(seconds, int) and low <= seconds <= high):  # pyright: ignore[reportUnnecessaryIsInstance]  (a caller may pass anything: checked at run time)
            raise SafetyLimitError(f"watchdog time must be a whole {low}–{high} s, not {seconds!r}")
        echo = self._query(codec.encode("OUT_WD1", str(seconds), at=True), codec.parse_echo, "OUT_WD1")
        if int(echo) != seconds:
            raise GarbledReply(f"OUT_WD1@{seconds}: echoed {echo:g}")

    # -- switching ---------------------------------------------------------------------------------
    def _start(self, command: str, halt: Halt, caller: threading.Event | None) -> None:
        # Under the link's lock, which a stop needs for STOP: either START goes out first and the stop
        # follows it, or the stop is seen here and START never goes out.
        with halt.operation(caller), self.transport.locked():
            halt.check(command, HotplateStopped)
            self._send(codec.encode(command), command)

    def start_heating(self, *, halt: threading.Event | None = None) -> None:
        self._start("START_1", self.heating_halt, halt)

    def start_stirring(self, *, halt: threading.Event | None = None) -> None:
        self._start("START_4", self.stirring_halt, halt)

    def stop_heating(self) -> None:
        """Heater off, from any thread; a heat_to() in progress ends with ``HotplateStopped``."""
        self.heating_halt.request()
        self._send(codec.encode("STOP_1"), "STOP_1")

    def stop_stirring(self) -> None:
        """Motor off, from any thread; a stir_at() in progress ends with ``HotplateStopped``."""
        self.stirring_halt.request()
        self._send(codec.encode("STOP_4"), "STOP_4")

    def stop(self) -> None:
        """Heater and motor off, from any thread; the heating and stirring in progress end."""
        self.stop_heating()
        self.stop_stirring()
        log.info("%s: heater and motor off", self.transport.url)

    def reset(self) -> None:
        """``RESET``: back to normal operating mode (clears a watchdog event; heater and motor off)."""
        self._send(codec.encode("RESET"), "RESET")

    # -- doing -------------------------------------------------------------------------------------
    def heat_to(
        self,
        target_c: float,
        *,
        tolerance_k: float = 1.0,
        readings_in_band: int = 3,
        timeout: float = 3600.0,
        poll_s: float = 0.05,
        recoveries: int = 1,
        heater_grace_s: float = HEATER_GRACE_S,
        halt: threading.Event | None = None,
    ) -> float:
        """Set the temperature, switch the heater on, and wait until the medium holds the set point
        (``readings_in_band`` readings in a row within ``tolerance_k``); the last reading.

        A heater found off while it should heat (the plate no hotter than the medium, ``heater_grace_s``
        after it was started), or a set point the plate forgot, is put right ``recoveries`` times
        (RESET, set point, START_1) before ``HeaterNotHeating``/``SettingsLost``.
        """
        value = self.check_temperature(target_c)
        with self.heating_halt.operation(halt) as stopping:
            self.set_temperature(value)
            self.start_heating()
            started = time.monotonic()
            log.info("%s: heating to %.1f °C", self.transport.url, value)
            deadline = time.monotonic() + timeout
            intervals = Backoff(poll_s, max_s=max(poll_s, min(2.0, timeout / 50)))
            in_band = suspicious = 0
            recovered = 0
            polls = 0
            while True:
                self.heating_halt.check("heating", HotplateStopped)
                medium = self.temperature()
                polls += 1
                if abs(medium - value) <= tolerance_k:
                    in_band += 1
                    if in_band >= readings_in_band:
                        return medium
                else:
                    in_band = 0
                problem: InstrumentError | None = None
                if polls % 4 == 0 and abs(self.temperature_setpoint() - value) > 0.05:
                    problem = SettingsLost(f"the plate forgot its set point of {value:g} °C (power cycle?)")
                elif medium < value - 2 * tolerance_k:
                    heating = self.plate_temperature() > medium + HEATING_SIGN_K
                    suspicious = 0 if heating else suspicious + 1
                    if suspicious >= 3 and time.monotonic() - started >= heater_grace_s:
                        problem = HeaterNotHeating(
                            f"the medium is at {medium:.1f} °C, below {value:g} °C, "
                            "and the plate is no hotter"
                        )
                if problem is not None:
                    if recovered >= recoveries:
                        self.events.emit("gave_up", problem.fault, str(problem), recovered + 1)
                        raise problem
                    recovered += 1
                    detail = f"{problem}; resetting and heating again"
                    self.events.emit("retry", problem.fault, detail, recovered)
                    self.reset()
                    self.set_temperature(value)
                    self.start_heating()
                    started = time.monotonic()
                    suspicious = in_band = 0
                    continue
                if time.monotonic() >= deadline:
                    raise TemperatureNotReached(
                        f"the medium is at {medium:.1f} °C after {timeout:g} s, set point {value:g} °C"
                    )
                stopping.wait(intervals.next())

    def stir_at(
        self,
        rpm: float,
        *,
        tolerance_rpm: float = 10.0,
        timeout: float = 60.0,
        poll_s: float = 0.05,
        halt: threading.Event | None = None,
    ) -> float:
        """Set the speed and start the motor (0 stops it); wait until it turns at the set speed."""
        value = self.check_speed(rpm)
        if value == 0:
            self.stop_stirring()
            return 0.0
        with self.stirring_halt.operation(halt) as stopping:
            self.set_speed(value)
            self.start_stirring()
            deadline = time.monotonic() + timeout
            intervals = Backoff(poll_s, max_s=max(poll_s, 0.5))
            while True:
                self.stirring_halt.check("stirring", HotplateStopped)
                speed = self.speed()
                if abs(speed - value) <= tolerance_rpm:
                    return speed
                if time.monotonic() >= deadline:
                    raise StirringStopped(
                        f"the motor turns at {speed:g} 1/min after {timeout:g} s, set {value:g}"
                    )
                stopping.wait(intervals.next())

    # -- recovery ----------------------------------------------------------------------------------
    def recover(self) -> None:
        """The documented way back: RESET (clears a watchdog event), heater and motor off, limits read."""
        if not self.transport.is_open:
            self.transport.reconnect()
        self.reset()
        self.stop_heating()
        self.stop_stirring()
        self.configure()

    def close(self) -> None:
        self.transport.close()


__all__ = ["DEFAULT_REPLY_TIMEOUT", "HEATER_GRACE_S", "SAFETY_MARGIN_K", "IkaHotplate"]
