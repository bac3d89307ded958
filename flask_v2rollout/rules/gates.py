"""Stages, gates, rollback matrices and the autopilot (pure: no Flask, no SQL).

Everything here is a function of one named-values mapping (the metrics
catalogue's values of the current stage's window, see
``flask_v2rollout/metrics/catalogue.py``), so a decision can be replayed and
unit-tested from a dict. Gate criteria and matrix signals are conditions in the
grammar of :mod:`.conditions`; the runbook's own ship in ``runbook.yaml``
(loaded by :mod:`.runbook`).

A criterion is judged only once every sample it depends on has reached its
minimum (``min_samples``, resolved from the catalogue by the loader): below that
it is ``insufficient``, never a pass and never a failure. For ``must`` and
``should`` the condition states what *passes*; for a ``blocker`` it states what
*fires* the blocker (verdict ``fail``), as the runbook words them ("p95 > 1000
ms"). A criterion that reads only manual checks (``check_<key>``: 1 confirmed,
0 refused) is ``pending`` until a person records it.

A criterion may instead state both sides: ``pass`` (what passes it) and ``fail``
(what fails it, or fires a blocker); when neither holds it is ``insufficient``.
That is how a statistical criterion reads: pass on the runbook's threshold and
enough evidence, fail only on evidence of harm, and otherwise say how much more
data would decide it — "about N more observations ≈ T h at the current traffic",
projected from the interval at the observed rates.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from ..stats import RankTest, mann_whitney_binned
from .alerts import Severity
from .conditions import Condition, Interval, MinSample, Value, shortfall

HOUR = 3600.0
DAY = 24 * HOUR
#: the prefix of the named values that carry a person's manual check (1 confirmed, 0 refused, None pending)
CHECK_PREFIX = "check_"

# --------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    """A named percentage with the time it must run before its gate may say GO."""

    name: str
    percentage: float
    min_duration_s: float
    shadow: bool = False


def with_durations(stages: Sequence[Stage], durations: Mapping[str, float] | None) -> tuple[Stage, ...]:
    """``stages`` with minimum durations overridden in seconds (demos, tests: ``V2ROLLOUT_STAGE_DURATIONS``)."""
    overrides = dict(durations or {})
    unknown = sorted(set(overrides) - {s.name for s in stages})
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {[s.name for s in stages]}")
    if any(not seconds >= 0 for seconds in overrides.values()):
        raise ValueError("stage durations must be >= 0 seconds")
    return tuple(replace(s, min_duration_s=float(overrides.get(s.name, s.min_duration_s))) for s in stages)


def stage_named(name: str, stages: Sequence[Stage]) -> Stage:
    for stage in stages:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r}")


def next_stage(stage: Stage, stages: Sequence[Stage]) -> Stage | None:
    """The stage after ``stage``, None after the last."""
    names = [s.name for s in stages]
    index = names.index(stage.name) + 1
    return stages[index] if index < len(stages) else None


ROLLBACK_PATH = (100.0, 50.0, 10.0, 0.0)


def previous_percentage(percentage: float) -> float:
    """One step down the runbook's gradual rollback path 100 → 50 → 10 → 0 (from any percentage)."""
    for step in ROLLBACK_PATH:
        if step < percentage:
            return step
    return 0.0


# --------------------------------------------------------------------------- criteria

Kind = Literal["must", "should", "blocker"]
KINDS: tuple[Kind, ...] = ("must", "should", "blocker")
Verdict = Literal["pass", "fail", "insufficient", "pending"]


@dataclass(frozen=True)
class Criterion:
    """One line of a gate: a condition, and the samples it needs."""

    name: str
    kind: Kind
    description: str
    condition: Condition
    min_samples: tuple[MinSample, ...] = ()
    #: with ``pass``/``fail`` criteria: what fails it (``condition`` is then what passes it)
    fail_condition: Condition | None = None
    #: how the measured value is named in reasons ("SRM p"); empty: "value"
    label: str = ""

    @property
    def metrics(self) -> frozenset[str]:
        return self.condition.metrics | (self.fail_condition.metrics if self.fail_condition else frozenset())

    @property
    def manual(self) -> bool:
        """Judged by a person: it reads manual checks only."""
        return bool(self.metrics) and all(m.startswith(CHECK_PREFIX) for m in self.metrics)


@dataclass(frozen=True)
class CriterionResult:
    criterion: Criterion
    verdict: Verdict
    value: float | None
    sample: float | None
    detail: str
    #: the confidence interval the condition read, if it read one
    interval: Interval | None = None
    #: the metric that interval is of (the dashboard charts it over time)
    interval_metric: str | None = None


def _number(value: Value) -> float | None:
    if value is None or isinstance(value, (bool, Interval)) or math.isnan(value):
        return None
    return float(value)


def evaluate_criterion(criterion: Criterion, values: Mapping[str, Value], *,
                       elapsed_s: float | None = None, explain: bool = True) -> CriterionResult:
    """Judge one criterion on the named values (``elapsed_s``: time the sample took, for "T more hours").

    ``explain`` False skips projecting how much more data an undecided criterion needs
    (the verdict is the same; the decision simulator evaluates millions of looks).
    """
    c = criterion
    measured = c.fail_condition if c.fail_condition is not None else c.condition
    value = measured.measured(values)
    interval_metric, interval = next(((m, v) for m in sorted(c.metrics) if isinstance(v := values.get(m), Interval)),
                                     (None, None))
    sample = _number(values.get(c.min_samples[0].metric)) if c.min_samples else None
    short = shortfall(c.min_samples, values)
    if short is not None:
        return CriterionResult(c, "insufficient", value, short[0], short[1])
    verdict = _verdict(c, values)
    bounds = "" if interval is None else f"bounds [{_fmt(interval.lower)}, {_fmt(interval.upper)}]"
    if verdict is None:
        if c.manual:
            return CriterionResult(c, "pending", None, None, "not recorded yet")
        if not bounds:
            return CriterionResult(c, "insufficient", value, sample, "no data")
        more = _more_data(c, values, elapsed_s) if explain else "more data needed"
        return CriterionResult(c, "insufficient", value, sample, f"{bounds}: cannot tell yet; {more}", interval,
                               interval_metric)
    return CriterionResult(c, verdict, value, sample, bounds, interval, interval_metric)


def _verdict(c: Criterion, values: Mapping[str, Value]) -> Verdict | None:
    """pass, fail or None (cannot tell) on ``values``."""
    if c.fail_condition is not None:
        if c.fail_condition.evaluate(values):
            return "fail"
        return "pass" if c.condition.evaluate(values) else None
    result = c.condition.evaluate(values)
    if result is None:
        return None
    return ("fail" if result else "pass") if c.kind == "blocker" else ("pass" if result else "fail")


#: how far ahead a projection looks, in multiples of the current sample
_HORIZON = 1000.0


def _more_data(c: Criterion, values: Mapping[str, Value], elapsed_s: float | None) -> str:
    """How much more sample would decide the criterion if the observed rates held (every interval narrowed alike)."""
    intervals = {m: v for m in c.metrics if isinstance(v := values.get(m), Interval)
                 and v.n is not None and v.project is not None}
    if not intervals:
        return "more data needed"
    n = min(v.n for v in intervals.values() if v.n is not None)

    def decided(scale: float) -> bool:
        projected = dict(values)
        for m, v in intervals.items():
            assert v.project is not None and v.n is not None
            projected[m] = v.project(v.n * scale)
        return _verdict(c, projected) is not None

    high = 2.0
    while not decided(high):
        high *= 2.0
        if high > _HORIZON:
            return "the observed value sits on the threshold: more data alone may never decide it"
    low = high / 2.0 if high > 2.0 else 1.0
    for _ in range(10):  # to 0.1 % of the bracket: "about" N
        mid = (low + high) / 2.0
        low, high = (low, mid) if decided(mid) else (mid, high)
    more = n * (high - 1.0)
    text = f"about {_round(more)} more observations (both arms, {high:.2g}× the sample) at the observed rates"
    if elapsed_s and elapsed_s > 0:
        text += f", ≈ {_hours((high - 1.0) * elapsed_s)} more at the current traffic"
    return text


def _round(x: float) -> str:
    digits = max(0, len(str(int(x))) - 2)
    return f"{round(x, -digits):,.0f}"


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:.4g}"


# --------------------------------------------------------------------------- gates

DecisionValue = Literal["GO", "NO-GO", "CONDITIONAL", "INCONCLUSIVE"]
GO: DecisionValue = "GO"
NO_GO: DecisionValue = "NO-GO"
CONDITIONAL: DecisionValue = "CONDITIONAL"
INCONCLUSIVE: DecisionValue = "INCONCLUSIVE"


@dataclass(frozen=True)
class Gate:
    """The criteria for leaving ``from_stage`` (``to_stage`` None: the ongoing review of the last stage)."""

    name: str
    from_stage: str
    to_stage: str | None
    criteria: tuple[Criterion, ...]
    shoulds_required: int
    #: keys of two latency histograms for the informational rank test (v2's, v1's)
    latency: tuple[str, str] | None = None


def gate_for(stage: str, gates: Sequence[Gate]) -> Gate:
    """The gate that decides whether ``stage`` may be left."""
    for gate in gates:
        if gate.from_stage == stage:
            return gate
    raise KeyError(f"no gate leaves stage {stage!r}")


@dataclass(frozen=True)
class GateDecision:
    gate: str
    decision: DecisionValue
    results: tuple[CriterionResult, ...]
    reasons: tuple[str, ...]
    shoulds_passed: int
    shoulds_required: int
    elapsed_s: float
    min_duration_s: float
    #: informational: v2 latency vs v1 (``p_greater`` small = v2 slower); never votes
    latency_test: RankTest | None = None


Histograms = Mapping[str, Mapping[int, float]]


def evaluate_gate(
    gate: Gate, values: Mapping[str, Value], *, now_in_stage_s: float, stages: Sequence[Stage],
    histograms: Histograms | None = None, explain: bool = True,
) -> GateDecision:
    """Decide a gate. First rule that applies wins:

    1. NO-GO — a blocker fires or a must fails (even before the minimum duration:
       a failing stage should stop early).
    2. INCONCLUSIVE — a must or blocker lacks data, or the stage's minimum
       duration has not elapsed ("not enough time" is not enough data).
    3. CONDITIONAL — a manual must/blocker is still pending, or fewer shoulds pass
       than the gate requires (manual shoulds pending simply do not count).
    4. GO.

    ``reasons`` lists everything that stands between the gate and GO, worst first.
    ``histograms`` (latency bins by key) feed the informational rank test;
    ``explain`` (see :func:`evaluate_criterion`) projects how much more data would decide.
    """
    results = tuple(evaluate_criterion(c, values, elapsed_s=now_in_stage_s, explain=explain) for c in gate.criteria)
    min_duration = stage_named(gate.from_stage, stages).min_duration_s
    voting = [r for r in results if r.criterion.kind in ("must", "blocker")]
    shoulds_passed = sum(1 for r in results if r.criterion.kind == "should" and r.verdict == "pass")

    def lines(verdict: Verdict) -> list[str]:
        return [_reason(r) for r in voting if r.verdict == verdict]

    failed, insufficient, pending = lines("fail"), lines("insufficient"), lines("pending")
    if now_in_stage_s < min_duration:
        insufficient.append(f"not enough time: {_hours(now_in_stage_s)} of {_hours(min_duration)} in {gate.from_stage}")
    if shoulds_passed < gate.shoulds_required:
        pending.append(f"should: {shoulds_passed} of {gate.shoulds_required} required pass")
    decision = NO_GO if failed else INCONCLUSIVE if insufficient else CONDITIONAL if pending else GO
    reasons = failed + insufficient + pending or [
        f"all musts pass, no blocker, {shoulds_passed} should(s) pass, {_hours(now_in_stage_s)} in stage"
    ]
    return GateDecision(
        gate.name, decision, results, tuple(reasons), shoulds_passed, gate.shoulds_required,
        now_in_stage_s, min_duration, _latency_test(gate, histograms or {}),
    )


def _reason(r: CriterionResult) -> str:
    c = r.criterion
    what = {"fail": "fired" if c.kind == "blocker" else "fails", "insufficient": "not enough data",
            "pending": "pending manual check"}[r.verdict]
    value = "" if r.value is None else f" ({c.label or 'value'}{'=' if c.label else ' '}{_fmt(r.value)})"
    detail = f": {r.detail}" if r.detail else ""
    return f"{c.kind} {c.description!r} {what}{value}{detail}"


def _hours(seconds: float) -> str:
    return f"{seconds / HOUR:.1f} h"


def _latency_test(gate: Gate, histograms: Histograms) -> RankTest | None:
    if gate.latency is None:
        return None
    bins = [histograms.get(key) for key in gate.latency]
    if not all(b is not None and sum(b.values()) > 0 for b in bins):
        return None
    v2_bins, v1_bins = ({int(k): float(n) for k, n in b.items()} for b in bins if b is not None)
    return mann_whitney_binned(v2_bins, v1_bins)


# --------------------------------------------------------------------------- rollback matrices


@dataclass(frozen=True)
class Signal:
    """One cell of a matrix row: a condition that, when true, escalates to the row's severity."""

    condition: Condition
    min_samples: tuple[MinSample, ...] = ()
    #: how the measured metric is named and shown in the decision ("p95", " ms")
    label: str = ""
    unit: str = ""


@dataclass(frozen=True)
class MatrixRow:
    severity: Severity
    signals: tuple[Signal, ...]
    action: str
    target: float


@dataclass(frozen=True)
class Matrix:
    """Rows worst first; the first row with a true signal decides, else ``otherwise`` (LOW, no change)."""

    name: str
    rows: tuple[MatrixRow, ...]
    otherwise: str


GENERAL = "general"


def matrix_for(stage: Stage | str, matrices: Mapping[str, Matrix]) -> Matrix:
    """The stage's own matrix, else the general one."""
    name = stage.name if isinstance(stage, Stage) else stage
    return matrices.get(name) or matrices[GENERAL]


@dataclass(frozen=True)
class Decision:
    """The matrix's answer: ``target_percentage`` None means no change."""

    severity: Severity
    action: str
    target_percentage: float | None
    signals: tuple[str, ...] = ()

    @property
    def immediate(self) -> bool:
        """Emergency: skip the gradual path and the watch interval."""
        return self.severity == "CRITICAL"


def rollback_decision(matrix: Matrix, values: Mapping[str, Value]) -> Decision:
    """The rollback matrix's verdict on the named values: the worst row with a true signal.

    A signal whose samples are below their minimum, or whose data is missing, never
    triggers. A value exactly on a boundary takes the milder row — rows escalate when
    a value is strictly beyond a bound, exactly like the alert rules' ``>``/``<``.
    """
    for row in matrix.rows:
        fired = [_signal_text(s, values) for s in row.signals
                 if shortfall(s.min_samples, values) is None and s.condition.evaluate(values)]
        if fired:
            return Decision(row.severity, row.action, row.target, tuple(fired))
    return Decision("LOW", matrix.otherwise, None)


def _signal_text(signal: Signal, values: Mapping[str, Value]) -> str:
    simple = signal.condition.comparison()
    if simple is None:
        return signal.condition.text
    metric, op, threshold = simple
    value = values.get(metric)
    shown = (f"{_fmt(value.point)}{signal.unit} (bounds {_fmt(value.lower)}–{_fmt(value.upper)}{signal.unit})"
             if isinstance(value, Interval) else f"{_fmt(_number(value))}{signal.unit}")
    return f"{signal.label or metric} {shown} {op} {threshold:g}{signal.unit}"


# --------------------------------------------------------------------------- autopilot


@dataclass(frozen=True)
class Action:
    kind: Literal["advance", "rollback", "hold"]
    reason: str
    target_percentage: float | None = None
    #: the stage advanced to (its ``shadow`` says whether shadow mode stays on)
    stage: Stage | None = None
    immediate: bool = False


def autopilot_step(
    stage: Stage,
    decision: GateDecision,
    matrix_decision: Decision,
    elapsed_ok: bool,
    *,
    stages: Sequence[Stage],
    current_percentage: float | None = None,
) -> Action:
    """One autopilot tick: roll back, advance, or hold — in that order of priority.

    ``elapsed_ok``: the watch interval since the last percentage change has
    passed (runbook: 30 min between gradual rollback steps). CRITICAL rolls back
    to the matrix target at once; HIGH/MEDIUM step down the gradual path
    (never below the matrix target), one step per watch interval. Any severity
    above LOW, or a gate that is not GO, holds.
    """
    current = stage.percentage if current_percentage is None else current_percentage
    target = matrix_decision.target_percentage
    why = "; ".join(matrix_decision.signals) or matrix_decision.action
    if target is not None and target < current:
        if matrix_decision.immediate:
            return Action("rollback", f"{matrix_decision.severity}: {why}", target, immediate=True)
        if not elapsed_ok:
            return Action("hold", f"{matrix_decision.severity}: {why}; next rollback step after the watch interval")
        step = max(target, previous_percentage(current))
        return Action("rollback", f"{matrix_decision.severity}: {why}", step)
    if matrix_decision.severity != "LOW":
        return Action("hold", f"{matrix_decision.severity}: {why}")
    if decision.decision != GO:
        return Action("hold", f"gate {decision.gate} {decision.decision}: " + "; ".join(decision.reasons))
    upcoming = next_stage(stage, stages)
    if upcoming is None:
        return Action("hold", f"{stage.name} is the last stage; gate GO: consider retiring v1")
    if not elapsed_ok:
        return Action("hold", "gate GO; waiting for the watch interval since the last change")
    return Action("advance", f"gate {decision.gate} GO", upcoming.percentage, upcoming)
