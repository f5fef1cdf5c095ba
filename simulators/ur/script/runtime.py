"""Running a compiled URScript program in simulated time: threads, scoping, blocking calls.

Each URScript thread (the program itself, and every ``run name()``) is a Python generator that
yields when the URScript thread blocks: ``sync()`` (the next control step), a motion or ``sleep``
(a time), ``join`` (another thread's end). Nothing runs in the background: ``advance(now)`` runs
every thread due by ``now``, timed wake-ups in time order, so whoever looks at the controller
first brings the program up to date (as the rest of the simulator computes state from the clock).

Threads waiting in ``sync()`` are run once per ``advance`` (if a step has passed), not once per
2 ms step in between: a program that polls registers reacts at the rate it is observed (RTDE
packages, dashboard queries), which keeps a sped-up simulation cheap. Timed waits are exact.

Scoping follows the URScript manual: a free variable assigned in a function is the global of
that name if one exists, otherwise a local; ``global``/``local`` force it; the program's own
top level is global. Lists and poses are values (assignment copies them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from simulators.ur.script.syntax import (
    Assign,
    Binary,
    Call,
    Evaluate,
    Expression,
    Function,
    If,
    Index,
    Join,
    Jump,
    Kill,
    ListDisplay,
    Literal,
    Name,
    PoseDisplay,
    Program,
    Return,
    Run,
    Statement,
    Unary,
    While,
)

log = logging.getLogger(__name__)

#: Statements one thread may run without blocking before the controller gives up on it.
MAX_STATEMENTS = 200_000
#: Thread activations one ``advance`` may make at a single moment (runaway ``run`` loops).
MAX_ACTIVATIONS = 10_000
MAX_THREADS = 64
INT32 = 1 << 32


class ScriptRuntimeError(RuntimeError):
    """What the controller reports as a runtime error: the program stops."""


class Pose(list[float]):
    """A URScript pose ``p[x, y, z, rx, ry, rz]`` (a list, but a different type in the language)."""


@dataclass(frozen=True)
class ThreadHandle:
    id: int
    name: str


@dataclass(frozen=True)
class Wait:
    """Why a thread gave up control: until a time, the next step, or another thread's end."""

    until: float | None = None
    step: bool = False
    thread: int | None = None


Blocking = Generator[Wait, None, Any]


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    def __init__(self, value: Any):
        self.value = value


class ProgramStopped(Exception):
    """A builtin ended the program (``protective_stop()``, ``halt``): no statement after it runs."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Frame:
    variables: dict[str, Any]
    program_level: bool = False


@dataclass
class ScriptThread:
    id: int
    name: str
    body: Generator[Wait, None, None]
    wake_at: float | None = None  # a timed wait (motion, sleep) or a fresh start
    sync_at: float | None = None  # waiting in sync(): due from this time on
    joining: int | None = None
    statements: int = 0


class Builtin:
    """A function of the controller's library: ``call(context, *args, **kwargs)``.

    ``blocking`` functions are generators (they yield Waits and return their value)."""

    def __init__(self, function: Callable[..., Any], *, blocking: bool = False):
        self.function = function
        self.blocking = blocking


@dataclass
class Context:
    """What a builtin sees: the runtime (time, controller) and the thread calling it."""

    runtime: Runtime
    thread: ScriptThread

    @property
    def time(self) -> float:
        return self.runtime.time


@dataclass
class Runtime:
    program: Program
    library: Mapping[str, Builtin]
    step_s: float
    #: Called with (time, reason) once the program has ended, whatever ended it.
    on_end: Callable[[float, str], None] = lambda _time, _reason: None
    #: Called with (time, thread id) when a thread is killed (its motion must stop).
    on_kill: Callable[[float, int], None] = lambda _time, _thread: None
    time: float = 0.0
    globals: dict[str, Any] = field(default_factory=dict)
    threads: dict[int, ScriptThread] = field(default_factory=dict)
    ended_at: float | None = None
    error: str | None = None
    _next_id: int = 1
    _current: ScriptThread | None = None

    @property
    def name(self) -> str:
        return self.program.name

    @property
    def running(self) -> bool:
        return self.ended_at is None

    # -- lifetime --------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self.time = now
        frame = Frame(self.globals, program_level=True)
        self._spawn(self.program.name, self._body(self.program.body, frame), now)
        self.advance(now)

    def end(self, time: float, reason: str) -> None:
        """Stop the program at ``time`` (a stop, an error, the main thread's end)."""
        if self.ended_at is not None:
            return
        self.ended_at = time
        self.threads.clear()
        self.on_end(time, reason)

    def advance(self, now: float, stop_at: Callable[[], float | None] = lambda: None) -> None:
        """Run every thread due by ``now``; ``stop_at`` gives when the program must end (a safety stop)."""
        activations = 0
        while self.ended_at is None:
            timed = [t for t in self.threads.values() if t.wake_at is not None and t.wake_at <= now]
            due = min(timed, key=lambda t: (t.wake_at, t.id)) if timed else None
            halt = stop_at()
            if (
                halt is not None
                and halt <= now
                and (due is None or due.wake_at is None or halt <= due.wake_at)
            ):
                self.end(max(halt, self.time), "stopped by the safety system")
                return
            if due is None:
                waiting = [t for t in self.threads.values() if t.sync_at is not None and t.sync_at <= now]
                if not waiting:
                    self.time = max(self.time, now)
                    return
                self.time = max(self.time, now)
                for thread in sorted(waiting, key=lambda t: t.id):
                    if self.ended_at is None and thread.id in self.threads:
                        self._resume(thread)
                activations += len(waiting)
            else:
                assert due.wake_at is not None
                self.time = max(self.time, due.wake_at)
                self._resume(due)
                activations += 1
            if activations > MAX_ACTIVATIONS:
                self._fail("too many thread activations without time passing")

    def _spawn(self, name: str, body: Generator[Wait, None, None], at: float) -> ScriptThread:
        if len(self.threads) >= MAX_THREADS:
            raise ScriptRuntimeError(f"more than {MAX_THREADS} threads")
        thread = ScriptThread(self._next_id, name, body, wake_at=at)
        self._next_id += 1
        self.threads[thread.id] = thread
        return thread

    def _resume(self, thread: ScriptThread) -> None:
        thread.wake_at = thread.sync_at = None
        thread.statements = 0
        self._current = thread
        try:
            wait = next(thread.body)
        except StopIteration:
            self._finish(thread)
            return
        except ProgramStopped as stopped:
            self.end(self.time, stopped.reason)
            return
        except ScriptRuntimeError as exc:
            self._fail(f"{thread.name}: {exc}")
            return
        except (
            Exception
        ) as exc:  # a defect of the simulator's own: the program stops, visibly, the server lives
            log.exception("internal error running %s", self.program.name)
            self._fail(f"{thread.name}: internal error of the simulator: {exc!r}")
            return
        finally:
            self._current = None
        if thread.id not in self.threads:  # it killed itself
            return
        if wait.step:
            thread.sync_at = self.time + self.step_s
        elif wait.thread is not None:
            thread.joining = wait.thread
            if wait.thread not in self.threads:
                thread.joining = None
                thread.wake_at = self.time
        else:
            thread.wake_at = wait.until if wait.until is not None else self.time

    def _finish(self, thread: ScriptThread) -> None:
        self.threads.pop(thread.id, None)
        if thread.id == 1:
            self.end(self.time, "finished")
            return
        for other in self.threads.values():
            if other.joining == thread.id:
                other.joining = None
                other.wake_at = self.time

    def _fail(self, message: str) -> None:
        self.error = message
        log.warning("runtime error in %s: %s", self.program.name, message)
        self.end(self.time, f"runtime error: {message}")

    def kill(self, handle: ThreadHandle) -> None:
        thread = self.threads.pop(handle.id, None)
        if thread is None:
            return
        if thread is self._current:
            raise ScriptRuntimeError("a thread cannot kill itself")
        thread.body.close()
        for other in self.threads.values():
            if other.joining == thread.id:
                other.joining = None
                other.wake_at = self.time
        self.on_kill(self.time, thread.id)

    # -- statements ------------------------------------------------------------------------
    def _body(self, statements: tuple[Statement, ...], frame: Frame) -> Generator[Wait, None, None]:
        try:
            yield from self._block(statements, frame)
        except (_Break, _Continue):
            raise ScriptRuntimeError("break or continue outside a loop") from None
        except _Return:
            return

    def _block(self, statements: tuple[Statement, ...], frame: Frame) -> Blocking:
        for statement in statements:
            yield from self._statement(statement, frame)

    def _count(self) -> None:
        thread = self._current
        if thread is not None:
            thread.statements += 1
            if thread.statements > MAX_STATEMENTS:
                raise ScriptRuntimeError(
                    f"thread {thread.name!r} runs {MAX_STATEMENTS} statements without sync()"
                )

    def _statement(self, statement: Statement, frame: Frame) -> Blocking:
        self._count()
        try:
            if isinstance(statement, Assign):
                value = yield from self._evaluate(statement.value, frame)
                yield from self._assign(statement, _copy(value), frame)
            elif isinstance(statement, Evaluate):
                yield from self._evaluate(statement.expression, frame)
            elif isinstance(statement, If):
                for condition, body in statement.branches:
                    if _truth((yield from self._evaluate(condition, frame)), statement.line):
                        yield from self._block(body, frame)
                        break
                else:
                    yield from self._block(statement.otherwise, frame)
            elif isinstance(statement, While):
                while _truth((yield from self._evaluate(statement.condition, frame)), statement.line):
                    self._count()
                    try:
                        yield from self._block(statement.body, frame)
                    except _Break:
                        break
                    except _Continue:
                        continue
            elif isinstance(statement, Jump):
                yield from self._jump(statement)
            elif isinstance(statement, Return):
                value = (
                    None if statement.value is None else (yield from self._evaluate(statement.value, frame))
                )
                raise _Return(value)
            elif isinstance(statement, Kill):
                handle = yield from self._evaluate(statement.handle, frame)
                if isinstance(handle, ThreadHandle):
                    self.kill(handle)
                elif handle != 0:
                    raise ScriptRuntimeError(f"kill: {handle!r} is not a thread")
            elif isinstance(statement, Join):
                handle = yield from self._evaluate(statement.handle, frame)
                if not isinstance(handle, ThreadHandle):
                    raise ScriptRuntimeError(f"join: {handle!r} is not a thread")
                yield Wait(thread=handle.id)
            # Function: definitions are collected at compile time; nothing to do where they stand.
        except ScriptRuntimeError as exc:
            if not str(exc).startswith("line "):
                raise ScriptRuntimeError(f"line {statement.line}: {exc}") from None
            raise

    def _jump(self, statement: Jump) -> Blocking:
        if statement.kind == "break":
            raise _Break
        if statement.kind == "continue":
            raise _Continue
        if statement.kind == "halt":
            raise ProgramStopped("halt")
        # pass; enter_critical/exit_critical: threads switch only where they block, so a critical
        # section between two blocking calls is never interleaved anyway.
        return
        yield  # a generator, like every statement

    def _assign(self, statement: Assign, value: Any, frame: Frame) -> Blocking:
        target = statement.target
        if isinstance(target, Name):
            self._bind(target.id, value, frame, statement.scope)
            return
        container = yield from self._evaluate(target.target, frame)
        index = yield from self._evaluate(target.index, frame)
        _check_index(container, index)
        container[index] = _element(container, value)

    def _bind(self, name: str, value: Any, frame: Frame, scope: str | None) -> None:
        if scope == "global" or frame.program_level:
            self.globals[name] = value
        elif scope == "local" or name in frame.variables or name not in self.globals:
            frame.variables[name] = value
        else:
            self.globals[name] = value

    # -- expressions -----------------------------------------------------------------------
    def _evaluate(self, expression: Expression, frame: Frame) -> Blocking:
        if isinstance(expression, Literal):
            return expression.value
        if isinstance(expression, Name):
            if expression.id in frame.variables:
                return frame.variables[expression.id]
            if expression.id in self.globals:
                return self.globals[expression.id]
            raise ScriptRuntimeError(f"line {expression.line}: variable {expression.id!r} is not defined")
        if isinstance(expression, ListDisplay | PoseDisplay):
            items = []
            for item in expression.items:
                items.append((yield from self._evaluate(item, frame)))
            if isinstance(expression, PoseDisplay):
                return Pose(_number(x, expression.line) for x in items)
            return items
        if isinstance(expression, Index):
            container = yield from self._evaluate(expression.target, frame)
            index = yield from self._evaluate(expression.index, frame)
            _check_index(container, index)
            return container[index]
        if isinstance(expression, Unary):
            operand = yield from self._evaluate(expression.operand, frame)
            if expression.op == "not":
                return not _truth(operand, expression.line)
            number = _number(operand, expression.line)
            return _wrap(-number) if expression.op == "-" else number
        if isinstance(expression, Binary):
            left = yield from self._evaluate(expression.left, frame)
            if expression.op == "and" and not _truth(left, expression.line):
                return False
            if expression.op == "or" and _truth(left, expression.line):
                return True
            right = yield from self._evaluate(expression.right, frame)
            return _binary(expression.op, left, right, expression.line)
        if isinstance(expression, Run):
            definition = self.program.threads.get(expression.thread)
            if definition is None:
                raise ScriptRuntimeError(f"line {expression.line}: no thread named {expression.thread!r}")
            thread = self._spawn(definition.name, self._body(definition.body, Frame({})), self.time)
            return ThreadHandle(thread.id, thread.name)
        assert isinstance(expression, Call)
        args = []
        for arg in expression.args:
            args.append((yield from self._evaluate(arg, frame)))
        keywords = {}
        for key, arg in expression.keywords:
            keywords[key] = yield from self._evaluate(arg, frame)
        return (yield from self._call(expression, args, keywords))

    def _call(self, call: Call, args: list[Any], keywords: dict[str, Any]) -> Blocking:
        definition = self.program.functions.get(call.function)
        if definition is not None:
            return (yield from self._call_function(definition, args, keywords, call.line))
        builtin = self.library.get(call.function)
        if builtin is None:
            raise ScriptRuntimeError(f"line {call.line}: {call.function}() is not defined")
        assert self._current is not None
        context = Context(self, self._current)
        try:
            if builtin.blocking:
                return (yield from builtin.function(context, *args, **keywords))
            return builtin.function(context, *args, **keywords)
        except TypeError as exc:
            raise ScriptRuntimeError(f"line {call.line}: {call.function}(): {exc}") from None
        except ScriptRuntimeError as exc:
            raise ScriptRuntimeError(f"line {call.line}: {call.function}(): {exc}") from None

    def _call_function(
        self, definition: Function, args: list[Any], keywords: dict[str, Any], line: int
    ) -> Blocking:
        if len(args) > len(definition.params):
            raise ScriptRuntimeError(
                f"line {line}: {definition.name}() takes {len(definition.params)} arguments"
            )
        variables: dict[str, Any] = {}
        for (param, _), value in zip(definition.params, args, strict=False):
            variables[param] = _copy(value)
        for key, value in keywords.items():
            if key not in {p for p, _ in definition.params} or key in variables:
                raise ScriptRuntimeError(f"line {line}: {definition.name}(): unexpected argument {key!r}")
            variables[key] = _copy(value)
        frame = Frame(variables)
        for param, default in definition.params:
            if param not in variables:
                if default is None:
                    raise ScriptRuntimeError(f"line {line}: {definition.name}(): missing argument {param!r}")
                variables[param] = yield from self._evaluate(default, frame)
        try:
            yield from self._block(definition.body, frame)
        except _Return as result:
            return result.value
        return None


# -- values -------------------------------------------------------------------------------------


def _copy(value: Any) -> Any:
    if isinstance(value, Pose):
        return Pose(value)
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _truth(value: Any, line: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    raise ScriptRuntimeError(f"line {line}: {value!r} is not a boolean")


def _number(value: Any, line: int) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScriptRuntimeError(f"line {line}: {value!r} is not a number")
    return value


def _wrap(value: int | float) -> int | float:
    """Integers are 32-bit on the controller."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value + (1 << 31)) % INT32 - (1 << 31)
    return value


def _check_index(container: Any, index: Any) -> None:
    if not isinstance(container, list):
        raise ScriptRuntimeError(f"{container!r} cannot be indexed")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(container):
        raise ScriptRuntimeError(f"index {index!r} is out of range 0..{len(container) - 1}")


def _element(container: list[Any], value: Any) -> Any:
    if isinstance(container, Pose):
        return float(_number(value, 0))
    return value


def _binary(op: str, left: Any, right: Any, line: int) -> Any:
    if op in ("and", "or", "xor"):
        a, b = _truth(left, line), _truth(right, line)
        return (a and b) if op == "and" else (a or b) if op == "or" else (a != b)
    if op in ("==", "!="):
        equal = _equal(left, right)
        return equal if op == "==" else not equal
    if isinstance(left, list) or isinstance(right, list):
        return _vector(op, left, right, line)
    a, b = _number(left, line), _number(right, line)
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "+":
        return _wrap(a + b)
    if op == "-":
        return _wrap(a - b)
    if op == "*":
        return _wrap(a * b)
    if b == 0:
        raise ScriptRuntimeError(f"line {line}: division by zero")
    if op == "/":
        return a / b
    return _wrap(a % b)


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, ThreadHandle) or isinstance(right, ThreadHandle):
        return left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return bool(left == right)


def _vector(op: str, left: Any, right: Any, line: int) -> Any:
    """Element-wise + - * / of lists (and of a list with a number), as URScript allows on arrays."""
    if op not in ("+", "-", "*", "/"):
        raise ScriptRuntimeError(f"line {line}: {op} is not defined on lists")
    size = len(left) if isinstance(left, list) else len(right)
    a = left if isinstance(left, list) else [left] * size
    b = right if isinstance(right, list) else [right] * size
    if len(a) != len(b):
        raise ScriptRuntimeError(f"line {line}: lists of different lengths")
    result = [_binary(op, x, y, line) for x, y in zip(a, b, strict=True)]
    return Pose(result) if isinstance(left, Pose) or isinstance(right, Pose) else result
