"""URScript source to a syntax tree: the language subset programs sent to the script ports use.

Covers what ``ur_rtde``'s control script and our own driver's programs are written in: ``def`` and
``thread`` definitions, ``global``/``local`` declarations, ``if``/``elif``/``else``, ``while``,
``break``, ``continue``, ``return``, ``run``/``kill``/``join``, ``enter_critical``/``exit_critical``,
``halt``, expressions over numbers, booleans, strings, lists and poses (``p[...]``), calls with
keyword arguments and indexing. Blocks end with ``end``; indentation means nothing.

URScript is not line-oriented where an expression is incomplete: ``ur_rtde`` injects its register
offset right after a comment's line end (``global x = # offset\\n0``), which the controller reads as
``global x = 0``. So line ends are skipped wherever an operand is expected, and inside brackets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_SOURCE = 1_000_000  # characters; a control script is about 60 kB
MAX_DEPTH = 200  # nesting of blocks and expressions


class CompileError(ValueError):
    """A program the controller would refuse to compile (the message says where and why)."""


# -- tokens -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # NAME, NUMBER, STRING, OP, NEWLINE, END (of input)
    text: str
    line: int


_TOKEN = re.compile(
    r"""(?P<space>[ \t\r\f]+)
      | (?P<comment>\#[^\n]*)
      | (?P<newline>\n)
      | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<string>"[^"\n]*"|'[^'\n]*')
      | (?P<op>==|!=|<=|>=|[-+*/%<>=()\[\],:])
    """,
    re.VERBOSE,
)


def tokenize(source: str) -> list[Token]:
    if len(source) > MAX_SOURCE:
        raise CompileError(f"program of {len(source)} characters is over the {MAX_SOURCE} limit")
    tokens: list[Token] = []
    line, depth, position = 1, 0, 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise CompileError(f"line {line}: unexpected character {source[position]!r}")
        kind = match.lastgroup
        text = match.group()
        position = match.end()
        if kind == "newline":
            if depth == 0 and tokens and tokens[-1].kind != "NEWLINE":
                tokens.append(Token("NEWLINE", "\n", line))
            line += 1
        elif kind == "number":
            tokens.append(Token("NUMBER", text, line))
        elif kind == "name":
            tokens.append(Token("NAME", text, line))
        elif kind == "string":
            tokens.append(Token("STRING", text[1:-1], line))
        elif kind == "op":
            if text in "([":
                depth += 1
            elif text in ")]":
                depth -= 1
            if depth < 0:
                raise CompileError(f"line {line}: unbalanced {text!r}")
            tokens.append(Token("OP", text, line))
    tokens.append(Token("NEWLINE", "\n", line))
    tokens.append(Token("END", "", line))
    return tokens


# -- the tree -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    line: int


@dataclass(frozen=True)
class Literal(Node):
    value: bool | int | float | str


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class ListDisplay(Node):
    items: tuple[Expression, ...]


@dataclass(frozen=True)
class PoseDisplay(Node):
    items: tuple[Expression, ...]


@dataclass(frozen=True)
class Call(Node):
    function: str
    args: tuple[Expression, ...]
    keywords: tuple[tuple[str, Expression], ...]


@dataclass(frozen=True)
class Index(Node):
    target: Expression
    index: Expression


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Expression


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Expression
    right: Expression


@dataclass(frozen=True)
class Run(Node):
    thread: str


Expression = Literal | Name | ListDisplay | PoseDisplay | Call | Index | Unary | Binary | Run


@dataclass(frozen=True)
class Assign(Node):
    target: Name | Index
    value: Expression
    scope: str | None = None  # "global", "local" or None (free)


@dataclass(frozen=True)
class Evaluate(Node):
    expression: Expression


@dataclass(frozen=True)
class If(Node):
    branches: tuple[tuple[Expression, tuple[Statement, ...]], ...]
    otherwise: tuple[Statement, ...]


@dataclass(frozen=True)
class While(Node):
    condition: Expression
    body: tuple[Statement, ...]


@dataclass(frozen=True)
class Jump(Node):
    kind: str  # break, continue, halt, pass, enter_critical, exit_critical


@dataclass(frozen=True)
class Return(Node):
    value: Expression | None


@dataclass(frozen=True)
class Kill(Node):
    handle: Expression


@dataclass(frozen=True)
class Join(Node):
    handle: Expression


@dataclass(frozen=True)
class Function(Node):
    name: str
    params: tuple[tuple[str, Expression | None], ...]
    body: tuple[Statement, ...]
    thread: bool = False


Statement = Assign | Evaluate | If | While | Jump | Return | Kill | Join | Function


@dataclass(frozen=True)
class Program:
    name: str
    body: tuple[Statement, ...]
    functions: dict[str, Function] = field(default_factory=dict)
    threads: dict[str, Function] = field(default_factory=dict)
    calls: frozenset[str] = frozenset()


# -- the parser ---------------------------------------------------------------------------------

_KEYWORDS = {"def", "thread", "sec", "end", "if", "elif", "else", "while", "global", "local", "return",
             "break", "continue", "run", "kill", "join", "and", "or", "xor", "not", "True", "False",
             "enter_critical", "exit_critical", "halt", "pass"}  # fmt: skip
_COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.tokens = tokens
        self.position = 0
        self.depth = 0
        #: Names bound in each enclosing function (so ``p[0]`` indexes a variable ``p``, not a pose).
        self.bound: list[set[str]] = [set()]
        self.functions: dict[str, Function] = {}
        self.threads: dict[str, Function] = {}
        self.calls: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------
    @property
    def token(self) -> Token:
        return self.tokens[self.position]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.position + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.token
        self.position += 1
        return token

    def at(self, kind: str, text: str | None = None) -> bool:
        return self.token.kind == kind and (text is None or self.token.text == text)

    def expect(self, kind: str, text: str | None = None) -> Token:
        if not self.at(kind, text):
            wanted = text or kind.lower()
            got = self.token.text if self.token.kind not in ("NEWLINE", "END") else self.token.kind.lower()
            raise CompileError(f"line {self.token.line}: expected {wanted!r}, got {got!r}")
        return self.advance()

    def skip_newlines(self) -> None:
        while self.at("NEWLINE"):
            self.advance()

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CompileError(f"line {self.token.line}: nested more than {MAX_DEPTH} deep")

    # -- program ---------------------------------------------------------------------------
    def program(self) -> Program:
        self.skip_newlines()
        if self.at("NAME", "def") or self.at("NAME", "sec"):
            self.advance()
            name = self.expect("NAME").text
            self.expect("OP", "(")
            self.expect("OP", ")")
            self.expect("OP", ":")
            body = self.block()
            self.expect("NAME", "end")
            self.skip_newlines()
            if not self.at("END"):
                raise CompileError(f"line {self.token.line}: text after the end of program {name!r}")
        else:
            name = "<unnamed>"
            body = self.block()
            if not self.at("END"):
                raise CompileError(f"line {self.token.line}: unexpected {self.token.text!r}")
        return Program(name, body, self.functions, self.threads, frozenset(self.calls))

    def block(self, until: tuple[str, ...] = ("end",)) -> tuple[Statement, ...]:
        statements: list[Statement] = []
        while True:
            self.skip_newlines()
            if self.at("END") or (self.at("NAME") and self.token.text in until):
                return tuple(statements)
            statements.append(self.statement())

    # -- statements ------------------------------------------------------------------------
    def statement(self) -> Statement:
        token = self.token
        word = token.text if token.kind == "NAME" else ""
        line = token.line
        self.nested()
        try:
            if word in ("def", "thread"):
                return self.function(thread=word == "thread")
            if word == "if":
                return self.if_statement()
            if word == "while":
                self.advance()
                condition = self.expression()
                self.expect("OP", ":")
                body = self.block()
                self.expect("NAME", "end")
                return While(line, condition, body)
            if word in ("global", "local"):
                self.advance()
                target = self.expect("NAME").text
                self.expect("OP", "=")
                (self.bound[0] if word == "global" else self.bound[-1]).add(target)
                return Assign(line, Name(line, target), self.expression(), word)
            if word in ("break", "continue", "halt", "pass", "enter_critical", "exit_critical"):
                self.advance()
                return Jump(line, word)
            if word == "return":
                self.advance()
                if self.at("NEWLINE") or (self.at("NAME") and self.token.text in ("end", "elif", "else")):
                    return Return(line, None)
                return Return(line, self.expression())
            if word in ("kill", "join"):
                self.advance()
                handle = self.expression()
                return Kill(line, handle) if word == "kill" else Join(line, handle)
            if word in ("end", "elif", "else"):
                raise CompileError(f"line {line}: {word!r} without a block to close")
            expression = self.expression()
            if self.at("OP", "="):
                self.advance()
                if not isinstance(expression, Name | Index):
                    raise CompileError(f"line {line}: cannot assign to this expression")
                if isinstance(expression, Name):
                    self.bound[-1].add(expression.id)
                return Assign(line, expression, self.expression())
            return Evaluate(line, expression)
        finally:
            self.depth -= 1

    def function(self, *, thread: bool) -> Function:
        line = self.advance().line
        name = self.expect("NAME").text
        if name in _KEYWORDS:
            raise CompileError(f"line {line}: {name!r} is a keyword")
        self.expect("OP", "(")
        params: list[tuple[str, Expression | None]] = []
        while not self.at("OP", ")"):
            param = self.expect("NAME").text
            default = None
            if self.at("OP", "="):
                self.advance()
                default = self.expression()
            params.append((param, default))
            if not self.at("OP", ")"):
                self.expect("OP", ",")
        self.advance()
        if thread and params:
            raise CompileError(f"line {line}: thread {name!r} cannot take parameters")
        self.expect("OP", ":")
        self.bound.append({p for p, _ in params})
        try:
            body = self.block()
        finally:
            self.bound.pop()
        self.expect("NAME", "end")
        definition = Function(line, name, tuple(params), body, thread)
        table = self.threads if thread else self.functions
        if name in self.functions or name in self.threads:
            raise CompileError(f"line {line}: {name!r} is defined twice")
        table[name] = definition
        return definition

    def if_statement(self) -> If:
        line = self.advance().line
        branches: list[tuple[Expression, tuple[Statement, ...]]] = []
        condition = self.expression()
        self.expect("OP", ":")
        branches.append((condition, self.block(("end", "elif", "else"))))
        otherwise: tuple[Statement, ...] = ()
        while True:
            if self.at("NAME", "elif"):
                self.advance()
                condition = self.expression()
                self.expect("OP", ":")
                branches.append((condition, self.block(("end", "elif", "else"))))
            elif self.at("NAME", "else"):
                self.advance()
                self.expect("OP", ":")
                otherwise = self.block()
                self.expect("NAME", "end")
                break
            else:
                self.expect("NAME", "end")
                break
        return If(line, tuple(branches), otherwise)

    # -- expressions -----------------------------------------------------------------------
    def expression(self) -> Expression:
        self.nested()
        try:
            return self.disjunction()
        finally:
            self.depth -= 1

    def _binary(self, operators: set[str], operand: str) -> Expression:
        parse = getattr(self, operand)
        left = parse()
        while (self.at("OP") or self.at("NAME")) and self.token.text in operators:
            op = self.advance()
            self.skip_newlines()
            left = Binary(op.line, op.text, left, parse())
        return left

    def disjunction(self) -> Expression:
        return self._binary({"or", "xor"}, "conjunction")

    def conjunction(self) -> Expression:
        return self._binary({"and"}, "negation")

    def negation(self) -> Expression:
        if self.at("NAME", "not"):
            line = self.advance().line
            self.skip_newlines()
            self.nested()
            try:
                return Unary(line, "not", self.negation())
            finally:
                self.depth -= 1
        return self.comparison()

    def comparison(self) -> Expression:
        return self._binary(_COMPARISONS, "sum")

    def sum(self) -> Expression:
        return self._binary({"+", "-"}, "product")

    def product(self) -> Expression:
        return self._binary({"*", "/", "%"}, "unary")

    def unary(self) -> Expression:
        self.skip_newlines()
        if self.at("OP", "-") or self.at("OP", "+"):
            op = self.advance()
            self.nested()
            try:
                return Unary(op.line, op.text, self.unary())
            finally:
                self.depth -= 1
        return self.postfix()

    def postfix(self) -> Expression:
        value = self.atom()
        while self.at("OP", "["):
            line = self.advance().line
            index = self.expression()
            self.expect("OP", "]")
            value = Index(line, value, index)
        return value

    def atom(self) -> Expression:
        token = self.token
        line = token.line
        if token.kind == "NUMBER":
            self.advance()
            text = token.text
            number: int | float = float(text) if any(c in text for c in ".eE") else int(text)
            return Literal(line, number)
        if token.kind == "STRING":
            self.advance()
            return Literal(line, token.text)
        if self.at("OP", "("):
            self.advance()
            value = self.expression()
            self.expect("OP", ")")
            return value
        if self.at("OP", "["):
            self.advance()
            return ListDisplay(line, self.items("]"))
        if token.kind != "NAME":
            got = token.text if token.kind not in ("NEWLINE", "END") else token.kind.lower()
            raise CompileError(f"line {line}: expected a value, got {got!r}")
        word = token.text
        if word in ("True", "False"):
            self.advance()
            return Literal(line, word == "True")
        if word == "run":
            self.advance()
            thread = self.expect("NAME").text
            self.expect("OP", "(")
            self.expect("OP", ")")
            self.calls.add(thread)
            return Run(line, thread)
        if word in _KEYWORDS:
            raise CompileError(f"line {line}: unexpected {word!r}")
        self.advance()
        if word == "p" and self.at("OP", "[") and not self._is_bound("p"):
            self.advance()
            items = self.items("]")
            if len(items) != 6:
                raise CompileError(f"line {line}: a pose has 6 elements, not {len(items)}")
            return PoseDisplay(line, items)
        if self.at("OP", "("):
            self.advance()
            args: list[Expression] = []
            keywords: list[tuple[str, Expression]] = []
            while not self.at("OP", ")"):
                if self.at("NAME") and self.peek().kind == "OP" and self.peek().text == "=":
                    key = self.advance().text
                    self.advance()
                    keywords.append((key, self.expression()))
                elif keywords:
                    raise CompileError(f"line {line}: {word}(): positional argument after a keyword argument")
                else:
                    args.append(self.expression())
                if not self.at("OP", ")"):
                    self.expect("OP", ",")
            self.advance()
            self.calls.add(word)
            return Call(line, word, tuple(args), tuple(keywords))
        return Name(line, word)

    def items(self, closing: str) -> tuple[Expression, ...]:
        items: list[Expression] = []
        while not self.at("OP", closing):
            items.append(self.expression())
            if not self.at("OP", closing):
                self.expect("OP", ",")
        self.advance()
        return tuple(items)

    def _is_bound(self, name: str) -> bool:
        return name in self.bound[-1] or name in self.bound[0]


def parse(source: str) -> Program:
    """Compile ``source``; CompileError names the line and what is wrong."""
    try:
        return _Parser(tokenize(source)).program()
    except RecursionError:
        raise CompileError("program nested too deeply") from None
