"""Alert rules: validated rules and their state machine (pure: no Flask, no SQL, no clock).

A rule is a mapping with the keys ``name, condition, severity, notify,
description, action`` and, optionally, ``for`` and ``keep_firing_for``
(durations such as ``5m``), as in Prometheus alerting rules:

* ``for``: the condition must hold continuously that long before the rule
  fires (``pending`` → ``firing``). A trailing ``for 5m`` inside the condition
  means the same (older rule files); giving both is an error.
* ``keep_firing_for``: once firing, the rule keeps firing until its condition
  has been false or unknown for that long, then resolves (hysteresis). Without it
  a firing rule resolves on the first evaluation where the condition is false.
* ``min_sample``: the calculations the rule's rates need in the window before the
  rule is judged at all (default ``V2ROLLOUT_ALERT_MIN_CALCULATIONS``): a rate over
  4 calls is noise. Below it the condition is unknown.
* ``rollback`` and ``enter_shadow``: what the rule does to the rollout when it
  fires (see :mod:`.actions`); a CRITICAL rule rolls back to 0 unless it says otherwise.

No data is an outcome of its own: a firing rule whose condition turns unknown
(no metric value, or too small a sample) resolves as ``no data`` once
``keep_firing_for`` has passed (at once without it) — it never stays "firing" on
nothing. And :func:`rearm` starts every rule of a rollout afresh when its
percentage changes (a rollback, a resume): a firing rule resolves as re-armed, and
a v2 still broken at the new percentage fires again on the new data.

The runbook's rules ship in ``runbook.yaml`` (see :mod:`.runbook`); this module
validates rule mappings and advances their state. Validation reports every
problem at once (:class:`~.conditions.AlertRuleError`) and loads nothing on error.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from .actions import RollbackAction, action_from
from .conditions import (
    AlertRuleError,
    Condition,
    MinSample,
    Problem,
    Unit,
    Value,
    load_yaml,
    parse_condition,
    parse_duration,
    shortfall,
)

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
FIELDS = ("name", "condition", "severity", "notify", "description", "action")
OPTIONAL_FIELDS = ("for", "keep_firing_for", "min_sample", "rollback", "enter_shadow")
NAME = re.compile(r"[A-Za-z0-9_.-]+")

Severity = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW"]
Known = Iterable[str] | Mapping[str, Unit]


@dataclass(frozen=True)
class Rule:
    name: str
    condition: Condition
    severity: Severity
    notify: tuple[str, ...]
    description: str
    action: str
    #: seconds the condition must hold before the rule fires (``for:``)
    for_s: float = 0.0
    #: seconds a firing rule stays firing after its condition stopped holding (``keep_firing_for:``)
    keep_firing_s: float = 0.0
    #: the rule's own calculations minimum (``min_sample:``); None: the configured one
    min_sample: float | None = None
    #: the samples its metrics need before it is judged (resolved by the runbook loader)
    min_samples: tuple[MinSample, ...] = ()
    #: what firing does to the rollout (``rollback:``); None: nothing by itself
    rollback: RollbackAction | None = None
    #: the rollback also turns shadow mode on (``enter_shadow:``); None: when it lands on 0 % and configured so
    enter_shadow: bool | None = None


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

    def __contains__(self, name: object) -> bool:
        return any(rule.name == name for rule in self.rules)

    @property
    def metrics(self) -> frozenset[str]:
        """Every metric some rule reads."""
        return frozenset().union(*(r.condition.metrics for r in self.rules))


def parse_rules(text: str, known_metrics: Known, *, source: str = "<rules>", intervals: Iterable[str] = ()) -> RuleSet:
    """Validate a YAML text whose only top-level key is ``rules:``; raise AlertRuleError listing every problem."""
    try:
        data = load_yaml(text)
    except ValueError as exc:
        raise AlertRuleError([Problem(None, str(exc))], source) from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise AlertRuleError([Problem(None, "expected a top-level 'rules:' list")], source)
    extra = sorted(str(k) for k in data if k != "rules")
    problems = [Problem(None, f"unknown top-level key(s) {extra}")] if extra else []
    rules, found = rules_from(data["rules"], known_metrics, intervals=intervals)
    if problems or found:
        raise AlertRuleError(problems + found, source)
    return RuleSet(tuple(rules), source)


def rules_from(
    items: list[Any], known_metrics: Known, *, intervals: Iterable[str] = ()
) -> tuple[list[Rule], list[Problem]]:
    """Validate a list of rule mappings: the valid rules and every problem found (duplicates included)."""
    rules: list[Rule] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, item in enumerate(items, start=1):
        rule, found = rule_from(item, index, known_metrics, intervals=intervals)
        problems += found
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in seen:
                problems.append(Problem(name, "duplicate rule name"))
            seen.add(name)
        if rule is not None:
            rules.append(rule)
    return rules, problems


def rule_from(
    item: Any, index: int, known: Known, *, intervals: Iterable[str] = ()
) -> tuple[Rule | None, list[Problem]]:
    """One rule mapping → a Rule, or the problems that stop it."""
    if not isinstance(item, dict):
        return None, [Problem(f"#{index}", "a rule must be a mapping of " + ", ".join(FIELDS))]
    name = item.get("name")
    label = name if isinstance(name, str) and name else f"#{index}"
    problems = []
    missing = [f for f in FIELDS if f not in item]
    if missing:
        problems.append(Problem(label, f"missing field(s) {missing}"))
    unknown = sorted(str(k) for k in item if k not in FIELDS + OPTIONAL_FIELDS)
    if unknown:
        problems.append(Problem(label, f"unknown field(s) {unknown}"))
    if "name" in item and not (isinstance(name, str) and NAME.fullmatch(name)):
        problems.append(Problem(label, "name must be letters, digits, '_', '.' or '-'", repr(name)))
    for field in ("condition", "description", "action"):
        if field in item and not (isinstance(item[field], str) and item[field].strip()):
            problems.append(Problem(label, f"{field} must be non-empty text", repr(item[field])))
    severity = item.get("severity")
    if "severity" in item and severity not in SEVERITIES:
        problems.append(Problem(label, f"severity must be one of {', '.join(SEVERITIES)}", repr(severity)))
    notify = item.get("notify")
    if "notify" in item and not (
        isinstance(notify, list) and notify and all(isinstance(n, str) and NAME.fullmatch(n) for n in notify)
    ):
        problems.append(Problem(label, "notify must be a non-empty list of channel names", repr(notify)))
    min_sample = item.get("min_sample")
    if "min_sample" in item and (isinstance(min_sample, bool) or not isinstance(min_sample, int) or min_sample < 0):
        problems.append(Problem(label, "min_sample must be a whole number ≥ 0", repr(min_sample)))
    durations = {}
    for field in ("for", "keep_firing_for"):
        if field in item:
            try:
                durations[field] = parse_duration(str(item[field]))
            except ValueError as exc:
                problems.append(Problem(label, f"{field}: {exc}", repr(item[field])))
    rollback, enter_shadow, found = action_from(item, label, severity)
    problems += found
    condition = None
    if isinstance(item.get("condition"), str) and item["condition"].strip():
        try:
            condition = parse_condition(" ".join(item["condition"].split()), known, intervals=intervals)
        except AlertRuleError as exc:
            problems += [replace(p, rule=label) for p in exc.problems]
    if condition is not None and condition.hold_s and "for" in item:
        problems.append(Problem(label, "give the duration once: either 'for:' or '... for <duration>'"))
    if problems or condition is None:
        return None, problems
    rule = Rule(str(name), condition, cast(Severity, severity), tuple(cast(list[str], notify)),
                item["description"].strip(), item["action"].strip(),
                durations.get("for", condition.hold_s), durations.get("keep_firing_for", 0.0),
                None if min_sample is None else float(min_sample), rollback=rollback, enter_shadow=enter_shadow)
    return rule, []


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
    #: a firing rule's condition has not held since then (``keep_firing_for``)
    cleared_at: float | None = None
    #: the rollout percentage this state was built at; a different one re-arms the rule
    armed_percentage: float | None = None


TransitionKind = Literal["fired", "resolved"]


@dataclass(frozen=True)
class Transition:
    """A rule started firing or stopped; ``values`` are the metrics it read at that moment."""

    rule: Rule
    kind: TransitionKind
    at: float
    values: Mapping[str, Value]
    #: why, when it is not the condition itself: "no data", "re-armed: percentage 50 → 0"
    note: str = ""


def step(rule: Rule, state: RuleState, result: bool | None, now: float) -> tuple[RuleState, TransitionKind | None]:
    """Advance one rule's state machine: inactive → pending → firing → resolved.

    Unknown (``None``) breaks a pending streak; for a firing rule false and unknown
    alike count towards ``keep_firing_for`` (resolving at once without it).
    """
    state = replace(state, no_data=result is None, evaluated_at=now)
    if state.status == "firing":
        return _firing(rule, state, result, now)
    if result is None:
        return (replace(state, status="inactive", since=now) if state.status == "pending" else state), None
    if not result:
        if state.status == "pending":
            return replace(state, status="inactive", since=now), None
        return state, None
    if state.status != "pending":
        state = replace(state, status="pending", since=now)
    assert state.since is not None
    if now - state.since >= rule.for_s:
        return replace(state, status="firing", since=now, fired_at=now, cleared_at=None), "fired"
    return state, None


def _firing(rule: Rule, state: RuleState, result: bool | None, now: float) -> tuple[RuleState, TransitionKind | None]:
    resolved = replace(state, status="resolved", since=now, resolved_at=now, cleared_at=None)
    if result:
        return replace(state, cleared_at=None), None
    if not rule.keep_firing_s:
        return resolved, "resolved"
    cleared = now if state.cleared_at is None else state.cleared_at
    if now - cleared >= rule.keep_firing_s:
        return resolved, "resolved"
    return replace(state, cleared_at=cleared), None


def evaluate(
    ruleset: RuleSet, metrics: Mapping[str, Value], now: float, states: MutableMapping[str, RuleState]
) -> list[Transition]:
    """Evaluate every rule on one metrics snapshot; updates ``states`` (keyed by rule name) in place.

    Returns only changes: a rule fires once and not again until it has resolved.
    """
    transitions = []
    for rule in ruleset:
        result = None if shortfall(rule.min_samples, metrics) else rule.condition.evaluate(metrics)
        states[rule.name], kind = step(rule, states.get(rule.name, RuleState()), result, now)
        if kind is not None:
            values = {m: metrics.get(m) for m in sorted(rule.condition.metrics)}
            note = "no data" if kind == "resolved" and result is None else ""
            transitions.append(Transition(rule, kind, now, values, note))
    return transitions


def rearm(
    ruleset: RuleSet, states: MutableMapping[str, RuleState], percentage: float, now: float
) -> list[Transition]:
    """Start every rule afresh when the rollout's percentage changed since its state was built.

    A firing rule resolves ("re-armed"); the others start inactive. Rules whose state
    was built at this percentage (or never) are left as they are.
    """
    transitions = []
    for rule in ruleset:
        state = states.get(rule.name)
        if state is None or state.armed_percentage is None:
            states[rule.name] = replace(state or RuleState(), armed_percentage=percentage)
            continue
        if state.armed_percentage == percentage:
            continue
        if state.status == "firing":
            note = f"re-armed: percentage {state.armed_percentage:g} → {percentage:g}"
            transitions.append(Transition(rule, "resolved", now, {}, note))
        states[rule.name] = RuleState(since=now, evaluated_at=state.evaluated_at, armed_percentage=percentage,
                                      resolved_at=now if state.status == "firing" else state.resolved_at,
                                      fired_at=state.fired_at)
    return transitions
