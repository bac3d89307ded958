"""Alert rules: YAML → validated RuleSet → pure evaluation (no Flask, no SQL, no clock).

A rule file has a top-level ``rules:`` list; each rule has exactly the keys
``name, condition, severity, notify, description, action`` (the runbook's
``v2_alerts.yaml`` shape; the default set ships as ``v2_alerts.yaml`` next to
this module). Loading validates every rule and either returns a complete
:class:`RuleSet` or raises one :class:`AlertRuleError` listing every problem —
nothing is ever half-loaded.

Conditions use a small grammar, tokenized and parsed by hand (never ``eval``)::

    condition  := expr [ "for" NUMBER TIME_UNIT ]
    expr       := and_expr ( "or" and_expr )*
    and_expr   := not_expr ( "and" not_expr )*
    not_expr   := "not" not_expr | comparison
    comparison := sum [ (">" | ">=" | "<" | "<=" | "==" | "!=") sum ]
    sum        := term ( ("+" | "-") term )*
    term       := unary ( ("*" | "/") unary )*
    unary      := "-" unary | NUMBER [ UNIT ] | METRIC | "(" expr ")"
    UNIT       := "%" | "ms" | "s" | "m" | "min" | "h" | "hour" | "hours"

Units are checked when loading. A metric's unit comes from its name:
``*_pct``, ``*_rate``, ``*_percentage`` are percent (0–100, so ``10%`` is 10);
``*_ms`` milliseconds; ``*_s``/``*_seconds`` seconds; ``*_hours``/``*_hours_ago``
hours; anything else is a count (``*_per_min``, failures). A number with a
unit is converted to the unit of what it is compared with (``1s`` against
``v2_p95_ms`` is 1000); a bare number takes that unit as it is; ``10%`` against a
latency or a count is an error, and so is comparing two metrics of different units.

``for 5m`` means the condition must hold continuously that long before the rule
fires (``pending`` → ``firing``). A metric that is missing or ``None`` makes the
comparisons that read it unknown (``and``/``or``/``not`` follow three-valued
logic); an unknown condition never fires, and the state says ``no_data``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, MutableMapping

import yaml

#: Metric names the default rules may use; the monitoring module computes them over a window.
DEFAULT_METRICS: frozenset[str] = frozenset({
    "v2_error_rate_pct", "v2_fallback_rate_pct", "v2_p95_ms", "v2_p99_ms", "v2_avg_ms",
    "v2_conversion_rate_pct", "v1_conversion_rate_pct", "db_connection_failures", "v2_unhandled_exceptions",
    "last_game_log_import_hours_ago", "qbs_with_v2_data_pct", "v2_calculations_per_min",
    "v1_calculations_per_min", "v2_timeouts_pct", "agreement_rate_pct", "v2_rollout_percentage",
})
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
FIELDS = ("name", "condition", "severity", "notify", "description", "action")
DEFAULT_RULES_FILE = "v2_alerts.yaml"


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a rule file; ``column`` points into ``text`` (0-based) when known."""

    rule: str | None
    message: str
    text: str | None = None
    column: int | None = None

    def __str__(self) -> str:
        out = f"rule {self.rule!r}: {self.message}" if self.rule else self.message
        if self.text is not None:
            out += f"\n    {self.text}"
            if self.column is not None:
                out += "\n    " + " " * self.column + "^"
        return out


class AlertRuleError(ValueError):
    """A rule file failed validation; ``problems`` lists every issue found."""

    def __init__(self, problems: list[Problem], source: str = "<rules>") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(str(p) for p in problems))


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


Value = float | bool | None


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

    def __init__(self, text: str, known_metrics: frozenset[str]) -> None:
        self.tokens = _tokenize(text)
        self.known = known_metrics
        self.pos = 0

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
        return "end of condition" if self.token.kind == "end" else repr(self.token.text)

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
            hold_s = float(number.text) * unit.scale
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
            operand = self.not_expr()
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
        return Compare(op.text, left, right, left.column)

    def sum(self) -> Node:
        node = self.term()
        while self.at("+", "-"):
            op = self.take()
            right = self.term()
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
            operand = self.unary()
            self.need_number(operand, "-")
            return Negate(operand, token.column)
        if self.at("("):
            self.take()
            node = self.expr()
            self.expect(")")
            return node
        if token.kind == "number":
            self.take()
            return Number(float(token.text), self.unit(), token.column)
        if token.kind == "name" and token.text not in KEYWORDS:
            self.take()
            if self.at("("):
                raise _SyntaxError("function calls are not allowed", self.token.column)
            if token.text not in self.known:
                raise _SyntaxError(f"unknown metric {token.text!r}", token.column)
            return Metric(token.text, token.column)
        raise _SyntaxError(f"expected a metric, a number or '(', found {self._found()}", token.column)

    def unit(self) -> Unit | None:
        """The unit written right after a number, if any."""
        if self.at("%") or (self.token.kind == "name" and self.token.text in LITERAL_UNITS):
            return LITERAL_UNITS[self.take().text]
        if self.token.kind == "name" and self.token.text not in KEYWORDS | self.known:
            raise _SyntaxError(
                f"unknown unit {self.token.text!r} (known: {', '.join(LITERAL_UNITS)})", self.token.column
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

    def unit_of(self, node: Node) -> Unit | None:
        if isinstance(node, Number):
            return node.unit
        if isinstance(node, Metric):
            return metric_unit(node.name)
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
    return replace(number, value=number.value * number.unit.scale / unit.scale, unit=unit)


def _label(unit: Unit | None) -> str:
    if unit is None:
        return "a plain number"
    return "a count" if unit == COUNT else f"{unit.label} ({unit.dimension})"


def _evaluate(node: Node, metrics: Mapping[str, Value]) -> Value:
    """Value of ``node``; None = unknown (missing metric, division by zero)."""
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Metric):
        value = metrics.get(node.name)
        if value is None or isinstance(value, bool) or math.isnan(value):
            return None
        return float(value)
    if isinstance(node, Negate):
        inner = _evaluate(node.operand, metrics)
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
        return {
            ">": left > right, ">=": left >= right, "<": left < right,
            "<=": left <= right, "==": left == right, "!=": left != right,
        }[node.op]
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


# --------------------------------------------------------------------------- rules

Severity = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW"]


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


def parse_condition(text: str, known_metrics: Iterable[str]) -> Condition:
    """Parse one condition; raises AlertRuleError (rule None) pointing at the offending text."""
    try:
        node, hold_s = _Parser(text, frozenset(known_metrics)).condition()
    except _SyntaxError as exc:
        raise AlertRuleError([Problem(None, exc.message, text, exc.column)], "<condition>") from None
    return Condition(text, node, hold_s, frozenset(_metrics_in(node)))


@dataclass(frozen=True)
class Rule:
    name: str
    condition: Condition
    severity: Severity
    notify: tuple[str, ...]
    description: str
    action: str


@dataclass(frozen=True)
class RuleSet:
    """A fully validated set of rules, in file order."""

    rules: tuple[Rule, ...]
    source: str = "<rules>"

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __getitem__(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    @property
    def metrics(self) -> frozenset[str]:
        """Every metric some rule reads: what the monitoring module must compute."""
        return frozenset().union(*(r.condition.metrics for r in self.rules))


_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def parse_rules(text: str, known_metrics: Iterable[str] = DEFAULT_METRICS, *, source: str = "<rules>") -> RuleSet:
    """Validate a whole rule file (YAML text) and return it, or raise AlertRuleError listing every problem."""
    known = frozenset(known_metrics)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AlertRuleError([Problem(None, f"not valid YAML: {exc}")], source) from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise AlertRuleError([Problem(None, "expected a top-level 'rules:' list")], source)
    extra = sorted(str(k) for k in data if k != "rules")
    problems = [Problem(None, f"unknown top-level key(s) {extra}")] if extra else []
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, item in enumerate(data["rules"], start=1):
        rule, found = _rule(item, index, known)
        problems += found
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in seen:
                problems.append(Problem(name, "duplicate rule name"))
            seen.add(name)
        if rule is not None:
            rules.append(rule)
    if problems:
        raise AlertRuleError(problems, source)
    return RuleSet(tuple(rules), source)


def _rule(item: Any, index: int, known: frozenset[str]) -> tuple[Rule | None, list[Problem]]:
    if not isinstance(item, dict):
        return None, [Problem(f"#{index}", "a rule must be a mapping of " + ", ".join(FIELDS))]
    name = item.get("name")
    label = name if isinstance(name, str) and name else f"#{index}"
    problems = []
    missing = [f for f in FIELDS if f not in item]
    if missing:
        problems.append(Problem(label, f"missing field(s) {missing}"))
    unknown = sorted(str(k) for k in item if k not in FIELDS)
    if unknown:
        problems.append(Problem(label, f"unknown field(s) {unknown}"))
    if "name" in item and not (isinstance(name, str) and _NAME.fullmatch(name)):
        problems.append(Problem(label, "name must be letters, digits, '_', '.' or '-'", repr(name)))
    for field in ("condition", "description", "action"):
        if field in item and not (isinstance(item[field], str) and item[field].strip()):
            problems.append(Problem(label, f"{field} must be non-empty text", repr(item[field])))
    severity = item.get("severity")
    if "severity" in item and severity not in SEVERITIES:
        problems.append(Problem(label, f"severity must be one of {', '.join(SEVERITIES)}", repr(severity)))
    notify = item.get("notify")
    if "notify" in item and not (
        isinstance(notify, list) and notify and all(isinstance(n, str) and _NAME.fullmatch(n) for n in notify)
    ):
        problems.append(Problem(label, "notify must be a non-empty list of channel names", repr(notify)))
    condition = None
    if isinstance(item.get("condition"), str) and item["condition"].strip():
        try:
            condition = parse_condition(" ".join(item["condition"].split()), known)
        except AlertRuleError as exc:
            problems += [replace(p, rule=label) for p in exc.problems]
    if problems or condition is None:
        return None, problems
    rule = Rule(name, condition, severity, tuple(notify), item["description"].strip(), item["action"].strip())
    return rule, []


def load_rules(path: str | Path, known_metrics: Iterable[str] = DEFAULT_METRICS) -> RuleSet:
    """Validate a rule file on disk."""
    path = Path(path)
    return parse_rules(path.read_text(encoding="utf-8"), known_metrics, source=str(path))


def default_rules(known_metrics: Iterable[str] = DEFAULT_METRICS) -> RuleSet:
    """The runbook's ten rules, shipped as ``flask_v2rollout/rules/v2_alerts.yaml``."""
    text = resources.files(__package__).joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")
    return parse_rules(text, known_metrics, source=DEFAULT_RULES_FILE)


# --------------------------------------------------------------------------- evaluation

Status = Literal["inactive", "pending", "firing", "resolved"]


@dataclass(frozen=True)
class RuleState:
    """Where one rule stands; plain values so it can be stored as a row (``dataclasses.asdict``)."""

    status: Status = "inactive"
    #: when the current status began
    since: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    #: the last evaluation could not decide (a metric had no value)
    no_data: bool = False
    evaluated_at: float | None = None


TransitionKind = Literal["fired", "resolved"]


@dataclass(frozen=True)
class Transition:
    """A rule started firing or stopped; ``values`` are the metrics it read at that moment."""

    rule: Rule
    kind: TransitionKind
    at: float
    values: Mapping[str, Value]


def step(rule: Rule, state: RuleState, result: bool | None, now: float) -> tuple[RuleState, TransitionKind | None]:
    """Advance one rule's state machine: inactive → pending → firing → resolved.

    Unknown (``None``) breaks a pending streak but does not resolve a firing rule:
    an alert ends only on evidence that the condition is false.
    """
    state = replace(state, no_data=result is None, evaluated_at=now)
    if result is None:
        return (replace(state, status="inactive", since=now) if state.status == "pending" else state), None
    if not result:
        if state.status == "firing":
            return replace(state, status="resolved", since=now, resolved_at=now), "resolved"
        if state.status == "pending":
            return replace(state, status="inactive", since=now), None
        return state, None
    if state.status == "firing":
        return state, None
    if state.status != "pending":
        state = replace(state, status="pending", since=now)
    assert state.since is not None
    if now - state.since >= rule.condition.hold_s:
        return replace(state, status="firing", since=now, fired_at=now), "fired"
    return state, None


def evaluate(
    ruleset: RuleSet, metrics: Mapping[str, Value], now: float, states: MutableMapping[str, RuleState]
) -> list[Transition]:
    """Evaluate every rule on one metrics snapshot; updates ``states`` (keyed by rule name) in place.

    Returns only changes: a rule fires once and not again until it has resolved.
    """
    transitions = []
    for rule in ruleset:
        result = rule.condition.evaluate(metrics)
        states[rule.name], kind = step(rule, states.get(rule.name, RuleState()), result, now)
        if kind is not None:
            values = {m: metrics.get(m) for m in sorted(rule.condition.metrics)}
            transitions.append(Transition(rule, kind, now, values))
    return transitions
