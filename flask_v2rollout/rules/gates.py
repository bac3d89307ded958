"""Stages, the runbook's gates, rollback matrices and the autopilot (pure, no Flask, no SQL).

The host side (metrics windows, audit, manual checks) builds one plain snapshot,
the **MetricsView**, per rollout and stage; everything here is a function of it,
so a decision can be replayed and unit-tested from a dict.

MetricsView (a ``Mapping``; every key optional — a missing key or ``None`` is
"no data", never zero; rates are *fractions* 0–1, times are milliseconds; all
counts cover the current stage, i.e. since the percentage last reached it)::

    {
      "v2": {                         # calls served to users assigned v2 (fallbacks included)
        "calculations": 5120,         # sample size of every v2 criterion
        "error_rate": 0.004,          # share where v2 raised something other than Fallback
        "fallback_rate": 0.12,        # share served by v1 instead (Fallback or error)
        "p95_ms": 41.0, "p99_ms": 90.0, "avg_ms": 12.5,
        "users": 830,                 # distinct users exposed
        "conversions": 95,            # distinct users who converted at least once (binomial)
        "latency_bins": {"212": 3.0}, # metrics.py histogram {bin_index (int or str): count}
      },
      "v1": { ...same keys... },      # the control arm
      "shadow": {                     # v2 runs off the request path (shadow stage)
        "runs": 2400,                 # finished or timed-out shadow runs: sample size
        "unhandled": 0,               # runs where v2 raised something other than Fallback
        "completion_rate": 1.0,       # share that returned a value or raised Fallback
        "fallback_rate": 0.125,
        "compared": 2100,             # runs compared with v1's value
        "agreement_rate": 0.78,       # share of compared runs EXACT or CLOSE
        "v2_p95_ms": 0.54, "v1_p95_ms": 0.40,
        "v2_latency_bins": {...},     # compared with v1.latency_bins (informational)
      },
      "offline": {"agreement_rate": 0.90, "fallback_rate": 0.125},   # offline validation
      "previous_stage": {"v2_p95_ms": 38.0, "v2_fallback_rate": 0.11, "v2_avg_ms": 12.0},
      "db_errors": 0,                 # database connection failures in the stage
      "rollbacks_in_stage": 0,        # audited rollbacks while in the stage
      "critical_incidents_in_stage": 0,   # CRITICAL alerts fired while in the stage
      "monitoring_ok": True,          # logs written and metrics flushing (probe)
      "manual": {"team_ready": True, "team_confident": None, ...},   # see MANUAL_CHECKS
    }

Manual checks are recorded by a person: ``True`` confirmed, ``False`` refused,
``None``/absent = pending. Time in stage is passed to :func:`evaluate_gate`
separately, it is not part of the view.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

from .alerts import Severity
from ..stats import RankTest, RatioTest, mann_whitney_binned, proportion_ratio_test

HOUR = 3600.0
DAY = 24 * HOUR

# --------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    """A named percentage with the time it must run before its gate may say GO."""

    name: str
    percentage: float
    min_duration_s: float
    shadow: bool = False


DEFAULT_DURATIONS_S: Mapping[str, float] = {
    "shadow": 24 * HOUR, "canary": 48 * HOUR, "staged": 72 * HOUR, "full": 14 * DAY,
}
_PLAN = (("shadow", 0.0, True), ("canary", 10.0, False), ("staged", 50.0, False), ("full", 100.0, False))


def build_stages(durations: Mapping[str, float] | None = None) -> tuple[Stage, ...]:
    """The runbook's four stages, minimum durations overridable in seconds (demos, tests)."""
    overrides = dict(durations or {})
    unknown = sorted(set(overrides) - set(DEFAULT_DURATIONS_S))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {list(DEFAULT_DURATIONS_S)}")
    if any(not seconds >= 0 for seconds in overrides.values()):
        raise ValueError("stage durations must be >= 0 seconds")
    return tuple(
        Stage(name, pct, float(overrides.get(name, DEFAULT_DURATIONS_S[name])), shadow) for name, pct, shadow in _PLAN
    )


STAGES = build_stages()


def stage_named(name: str, stages: Sequence[Stage] = STAGES) -> Stage:
    for stage in stages:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r}")


def next_stage(stage: Stage, stages: Sequence[Stage] = STAGES) -> Stage | None:
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
Comparison = Literal[
    "<", "<=", ">", ">=", "==", "between", "outside", "is_true", "is_false", "ratio_at_least", "ratio_below"
]
Verdict = Literal["pass", "fail", "insufficient", "pending"]
Threshold = float | tuple[float, float] | None

MIN_CALCULATIONS = 200
MIN_USERS = 100
#: p95 regressions against the previous stage are measured on at least this many ms,
#: so sub-millisecond jitter never reads as "worse at 50 %".
P95_FLOOR_MS = 100.0

#: Manual check keys (``view["manual"][key]``) and what a person confirms by ``True``.
MANUAL_CHECKS: Mapping[str, str] = {
    "zero_complaints": "Zero user complaints attributable to v2",
    "higher_quality": "v2 edges perceived as higher quality",
    "team_ready": 'Team says "ready for production"',
    "team_confident": "Team confident",
    "satisfaction_kept": "User satisfaction kept or improved",
    "satisfaction_up": "User satisfaction up",
    "docs_complete": "Documentation complete and current",
    "operators_trained": "Operators trained",
}


@dataclass(frozen=True)
class Criterion:
    """One line of a gate.

    For ``must``/``should`` the comparison states what *passes*; for a
    ``blocker`` it states what *fires* the blocker (verdict ``fail``), as the
    runbook words them ("p95 > 1000 ms"). ``metric`` is a dotted path into the
    view (``"v2.error_rate"``), a ``derived.*`` name (see :data:`DERIVED`), or
    ``"manual.<key>"``. ``sample`` names the count that must reach
    ``min_sample`` before the metric is judged at all.
    """

    name: str
    kind: Kind
    description: str
    metric: str
    comparison: Comparison
    threshold: Threshold = None
    sample: str | None = None
    min_sample: float = 0

    @property
    def manual(self) -> bool:
        return self.metric.startswith("manual.")


@dataclass(frozen=True)
class CriterionResult:
    criterion: Criterion
    verdict: Verdict
    value: float | bool | None
    sample: float | None
    detail: str
    test: RatioTest | None = None


def _get(view: Mapping[str, Any], path: str) -> Any:
    node: Any = view
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _num(view: Mapping[str, Any], path: str) -> float | None:
    value = _get(view, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _offline_gap(view: Mapping[str, Any]) -> float | None:
    gaps = [_diff(_num(view, f"shadow.{k}"), _num(view, f"offline.{k}")) for k in ("agreement_rate", "fallback_rate")]
    known = [abs(g) for g in gaps if g is not None]
    return max(known) if known else None


def _p95_vs_previous(view: Mapping[str, Any]) -> float | None:
    previous = _num(view, "previous_stage.v2_p95_ms")
    return _ratio(_num(view, "v2.p95_ms"), None if previous is None else max(previous, P95_FLOOR_MS))


def _conversion_users(view: Mapping[str, Any]) -> float | None:
    users = [u for u in (_num(view, "v2.users"), _num(view, "v1.users")) if u is not None]
    return min(users) if len(users) == 2 else None


def _conversion_ratio(view: Mapping[str, Any]) -> float | None:
    return _ratio(
        _ratio(_num(view, "v2.conversions"), _num(view, "v2.users")),
        _ratio(_num(view, "v1.conversions"), _num(view, "v1.users")),
    )


#: Values computed from several view entries.
DERIVED: Mapping[str, Callable[[Mapping[str, Any]], float | None]] = {
    "derived.shadow_p95_ratio": lambda v: _ratio(_num(v, "shadow.v2_p95_ms"), _num(v, "shadow.v1_p95_ms")),
    "derived.avg_ms_ratio": lambda v: _ratio(_num(v, "v2.avg_ms"), _num(v, "v1.avg_ms")),
    "derived.offline_gap": _offline_gap,
    "derived.p95_vs_previous_stage": _p95_vs_previous,
    "derived.avg_ms_vs_previous_stage": lambda v: _ratio(_num(v, "v2.avg_ms"), _num(v, "previous_stage.v2_avg_ms")),
    "derived.fallback_rate_change": lambda v: _diff(
        _num(v, "v2.fallback_rate"), _num(v, "previous_stage.v2_fallback_rate")
    ),
    "derived.conversion_users": _conversion_users,
    "derived.conversion_ratio": _conversion_ratio,
}


def _measure(view: Mapping[str, Any], name: str) -> float | None:
    return DERIVED[name](view) if name in DERIVED else _num(view, name)


def _holds(value: float, comparison: Comparison, threshold: Threshold) -> bool:
    if comparison in ("between", "outside"):
        assert isinstance(threshold, tuple)
        inside = threshold[0] <= value <= threshold[1]
        return inside if comparison == "between" else not inside
    assert isinstance(threshold, (int, float))
    return {
        "<": value < threshold,
        "<=": value <= threshold,
        ">": value > threshold,
        ">=": value >= threshold,
        "==": value == threshold,
    }[comparison]


def _verdict(kind: Kind, holds: bool) -> Verdict:
    if kind == "blocker":
        return "fail" if holds else "pass"
    return "pass" if holds else "fail"


def evaluate_criterion(criterion: Criterion, view: Mapping[str, Any]) -> CriterionResult:
    """Judge one criterion on the view."""
    c = criterion
    if c.comparison in ("is_true", "is_false"):
        flag = _get(view, c.metric)
        if flag is None:
            verdict: Verdict = "pending" if c.manual else "insufficient"
            return CriterionResult(c, verdict, None, None, "not recorded yet" if c.manual else "no data")
        if not isinstance(flag, bool):
            return CriterionResult(c, "insufficient", None, None, f"expected true/false, got {flag!r}")
        return CriterionResult(c, _verdict(c.kind, flag is (c.comparison == "is_true")), flag, None, "")
    sample = _measure(view, c.sample) if c.sample else None
    if c.comparison in ("ratio_at_least", "ratio_below"):
        return _ratio_result(c, view, sample)
    value = _measure(view, c.metric)
    if c.sample and (sample is None or sample < c.min_sample):
        return CriterionResult(c, "insufficient", value, sample, f"sample {_fmt(sample)} < {c.min_sample:g}")
    if value is None:
        return CriterionResult(c, "insufficient", None, sample, "no data")
    return CriterionResult(c, _verdict(c.kind, _holds(value, c.comparison, c.threshold)), value, sample, "")


def _ratio_result(c: Criterion, view: Mapping[str, Any], users: float | None) -> CriterionResult:
    """Conversion v2 vs v1: the ratio test for ``ratio_at_least``, the observed ratio for ``ratio_below``."""
    assert isinstance(c.threshold, (int, float))
    counts = [x for x in (_num(view, p) for p in ("v2.conversions", "v2.users", "v1.conversions", "v1.users"))
              if x is not None]
    if users is None or users < c.min_sample or len(counts) < 4:
        return CriterionResult(c, "insufficient", None, users, f"users per arm {_fmt(users)} < {c.min_sample:g}")
    conv_b, n_b, conv_a, n_a = counts
    try:
        test = proportion_ratio_test(conv_b, n_b, conv_a, n_a, ratio=c.threshold)
    except ValueError as exc:
        return CriterionResult(c, "insufficient", None, users, f"invalid counts: {exc}")
    bounds = f"ratio {_fmt(test.ratio)}, 95% bounds [{_fmt(test.lower)}, {_fmt(test.upper)}]"
    if c.comparison == "ratio_below":
        if test.ratio is None:
            return CriterionResult(c, "insufficient", None, users, test.reason, test)
        return CriterionResult(c, _verdict(c.kind, test.ratio < c.threshold), test.ratio, users, bounds, test)
    if test.insufficient:
        return CriterionResult(c, "insufficient", test.ratio, users, test.reason, test)
    if test.passes:
        verdict: Verdict = "pass"
    elif test.upper is not None and test.upper < c.threshold:
        verdict = "fail"
    else:
        verdict, bounds = "insufficient", bounds + f": cannot tell yet whether >= {c.threshold:g}"
    return CriterionResult(c, verdict, test.ratio, users, bounds, test)


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
    """The criteria for leaving ``from_stage`` (``to_stage`` None: the ongoing review of full)."""

    name: str
    from_stage: str
    to_stage: str | None
    criteria: tuple[Criterion, ...]
    shoulds_required: int
    #: view paths of two latency histograms for the informational rank test (v2, v1)
    latency: tuple[str, str] | None = None


def build_gates(*, min_calculations: int = MIN_CALCULATIONS, min_users: int = MIN_USERS) -> tuple[Gate, ...]:
    """The runbook's gates; minimum samples overridable (small demos)."""
    calc, users, runs = "v2.calculations", "derived.conversion_users", "shadow.runs"

    def v2(name: str, kind: Kind, text: str, metric: str, cmp: Comparison, thr: Threshold) -> Criterion:
        return Criterion(name, kind, text, metric, cmp, thr, calc, min_calculations)

    def conv(name: str, kind: Kind, text: str, cmp: Comparison, thr: float) -> Criterion:
        return Criterion(name, kind, text, "derived.conversion_ratio", cmp, thr, users, min_users)

    def manual(name: str, kind: Kind, key: str, cmp: Comparison = "is_true", text: str | None = None) -> Criterion:
        return Criterion(name, kind, text or MANUAL_CHECKS[key], f"manual.{key}", cmp)

    def shadow(
        name: str, kind: Kind, text: str, metric: str, cmp: Comparison, thr: Threshold, sample: str = runs
    ) -> Criterion:
        return Criterion(name, kind, text, metric, cmp, thr, sample, min_calculations)

    shadow_to_canary = Gate("shadow_to_canary", "shadow", "canary", (
        shadow("unhandled", "must", "Zero unhandled exceptions in 24 h", "shadow.unhandled", "==", 0),
        shadow("completion", "must", "v2 completes 100 % of calculations (fallback counts as completed)",
               "shadow.completion_rate", ">=", 1.0),
        shadow("p95", "must", "p95 < 500 ms", "shadow.v2_p95_ms", "<", 500.0),
        shadow("agreement", "must", "Agreement 60–85 %", "shadow.agreement_rate", "between", (0.60, 0.85),
               "shadow.compared"),
        shadow("fallback", "must", "Fallback < 20 %", "shadow.fallback_rate", "<", 0.20),
        shadow("time_vs_v1", "should", "v2 time < 2× v1", "derived.shadow_p95_ratio", "<", 2.0),
        Criterion("db_errors", "should", "No database connection errors", "db_errors", "==", 0),
        Criterion("monitoring", "should", "Logs and monitoring working", "monitoring_ok", "is_true"),
        shadow("offline_match", "should", "Shadow metrics match the offline validation (within 10 points)",
               "derived.offline_gap", "<=", 0.10),
        Criterion("critical", "blocker", "Any critical error", "critical_incidents_in_stage", ">", 0),
        shadow("p95_critical", "blocker", "p95 > 1000 ms", "shadow.v2_p95_ms", ">", 1000.0),
        shadow("agreement_out", "blocker", "Agreement outside 50–90 %", "shadow.agreement_rate", "outside",
               (0.50, 0.90), "shadow.compared"),
        shadow("fallback_high", "blocker", "Fallback > 30 %", "shadow.fallback_rate", ">", 0.30),
    ), 1, ("shadow.v2_latency_bins", "v1.latency_bins"))

    canary_to_staged = Gate("canary_to_staged", "canary", "staged", (
        v2("error_rate", "must", "Error rate < 1 % for 48 h", "v2.error_rate", "<", 0.01),
        conv("conversion", "must", "Conversion ≥ 95 % of v1", "ratio_at_least", 0.95),
        manual("complaints", "must", "zero_complaints"),
        v2("fallback", "must", "Fallback < 20 %", "v2.fallback_rate", "<", 0.20),
        v2("p95", "must", "p95 < 500 ms", "v2.p95_ms", "<", 500.0),
        conv("conversion_up", "should", "Conversion ≥ 100 % of v1", "ratio_at_least", 1.0),
        manual("quality", "should", "higher_quality"),
        v2("stable", "should", "Stable under canary load (p99 < 1000 ms)", "v2.p99_ms", "<", 1000.0),
        Criterion("no_rollback", "should", "No incident requiring rollback", "rollbacks_in_stage", "==", 0),
        conv("conversion_low", "blocker", "Conversion < 90 % of v1", "ratio_below", 0.90),
        v2("error_high", "blocker", "Error rate > 2 %", "v2.error_rate", ">", 0.02),
        Criterion("rollbacks", "blocker", "More than one rollback during canary", "rollbacks_in_stage", ">", 1),
    ), 2, ("v2.latency_bins", "v1.latency_bins"))

    staged_to_full = Gate("staged_to_full", "staged", "full", (
        v2("error_rate", "must", "Error rate < 0.5 % for 72 h", "v2.error_rate", "<", 0.005),
        conv("conversion", "must", "Conversion ≥ 95 % of v1 at scale", "ratio_at_least", 0.95),
        Criterion("no_critical", "must", "Zero critical incidents while staged",
                  "critical_incidents_in_stage", "==", 0),
        v2("fallback", "must", "Fallback < 20 %", "v2.fallback_rate", "<", 0.20),
        v2("p95", "must", "p95 < 500 ms under 50 % load", "v2.p95_ms", "<", 500.0),
        manual("team_ready", "must", "team_ready"),
        conv("conversion_up", "should", "Conversion ≥ 100 % of v1", "ratio_at_least", 1.0),
        manual("satisfaction", "should", "satisfaction_kept"),
        v2("cost", "should", "Cost per calculation comparable to v1 (mean time < 2× v1)",
           "derived.avg_ms_ratio", "<", 2.0),
        manual("docs", "should", "docs_complete"),
        Criterion("critical", "blocker", "Any critical incident while staged", "critical_incidents_in_stage", ">", 0),
        v2("perf_worse", "blocker", "Performance worse at 50 % (p95 > 1.5× the canary's, floor 100 ms)",
           "derived.p95_vs_previous_stage", ">", 1.5),
        v2("data_quality", "blocker", "Data-quality regression (fallback rate up > 5 points since canary)",
           "derived.fallback_rate_change", ">", 0.05),
        manual("not_confident", "blocker", "team_confident", "is_false", "Team not confident"),
    ), 2, ("v2.latency_bins", "v1.latency_bins"))

    full_review = Gate("full_review", "full", None, (
        v2("error_rate", "must", "Error rate < 0.5 % at 100 %", "v2.error_rate", "<", 0.005),
        Criterion("no_critical", "must", "Zero critical incidents at 100 %", "critical_incidents_in_stage", "==", 0),
        v2("fallback", "must", "Fallback < 20 % at 100 %", "v2.fallback_rate", "<", 0.20),
        v2("p95", "must", "p95 < 500 ms at 100 %", "v2.p95_ms", "<", 500.0),
        manual("team_confident", "must", "team_confident"),
        manual("docs", "must", "docs_complete"),
        manual("operators", "must", "operators_trained"),
        manual("satisfaction_up", "should", "satisfaction_up"),
        v2("cost", "should", "Cost kept or down (mean time ≤ 1.1× staged)",
           "derived.avg_ms_vs_previous_stage", "<=", 1.1),
        v2("fallback_falling", "should", "Fallback rate falling over time", "derived.fallback_rate_change", "<", 0.0),
    ), 1)
    return shadow_to_canary, canary_to_staged, staged_to_full, full_review


GATES = build_gates()


def gate_for(stage: str, gates: Sequence[Gate] = GATES) -> Gate:
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


def evaluate_gate(
    gate: Gate, view: Mapping[str, Any], *, now_in_stage_s: float, stages: Sequence[Stage] = STAGES
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
    """
    results = tuple(evaluate_criterion(c, view) for c in gate.criteria)
    min_duration = stage_named(gate.from_stage, stages).min_duration_s
    voting = [r for r in results if r.criterion.kind in ("must", "blocker")]
    shoulds_passed = sum(1 for r in results if r.criterion.kind == "should" and r.verdict == "pass")

    def lines(verdict: Verdict) -> list[str]:
        return [_reason(r) for r in voting if r.verdict == verdict]

    failed, insufficient, pending = lines("fail"), lines("insufficient"), lines("pending")
    too_early = now_in_stage_s < min_duration
    if too_early:
        insufficient.append(f"not enough time: {_hours(now_in_stage_s)} of {_hours(min_duration)} in {gate.from_stage}")
    if shoulds_passed < gate.shoulds_required:
        pending.append(f"should: {shoulds_passed} of {gate.shoulds_required} required pass")
    decision = NO_GO if failed else INCONCLUSIVE if insufficient else CONDITIONAL if pending else GO
    reasons = failed + insufficient + pending or [
        f"all musts pass, no blocker, {shoulds_passed} should(s) pass, {_hours(now_in_stage_s)} in stage"
    ]
    return GateDecision(
        gate.name, decision, results, tuple(reasons), shoulds_passed, gate.shoulds_required,
        now_in_stage_s, min_duration, _latency_test(gate, view),
    )


def _reason(r: CriterionResult) -> str:
    c = r.criterion
    what = {"fail": "fired" if c.kind == "blocker" else "fails", "insufficient": "not enough data",
            "pending": "pending manual check"}[r.verdict]
    shown = str(r.value).lower() if isinstance(r.value, bool) else _fmt(r.value)
    value = "" if r.value is None else f" (value {shown})"
    detail = f": {r.detail}" if r.detail else ""
    return f"{c.kind} {c.description!r} {what}{value}{detail}"


def _hours(seconds: float) -> str:
    return f"{seconds / HOUR:.1f} h"


def _latency_test(gate: Gate, view: Mapping[str, Any]) -> RankTest | None:
    if gate.latency is None:
        return None
    bins = [_get(view, path) for path in gate.latency]
    if not all(isinstance(b, Mapping) and sum(b.values()) > 0 for b in bins):
        return None
    v2_bins, v1_bins = ({int(k): float(n) for k, n in b.items()} for b in bins)
    return mann_whitney_binned(v2_bins, v1_bins)


# --------------------------------------------------------------------------- rollback matrices


@dataclass(frozen=True)
class _Row:
    severity: Severity
    error_above: float
    p95_above_ms: float
    conversion_below: float
    action: str
    target: float


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


_EMERGENCY = "emergency rollback to 0 %"
CANARY_MATRIX = (
    _Row("CRITICAL", 0.05, 1000.0, 0.80, _EMERGENCY, 0.0),
    _Row("MEDIUM", 0.02, 500.0, 0.90, "investigate, reduce to 5 %", 5.0),
)
_CRITICAL = _Row("CRITICAL", 0.10, 2000.0, 0.80, _EMERGENCY, 0.0)
_HIGH = _Row("HIGH", 0.05, 1000.0, 0.90, "gradual rollback to 10 %", 10.0)
STAGED_MATRIX = (_CRITICAL, _HIGH, _Row("MEDIUM", 0.02, 500.0, 0.95, "reduce to 25 %, investigate", 25.0))
GENERAL_MATRIX = (_CRITICAL, _HIGH, _Row("MEDIUM", 0.02, 500.0, 0.95, "reduce to 50 %, investigate", 50.0))


def rollback_decision(
    stage: Stage | str, *, error_rate: float | None, p95_ms: float | None, conversion_ratio: float | None
) -> Decision:
    """The runbook's rollback matrix for ``stage`` (canary, staged, else the general table).

    ``error_rate`` is a fraction (0.05 = 5 %), ``conversion_ratio`` v2/v1
    (0.8 = 80 %); ``None`` means no data and never triggers (pass None for a rate
    whose window is too small to trust). The worst signal decides. A value
    exactly on a boundary takes the milder row — the matrices escalate when a
    value is strictly beyond a bound, exactly like the alert rules' ``>``/``<``.
    """
    name = stage.name if isinstance(stage, Stage) else stage
    matrix = {"canary": CANARY_MATRIX, "staged": STAGED_MATRIX}.get(name, GENERAL_MATRIX)
    for row in matrix:
        signals = []
        if error_rate is not None and error_rate > row.error_above:
            signals.append(f"error rate {error_rate:.2%} > {row.error_above:.0%}")
        if p95_ms is not None and p95_ms > row.p95_above_ms:
            signals.append(f"p95 {p95_ms:g} ms > {row.p95_above_ms:g} ms")
        if conversion_ratio is not None and conversion_ratio < row.conversion_below:
            signals.append(f"conversion {conversion_ratio:.1%} of v1 < {row.conversion_below:.0%}")
        if signals:
            return Decision(row.severity, row.action, row.target, tuple(signals))
    return Decision("LOW", "monitor, proceed" if name == "canary" else "monitor, no action", None)


def matrix_signals(
    view: Mapping[str, Any], *, min_calculations: float = MIN_CALCULATIONS, min_users: float = MIN_USERS
) -> dict[str, float | None]:
    """The matrix's three inputs from a view, ``None`` where the sample is too small to act on.

    Conversion is the *upper* confidence bound of the v2/v1 ratio: a rollback on
    conversion needs v2 to be worse beyond the noise of the sample, not a dip
    that chance alone explains. Use as ``rollback_decision(stage, **matrix_signals(view))``.
    """
    calculations = _num(view, "v2.calculations")
    enough = calculations is not None and calculations >= min_calculations
    users = _conversion_users(view)
    conversion = None
    if users is not None and users >= min_users:
        test = proportion_ratio_test(
            int(_num(view, "v2.conversions") or 0), int(_num(view, "v2.users") or 0),
            int(_num(view, "v1.conversions") or 0), int(_num(view, "v1.users") or 0),
        )
        conversion = test.upper if test.upper is not None else None
    return {
        "error_rate": _num(view, "v2.error_rate") if enough else None,
        "p95_ms": _num(view, "v2.p95_ms") if enough else None,
        "conversion_ratio": conversion,
    }


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
    current_percentage: float | None = None,
    stages: Sequence[Stage] = STAGES,
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
