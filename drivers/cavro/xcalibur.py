"""Tecan Cavro XCalibur / XLP / XP 3000 syringe pump with a distribution valve, DT protocol.

One ``CavroPump`` talks to one pump (one DT address) through a ``drivers.transport.Transport``.
Volumes are µL and flows µL/s; the driver turns them into plunger increments and top speeds from
the syringe volume and the resolution (``N0`` 3000 increments per stroke, ``N1``/``N2`` 24000).

Every move goes out as an *absolute* command (``I2``, ``A3000``), so sending it twice does no
harm. That is what makes recovery simple: after a dropped connection, a lost, garbled or cut
reply, the driver reconnects if needed, waits until the pump is ready (``Q``), and sends the
same command again, under the shared :class:`drivers.retry.RetryPolicy` (``retries`` resends).
Before every move it polls ``Q`` until the pump is ready, since a command sent while the
plunger moves is ignored with error 15.

Limits (syringe volume, flow, valve ports, speed caps) are checked before any byte is sent and
raise ``SafetyLimitError``; the pump's own errors raise the typed errors of ``drivers.cavro.errors``.
After an overload or a failed initialisation the next ``transfer`` initialises the pump again.

What moved is what the pump reports: after each plunger move the driver reads the position (``?``)
and books the difference against the port the valve is open to — drawn from it, or pushed to it.
Told what a port's reservoir holds (``set_reservoir(port, volume_ul, lot=...)``), the driver counts it
down by what is drawn from it, and refuses to draw more than it holds (``ReservoirEmpty``, before
anything moves): a real pump would draw air without a word and deliver short.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from drivers.cavro import codec
from drivers.cavro.codec import Reply, SpeedProfile
from drivers.cavro.errors import (
    CavroError,
    GarbledReply,
    InitFailure,
    NoReply,
    PlungerOverload,
    ReservoirEmpty,
    Terminated,
    TruncatedReply,
    ValveOverload,
    error_for,
)
from drivers.errors import (
    ConnectionLost,
    InstrumentError,
    InstrumentTimeout,
    ReplyCutShort,
    SafetyLimitError,
)
from drivers.halt import Halt
from drivers.retry import FaultEvents, RetryPolicy
from drivers.stock import Contents, check_amount, check_lot
from drivers.transport import Transport

log = logging.getLogger(__name__)
T = TypeVar("T")

LINK_ERRORS = (ConnectionLost, NoReply, TruncatedReply, GarbledReply)


@dataclass(frozen=True)
class PumpStatus:
    ready: bool
    error: int
    error_text: str

    @property
    def busy(self) -> bool:
        return not self.ready


class SyringeNotEmpty(InstrumentError):
    """A transfer would mix with liquid already in the syringe and there is no waste port to empty it."""


@dataclass
class Reservoir:
    """What the driver counts in the bottle behind one valve port."""

    volume_ul: float | None = None
    lot: str | None = None


@dataclass(frozen=True)
class Moved:
    """What one transfer moved, as the pump reported it (plunger positions): µL drawn from its source,
    delivered to its destination, and pushed to the waste port."""

    drawn_ul: float = 0.0
    delivered_ul: float = 0.0
    wasted_ul: float = 0.0


class CavroPump:
    def __init__(
        self,
        transport: Transport,
        *,
        syringe_volume_ul: float,
        address: int | str = 1,
        ports: Mapping[str, int] | None = None,
        valve_port_count: int = 6,
        max_flow_ul_s: float | None = None,
        min_flow_ul_s: float | None = None,
        max_top_speed: int = codec.TOP_SPEED_RANGE[1],
        max_transfer_ul: float | None = None,
        resolution: str | int = "standard",
        waste: str | int | None = None,
        retries: int = 2,
        poll_interval_s: float = 0.02,
        init_timeout_s: float = 30.0,
        overload_retries: int = 1,
        events: FaultEvents | None = None,
    ):
        self.transport = transport
        self.address = codec.address_char(address)
        if not (math.isfinite(syringe_volume_ul) and syringe_volume_ul > 0):
            raise ValueError(f"syringe_volume_ul must be a positive number, not {syringe_volume_ul!r}")
        self.syringe_volume_ul = float(syringe_volume_ul)
        if not 2 <= int(valve_port_count) <= 12:
            raise ValueError(f"valve_port_count must be 2..12, not {valve_port_count!r}")
        self.valve_port_count = int(valve_port_count)
        self.ports = dict(ports or {})
        for label, port in self.ports.items():
            if not isinstance(port, int) or not 1 <= port <= self.valve_port_count:  # pyright: ignore[reportUnnecessaryIsInstance]  (a caller may pass anything: checked at run time)
                raise ValueError(f"ports.{label}: port must be 1..{self.valve_port_count}, not {port!r}")
        self.mode = codec.resolution_mode(resolution)
        if not codec.TOP_SPEED_RANGE[0] <= max_top_speed <= codec.TOP_SPEED_RANGE[1]:
            raise ValueError(f"max_top_speed must be within {codec.TOP_SPEED_RANGE}, not {max_top_speed}")
        speed_cap = codec.speed_to_flow(max_top_speed, self.syringe_volume_ul)
        speed_floor = codec.speed_to_flow(codec.TOP_SPEED_RANGE[0], self.syringe_volume_ul)
        self.max_flow_ul_s = speed_cap if max_flow_ul_s is None else float(max_flow_ul_s)
        self.min_flow_ul_s = speed_floor if min_flow_ul_s is None else float(min_flow_ul_s)
        if not speed_floor <= self.min_flow_ul_s <= self.max_flow_ul_s <= speed_cap:
            raise ValueError(
                f"flow limits must satisfy {speed_floor:g} <= min_flow_ul_s <= max_flow_ul_s <= "
                f"{speed_cap:g} µL/s for a {self.syringe_volume_ul:g} µL syringe; "
                f"got {self.min_flow_ul_s:g}..{self.max_flow_ul_s:g}"
            )
        self.max_transfer_ul = None if max_transfer_ul is None else float(max_transfer_ul)
        self.waste_port = None if waste is None else self._port(waste)
        self.retry = RetryPolicy(attempts=1 + int(retries), retryable=LINK_ERRORS, deadline_s=10.0)
        self.events = events or FaultEvents(transport.url)
        #: A stop (terminate(), or the ophyd face's action stopped) ends the operation in progress.
        self.halt = Halt()
        self.overload_retries = int(overload_retries)
        self.poll_interval_s = float(poll_interval_s)
        self.init_timeout_s = float(init_timeout_s)
        self.profile = SpeedProfile()
        self._position: int | None = None  # increments, as last reported (or commanded)
        self._initialised = False
        #: The port the valve is open to, as last set (None: unknown, after an initialisation or a fault).
        self._port_open: int | None = None
        #: µL drawn from and pushed to each port since the driver started, by the reported positions.
        self.drawn: dict[int, float] = {}
        self.pushed: dict[int, float] = {}
        #: What the last transfer moved (also when it failed part-way).
        self.last_transfer = Moved()
        self._reservoirs: dict[int, Reservoir] = {}
        self._counting = threading.Lock()

    @classmethod
    def connect(cls, url: str, *, baudrate: int = 9600, timeout: float = 1.0, **options: Any) -> CavroPump:
        """Open ``url`` (``/dev/ttyUSB0``, ``socket://host:port``, a pty) and wrap it (9600 or 38400 8N1)."""
        return cls(Transport(url, baudrate=baudrate, timeout=timeout).open(), **options)

    def close(self) -> None:
        self.transport.close()

    @property
    def retries(self) -> int:
        return self.retry.attempts - 1

    @retries.setter
    def retries(self, retries: int) -> None:
        self.retry = self.retry.with_(attempts=1 + int(retries))

    def __repr__(self) -> str:
        return f"CavroPump({self.transport.url!r}, address={self.address!r})"

    # -- units and limits ------------------------------------------------------------------------
    @property
    def increments_per_stroke(self) -> int:
        return codec.increments_per_stroke(self.mode)

    @property
    def ul_per_increment(self) -> float:
        return self.syringe_volume_ul / self.increments_per_stroke

    def _port(self, where: str | int) -> int:
        if isinstance(where, str) and where in self.ports:
            return self.ports[where]
        if isinstance(where, int) and not isinstance(where, bool) and 1 <= where <= self.valve_port_count:
            return where
        labels = ", ".join(f"{label}={port}" for label, port in self.ports.items()) or "none"
        raise SafetyLimitError(
            f"valve port {where!r} is not allowed: give a port 1..{self.valve_port_count} "
            f"or a label ({labels})"
        )

    def _increments(self, volume_ul: object, what: str) -> int:
        if not (isinstance(volume_ul, int | float) and math.isfinite(volume_ul) and volume_ul > 0):
            raise SafetyLimitError(f"{what} volume must be a positive number of µL, not {volume_ul!r}")
        increments = round(volume_ul / self.ul_per_increment)
        if increments == 0:
            raise SafetyLimitError(
                f"{what} volume {volume_ul:g} µL is below one plunger increment "
                f"({self.ul_per_increment:g} µL)"
            )
        return increments

    def _speed(self, flow_ul_s: object) -> int:
        flow = self.max_flow_ul_s if flow_ul_s is None else flow_ul_s
        if not (isinstance(flow, int | float) and math.isfinite(flow)):
            raise SafetyLimitError(f"flow must be a number of µL/s, not {flow!r}")
        if not self.min_flow_ul_s <= flow <= self.max_flow_ul_s:
            raise SafetyLimitError(
                f"flow {flow:g} µL/s is outside the allowed "
                f"{self.min_flow_ul_s:g}..{self.max_flow_ul_s:g} µL/s"
            )
        return min(max(codec.flow_to_speed(flow, self.syringe_volume_ul), codec.TOP_SPEED_RANGE[0]),
                   codec.TOP_SPEED_RANGE[1])  # fmt: skip

    def check_transfer(
        self,
        volume_ul: float,
        source: str | int,
        destination: str | int,
        flow_ul_s: float | None = None,
        aspirate_flow_ul_s: float | None = None,
    ) -> None:
        """Raise SafetyLimitError if ``transfer`` with these arguments would break a limit."""
        self._increments(volume_ul, "transfer")
        if self.max_transfer_ul is not None and volume_ul > self.max_transfer_ul:
            raise SafetyLimitError(
                f"transfer volume {volume_ul:g} µL exceeds max_transfer_ul {self.max_transfer_ul:g} µL"
            )
        self._port(source)
        self._port(destination)
        self._speed(flow_ul_s)
        self._speed(aspirate_flow_ul_s)

    # -- reservoirs -------------------------------------------------------------------------------
    def set_reservoir(self, port: str | int, volume_ul: float | None, lot: str | None = None) -> None:
        """The bottle behind ``port`` (a label or number) holds ``volume_ul`` now, of ``lot``; None stops
        counting it. No I/O."""
        number = self._port(port)
        name = f"pump {self.address}: reservoir at port {number}"
        volume = check_amount(name, volume_ul, unit="uL")
        checked_lot = check_lot(name, lot)
        with self._counting:
            self._reservoirs[number] = Reservoir(volume, checked_lot)
        log.info("pump %s: port %d's reservoir holds %s µL%s", self.address, number,
                 "an unknown volume of" if volume is None else f"{volume:.6g}",
                 f" of lot {checked_lot}" if checked_lot else "")  # fmt: skip

    def reservoir(self, port: str | int) -> Contents:
        """The reservoir behind ``port`` as the driver counts it."""
        number = self._port(port)
        with self._counting:
            held = self._reservoirs.get(number, Reservoir())
            return Contents("reservoir", "uL", held.volume_ul, held.lot)

    def tracked_ports(self) -> list[int]:
        """The ports whose reservoir the driver was told about."""
        with self._counting:
            return sorted(self._reservoirs)

    def _check_reservoir(self, port: int, volume_ul: float) -> None:
        with self._counting:
            held = self._reservoirs.get(port, Reservoir()).volume_ul
        if held is not None and volume_ul > held + 1e-9 * max(1.0, volume_ul):
            labels = [label for label, number in self.ports.items() if number == port]
            raise ReservoirEmpty(
                f"pump {self.address}: the reservoir at port {port} holds {held:.4g} µL by the count, "
                f"{volume_ul:.4g} µL needed: refill it (then set_reservoir)",
                consumable=labels[0] if labels else str(port),
                remaining=held,
                needed=volume_ul,
            )

    def _book(self, before: int, after: int) -> None:
        """The plunger went from ``before`` to ``after`` (increments) with the valve at ``_port_open``."""
        port, volume = self._port_open, abs(after - before) * self.ul_per_increment
        if port is None or volume == 0:
            if volume:
                log.warning("pump %s: %.4g µL moved with the valve at an unknown port", self.address, volume)
            return
        with self._counting:
            if after > before:
                self.drawn[port] = self.drawn.get(port, 0.0) + volume
                held = self._reservoirs.get(port)
                if held is not None and held.volume_ul is not None:
                    if volume > held.volume_ul + 1e-9 * max(1.0, volume):
                        log.warning("pump %s: drew %.4g µL from port %d, whose reservoir held %.4g by the "
                                    "count", self.address, volume, port, held.volume_ul)  # fmt: skip
                    held.volume_ul = max(held.volume_ul - volume, 0.0)
            else:
                self.pushed[port] = self.pushed.get(port, 0.0) + volume

    # -- the wire --------------------------------------------------------------------------------
    def _read_reply(self, transport: Transport) -> bytes:
        try:
            return transport.read_until(codec.REPLY_TERMINATOR)
        except ReplyCutShort as exc:
            raise TruncatedReply(f"pump {self.address}: {exc}") from None
        except InstrumentTimeout:
            raise NoReply(f"pump {self.address}: no reply within {transport.replies.timeout:.3g} s") from None

    def _exchange_once(self, commands: str) -> Reply:
        if not self.transport.is_open:
            self.transport.open()
        raw = self.transport.exchange(codec.encode_request(self.address, commands), self._read_reply)
        try:
            return codec.decode_reply(raw)
        except codec.FrameError as exc:
            raise GarbledReply(f"pump {self.address}: {exc}") from None

    def query(self, commands: str, parse: Callable[[Reply], T] | None = None) -> Any:
        """A report command (``Q``, ``?``, ``?6``, ``&``…): asked again after a link fault.

        With ``parse``, returns ``parse(reply)``; data that does not parse is a garbled reply, retried.
        """

        def once() -> Any:
            reply = self._exchange_once(commands)
            if parse is None:
                return reply
            try:
                return parse(reply)
            except (ValueError, TypeError) as exc:
                raise GarbledReply(
                    f"pump {self.address}: {commands!r} answered {reply.data!r}: {exc}"
                ) from None

        return self.retry.run(once, transport=self.transport, events=self.events,
                              what=f"pump {self.address} {commands!r}")  # fmt: skip

    def operation(self, halt: threading.Event | None = None) -> AbstractContextManager[threading.Event]:
        """One public operation at a time; a stop ends it (and ``halt``, if given, is its stop event)."""
        return self.halt.operation(halt)

    def _run(self, commands: str, timeout: float) -> None:
        """Run an absolute (repeatable) command string and wait until the pump has finished it."""
        self._wait_ready(timeout, raise_errors=False)
        what = f"pump {self.address} {commands!r}"
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = self._send_unless_stopped(commands + "R")
            except LINK_ERRORS as exc:
                if attempt >= self.retry.attempts:
                    self.events.emit("gave_up", exc.fault, f"{what}: {exc}", attempt)
                    raise
                self.events.emit("retry", exc.fault, f"{what}: {exc}", attempt)
                if isinstance(exc, ConnectionLost) or not self.transport.is_open:
                    self.events.emit("reconnect", exc.fault, f"{what}: reconnecting", attempt)
                    self.retry.run(self.transport.reconnect, events=self.events, what=f"{what}: reconnect")
                # It may have run: let it finish (its errors surface here) before sending it again.
                self._wait_ready(timeout, raise_errors=True, command=commands)
                continue
            if reply.status.error:
                self._raise(reply.status.error, commands)
            break
        self._wait_ready(timeout, raise_errors=True, command=commands)

    def _send_unless_stopped(self, commands: str) -> Reply:
        # Checked under the link's lock, which terminate() needs for T: either the command goes out
        # first and T stops it, or the stop is seen here and the command never goes out.
        with self.transport.locked():
            self._check_stop()
            return self._exchange_once(commands)

    def error_for_status(self, status: PumpStatus) -> InstrumentError:
        """The typed error a status's error code stands for."""
        return error_for(status.error, command="Q", address=self.address)

    def _raise(self, code: int, command: str) -> None:
        error = error_for(code, command=command, address=self.address)
        if error.needs_initialisation:
            self._initialised = False
            self._position = None
        raise error

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> PumpStatus:
        """One ``Q``: ready or busy, and the last error (the cheap round-trip query)."""
        status = self.query("Q").status
        return PumpStatus(status.ready, status.error, status.error_text)

    def stopped(self) -> bool:
        """True once terminate() (or the caller's halt) asked the operation in progress to end."""
        return self.halt.requested

    def _wait_ready(self, timeout: float, *, raise_errors: bool, command: str = "") -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = self.query("Q").status
            if status.ready:
                if raise_errors and status.error:
                    self._raise(status.error, command)
                return
            if time.monotonic() >= deadline:
                raise InstrumentTimeout(f"pump {self.address} still busy after {timeout:g} s ({command!r})")
            time.sleep(self.poll_interval_s)

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Poll ``Q`` until the pump is ready; raise the typed error it reports, if any."""
        self._wait_ready(timeout, raise_errors=True)

    def position_ul(self) -> float:
        """Volume drawn into the syringe, from the plunger position (``?``)."""
        position = self.query("?", lambda reply: _whole(reply.data, 0, 10 * self.increments_per_stroke))
        self._position = position
        return position * self.ul_per_increment

    def valve_port(self) -> int:
        """The port the valve is open to (``?6``)."""
        return self.query("?6", lambda reply: _whole(reply.data, 0, self.valve_port_count))

    def firmware(self) -> str:
        return self.query("&", lambda reply: reply.data)

    # -- actions ---------------------------------------------------------------------------------
    def initialize(self, *, output: str | int | None = None, force: int = 0, attempts: int = 2) -> None:
        """Home plunger and valve (``Z``), pushing any syringe content out of ``output`` (default: waste).

        A failed initialisation (error 1) is tried again, up to ``attempts`` times in all.
        """
        out_port = self._port(output) if output is not None else self.waste_port
        command = f"Z{force},0,{out_port}" if out_port else ("Z" if not force else f"Z{force}")
        with self.operation():
            held, self._port_open = self._position, None  # what initialising pushes out, and where
            attempt = 0
            for attempt in range(1, attempts + 1):
                log.info("pump %s: initialising (%s), attempt %d", self.address, command, attempt)
                try:
                    self._run(command, self.init_timeout_s)
                    break
                except InitFailure as failure:
                    if attempt == attempts or self.stopped():
                        if attempt > 1:
                            self.events.emit("gave_up", failure.fault, str(failure), attempt)
                        raise
                    self.events.emit("retry", failure.fault, f"{failure}; initialising again", attempt)
            if attempt > 1:
                detail = f"pump {self.address}: initialised on attempt {attempt}"
                self.events.emit("recovered", "alarm", detail)
            self._run(f"N{self.mode}", self.init_timeout_s)
            if held and out_port:
                self._port_open = out_port
                self._book(held, 0)
            self._port_open = None
            self._position = 0
            self._initialised = True

    def ensure_initialized(self) -> None:
        if not self._initialised:
            self.initialize()

    def valve(self, port: str | int) -> int:
        """Turn the valve to ``port`` (a label or number) the short way round; returns the port number."""
        number = self._port(port)
        with self.operation():
            log.info("pump %s: valve to port %d", self.address, number)
            self._port_open = None  # somewhere between the two until the pump says it is done
            self._run(f"I{number}", self.init_timeout_s)
            self._port_open = number
        return number

    def _move_to(self, target: int, flow_ul_s: float | None) -> None:
        top = self._speed(flow_ul_s)
        # Start and cutoff speeds may not exceed the top speed; their floor is 50 half-steps/s.
        start = max(codec.START_SPEED_RANGE[0], min(codec.DEFAULT_START_SPEED, top))
        cutoff = max(codec.CUTOFF_SPEED_RANGE[0], min(codec.DEFAULT_CUTOFF_SPEED, top))
        self.profile = SpeedProfile(start, top, cutoff, self.profile.slope)
        here = self._position if self._position is not None else 0
        half_steps = abs(target - here) / self.increments_per_stroke * codec.STROKE_HALF_STEPS
        timeout = 2 * self.profile.move_time(half_steps) + 5.0
        done = False
        try:
            self._run(f"v{start}V{top}c{cutoff}A{target}", timeout)
            done = True
        finally:
            self._after_move(here, target if done else None)
        self._check_stop()  # a T during the move ended it early: the position is unknown

    def _after_move(self, here: int, commanded: int | None) -> None:
        """Book what the move moved, from where the pump says the plunger is now (``commanded``: where a
        move that ended without an error is, should the pump not answer)."""
        try:
            after: int | None = self.query(
                "?", lambda reply: _whole(reply.data, 0, 10 * self.increments_per_stroke)
            )
        except (InstrumentError, CavroError) as exc:
            log.info("pump %s: no position after the move (%s)", self.address, exc)
            after = commanded
        self._position = after
        if after is not None:
            self._book(here, after)

    def aspirate(
        self, volume_ul: float, flow_ul_s: float | None = None, *, source: str | int | None = None
    ) -> None:
        """Draw ``volume_ul`` into the syringe (from ``source`` if given, else the current port)."""
        increments = self._increments(volume_ul, "aspirate")
        self._speed(flow_ul_s)
        port = None if source is None else self._port(source)
        drawn_from = port if port is not None else self._port_open
        if drawn_from is not None:
            self._check_reservoir(drawn_from, increments * self.ul_per_increment)
        with self.operation():
            here = self._require_position()
            if here + increments > self.increments_per_stroke:
                raise SafetyLimitError(
                    f"aspirating {volume_ul:g} µL would overfill the {self.syringe_volume_ul:g} µL syringe "
                    f"(it holds {here * self.ul_per_increment:g} µL)"
                )
            if port is not None:
                self.valve(port)
            log.info("pump %s: aspirate %.1f µL at %s µL/s", self.address, volume_ul, flow_ul_s)
            self._move_to(here + increments, flow_ul_s)

    def dispense(
        self, volume_ul: float, flow_ul_s: float | None = None, *, destination: str | int | None = None
    ) -> None:
        """Push ``volume_ul`` out of the syringe (to ``destination`` if given, else the current port)."""
        increments = self._increments(volume_ul, "dispense")
        self._speed(flow_ul_s)
        port = None if destination is None else self._port(destination)
        with self.operation():
            here = self._require_position()
            if increments > here:
                raise SafetyLimitError(
                    f"cannot dispense {volume_ul:g} µL: the syringe holds {here * self.ul_per_increment:g} µL"
                )
            if port is not None:
                self.valve(port)
            log.info("pump %s: dispense %.1f µL at %s µL/s", self.address, volume_ul, flow_ul_s)
            self._move_to(here - increments, flow_ul_s)

    def transfer(
        self,
        volume_ul: float,
        source: str | int,
        destination: str | int,
        flow_ul_s: float | None = None,
        *,
        aspirate_flow_ul_s: float | None = None,
    ) -> float:
        """Move ``volume_ul`` from ``source`` to ``destination``, in as many strokes as it takes.

        Initialises the pump first if it needs it. Returns the volume delivered, as the plunger positions
        the pump reported say (``last_transfer`` has what was drawn and wasted too). ``ReservoirEmpty``,
        before anything moves, when the source's reservoir is counted and holds less than the transfer.
        """
        self.check_transfer(volume_ul, source, destination, flow_ul_s, aspirate_flow_ul_s)
        remaining = self._increments(volume_ul, "transfer")
        moved = remaining * self.ul_per_increment
        source_port, destination_port = self._port(source), self._port(destination)
        self._check_reservoir(source_port, moved)
        with self._counting:
            drawn, pushed = dict(self.drawn), dict(self.pushed)
        try:
            self._transfer(remaining, source, destination, flow_ul_s, aspirate_flow_ul_s)
        finally:
            with self._counting:
                self.last_transfer = Moved(
                    self.drawn.get(source_port, 0.0) - drawn.get(source_port, 0.0),
                    self.pushed.get(destination_port, 0.0) - pushed.get(destination_port, 0.0),
                    0.0 if self.waste_port is None or self.waste_port == destination_port
                    else self.pushed.get(self.waste_port, 0.0) - pushed.get(self.waste_port, 0.0),
                )  # fmt: skip
        return self.last_transfer.delivered_ul

    def _transfer(
        self,
        remaining: int,
        source: str | int,
        destination: str | int,
        flow_ul_s: float | None,
        aspirate_flow_ul_s: float | None,
    ) -> None:
        moved = remaining * self.ul_per_increment
        with self.operation():
            self.ensure_initialized()
            here = self._require_position()
            if here:
                if self.waste_port is None:
                    raise SyringeNotEmpty(
                        f"the syringe holds {here * self.ul_per_increment:g} µL "
                        "and no waste port is configured"
                    )
                self.dispense(here * self.ul_per_increment, flow_ul_s, destination=self.waste_port)
            log.info("pump %s: transfer %.1f µL from %s to %s", self.address, moved, source, destination)
            while remaining:
                stroke = min(remaining, self.increments_per_stroke)
                self._fill_stroke(stroke, source, destination, aspirate_flow_ul_s if aspirate_flow_ul_s
                                  is not None else flow_ul_s)  # fmt: skip
                # An overload from here on leaves the delivered volume unknown: it is raised as it is.
                self._move_to(0, flow_ul_s)
                remaining -= stroke

    def _fill_stroke(
        self, stroke: int, source: str | int, destination: str | int, flow: float | None
    ) -> None:
        """Draw one stroke and turn the valve to the destination; nothing reaches it yet.

        So an overload here is recovered as the manual says — initialise again (what the syringe
        held goes to waste) — and the stroke is drawn anew, up to ``overload_retries`` times.
        """
        for attempt in range(1, self.overload_retries + 2):
            # Counted again for each try: a stroke drawn anew after an overload draws the reservoir again.
            self._check_reservoir(self._port(source), stroke * self.ul_per_increment)
            try:
                self.valve(source)
                self._move_to(stroke, flow)
                self.valve(destination)
                return
            except (PlungerOverload, ValveOverload) as overload:
                if attempt > self.overload_retries or self.stopped():
                    self.events.emit("gave_up", overload.fault, str(overload), attempt)
                    raise
                self.events.emit("retry", overload.fault, f"{overload}; initialising again", attempt)
                self.initialize()
                self.events.emit(
                    "recovered", overload.fault, f"pump {self.address}: initialised after {overload}"
                )

    def terminate(self) -> None:
        """Stop the plunger now (``T``), from any thread; a transfer in progress raises ``Terminated``."""
        self.halt.request()
        log.info("pump %s: terminate", self.address)
        self.query("T")
        self._position = None

    def recover(self) -> None:
        """After a fault: reconnect if the link is down, stop whatever runs, initialise again.

        The documented recovery from a plunger or valve overload (errors 9, 10) and a failed
        initialisation (error 1) is a new initialisation; ``InitFailure`` if that fails too.
        A stop before it does not carry over: recovery is an operation of its own.
        """
        with self.operation():
            if not self.transport.is_open:
                self.retry.run(
                    self.transport.reconnect, events=self.events, what=f"pump {self.address}: reconnect"
                )
            self.query("T")
            self.initialize()

    def _require_position(self) -> int:
        if not self._initialised:
            self.ensure_initialized()
        if self._position is None:
            self.position_ul()
        assert self._position is not None
        return self._position

    def _check_stop(self) -> None:
        if self.stopped():
            self._position = None
            self.halt.check(f"pump {self.address}", Terminated)


def _whole(text: str, low: int, high: int) -> int:
    """A whole number ``low..high`` from a reply's data (ValueError otherwise: a garbled reply)."""
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low}..{high}")
    return value
