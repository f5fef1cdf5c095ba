"""One simulated XCalibur-class pump with a distribution valve: state machine, timing and liquid.

The pump runs a command string as a program, lazily: ``advance(now)`` brings it up to simulated
time ``now`` (finishing moves, starting the next command at the instant the previous one ended),
so a faster clock makes every move faster alike and no background task is needed. Liquid follows
the plunger: a move ``flow``s volume between the syringe and whatever the valve port leads to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from drivers.cavro import codec
from drivers.cavro.codec import Command, CommandSyntaxError, ErrorCode, SpeedProfile
from simulators.cavro import program
from simulators.world import LiquidHolder, Portion, merge, scaled

#: Plunger positions are kept in the finest unit (24000 per stroke) and reported in the current mode's.
FINE = 24000
FINE_PER_HALF_STEP = FINE / codec.STROKE_HALF_STEPS
BYPASS = 0
#: A program whose commands keep taking no time (``gV100G``) is cut off rather than spinning forever.
MAX_INSTANT_COMMANDS = 10000


@dataclass
class Running:
    """The command in progress: what it is, when it started and how long it takes."""

    command: Command
    kind: str  # plunger | valve | init | delay
    start: float
    duration: float
    busy: bool = True
    origin: float = 0.0  # plunger: fine position at start
    direction: int = 0
    half_steps: float = 0.0  # plunger: full distance commanded
    profile: SpeedProfile | None = None
    target: int = 0  # plunger: fine position; valve: port; init: output port
    fault: ErrorCode = ErrorCode.NONE


class CavroPump:
    def __init__(
        self,
        *,
        address: str,
        syringe_volume_ul: float,
        valve_ports: int,
        holders: dict[int, LiquidHolder],
        resolution: int,
        firmware: str,
        init_duration_s: float,
        valve_switch_s: float,
        init_output_port: int,
        fires: Callable[[str], bool],
        log: logging.Logger,
    ):
        self.address = address
        self.switch = codec.address_switch(address)
        self.syringe_volume_ul = syringe_volume_ul
        self.valve_ports = valve_ports
        self.holders = holders
        self.mode = resolution
        self.firmware = firmware
        self.init_duration_s = init_duration_s
        self.valve_switch_s = valve_switch_s
        self.init_output_port = init_output_port
        self._fires = fires
        self.log = log
        # -- state --
        self.initialised = False
        self.blocked_by = ErrorCode.NOT_INITIALISED  # what a move gets until the next successful init
        self.error = ErrorCode.NONE
        self.position = 0.0
        self.valve = 1
        self.profile = SpeedProfile()
        self.backlash = 12
        self.syringe = Portion(0.0)
        #: Liquid drawn into the syringe, and pushed out of it by valve port, since power-up.
        self.drawn_ul = 0.0
        self.pushed_ul: dict[int, float] = {}
        self.buffer: list[Command] = []
        self.last_program: list[Command] = []
        self.counters = {"inits": 0, "plunger_moves": 0, "valve_moves": 0}
        self.requests = 0
        self._program: Iterator[Command] | None = None
        self._current: Running | None = None
        self._cursor = 0.0

    # -- what the host sees ----------------------------------------------------------------------
    @property
    def moving(self) -> bool:
        """Running a string: any command but a report, T or V now gets error 15."""
        return self._current is not None or self._program is not None

    @property
    def busy(self) -> bool:
        """What the status bit says; a lowercase move (``a``, ``p``, ``d``) reports ready while it runs."""
        return self.moving and (self._current is None or self._current.busy)

    def reply(self, data: str = "", error: int | None = None) -> bytes:
        return codec.encode_reply(not self.busy, self.error if error is None else error, data)

    def reported_position(self) -> int:
        return round(self.position * codec.increments_per_stroke(self.mode) / FINE)

    def plunger_volume_ul(self) -> float:
        return self.position / FINE * self.syringe_volume_ul

    # -- requests --------------------------------------------------------------------------------
    def handle(self, request: codec.Request, now: float) -> bytes | None:
        """The reply to one request, or None when it is not for this pump or addressed to a group."""
        switches = codec.addressed_switches(request.address)
        if self.switch not in switches:
            return None
        self.requests += 1
        self.advance(now)
        reply = self._handle(request.commands, now)
        # Group and broadcast commands run on every pump but nobody answers (they would collide).
        return reply if len(switches) == 1 else None

    def _handle(self, text: str, now: float) -> bytes:
        try:
            commands = codec.parse_commands(text)
        except CommandSyntaxError:
            return self.reply(error=ErrorCode.INVALID_COMMAND)
        if not commands:
            return self.reply()
        letters = [c.letter for c in commands]
        if letters[0] in codec.REPORT_COMMANDS:
            return self._report(commands) if len(commands) == 1 else self.reply(error=2)
        if letters in (["T"], ["T", "R"]):
            self.terminate(now)
            return self.reply()
        if self.moving:
            if all(letter == "V" for letter in letters[:-1]) and letters[-1] in "VR":
                # The top speed may change during a move (it applies from the next move here).
                return self._set_speeds_on_the_fly([c for c in commands if c.letter == "V"])
            return self.reply(error=ErrorCode.COMMAND_OVERFLOW)
        if letters == ["X"]:
            return self._run(list(self.last_program), now)
        if any(letter not in program.RUNNABLE and letter != "R" for letter in letters) or (
            "R" in letters[:-1]
        ):
            self.error = ErrorCode.INVALID_COMMAND
            return self.reply()
        if letters[-1] != "R":
            self.buffer.extend(commands)
            return self.reply()
        commands, self.buffer = self.buffer + commands[:-1], []
        return self._run(commands, now)

    def _run(self, commands: list[Command], now: float) -> bytes:
        try:
            structured = program.structure(commands)
        except program.SequenceError:
            self.error = ErrorCode.INVALID_SEQUENCE
            return self.reply()
        if program.first_motion(commands) == "move" and self.blocked_by != ErrorCode.NONE:
            # A move before a good initialisation is refused whole, and the reason answered at once.
            self.error = self.blocked_by
            return self.reply()
        self.last_program = commands
        self.error = ErrorCode.NONE
        self._program = program.unroll(structured)
        self._cursor = now
        # The answer goes out as the string starts: an operand error further on shows only in a later
        # Q, as the XP 3000 manual's example [A4000R] says.
        reply = codec.encode_reply(False)
        self.advance(now)
        return reply

    def _set_speeds_on_the_fly(self, commands: list[Command]) -> bytes:
        for command in commands:
            if not self._apply_setting(command):
                return self.reply(error=ErrorCode.INVALID_OPERAND)
        return self.reply()

    def _report(self, commands: list[Command]) -> bytes:
        command = commands[0]
        letter, n = command.letter, command.operand
        if letter == "Q":
            return self.reply()
        if letter == "&":
            return self.reply(self.firmware)
        if letter == "F":
            return self.reply("1" if self.buffer else "0")
        if letter == "#":
            return self.reply("5A3C")
        if letter == "*":
            return self.reply("240")
        reports: dict[int, Callable[[], Any]] = {
            0: self.reported_position,
            1: lambda: round(self.profile.start),
            2: lambda: round(self.profile.top),
            3: lambda: round(self.profile.cutoff),
            4: self.reported_position,
            6: lambda: self.valve,
            10: lambda: int(bool(self.buffer)),
            12: lambda: self.backlash,
            13: lambda: 0,
            14: lambda: 0,
            15: lambda: self.counters["inits"],
            16: lambda: self.counters["plunger_moves"],
            17: lambda: self.counters["valve_moves"],
            23: lambda: self.firmware,
            29: lambda: int(self.error),
            76: lambda: f"{self.valve_ports}-port distribution valve, {self.syringe_volume_ul:g} uL syringe",
        }
        report = reports.get(0 if n is None else n)
        if report is None:
            return self.reply(error=ErrorCode.INVALID_COMMAND)
        return self.reply(str(report()))

    def terminate(self, now: float) -> None:
        """``T``: stop where the plunger is; the rest of the string is dropped."""
        self.advance(now)
        current, self._current, self._program = self._current, None, None
        if current is not None and current.kind == "init":
            self.initialised, self.blocked_by = False, ErrorCode.NOT_INITIALISED
        elif current is not None and current.kind == "valve":
            self.valve = current.target

    # -- running programs ------------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Bring the pump to simulated time ``now``: finish due commands, start the next ones."""
        instant = 0
        while True:
            current = self._current
            if current is None:
                if self._program is None:
                    return
                command = next(self._program, None)
                if command is None:
                    self._program = None
                    return
                self._begin(command, self._cursor)
                if self._current is None:
                    instant += 1
                    if instant > MAX_INSTANT_COMMANDS:
                        self._stop(ErrorCode.INVALID_SEQUENCE)
                continue
            instant = 0
            end = current.start + current.duration
            if current.kind == "plunger":
                self._follow_plunger(current, min(now, end))
            if now < end:
                return
            self._current, self._cursor = None, end
            self._finish(current)

    def _stop(self, error: ErrorCode) -> None:
        self.error = error
        self._program = None
        self._current = None

    def _begin(self, command: Command, start: float) -> None:
        letter = command.letter
        if letter in program.SETTINGS:
            if not self._apply_setting(command):
                self._stop(ErrorCode.INVALID_OPERAND)
        elif letter == "M":
            ms = command.operand or 0
            if not codec.DELAY_MS_RANGE[0] <= ms <= codec.DELAY_MS_RANGE[1]:
                self._stop(ErrorCode.INVALID_OPERAND)
            elif ms:
                self._current = Running(command, "delay", start, ms / 1000)
        elif letter in program.INITS:
            self._begin_init(command, start)
        elif not self.initialised:
            self._stop(self.blocked_by)
        elif letter in program.VALVE_MOVES:
            self._begin_valve(command, start)
        else:
            self._begin_plunger(command, start)

    def _apply_setting(self, command: Command) -> bool:
        letter, n = command.letter, command.operand
        ranges = {
            "V": codec.TOP_SPEED_RANGE,
            "v": codec.START_SPEED_RANGE,
            "c": codec.CUTOFF_SPEED_RANGE,
            "L": codec.SLOPE_RANGE,
            "S": (0, len(codec.SPEED_CODES) - 1),
            "N": (0, 2),
            "K": (0, 31),
            "k": (0, 640),
        }
        low, high = ranges[letter]
        if n is None or not low <= n <= high:
            return False
        p = self.profile
        if letter == "V":
            self.profile = SpeedProfile(p.start, n, p.cutoff, p.slope)
        elif letter == "v":
            self.profile = SpeedProfile(n, p.top, p.cutoff, p.slope)
        elif letter == "c":
            self.profile = SpeedProfile(p.start, p.top, n, p.slope)
        elif letter == "L":
            self.profile = SpeedProfile(p.start, p.top, p.cutoff, n)
        elif letter == "S":
            self.profile = SpeedProfile(p.start, codec.SPEED_CODES[n], p.cutoff, p.slope)
        elif letter == "N":
            self.mode = n
        elif letter == "K":
            self.backlash = n
        return True

    def _begin_init(self, command: Command, start: float) -> None:
        force, in_port, out_port = [*command.operands, None, None, None][:3]
        ports_ok = all(p is None or 0 <= p <= self.valve_ports for p in (in_port, out_port))
        if force not in (None, 0, 1, 2, *range(10, 41)) or not ports_ok:
            self._stop(ErrorCode.INVALID_OPERAND)
            return
        self.initialised, self.blocked_by = False, ErrorCode.NOT_INITIALISED
        self.counters["inits"] += 1
        running = Running(command, "init", start, self.init_duration_s)
        if command.letter == "W":  # plunger only: the valve stays where it is
            running.target = running.origin = self.valve
        else:  # origin: the input port the valve is left at
            running.target, running.origin = out_port or self.init_output_port, in_port or 1
        if self._fires("init-failure"):
            self.log.info("pump %s: fault init-failure", self.address)
            running.fault = ErrorCode.INIT_FAILURE
        self._current = running

    def _begin_valve(self, command: Command, start: float) -> None:
        n = command.operand
        if command.letter == "B":
            target = BYPASS
        elif n is None:
            target = 1 if command.letter == "I" else self.valve_ports
        elif 1 <= n <= self.valve_ports:
            target = n
        else:
            self._stop(ErrorCode.INVALID_OPERAND)
            return
        if target == self.valve:
            return
        self.counters["valve_moves"] += 1
        running = Running(command, "valve", start, self.valve_switch_s, target=target)
        if self._fires("valve-overload"):
            self.log.info("pump %s: fault valve-overload", self.address)
            running.fault = ErrorCode.VALVE_OVERLOAD
        self._current = running

    def _begin_plunger(self, command: Command, start: float) -> None:
        letter, n = command.letter, command.operand
        scale = FINE // codec.increments_per_stroke(self.mode)
        stroke = codec.increments_per_stroke(self.mode)
        here = self.reported_position()
        target = {"a": n, "p": None if n is None else here + n, "d": None if n is None else here - n}[
            letter.lower()
        ]
        if n is None or target is None or not 0 <= target <= stroke:
            self._stop(ErrorCode.INVALID_OPERAND)
            return
        if self.valve == BYPASS:
            self._stop(ErrorCode.PLUNGER_MOVE_NOT_ALLOWED)
            return
        fine_target = target * scale
        distance = abs(fine_target - self.position) / FINE_PER_HALF_STEP
        if distance == 0:
            return
        self.counters["plunger_moves"] += 1
        running = Running(
            command,
            "plunger",
            start,
            self.profile.move_time(distance),
            busy=letter.isupper(),
            origin=self.position,
            direction=1 if fine_target > self.position else -1,
            half_steps=distance,
            profile=self.profile,
            target=fine_target,
        )
        if self._fires("plunger-overload"):
            # The plunger stalls half-way through the move.
            self.log.info("pump %s: fault plunger-overload", self.address)
            running.fault = ErrorCode.PLUNGER_OVERLOAD
            running.duration /= 2
        self._current = running

    def _finish(self, done: Running) -> None:
        if done.fault:
            self.initialised, self.blocked_by = False, done.fault
            if done.fault == ErrorCode.INIT_FAILURE:
                self.blocked_by = ErrorCode.NOT_INITIALISED
            self._stop(done.fault)
            return
        if done.kind == "valve":
            self.valve = done.target
        elif done.kind == "plunger":
            self._flow_to(float(done.target))
        elif done.kind == "init":
            # Initialising pushes the plunger home through the output port, then opens the input port.
            self.valve = done.target
            self._flow_to(0.0)
            self.valve = done.origin
            self.initialised, self.blocked_by = True, ErrorCode.NONE

    # -- liquid ----------------------------------------------------------------------------------
    def _follow_plunger(self, move: Running, t: float) -> None:
        assert move.profile is not None
        covered = move.profile.distance_at(move.half_steps, t - move.start) * FINE_PER_HALF_STEP
        self._flow_to(move.origin + move.direction * covered)

    def _flow_to(self, position: float) -> None:
        """Move the plunger to ``position`` (fine units), moving liquid through the open port."""
        delta_ul = (position - self.position) / FINE * self.syringe_volume_ul
        before_ul = self.plunger_volume_ul()
        self.position = position
        if abs(delta_ul) < 1e-12:
            return
        holder = self.holders.get(self.valve)
        if delta_ul > 0:
            if holder is not None:  # an unconnected port draws air
                self._add(holder.take(delta_ul))
        else:
            # Liquid leaves in proportion to what the syringe holds (the rest is air).
            fraction = min(1.0, -delta_ul / before_ul) if before_ul > 0 else 0.0
            out = self._remove(fraction)
            if holder is not None:
                holder.put(out)
            elif out.volume_ul > 0:
                self.log.warning("pump %s: %.1f µL out of unconnected port %s", self.address, out.volume_ul,
                                 self.valve)  # fmt: skip

    def _add(self, portion: Portion) -> None:
        self.syringe.volume_ul += portion.volume_ul
        for species, amount in portion.amounts.items():
            self.syringe.amounts[species] = self.syringe.amounts.get(species, 0.0) + amount
        merge(self.syringe.sources, portion.sources)
        self.drawn_ul += portion.volume_ul

    def _remove(self, fraction: float) -> Portion:
        amounts = {s: a * fraction for s, a in self.syringe.amounts.items()}
        out = Portion(
            self.syringe.volume_ul * fraction, amounts, sources=scaled(self.syringe.sources, fraction)
        )
        self.syringe.volume_ul -= out.volume_ul
        for species, amount in out.amounts.items():
            self.syringe.amounts[species] -= amount
        for origin, volume in out.sources.items():
            self.syringe.sources[origin] -= volume
        self.pushed_ul[self.valve] = self.pushed_ul.get(self.valve, 0.0) + out.volume_ul
        return out

    def describe(self) -> dict[str, Any]:
        """The syringe and the liquid the pump moved, by its own accounting."""
        return {
            "plunger_ul": self.plunger_volume_ul(),
            "liquid_ul": self.syringe.volume_ul,
            "sources": {o: v for o, v in self.syringe.sources.items() if v > 1e-12},
            "valve": self.valve,
            "drawn_ul": self.drawn_ul,
            "pushed_ul": {str(port): volume for port, volume in sorted(self.pushed_ul.items())},
            "initialised": self.initialised,
        }
