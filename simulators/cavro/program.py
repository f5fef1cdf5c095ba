"""Command strings as programs: loop structure (``g`` … ``G n``) and what a pump may accept.

Kept apart from the pump model so the rules about which strings are refused at once (error 2,
4) and which are run read in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from drivers.cavro.codec import Command

#: Letters a distribution-valve XCalibur runs (plunger, valve, speeds, delays, loops, initialisation).
PLUNGER_MOVES = frozenset("AaPpDd")
VALVE_MOVES = frozenset("IOB")
INITS = frozenset("ZYW")
SETTINGS = frozenset("VvcLSNKk")
RUNNABLE = PLUNGER_MOVES | VALVE_MOVES | INITS | SETTINGS | frozenset("Mg G".replace(" ", ""))
MAX_LOOP_DEPTH = 10


class SequenceError(ValueError):
    """A loop structure the pump refuses (error 4)."""


@dataclass
class Loop:
    body: list[Command | Loop] = field(default_factory=list)
    #: None or 0 repeats until terminated (``G`` alone, ``G0``).
    count: int | None = None


def structure(commands: list[Command]) -> list[Command | Loop]:
    """Nest ``g`` … ``G`` pairs; a ``G`` without its ``g`` repeats from the start of the string."""
    root: list[Command | Loop] = []
    stack: list[list[Command | Loop]] = [root]
    for command in commands:
        if command.letter == "g":
            if len(stack) > MAX_LOOP_DEPTH:
                raise SequenceError(f"loops nested deeper than {MAX_LOOP_DEPTH}")
            loop = Loop()
            stack[-1].append(loop)
            stack.append(loop.body)
        elif command.letter == "G":
            if len(stack) == 1:
                body, root[:] = list(root), []
                root.append(Loop(body, command.operand))
            else:
                stack.pop()
                loop = stack[-1][-1]
                assert isinstance(loop, Loop)
                loop.count = command.operand
        else:
            stack[-1].append(command)
    if len(stack) > 1:
        raise SequenceError("a loop start 'g' without its 'G'")
    return root


def unroll(items: list[Command | Loop]) -> Iterator[Command]:
    """The commands in execution order; endless loops yield forever (the pump stops them with T)."""
    for item in items:
        if isinstance(item, Loop):
            done = 0
            while not item.count or done < item.count:
                yield from unroll(item.body)
                done += 1
        else:
            yield item


def first_motion(commands: list[Command]) -> str | None:
    """'init' or 'move', whichever a string does first (decides errors 7/9/10 before running it)."""
    for command in commands:
        if command.letter in INITS:
            return "init"
        if command.letter in PLUNGER_MOVES or command.letter in VALVE_MOVES:
            return "move"
    return None
