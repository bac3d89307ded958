"""The condition grammar shared by alert rules, gate criteria and matrix rows (pure: no Flask, no SQL, no clock).

Conditions are tokenized and parsed by hand (never ``eval``)::

    condition  := expr [ "for" NUMBER TIME_UNIT ]
    expr       := and_expr ( "or" and_expr )*
    and_expr   := not_expr ( "and" not_expr )*
    not_expr   := "not" not_expr | comparison
    comparison := sum [ (">" | ">=" | "<" | "<=" | "==" | "!=") sum ]
    sum        := term ( ("+" | "-") term )*
    term       := unary ( ("*" | "/") unary )*
    unary      := "-" unary | NUMBER [ UNIT ] | METRIC | "(" expr ")"
    UNIT       := "%" | "ms" | "s" | "m" | "min" | "h" | "hour" | "hours"

Units are checked when parsing. The caller names the metrics a condition may
read, with their units (the metrics catalogue does; see
``flask_v2rollout/metrics/catalogue.py``). Given only names, a metric's unit
comes from its suffix: ``*_pct``, ``*_rate``, ``*_percentage`` are percent
(0–100, so ``10%`` is 10); ``*_ms`` milliseconds; ``*_s``/``*_seconds``
seconds; ``*_hours``/``*_hours_ago`` hours; anything else is a count. A number
with a unit is converted to the unit of what it is compared with (``1s``
against ``v2_p95_ms`` is 1000); a bare number takes that unit as it is; ``10%``
against a latency or a count is an error, and so is comparing two metrics of
different units.

Missing data: a metric that is missing, ``None`` or NaN makes the comparisons
that read it unknown; ``and``/``or``/``not`` follow three-valued (Kleene) logic.

Statistical metrics: a metric may carry an :class:`Interval` (a confidence
interval) instead of a number. A comparison of an interval with a number is
true when the *whole* interval satisfies it, false when the whole interval
violates it, and unknown otherwise — so ``v2_vs_v1_conversion_pct >= 95%``
passes only when the lower bound reaches 95 % and fails only when the upper
bound is below it. Interval metrics may only be compared directly with numbers
(no arithmetic, never against another interval), which the parser enforces.

The trailing ``for 5m`` is accepted for rule files written before ``for:``
became a rule key; both mean the same.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import yaml

# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a rules file.

    ``rule`` names what is wrong (an alert rule, ``gate/criterion``, a matrix row);
    ``column`` points into ``text`` (0-based) when known; ``file`` is the file it came from.
    """

    rule: str | None
    message: str
    text: str | None = None
    column: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        if self.rule:
            where += f"rule {shown(self.rule)}"
            where += f" (column {self.column + 1})" if self.column is not None else ""
            where += ": "
        out = where + (self.message if len(self.message) <= MAX_MESSAGE else self.message[:MAX_MESSAGE] + "…")
        if self.text is not None:
            excerpt, caret = _excerpt(self.text, self.column)
            out += f"\n    {excerpt}"
            if caret is not None:
                out += "\n    " + " " * caret + "^"
        return out


#: how much of a value or a condition an error message quotes, and the longest message shown
SHOWN = 80
MAX_MESSAGE = 300
#: the longest condition, and the deepest nesting of parentheses, "not" and "-" in one
MAX_CONDITION = 2000
MAX_DEPTH = 32


def shown(value: object) -> str:
    """``repr(value)``, cut to :data:`SHOWN` characters: a huge value never floods an error message."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN - 15]}… ({len(text)} chars)"


def _excerpt(text: str, column: int | None) -> tuple[str, int | None]:
    """At most :data:`SHOWN` characters of ``text`` around ``column``, and the caret's place in them."""
    if len(text) <= SHOWN:
        return text, column
    start = max(0, min((column or 0) - SHOWN // 2, len(text) - SHOWN))
    lead = "…" if start else ""
    tail = "…" if start + SHOWN < len(text) else ""
    return lead + text[start:start + SHOWN] + tail, None if column is None else column - start + len(lead)


class AlertRuleError(ValueError):
    """A rules file failed validation; ``problems`` lists every issue found (nothing was loaded)."""

    def __init__(self, problems: list[Problem], source: str = "<rules>") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(str(p) for p in problems))


#: the largest rule file read, and the deepest nesting of mappings and lists in one
MAX_FILE_BYTES = 1_000_000
MAX_YAML_DEPTH = 32
#: larger numbers in a rule file are refused (floats lose whole units beyond it)
MAX_NUMBER = 2.0**53


class _BoundedLoader(yaml.SafeLoader):
    """``safe_load`` without aliases (a few hundred bytes of them expand to billions of nodes) or deep nesting."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise self._refused("aliases (*name) are not allowed in rule files")
        if self.depth >= MAX_YAML_DEPTH:
            raise self._refused(f"nested more than {MAX_YAML_DEPTH} levels deep")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def _refused(self, message: str) -> yaml.YAMLError:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        return yaml.composer.ComposerError(None, None, message, event.start_mark)


def load_yaml(text: str) -> Any:
    """A rule file's YAML as data; ``ValueError`` says what is refused (size, aliases, nesting, numbers)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ValueError(f"the file is larger than {MAX_FILE_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    where = _bad_number(data, "")
    if where is not None:
        raise ValueError(f"number out of range (infinite, NaN or beyond ±2^53) at {where or 'the top level'}")
    return data


def _bad_number(value: Any, path: str) -> str | None:
    """The path of the first non-finite or huge number in ``value``, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if abs(value) <= MAX_NUMBER else path
    if isinstance(value, float):
        return None if math.isfinite(value) and abs(value) <= MAX_NUMBER else path
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _bad_number(item, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{shown(key)[1:-1]}"
                            if isinstance(key, str) else f"{path}[{shown(key)}]")
        if found is not None:
            return found.lstrip(".")
    return None


class _SyntaxError(Exception):
    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.message, self.column = message, column


# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class Unit:
    """A dimension and the size of one unit in that dimension's base (seconds, percent)."""

    dimension: str
    scale: float
    label: str


PERCENT = Unit("percent", 1.0, "%")
MS = Unit("time", 0.001, "ms")
SECONDS = Unit("time", 1.0, "s")
MINUTES = Unit("time", 60.0, "m")
HOURS = Unit("time", 3600.0, "h")
#: what a metric without a unit suffix measures: a plain count (a bare number adopts any unit)
COUNT = Unit("count", 1.0, "count")
LITERAL_UNITS: Mapping[str, Unit] = {
    "%": PERCENT, "ms": MS, "s": SECONDS, "m": MINUTES, "min": MINUTES, "h": HOURS, "hour": HOURS, "hours": HOURS,
}
UNIT_NAMES: Mapping[str, Unit] = {"%": PERCENT, "ms": MS, "s": SECONDS, "h": HOURS, "count": COUNT}
_METRIC_SUFFIXES: tuple[tuple[str, Unit], ...] = (
    ("_pct", PERCENT), ("_rate", PERCENT), ("_percentage", PERCENT), ("_ms", MS), ("_seconds", SECONDS),
    ("_s", SECONDS), ("_hours", HOURS), ("_hours_ago", HOURS),
)


def metric_unit(name: str) -> Unit:
    """The unit a metric's name declares (see the module docstring)."""
    for suffix, unit in _METRIC_SUFFIXES:
        if name.endswith(suffix):
            return unit
    return COUNT


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``5m``, ``30s``, ``1.5h`` (a number and a time unit)."""
    tokens = _tokenize(text)
    if len(tokens) == 3 and tokens[0].kind == "number" and tokens[1].text in LITERAL_UNITS:
        unit = LITERAL_UNITS[tokens[1].text]
        if unit.dimension == "time":
            seconds = float(tokens[0].text) * unit.scale
            if not math.isfinite(seconds):
                raise ValueError(f"duration too large: {shown(text)}")
            return seconds
    raise ValueError(f"expected a duration such as 30s, 5m or 2h, got {shown(text)}")


def _scalar(unit: Unit | None) -> bool:
    """A bare number or a count: scales anything it multiplies."""
    return unit is None or unit == COUNT


# --------------------------------------------------------------------------- tokens and AST

_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (">=", "<=", "==", "!=", ">", "<", "+", "-", "*", "/", "(", ")", "%")
KEYWORDS = frozenset({"and", "or", "not", "for"})
COMPARISONS = frozenset({">", ">=", "<", "<=", "==", "!="})


@dataclass(frozen=True)
class _Token:
    kind: Literal["number", "name", "op", "end"]
    text: str
    column: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
            continue
        if match := _NUMBER.match(text, i):
            tokens.append(_Token("number", match.group(), i))
        elif match := _IDENT.match(text, i):
            tokens.append(_Token("name", match.group(), i))
        elif op := next((o for o in _OPERATORS if text.startswith(o, i)), None):
            tokens.append(_Token("op", op, i))
            i += len(op)
            continue
        elif char in "'\"":
            raise _SyntaxError("quoted text is not allowed: metrics are bare names", i)
        else:
            raise _SyntaxError(f"unexpected character {char!r}", i)
        i = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


@dataclass(frozen=True)
class Interval:
    """A metric known only within bounds (a confidence interval) and its point estimate.

    ``n`` is the sample it was measured on and ``project(n)`` the same interval at a
    larger sample, the point unchanged — how a gate tells how much more data it needs.
    """

    lower: float
    upper: float
    point: float | None = None
    n: float | None = None
    project: Callable[[float], Interval] | None = field(default=None, compare=False, repr=False)


Value = float | bool | Interval | None


# Every node keeps the column where its text starts, for error pointers.


@dataclass(frozen=True)
class Number:
    value: float
    unit: Unit | None
    column: int


@dataclass(frozen=True)
class Metric:
    name: str
    column: int


@dataclass(frozen=True)
class Negate:
    operand: Node
    column: int


@dataclass(frozen=True)
class Arithmetic:
    op: str
    left: Node
    right: Node
    column: int


@dataclass(frozen=True)
class Compare:
    op: str
    left: Node
    right: Node
    column: int


@dataclass(frozen=True)
class Logic:
    op: Literal["and", "or", "not"]
    operands: tuple[Node, ...]
    column: int


Node = Number | Metric | Negate | Arithmetic | Compare | Logic


class _Parser:
    """Recursive descent over the token list; also checks metric names and units."""

    def __init__(self, text: str, units: Mapping[str, Unit], intervals: frozenset[str]) -> None:
        self.tokens = _tokenize(text)
        self.units = units
        self.known = frozenset(units)
        self.intervals = intervals
        self.pos = 0
        self.depth = 0

    def nested(self, column: int, parse: Callable[[], Node]) -> Node:
        """``parse()`` one level deeper; refused beyond :data:`MAX_DEPTH` (instead of a RecursionError)."""
        if self.depth >= MAX_DEPTH:
            raise _SyntaxError(f"nested more than {MAX_DEPTH} levels deep", column)
        self.depth += 1
        try:
            return parse()
        finally:
            self.depth -= 1

    def finite(self, token: _Token, scale: float = 1.0) -> float:
        """A number token's value (times ``scale``); infinity and overflow are refused."""
        value = float(token.text) * scale
        if not math.isfinite(value):
            raise _SyntaxError(f"number too large: {_excerpt(token.text, None)[0]}", token.column)
        return value

    @property
    def token(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def at(self, *texts: str) -> bool:
        return self.token.kind in ("op", "name") and self.token.text in texts

    def expect(self, text: str) -> _Token:
        if not self.at(text):
            raise _SyntaxError(f"expected {text!r}, found {self._found()}", self.token.column)
        return self.take()

    def _found(self) -> str:
        return "end of condition" if self.token.kind == "end" else shown(self.token.text)

    def condition(self) -> tuple[Node, float]:
        node = self.expr()
        if not self.is_bool(node):
            raise _SyntaxError("condition must be a comparison (e.g. metric > 5)", node.column)
        hold_s = 0.0
        if self.at("for"):
            self.take()
            number = self.token
            if number.kind != "number":
                raise _SyntaxError(f"expected a duration after 'for', found {self._found()}", number.column)
            self.take()
            unit = self.unit()
            if unit is None or unit.dimension != "time":
                raise _SyntaxError("'for' needs a time unit (ms, s, m, h)", number.column)
            hold_s = self.finite(number, unit.scale)
        if self.token.kind != "end":
            raise _SyntaxError(f"unexpected {self._found()}", self.token.column)
        return node, hold_s

    def expr(self) -> Node:
        return self._logic("or", self.and_expr)

    def and_expr(self) -> Node:
        return self._logic("and", self.not_expr)

    def _logic(self, op: Literal["and", "or"], operand: Callable[[], Node]) -> Node:
        first = operand()
        operands = [first]
        while self.at(op):
            self.take()
            operands.append(operand())
        if len(operands) == 1:
            return first
        for node in operands:
            self.need_bool(node, op)
        return Logic(op, tuple(operands), first.column)

    def not_expr(self) -> Node:
        if self.at("not"):
            column = self.take().column
            operand = self.nested(column, self.not_expr)
            self.need_bool(operand, "not")
            return Logic("not", (operand,), column)
        return self.comparison()

    def comparison(self) -> Node:
        left = self.sum()
        if not self.at(*COMPARISONS):
            return left
        op = self.take()
        right = self.sum()
        if self.at(*COMPARISONS):
            raise _SyntaxError("comparisons cannot be chained; join them with 'and'", self.token.column)
        left, right = self.unify(left, right, op)
        if self.is_interval(left) and self.is_interval(right):
            raise _SyntaxError("two intervals cannot be compared; compare each with a number", op.column)
        return Compare(op.text, left, right, left.column)

    def sum(self) -> Node:
        node = self.term()
        while self.at("+", "-"):
            op = self.take()
            right = self.term()
            self.need_plain(node, op.text)
            self.need_plain(right, op.text)
            node, right = self.unify(node, right, op)
            node = Arithmetic(op.text, node, right, node.column)
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.at("*", "/"):
            op = self.take()
            right = self.unary()
            self.need_number(node, op.text)
            self.need_number(right, op.text)
            self.need_plain(node, op.text)
            self.need_plain(right, op.text)
            left_unit, right_unit = self.unit_of(node), self.unit_of(right)
            allowed = _scalar(right_unit) or (op.text == "*" and _scalar(left_unit))
            allowed = allowed or (op.text == "/" and left_unit == right_unit)
            if not allowed:
                verb = "multiply" if op.text == "*" else "divide"
                raise _SyntaxError(f"cannot {verb} {_label(left_unit)} by {_label(right_unit)}", op.column)
            node = Arithmetic(op.text, node, right, node.column)
        return node

    def unary(self) -> Node:
        token = self.token
        if self.at("-"):
            self.take()
            operand = self.nested(token.column, self.unary)
            self.need_number(operand, "-")
            self.need_plain(operand, "-")
            return Negate(operand, token.column)
        if self.at("("):
            self.take()
            node = self.nested(token.column, self.expr)
            self.expect(")")
            return node
        if token.kind == "number":
            self.take()
            return Number(self.finite(token), self.unit(), token.column)
        if token.kind == "name" and token.text not in KEYWORDS:
            self.take()
            if self.at("("):
                raise _SyntaxError("function calls are not allowed", self.token.column)
            if token.text not in self.known:
                raise _SyntaxError(f"unknown metric {shown(token.text)}", token.column)
            return Metric(token.text, token.column)
        raise _SyntaxError(f"expected a metric, a number or '(', found {self._found()}", token.column)

    def unit(self) -> Unit | None:
        """The unit written right after a number, if any."""
        if self.at("%") or (self.token.kind == "name" and self.token.text in LITERAL_UNITS):
            return LITERAL_UNITS[self.take().text]
        if self.token.kind == "name" and self.token.text not in KEYWORDS | self.known:
            raise _SyntaxError(
                f"unknown unit {shown(self.token.text)} (known: {', '.join(LITERAL_UNITS)})", self.token.column
            )
        return None

    # -- types and units

    def is_bool(self, node: Node) -> bool:
        return isinstance(node, (Compare, Logic))

    def need_bool(self, node: Node, op: str) -> None:
        if not self.is_bool(node):
            raise _SyntaxError(f"'{op}' needs comparisons on both sides", node.column)

    def need_number(self, node: Node, op: str) -> None:
        if self.is_bool(node):
            raise _SyntaxError(f"'{op}' needs numbers, not a comparison", node.column)

    def is_interval(self, node: Node) -> bool:
        return isinstance(node, Metric) and node.name in self.intervals

    def need_plain(self, node: Node, op: str) -> None:
        if self.is_interval(node):
            assert isinstance(node, Metric)
            raise _SyntaxError(f"{node.name!r} is an interval: compare it with a number, '{op}' is not allowed",
                               node.column)

    def unit_of(self, node: Node) -> Unit | None:
        if isinstance(node, Number):
            return node.unit
        if isinstance(node, Metric):
            return self.units[node.name]
        if isinstance(node, Negate):
            return self.unit_of(node.operand)
        if isinstance(node, Arithmetic):
            left, right = self.unit_of(node.left), self.unit_of(node.right)
            if node.op == "/" and left == right:
                return None
            if node.op in "*/":
                return right if _scalar(left) and not _scalar(right) else left or right
            return left or right
        return None

    def unify(self, left: Node, right: Node, op: _Token) -> tuple[Node, Node]:
        """Check that both sides measure the same thing; convert a unit-bearing literal to the other side's unit."""
        self.need_number(left, op.text)
        self.need_number(right, op.text)
        left_unit, right_unit = self.unit_of(left), self.unit_of(right)
        if left_unit is None or right_unit is None or left_unit == right_unit:
            return left, right
        if left_unit.dimension != right_unit.dimension:
            verb = "compares" if op.text in COMPARISONS else "combines"
            raise _SyntaxError(f"'{op.text}' {verb} {_label(left_unit)} with {_label(right_unit)}", op.column)
        if isinstance(right, Number):
            return left, _convert(right, left_unit)
        if isinstance(left, Number):
            return _convert(left, right_unit), right
        raise _SyntaxError(f"'{op.text}' mixes {left_unit.label} and {right_unit.label}", op.column)


def _convert(number: Number, unit: Unit) -> Number:
    assert number.unit is not None
    value = number.value * number.unit.scale / unit.scale
    if not math.isfinite(value):
        raise _SyntaxError(f"number too large in {unit.label}", number.column)
    return replace(number, value=value, unit=unit)


def _label(unit: Unit | None) -> str:
    if unit is None:
        return "a plain number"
    return "a count" if unit == COUNT else f"{unit.label} ({unit.dimension})"


_COMPARE: Mapping[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


def _known(value: Value) -> Value:
    """``value`` as the evaluation sees it: None for missing, NaN, booleans and broken intervals."""
    if type(value) is float:
        return None if math.isnan(value) else value
    if isinstance(value, Interval):
        return value if not (math.isnan(value.lower) or math.isnan(value.upper)) else None
    if value is None or isinstance(value, bool) or math.isnan(value):
        return None
    return float(value)


def _compare(op: str, left: float | Interval, right: float | Interval) -> bool | None:
    """A comparison; with an interval: true if every point satisfies it, false if none does, else unknown."""
    if not isinstance(left, Interval) and not isinstance(right, Interval):
        return _COMPARE[op](left, right)
    lefts = (left.lower, left.upper) if isinstance(left, Interval) else (left,)
    rights = (right.lower, right.upper) if isinstance(right, Interval) else (right,)
    results = {_COMPARE[op](a, b) for a in lefts for b in rights}
    return results.pop() if len(results) == 1 else None


def _evaluate(node: Node, metrics: Mapping[str, Value]) -> Value:
    """Value of ``node``; None = unknown (missing metric, division by zero, an interval straddling a bound)."""
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Metric):
        return _known(metrics.get(node.name))
    if isinstance(node, Negate):
        inner = _evaluate(node.operand, metrics)
        assert not isinstance(inner, Interval)  # the parser refuses it
        return None if inner is None else -inner
    if isinstance(node, Logic):
        values = [_evaluate(o, metrics) for o in node.operands]
        if node.op == "not":
            return None if values[0] is None else not values[0]
        decisive = node.op == "or"  # True decides an "or", False decides an "and"
        if any(v is decisive for v in values):
            return decisive
        return None if any(v is None for v in values) else not decisive
    left, right = _evaluate(node.left, metrics), _evaluate(node.right, metrics)
    if left is None or right is None:
        return None
    assert not isinstance(left, bool) and not isinstance(right, bool)
    if isinstance(node, Compare):
        return _compare(node.op, left, right)
    assert not isinstance(left, Interval) and not isinstance(right, Interval)  # the parser refuses it
    if node.op == "/":
        return None if right == 0 else left / right
    return {"+": left + right, "-": left - right, "*": left * right}[node.op]


def _metrics_in(node: Node) -> set[str]:
    if isinstance(node, Metric):
        return {node.name}
    if isinstance(node, Number):
        return set()
    if isinstance(node, Negate):
        return _metrics_in(node.operand)
    if isinstance(node, Logic):
        return set().union(*(_metrics_in(o) for o in node.operands))
    return _metrics_in(node.left) | _metrics_in(node.right)




# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """A parsed condition: ``evaluate`` gives True, False or None (no data)."""

    text: str
    node: Node
    hold_s: float
    metrics: frozenset[str]

    def evaluate(self, metrics: Mapping[str, Value]) -> bool | None:
        result = _evaluate(self.node, metrics)
        return None if result is None else bool(result)

    def measured(self, metrics: Mapping[str, Value]) -> float | None:
        """What the condition measures, for reports: the left side of its first comparison (an interval's point)."""
        node = self.node
        while isinstance(node, Logic):
            node = node.operands[0]
        value = _evaluate(node.left, metrics) if isinstance(node, Compare) else None
        if isinstance(value, Interval):
            return value.point
        return None if value is None or isinstance(value, bool) else value


    def comparison(self) -> tuple[str, str, float] | None:
        """``(metric, op, number)`` when the condition is just ``metric OP number``, else None."""
        node = self.node
        if isinstance(node, Compare) and isinstance(node.left, Metric) and isinstance(node.right, Number):
            return node.left.name, node.op, node.right.value
        return None


def parse_condition(
    text: str, known_metrics: Iterable[str] | Mapping[str, Unit], *, intervals: Iterable[str] = ()
) -> Condition:
    """Parse one condition over ``known_metrics`` (names, or names with their units).

    Raises AlertRuleError (rule None) pointing at the offending text.
    """
    units = (dict(known_metrics) if isinstance(known_metrics, Mapping)
             else {name: metric_unit(name) for name in known_metrics})
    if len(text) > MAX_CONDITION:
        raise AlertRuleError([Problem(None, f"condition is {len(text)} characters long; at most {MAX_CONDITION}",
                                      text, 0)], "<condition>")
    try:
        node, hold_s = _Parser(text, units, frozenset(intervals)).condition()
    except _SyntaxError as exc:
        raise AlertRuleError([Problem(None, exc.message, text, exc.column)], "<condition>") from None
    return Condition(text, node, hold_s, frozenset(_metrics_in(node)))


# --------------------------------------------------------------------------- sample minimums


@dataclass(frozen=True)
class MinSample:
    """A count that must reach ``minimum`` before what depends on it is judged (a gate, a matrix, an alert)."""

    metric: str
    minimum: float


def shortfall(min_samples: Sequence[MinSample], values: Mapping[str, Value]) -> tuple[float | None, str] | None:
    """The first sample below its minimum: (its value, why); None when every sample is large enough."""
    for need in min_samples:
        have = values.get(need.metric)
        count = None if have is None or isinstance(have, (bool, Interval)) or math.isnan(have) else float(have)
        if count is None or count < need.minimum:
            shown = "none" if count is None else f"{count:.4g}"
            return count, f"sample {shown} < {need.minimum:g} ({need.metric})"
    return None
