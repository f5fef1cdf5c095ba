"""One New Era syringe pump (NE-1000, NE-300/500/4000; the NE-9000 speaks the same) on a line.

    line = NE1000Line.connect("/dev/ttyUSB0")
    pump = NE1000Pump(line, 0, diameter_mm=14.57, syringe_volume_ul=10000, max_rate_ul_min=5000)
    pump.configure()                     # acknowledges the power-up alarm, sets the diameter
    pump.infuse(120.0, rate_ul_min=2000) # starts; returns at once
    pump.wait_until_stopped(timeout=10)  # -> Dispensed(infused_ul=120.0, withdrawn_ul=0.0)

Every request is checked against the configured limits (syringe volume, rate range, the model's
speed-derived rate limits for the diameter) before a byte is sent; a refused request raises
``SafetyLimitError`` and the wire stays silent. Values are written in the units that keep them
most precise under the pump's four-digit rule; a value that rounding would change by more than
0.1 % is logged, and one that would round to zero is refused (``VOL 0`` means "pump forever").

Told what the syringe holds (``set_contents(volume_ul, lot=...)``), the driver counts it down by what
the pump reports it moved (``DIS``), refuses an infusion that needs more (``SyringeEmpty``, nothing
sent), and tells a syringe run empty — the motor stalls (``A?S``) as the plunger reaches the end of
its travel, with the count within ``empty_margin_ul`` of zero — from a stall with liquid left, which
stays a ``MotorStall``.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from drivers.errors import (
    ConnectionLost,
    InstrumentBusy,
    InstrumentError,
    InstrumentTimeout,
    ProtocolError,
    SafetyLimitError,
    Unrecoverable,
)
from drivers.halt import Halt
from drivers.newera import codec
from drivers.newera.codec import Dispensed, Firmware
from drivers.newera.errors import IncompleteDispense, MotorStall, PumpAlarm, PumpReset, SyringeEmpty
from drivers.newera.line import NE1000Line
from drivers.retry import Backoff
from drivers.stock import Contents, check_amount, check_lot

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A relative change by rounding above this is worth telling the operator about.
MATERIAL_ROUNDING = 1e-3
#: Power-up resets absorbed while a move is set up (before RUN nothing has moved, so it is safe).
RESET_RETRIES = 2
#: Default empty margin, as a fraction of the syringe volume: a stall with no more than this left by the
#: count is the plunger at the end of its travel (a refill is never measured to better than this).
EMPTY_MARGIN = 0.01


class PumpStatus(enum.Enum):
    INFUSING = "I"
    WITHDRAWING = "W"
    STOPPED = "S"
    PAUSED = "P"
    TIMED_PAUSE = "T"
    WAITING_FOR_TRIGGER = "U"
    PURGING = "X"

    @property
    def moving(self) -> bool:
        return self in (PumpStatus.INFUSING, PumpStatus.WITHDRAWING, PumpStatus.PURGING)


@dataclass(frozen=True)
class Move:
    """What the pump was last told to do, to judge whether it finished."""

    direction: str  # INF | WDR
    volume_ul: float  # as the pump holds it, after rounding
    rate_ul_min: float


class NE1000Pump:
    def __init__(
        self,
        line: NE1000Line,
        address: int = 0,
        *,
        diameter_mm: float,
        syringe_volume_ul: float,
        max_rate_ul_min: float,
        min_rate_ul_min: float = 0.0,
        max_volume_ul: float | None = None,
        model: str = "NE1000",
        empty_margin_ul: float | None = None,
        label: str = "",
    ):
        if not 0 <= int(address) <= 99:
            raise ValueError(f"address must be 0–99, not {address!r}")
        self.line = line
        self.address = int(address)
        self.model = codec.pump_model(model)
        self.diameter_mm = float(diameter_mm)
        if not self.model.min_diameter_mm <= self.diameter_mm <= self.model.max_diameter_mm:
            raise SafetyLimitError(
                f"pump {self.address:02d}: diameter_mm {diameter_mm} is outside the {self.model.name}'s "
                f"{self.model.min_diameter_mm}–{self.model.max_diameter_mm} mm"
            )
        self.syringe_volume_ul = float(syringe_volume_ul)
        self.max_volume_ul = min(float(max_volume_ul or syringe_volume_ul), self.syringe_volume_ul)
        model_min, model_max = self.model.rate_limits_ul_min(self.diameter_mm)
        self.min_rate_ul_min = max(float(min_rate_ul_min), model_min)
        self.max_rate_ul_min = min(float(max_rate_ul_min), model_max)
        if self.min_rate_ul_min > self.max_rate_ul_min:
            raise SafetyLimitError(
                f"pump {self.address:02d}: no rate is allowed: "
                f"configured {min_rate_ul_min}–{max_rate_ul_min} "
                f"µL/min, a {self.diameter_mm} mm syringe on the {self.model.name} allows "
                f"{model_min:.4g}–{model_max:.4g} µL/min"
            )
        self.last_move: Move | None = None
        #: The consumable's name on the device (the pump's label), for errors and usage records.
        self.label = label or f"{self.address:02d}"
        margin = EMPTY_MARGIN * self.syringe_volume_ul if empty_margin_ul is None else float(empty_margin_ul)
        if not (math.isfinite(margin) and 0 <= margin <= self.syringe_volume_ul):
            raise ValueError(
                f"empty_margin_ul must be 0..{self.syringe_volume_ul:g} µL, not {empty_margin_ul!r}"
            )
        self.empty_margin_ul = margin
        #: µL in the syringe by the driver's count (None: never told), and the lot it came from.
        self.contents_ul: float | None = None
        self.lot: str | None = None
        #: The current move's volumes as ``DIS`` last reported them (cleared with the counters).
        self.counted = Dispensed(0.0, 0.0)
        #: Counts the moves set up (each clears the pump's counters): a caller tells its move's counts by it.
        self.move_serial = 0
        self._rebase = False
        self._counting = threading.Lock()
        self._needs_configure = True
        #: A stop (stop(), or the ophyd face's action stopped) ends the move in progress: RUN is
        #: checked against it, and waits for the move end at once.
        self.halt = Halt()

    @classmethod
    def connect(
        cls, url: str, address: int = 0, *, line_options: dict[str, Any] | None = None, **limits: Any
    ) -> NE1000Pump:
        """A pump alone on its own line at ``url``."""
        return cls(NE1000Line.connect(url, **(line_options or {})), address, **limits)

    def __repr__(self) -> str:
        return f"NE1000Pump({self.line.transport.url!r}, address={self.address})"

    # -- plumbing --------------------------------------------------------------------------------------
    def _send(self, command: str = "", argument: str = "", **options: Any) -> codec.Reply:
        try:
            return self.line.command(self.address, command, argument, **options)
        except PumpReset:
            # The pump may have lost its settings with its power: configure before the next move.
            self._needs_configure = True
            raise

    def _number(self, value: float, what: str) -> str:
        text = codec.format_number(value)
        self._tell_rounding(value, float(text), what)
        return text

    def _tell_rounding(self, wanted: float, held: float, what: str) -> None:
        if wanted and abs(held - wanted) / abs(wanted) > MATERIAL_ROUNDING:
            log.warning(
                "pump %02d: %s %.6g rounds to %.6g under the pump's four-digit rule",
                self.address,
                what,
                wanted,
                held,
            )

    # -- setup -----------------------------------------------------------------------------------------
    def configure(self) -> PumpAlarm | None:
        """Acknowledge any pending alarm (a power-up reset is expected) and set the syringe diameter.

        Returns the alarm that was acknowledged, if any. Safe to call at any time the pump is stopped.
        """
        alarm = self.acknowledge_alarm()
        wanted = self._number(self.diameter_mm, "diameter (mm)")
        for attempt in range(1, RESET_RETRIES + 2):
            try:
                # Already configured (another process connected before us): leave the pump as it is.
                held = self._query(
                    "DIA", "", lambda reply: codec.parse_number(reply.data) if reply.data else None
                )
                if held is None or abs(held - float(wanted)) > 1e-9:
                    self._send("DIA", wanted)
                    log.info("pump %02d: configured for a %.4g mm syringe", self.address, self.diameter_mm)
                break
            except PumpReset as reset:
                # A power cycle now is acknowledged by the reply that reported it: configure again.
                alarm = reset
                if attempt > RESET_RETRIES:
                    raise
        self._needs_configure = False
        return alarm

    def acknowledge_alarm(self) -> PumpAlarm | None:
        """Query the status once; an alarm in the reply is thereby acknowledged and returned."""
        try:
            self._send()
        except PumpAlarm as alarm:
            log.info("pump %02d: acknowledged alarm %s", self.address, alarm.code)
            return alarm
        return None

    def recover(self) -> PumpAlarm | None:
        """After an alarm or a lost link: find the pump's framing, acknowledge, stop, configure again.

        A lost reply to ``SAF`` leaves the pump in the other framing than the driver thinks, and a
        pump in safe mode ignores basic packets: so the status is asked in both framings before
        giving up. Raises ``Unrecoverable`` when the pump answers in neither. A stop before it does
        not carry over: recovery is an operation of its own.
        """
        with self.halt.operation():
            if not self.line.transport.is_open:
                self.line.reconnect()
            self.find_framing()
            for attempt in range(1, RESET_RETRIES + 2):
                try:
                    alarm = self.configure()
                    if self.status().moving:
                        self.stop()
                    return alarm
                except PumpReset as reset:
                    # A power cycle now stopped the pump and lost its settings: what recovery restores.
                    if attempt > RESET_RETRIES:
                        raise
                    self.line.events.emit("retry", reset.fault, f"{reset}; recovering again", attempt)
            raise AssertionError("unreachable")

    def find_framing(self) -> bool:
        """Ask the status in the framing the driver believes, then the other; True for safe mode."""
        believed = self.line.is_safe(self.address)
        failures: list[str] = []
        for safe in (believed, not believed):
            try:
                self.line.query(self.address, "", "", lambda reply: reply, send_safe=safe, reply_safe=safe)
            except PumpAlarm:
                pass  # it answered (and the alarm is acknowledged now)
            except (ConnectionLost, InstrumentTimeout, ProtocolError) as exc:
                failures.append(f"{'safe' if safe else 'basic'} mode: {exc}")
                continue
            if safe != believed:
                log.warning("pump %02d answers in %s mode; following it", self.address,
                            "safe" if safe else "basic")  # fmt: skip
                self.line.events.emit(
                    "recovered", "garbled", f"pump {self.address:02d}: framing resynchronised"
                )
            self.line.set_safe(self.address, safe)
            return safe
        raise Unrecoverable(f"pump {self.address:02d} answers in neither framing: {'; '.join(failures)}")

    def firmware(self) -> Firmware:
        return self.line.query(self.address, "VER", "", lambda reply: codec.parse_version(reply.data))

    def enter_safe_mode(self, timeout_s: int) -> None:
        """Switch to CRC-checked safe mode; the pump stops with ``A?T`` if ``timeout_s`` passes silently.

        Keep talking (``status()``) more often than ``timeout_s``.
        """
        if not (isinstance(timeout_s, int) and 1 <= timeout_s <= 255):  # pyright: ignore[reportUnnecessaryIsInstance]  (a caller may pass anything: checked at run time)
            raise SafetyLimitError(
                f"pump {self.address:02d}: safe-mode timeout must be 1–255 s, not {timeout_s!r}"
            )
        was_safe = self.line.is_safe(self.address)
        try:
            self._send("SAF", str(timeout_s), send_safe=was_safe, reply_safe=True)
        except (ConnectionLost, InstrumentTimeout, ProtocolError):
            # The pump may have switched without our hearing it: follow whatever framing it answers.
            if not self.find_framing():
                raise
        self.line.set_safe(self.address, True)
        log.info("pump %02d: safe mode, %d s timeout", self.address, timeout_s)

    def leave_safe_mode(self) -> None:
        """Back to basic mode (``SAF0`` sent as a safe packet, which every pump accepts)."""
        try:
            self._send("SAF", "0", send_safe=True, reply_safe=False)
        except (ConnectionLost, InstrumentTimeout, ProtocolError):
            if self.find_framing():
                raise
        self.line.set_safe(self.address, False)
        log.info("pump %02d: basic mode", self.address)

    # -- state ----------------------------------------------------------------------------------------
    def status(self) -> PumpStatus:
        """The pump's state; raises the alarm (``MotorStall``, ``PumpReset``...) if one is pending."""
        return self._query("", "", lambda reply: PumpStatus(reply.status))

    def _query(self, command: str, argument: str, parse: Callable[[codec.Reply], T]) -> T:
        try:
            return self.line.query(self.address, command, argument, parse)
        except PumpReset:
            self._needs_configure = True
            raise

    def is_running(self) -> bool:
        return self.status().moving

    def dispensed(self) -> Dispensed:
        """Volumes infused and withdrawn since the start of the last move (µL); counted into the contents."""
        reading = self._query("DIS", "", lambda reply: codec.parse_dispensed(reply.data))
        self._count(reading)
        return reading

    def rate_limits_ul_min(self) -> tuple[float, float]:
        return self.min_rate_ul_min, self.max_rate_ul_min

    # -- what the syringe holds -------------------------------------------------------------------------
    def set_contents(self, volume_ul: float | None, lot: str | None = None) -> None:
        """The syringe holds ``volume_ul`` now (a person filled it), of ``lot``; None stops counting. No I/O.

        What the pump's counters show at this moment belongs to before the refill.
        """
        name = f"pump {self.address:02d} ({self.label})"
        volume = check_amount(name, volume_ul, unit="uL", capacity=self.syringe_volume_ul)
        checked_lot = check_lot(name, lot)
        with self._counting:
            self.contents_ul, self.lot = volume, checked_lot
            self._rebase = True
        log.info("pump %02d: the syringe holds %s µL%s", self.address,
                 "an unknown volume of" if volume is None else f"{volume:.6g}",
                 f" of lot {checked_lot}" if checked_lot else "")  # fmt: skip

    def contents(self) -> Contents:
        """The syringe as the driver counts it."""
        with self._counting:
            return Contents("syringe", "uL", self.contents_ul, self.lot, self.syringe_volume_ul)

    def _count(self, reading: Dispensed) -> None:
        """Take a ``DIS`` reading of the current move into the count (each µL once, however often read)."""
        with self._counting:
            if self._rebase:  # told what the syringe holds since these counts: they are already in it
                self.counted, self._rebase = reading, False
                return
            infused = reading.infused_ul - self.counted.infused_ul
            withdrawn = reading.withdrawn_ul - self.counted.withdrawn_ul
            if infused < -1e-9 or withdrawn < -1e-9:
                # Counters lower than before: the pump cleared them (a power cycle); what it moved between
                # the last reading and the reset is lost to the count.
                log.warning("pump %02d: the volume counters went back (%s after %s); counting from zero",
                            self.address, reading, self.counted)  # fmt: skip
                infused = reading.infused_ul if infused < 0 else infused
                withdrawn = reading.withdrawn_ul if withdrawn < 0 else withdrawn
            self.counted = reading
            if self.contents_ul is None:
                return
            left = self.contents_ul - infused + withdrawn
            if left < -self.empty_margin_ul:
                log.warning("pump %02d: delivered %.4g µL more than the syringe held by the count; "
                            "was the refill larger than told?", self.address, -left)  # fmt: skip
            self.contents_ul = min(max(left, 0.0), self.syringe_volume_ul)

    def _check_contents(self, volume_ul: float) -> None:
        with self._counting:
            contents = self.contents_ul
        if contents is not None and volume_ul > contents + 1e-6 * self.syringe_volume_ul:
            raise SyringeEmpty(
                f"pump {self.address:02d} ({self.label}): the syringe holds {contents:.4g} µL by the count, "
                f"{volume_ul:.4g} µL asked: refill it (then set_contents)",
                address=self.address,
                consumable=self.label,
                remaining=contents,
                needed=volume_ul,
            )

    def _judge_stall(self, stall: MotorStall, direction: str) -> InstrumentError:
        """A stall while infusing with the count used up is the plunger at the end of its travel: empty."""
        if direction != "INF" or self.contents_ul is None:
            return stall
        try:
            self.dispensed()  # what the move delivered before the stall
        except (ConnectionLost, InstrumentTimeout, ProtocolError) as exc:
            log.info("pump %02d: no count after the stall (%s); judging on the last", self.address, exc)
        contents = self.contents().amount
        if contents is None or contents > self.empty_margin_ul:
            return stall
        return SyringeEmpty(
            f"pump {self.address:02d} ({self.label}): the syringe is empty: the plunger reached the end of "
            f"its travel (A?S) with {contents:.4g} µL left by the count",
            address=self.address,
            consumable=self.label,
            remaining=contents,
        )

    # -- motion ---------------------------------------------------------------------------------------
    def infuse(self, volume_ul: float, rate_ul_min: float, *, halt: threading.Event | None = None) -> Move:
        """Start pushing ``volume_ul`` out of the syringe at ``rate_ul_min``; returns at once.

        A set ``halt`` (someone stopped the caller's action) keeps RUN from going out.
        """
        return self._move("INF", volume_ul, rate_ul_min, halt)

    def withdraw(self, volume_ul: float, rate_ul_min: float, *, halt: threading.Event | None = None) -> Move:
        """Start pulling ``volume_ul`` into the syringe at ``rate_ul_min``; returns at once."""
        return self._move("WDR", volume_ul, rate_ul_min, halt)

    def check_move(self, volume_ul: float, rate_ul_min: float) -> tuple[str, str, float, str, str, float]:
        """Validate a move against the limits without sending anything; returns the wire values.

        Returns (volume units, volume text, volume held in µL, rate units, rate text, rate held).
        """
        name = f"pump {self.address:02d}"
        if not (math.isfinite(volume_ul) and volume_ul > 0):
            raise SafetyLimitError(f"{name}: volume_ul must be a positive number, not {volume_ul!r}")
        if volume_ul > self.max_volume_ul:
            raise SafetyLimitError(
                f"{name}: volume_ul {volume_ul:g} exceeds the limit of {self.max_volume_ul:g} µL "
                f"(max_volume_ul / syringe_volume_ul)"
            )
        if not (math.isfinite(rate_ul_min) and self.min_rate_ul_min <= rate_ul_min <= self.max_rate_ul_min):
            raise SafetyLimitError(
                f"{name}: rate_ul_min {rate_ul_min!r} is outside the allowed "
                f"{self.min_rate_ul_min:.4g}–{self.max_rate_ul_min:.4g} µL/min "
                f"(configured limits and the {self.model.name}'s limits "
                f"for a {self.diameter_mm:g} mm syringe)"
            )
        vol_units, vol_text, vol_held = codec.best_units(volume_ul, codec.VOLUME_UNITS_UL)
        if vol_held <= 0:
            raise SafetyLimitError(f"{name}: volume_ul {volume_ul!r} is too small for the pump to represent")
        rate_units, rate_text, rate_held = codec.best_units(rate_ul_min, codec.RATE_UNITS_UL_MIN)
        if not self.min_rate_ul_min * (1 - 1e-9) <= rate_held <= self.max_rate_ul_min * (1 + 1e-9):
            raise SafetyLimitError(
                f"{name}: rate_ul_min {rate_ul_min!r} rounds to {rate_held!r}, outside the limits"
            )
        return vol_units, vol_text, vol_held, rate_units, rate_text, rate_held

    def _move(
        self, direction: str, volume_ul: float, rate_ul_min: float, halt: threading.Event | None = None
    ) -> Move:
        vol_units, vol_text, vol_held, rate_units, rate_text, rate_held = self.check_move(
            volume_ul, rate_ul_min
        )
        if direction == "INF":
            self._check_contents(vol_held)
        with self.halt.operation(halt):  # a stop before RUN keeps it from going out
            self._tell_rounding(volume_ul, vol_held, "volume (µL)")
            self._tell_rounding(rate_ul_min, rate_held, "rate (µL/min)")
            move = Move(direction, vol_held, rate_held)
            for attempt in range(1, RESET_RETRIES + 2):
                try:
                    self._set_up_move(direction, vol_units, vol_text, rate_units, rate_text)
                    self._run(move)
                    break
                except MotorStall as stall:  # on RUN's reply: an empty syringe stalls at once
                    judged = self._judge_stall(stall, direction)
                    if judged is stall:
                        raise
                    raise judged from stall
                except PumpReset as reset:
                    # The pump power-cycled before it ran: the command that carried A?R was not executed
                    # (an alarm must be acknowledged first), so nothing moved. Configure and set up again.
                    if attempt > RESET_RETRIES:
                        self.line.events.emit("gave_up", reset.fault, str(reset), attempt)
                        raise
                    self.line.events.emit("retry", reset.fault, f"{reset}; configuring again", attempt)
                    self.configure()
            self.last_move = move
            log.info(
                "pump %02d: %s %.4g µL at %.4g µL/min",
                self.address,
                "infusing" if direction == "INF" else "withdrawing",
                vol_held,
                rate_held,
            )
            return move

    def _set_up_move(
        self, direction: str, vol_units: str, vol_text: str, rate_units: str, rate_text: str
    ) -> None:
        if self._needs_configure:
            self.configure()
        state = self.status()
        if state.moving:
            raise InstrumentBusy(f"pump {self.address:02d} is {state.name.lower()}; stop() it first")
        if state is PumpStatus.PAUSED:
            self._send("STP")  # a second STP ends the paused program, so RUN starts afresh
        if self.contents_ul is not None:
            self.dispensed()  # what the last move left uncounted (a stop), before the counters are cleared
        self._send("CLD", "INF")
        self._send("CLD", "WDR")
        with self._counting:
            self.counted, self._rebase = Dispensed(0.0, 0.0), False
            self.move_serial += 1
        self._send("DIR", direction)
        self._send("VOL", vol_units)
        self._send("VOL", vol_text)
        self._send("RAT", rate_text + rate_units)

    def _check_set_up(self, move: Move) -> None:
        """Read back what RUN will act on. A power cycle whose ``A?R`` reply was lost on the line leaves
        the pump at its power-up settings with no alarm left to see, and RUN with ``VOL 0`` pumps until
        the syringe is empty: raises PumpReset (configure and set up again) if they are not ``move``'s."""
        held = (
            self._query("DIR", "", lambda reply: reply.data),
            self._query("VOL", "", lambda reply: codec.parse_quantity(reply.data, codec.VOLUME_UNITS_UL)),
            self._query("RAT", "", lambda reply: codec.parse_quantity(reply.data, codec.RATE_UNITS_UL_MIN)),
        )
        direction, volume, rate = held
        if (
            direction != move.direction
            or not math.isclose(volume, move.volume_ul, rel_tol=1e-3)
            or not math.isclose(rate, move.rate_ul_min, rel_tol=1e-3)
        ):
            self._needs_configure = True
            raise PumpReset(
                f"pump {self.address:02d}: set up for {move.direction} {move.volume_ul:.4g} µL at "
                f"{move.rate_ul_min:.4g} µL/min, holds {direction} {volume:.4g} µL at {rate:.4g} µL/min: "
                "it lost its settings (a power cycle whose alarm was lost on the line)"
            )

    def _run(self, move: Move) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                self._check_set_up(move)  # before every RUN, the first and any sent again
                self._run_unless_halted()
                return
            except (ConnectionLost, InstrumentTimeout, ProtocolError) as exc:
                if attempt > self.line.retries:
                    self.line.events.emit(
                        "gave_up", exc.fault, f"pump {self.address:02d} RUN: {exc}", attempt
                    )
                    raise
                # RUN may or may not have reached the pump. Look before sending it again: a second RUN
                # after a completed short move would dispense the volume twice.
                log.info("pump %02d RUN: %s; checking whether the pump started", self.address, exc)
                self.line.events.emit(
                    "retry", exc.fault, f"pump {self.address:02d} RUN: {exc}; checking", attempt
                )
                if not self.line.transport.is_open and not self.line.closed:
                    self.line.reconnect()
                if self.status().moving or self.dispensed() != Dispensed(0.0, 0.0):
                    return

    def _run_unless_halted(self) -> None:
        # Checked under the line's lock, which stop() needs for STP: either RUN goes out first and
        # STP stops it, or the stop is seen here and RUN never goes out.
        with self.line.transport.locked():
            self.halt.check(f"pump {self.address:02d}: RUN")
            self._send("RUN", repeatable=False)

    def halted(self) -> bool:
        """A stop was asked for during the move in progress."""
        return self.halt.requested

    def stop(self) -> None:
        """Stop pumping, from any thread. The first STP pauses a running program, a second one ends it."""
        self.halt.request()
        for _ in range(3):
            try:
                state = self._query("STP", "", lambda reply: PumpStatus(reply.status))
            except PumpReset:
                # A pump that has just powered up is stopped; the reply acknowledged the alarm, so the
                # next STP runs and confirms it (the next move configures the pump again).
                continue
            if state is PumpStatus.STOPPED:
                break
        log.info("pump %02d: stopped", self.address)

    def wait_until_stopped(
        self, timeout: float, *, poll_s: float = 0.05, halt: threading.Event | None = None
    ) -> Dispensed:
        """Poll until the pump stops; the volumes moved.

        Raises the pump's alarm if one ends the move, ``IncompleteDispense`` if it stopped short
        without one, ``InstrumentTimeout`` at the deadline. A stop (``stop()``, or setting ``halt``)
        ends the wait early with ``Stopped``, for a caller that has given up on the move.
        """
        deadline = time.monotonic() + timeout
        # Poll quickly at first (a short move ends soon), then back off to a tenth of the move time.
        intervals = Backoff(poll_s, max_s=max(poll_s, min(1.0, timeout / 20)))
        with self.halt.operation(halt):
            while True:
                self.halt.check(f"pump {self.address:02d}: waiting for the move")
                try:
                    state = self.status()
                except MotorStall as stall:
                    judged = self._judge_stall(stall, self.last_move.direction if self.last_move else "")
                    if judged is stall:
                        raise
                    raise judged from stall
                if not state.moving:
                    return self.check_finished(state)
                if time.monotonic() >= deadline:
                    raise InstrumentTimeout(
                        f"pump {self.address:02d} still {state.name.lower()} after {timeout} s"
                    )
                self.halt.wait(intervals.next())

    def count_when_stopped(self, timeout: float = 5.0, *, poll_s: float = 0.01) -> tuple[Dispensed, bool]:
        """The current move's volumes once the pump has stopped — after a stop from another thread, whose
        ``STP`` may reach the pump a moment after the stopped operation gave up waiting. Queries only.

        Returns the volumes and whether the pump had stopped (False: still moving at the deadline, or
        the link failed; the volumes are then what was last counted, and may be short).
        """
        deadline = time.monotonic() + timeout
        intervals = Backoff(poll_s, max_s=max(poll_s, 0.2))
        try:
            while True:
                try:
                    moving = self.status().moving
                except PumpAlarm:
                    moving = False  # an alarm stops the motor (and is acknowledged by this reply)
                if not moving:
                    return self.dispensed(), True
                if time.monotonic() >= deadline:
                    return self.dispensed(), False
                time.sleep(intervals.next())
        except (ConnectionLost, InstrumentTimeout, ProtocolError) as exc:
            log.info("pump %02d: no count after the move (%s)", self.address, exc)
            return self.counted, False

    def check_finished(self, state: PumpStatus) -> Dispensed:
        """The volumes moved by the last move, which must have delivered all it was asked for."""
        done = self.dispensed()
        move = self.last_move
        if move is not None:
            moved = done.infused_ul if move.direction == "INF" else done.withdrawn_ul
            if moved < move.volume_ul * (1 - MATERIAL_ROUNDING) - 1e-6:
                contents = self.contents_ul
                if move.direction == "INF" and contents is not None and contents <= self.empty_margin_ul:
                    # The stall's alarm was lost on the line, but the count says the plunger ran out.
                    raise SyringeEmpty(
                        f"pump {self.address:02d} ({self.label}): the syringe is empty: stopped after "
                        f"{moved:.4g} of {move.volume_ul:.4g} µL with {contents:.4g} µL left by the count",
                        address=self.address,
                        consumable=self.label,
                        remaining=contents,
                    )
                raise IncompleteDispense(
                    f"pump {self.address:02d} stopped ({state.name.lower()}) after {moved:.4g} of "
                    f"{move.volume_ul:.4g} µL without reporting an alarm",
                    address=self.address,
                    delivered_ul=moved,
                )
        return done
