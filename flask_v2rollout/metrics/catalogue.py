"""Every metric the rules can read, declared once: name, unit, description, arm, and how it is computed.

Alert rules, gate criteria and rollback-matrix rows are conditions over these
names (``rules/conditions.py``), in these units: percent 0–100 for ``*_pct``,
milliseconds for ``*_ms``, plain numbers for counts and ratios. The evaluator
turns one window of the metric store into one :class:`Facts` and then into one
named-values mapping with :func:`values` — the alert window for alerts, the
current stage's window for gates and matrices. Adding a metric is one
:class:`Metric` entry in :data:`CATALOGUE`.

Missing data is ``None``, never zero: a rate over no calls, a stage without a
previous stage, a manual check nobody recorded.

Samples and minimums. A metric may name its **sample** (the count it was
measured on) and the **minimum** that sample must reach before a gate or a
matrix acts on it: ``"calculations"`` (``V2ROLLOUT_GATE_MIN_CALCULATIONS``,
default 200) or ``"users"`` (``V2ROLLOUT_GATE_MIN_USERS``, default 100, per
arm). Alerts read the values as they are, except conversion rates, which are
no data below the users minimum in every window (a rate over a handful of users
is noise, not a measurement).

Statistical metrics. The comparisons of v2 with v1 are
:class:`~flask_v2rollout.rules.conditions.Interval` values: anytime-valid
confidence sequences (:mod:`flask_v2rollout.stats`, level ``V2ROLLOUT_GATE_ALPHA``,
tuning ``V2ROLLOUT_SEQUENTIAL_TUNING``), valid however often the evaluator looks,
with the observed value as their point:

* ``v2_vs_v1_conversion_pct`` — v2's conversion rate as a percentage of v1's (one
  seam, :func:`conversion_interval`); ``v2_vs_v1_conversion_observed_pct`` is its point;
* ``v2_minus_v1_error_rate_pct`` — v2's error rate minus v1's, in points;
* ``v2_fallback_vs_previous_stage_pct`` — v2's fallback rate minus the previous stage's, in points;
* ``v2_vs_v1_latency_pct`` — v2's geometric-mean latency as a percentage of v1's (stage windows only);
* ``v2_vs_v1_complaints_pct`` — v2's complaining users (``track_event("complaint")``) as a percentage of v1's.

Compared with a number an interval is true only when the whole interval
satisfies the comparison, false only when the whole interval violates it,
unknown otherwise: a matrix row ``v2_vs_v1_conversion_pct < 80%`` fires only when
the upper bound is below 80 % (a drop beyond the noise). Gate criteria combine the
point (the runbook's threshold) with the interval (the evidence), see ``runbook.yaml``.

``srm_p_value`` is the anytime-valid p-value of the users per arm against the
configured percentage (sample-ratio mismatch): a small value means assignment is
broken, whatever the other metrics say. It counts only the users first seen since
the last percentage change (a canary reduced from 10 % to 5 % is compared with 5 %
on the users who came after the reduction).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..rules.conditions import COUNT, MS, PERCENT, Interval, Unit, Value
from ..rules.gates import CHECK_PREFIX
from ..stats import (
    DEFAULT_ALPHA,
    DEFAULT_TUNING,
    Sequence,
    difference_sequence,
    log_moments,
    mean_shift_sequence,
    ratio_sequence,
    srm_test,
)
from .recorder import GROWTH

Arm = Literal["v1", "v2", "shadow", "both", "rollout"]
MinimumName = Literal["calculations", "users"]
Minimums = Mapping[MinimumName, float]
#: the minimum samples when the host configures none (``V2ROLLOUT_GATE_MIN_*``)
DEFAULT_MINIMUMS: Minimums = {"calculations": 200, "users": 100}
#: p95 regressions against the previous stage are measured on at least this many ms,
#: so sub-millisecond jitter never reads as "worse at 50 %".
P95_FLOOR_MS = 100.0


@dataclass(frozen=True)
class Facts:
    """One window as the catalogue reads it.

    ``window`` is :meth:`MetricStore.window`'s summary; the rest is known only
    for a stage window (None elsewhere): the previous stage's v2 arm, audited
    rollbacks and CRITICAL alerts in the stage, monitoring health, the offline
    validation's fractions. Manual checks and probes are named values of their own.
    """

    window: Mapping[str, Any]
    percentage: float | None = None
    previous_v2: Mapping[str, Any] | None = None
    rollbacks: int | None = None
    critical_incidents: int | None = None
    monitoring_ok: bool | None = None
    offline: Mapping[str, float] = field(default_factory=dict)
    minimums: Minimums = field(default_factory=lambda: dict(DEFAULT_MINIMUMS))
    #: level and tuning of the anytime-valid intervals (``V2ROLLOUT_GATE_ALPHA``, ``V2ROLLOUT_SEQUENTIAL_TUNING``)
    alpha: float = DEFAULT_ALPHA
    tuning: float = DEFAULT_TUNING
    #: users per arm first seen since the last percentage change, when it came after the window's start:
    #: the sample-ratio check compares them with the current percentage (None: the window's users)
    srm_users: Mapping[str, float] | None = None

    def arm(self, name: str) -> Mapping[str, Any]:
        arms: Mapping[str, Mapping[str, Any]] = self.window.get("arms", {})
        return arms.get(name, {})

    @property
    def shadow(self) -> Mapping[str, Any]:
        shadow: Mapping[str, Mapping[str, Any]] = self.window.get("shadow", {})
        return shadow.get("v2", {})


@dataclass(frozen=True)
class Sample:
    """The count a metric is measured on and the minimum it must reach before a gate or matrix uses it."""

    metric: str
    minimum: MinimumName


@dataclass(frozen=True)
class Metric:
    name: str
    unit: Unit
    arm: Arm
    description: str
    compute: Callable[[Facts], Value]
    #: short label for matrix signals and the dashboard
    label: str = ""
    sample: Sample | None = None
    interval: bool = False


# --------------------------------------------------------------------------- computations


def _num(value: Any) -> float | None:
    return None if value is None or isinstance(value, bool) else float(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def _field(arm: str, key: str) -> Callable[[Facts], Value]:
    return lambda f: _num(f.arm(arm).get(key))


def _conversion_rate(arm: str) -> Callable[[Facts], Value]:
    def compute(f: Facts) -> Value:
        users = f.arm(arm).get("users") or 0
        return _num(f.arm(arm).get("conversion_rate_pct")) if users >= f.minimums["users"] else None
    return compute


def _interval(build: Callable[[float], Sequence | None], n: float, scale: float) -> Interval | None:
    """An interval from a sequence built at sample ``n``; ``project`` rebuilds it at a larger sample."""
    seq = build(n)
    if seq is None:
        return None
    return Interval(seq.lower * scale, seq.upper * scale, seq.point * scale, seq.n,
                    lambda m: _interval(build, m, scale) or Interval(math.nan, math.nan))


def conversion_interval(conv_b: float, n_b: float, conv_a: float, n_a: float, *,
                        alpha: float = DEFAULT_ALPHA, tuning: float = DEFAULT_TUNING) -> Interval | None:
    """v2's (b) conversion rate as a percentage of v1's (a), with anytime-valid bounds; None when unbounded.

    The single source of the interval every conversion criterion and matrix row reads.
    """
    try:
        if ratio_sequence(conv_b, n_b, conv_a, n_a) is None:
            return None
    except ValueError:
        return None
    total = n_b + n_a

    def build(n: float) -> Sequence | None:
        k = n / total
        return ratio_sequence(conv_b * k, n_b * k, conv_a * k, n_a * k, alpha=alpha, tuning=tuning)
    return _interval(build, total, 100.0)


def _difference(x_b: float, n_b: float, x_a: float, n_a: float, alpha: float, tuning: float) -> Interval | None:
    """``x_b / n_b - x_a / n_a`` in points, anytime-valid; None when an arm is empty or the counts are impossible."""
    if not (0 <= x_b <= n_b and 0 <= x_a <= n_a) or not n_b or not n_a:
        return None
    total = n_b + n_a

    def build(n: float) -> Sequence | None:
        k = n / total
        return difference_sequence(x_b * k, n_b * k, x_a * k, n_a * k, alpha=alpha, tuning=tuning)
    return _interval(build, total, 100.0)


def _error_difference(f: Facts) -> Value:
    counts = [_num(f.arm(a).get(k)) for a in ("v2", "v1") for k in ("errors", "calculations")]
    if any(c is None for c in counts):
        return None
    x_b, n_b, x_a, n_a = (float(c or 0) for c in counts)
    return _difference(x_b, n_b, x_a, n_a, f.alpha, f.tuning)


def _fallback_vs_previous(f: Facts) -> Value:
    if f.previous_v2 is None:
        return None
    counts = [_num(arm.get(k)) for arm in (f.arm("v2"), f.previous_v2) for k in ("fallbacks", "calculations")]
    if any(c is None for c in counts):
        return None
    x_b, n_b, x_a, n_a = (float(c or 0) for c in counts)
    return _difference(x_b, n_b, x_a, n_a, f.alpha, f.tuning)


def _latency_shift(f: Facts) -> Value:
    bins_b, bins_a = f.arm("v2").get("latency_bins"), f.arm("v1").get("latency_bins")
    b = log_moments({int(i): float(c) for i, c in bins_b.items()}) if bins_b else None
    a = log_moments({int(i): float(c) for i, c in bins_a.items()}) if bins_a else None
    if b is None or a is None:
        return None
    moments_b, moments_a = b, a

    def build(n: float) -> Sequence:
        return mean_shift_sequence(moments_b, moments_a, growth=GROWTH, n=n, alpha=f.alpha, tuning=f.tuning)
    return _interval(build, b.n + a.n, 100.0)


def _srm_p_value(f: Facts) -> Value:
    if f.srm_users is not None:
        users = [_num(f.srm_users.get(a)) for a in ("v2", "v1")]
    else:
        users = [_num(f.arm(a).get("users")) for a in ("v2", "v1")]
    if f.percentage is None or users[0] is None or users[1] is None:
        return None
    test = srm_test(users[0], users[1], f.percentage / 100.0, tuning=f.tuning, alpha=f.alpha)
    return None if test is None else test.p_value


def _rollout_users(f: Facts) -> Value:
    users = [_num(f.arm(a).get("users")) for a in ("v2", "v1")]
    return None if users[0] is None or users[1] is None else users[0] + users[1]


def _counts(f: Facts) -> tuple[float, float, float, float] | None:
    v2, v1 = f.arm("v2"), f.arm("v1")
    counts = [_num(arm.get(key)) for arm in (v2, v1) for key in ("converted_users", "users")]
    if any(c is None for c in counts):
        return None
    conv_b, n_b, conv_a, n_a = (float(c or 0) for c in counts)
    return conv_b, n_b, conv_a, n_a


def _conversion_vs_v1(f: Facts) -> Value:
    counts = _counts(f)
    return None if counts is None else conversion_interval(*counts, alpha=f.alpha, tuning=f.tuning)


def _conversion_observed(f: Facts) -> Value:
    counts = _counts(f)
    if counts is None or not 0 <= counts[0] <= counts[1] or not 0 <= counts[2] <= counts[3]:
        return None
    ratio = _ratio(_ratio(counts[0], counts[1]), _ratio(counts[2], counts[3]))
    return None if ratio is None else ratio * 100


def _events(arm: str, name: str) -> Callable[[Facts], Value]:
    def compute(f: Facts) -> Value:
        return float(f.arm(arm).get("events", {}).get(name, 0)) if f.arm(arm) else None
    return compute


def _event_rate_vs_v1(name: str) -> Callable[[Facts], Value]:
    """v2's share of users with the event as a percentage of v1's, with anytime-valid bounds (an interval).

    A user's second event counts once (at most one per user in each arm); None below the
    users minimum or without an event in each arm (no baseline to compare with).
    """
    def compute(f: Facts) -> Value:
        v2_users, v1_users = _num(f.arm("v2").get("users")), _num(f.arm("v1").get("users"))
        least = max(f.minimums["users"], 1)
        if v2_users is None or v1_users is None or v2_users < least or v1_users < least:
            return None
        v2_events = min(float(f.arm("v2").get("events", {}).get(name, 0)), v2_users)
        v1_events = min(float(f.arm("v1").get("events", {}).get(name, 0)), v1_users)
        return conversion_interval(v2_events, v2_users, v1_events, v1_users, alpha=f.alpha, tuning=f.tuning)
    return compute


def _expected_v2(f: Facts) -> Value:
    """v2 calculations the percentage predicts in the window, from every call made (v1 and v2)."""
    calls = [_num(f.arm(a).get("calculations")) for a in ("v1", "v2")]
    if f.percentage is None or calls[0] is None or calls[1] is None:
        return None
    return (calls[0] + calls[1]) * f.percentage / 100.0


def _total_calculations(f: Facts) -> Value:
    calls = [_num(f.arm(a).get("calculations")) for a in ("v1", "v2")]
    return None if calls[0] is None or calls[1] is None else calls[0] + calls[1]


def _users_per_arm(f: Facts) -> Value:
    users = [_num(f.arm(a).get("users")) for a in ("v2", "v1")]
    return min(u for u in users if u is not None) if all(u is not None for u in users) else None


def _shadow_runs(f: Facts) -> float | None:
    s = f.shadow
    return None if not s else float(s.get("compared", 0) + s.get("timeouts", 0))


def _shadow_class_pct(*classes: str, timeouts: bool = False) -> Callable[[Facts], float | None]:
    def compute(f: Facts) -> float | None:
        runs = _shadow_runs(f)
        if not runs:
            return None
        by = f.shadow.get("by_agreement", {})
        count = sum(by.get(c, 0) for c in classes) + (f.shadow.get("timeouts", 0) if timeouts else 0)
        return float(count / runs * 100)
    return compute


def _shadow_completion(f: Facts) -> Value:
    failed = _shadow_class_pct("v2_error", timeouts=True)(f)
    return None if failed is None else 100.0 - failed


def _shadow_numeric(f: Facts) -> Value:
    by = f.shadow.get("by_agreement", {})
    return float(sum(by.get(c, 0) for c in ("EXACT", "CLOSE", "MODERATE"))) if f.shadow else None


def _offline_gap(f: Facts) -> Value:
    """The larger gap, in points, between the shadow's agreement/fallback and the offline validation's."""
    shadow = {"agreement_rate": _num(f.shadow.get("agreement_rate_pct")),
              "fallback_rate": _shadow_class_pct("fallback")(f)}
    gaps = [abs(value - f.offline[key] * 100) for key, value in shadow.items()
            if isinstance(value, float) and key in f.offline]
    return max(gaps) if gaps else None


def _previous(key: str) -> Callable[[Facts], float | None]:
    return lambda f: None if f.previous_v2 is None else _num(f.previous_v2.get(key))


def _p95_vs_previous(f: Facts) -> Value:
    previous = _previous("p95_ms")(f)
    return _ratio(_num(f.arm("v2").get("p95_ms")), None if previous is None else max(previous, P95_FLOOR_MS))


def _fallback_change(f: Facts) -> Value:
    now, before = _num(f.arm("v2").get("fallback_rate_pct")), _previous("fallback_rate_pct")(f)
    return now - before if now is not None and before is not None else None


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)


CALCS = Sample("v2_calculations", "calculations")
RUNS = Sample("shadow_runs", "calculations")
USERS = Sample("conversion_users_per_arm", "users")
ALL_USERS = Sample("rollout_users", "users")


def _arm_metrics(arm: Literal["v1", "v2"], sample: Sample | None) -> list[Metric]:
    served = "users assigned v2 (fallbacks included)" if arm == "v2" else "users assigned v1 (the control)"
    return [
        Metric(f"{arm}_calculations", COUNT, arm, f"calculations served to {served}",
               _field(arm, "calculations"), f"{arm} calculations"),
        Metric(f"{arm}_calculations_per_min", COUNT, arm, f"calculations per minute for {served}",
               _field(arm, "per_min"), f"{arm} calculations/min"),
        Metric(f"{arm}_error_rate_pct", PERCENT, arm, f"share of {arm} calculations that raised an error",
               _field(arm, "error_rate_pct"), "error rate", sample),
        Metric(f"{arm}_fallback_rate_pct", PERCENT, arm, f"share of {arm} calls served by v1 instead",
               _field(arm, "fallback_rate_pct"), "fallback", sample),
        Metric(f"{arm}_avg_ms", MS, arm, f"mean {arm} duration", _field(arm, "avg_ms"), "mean time", sample),
        Metric(f"{arm}_p95_ms", MS, arm, f"95th percentile {arm} duration", _field(arm, "p95_ms"), "p95", sample),
        Metric(f"{arm}_p99_ms", MS, arm, f"99th percentile {arm} duration", _field(arm, "p99_ms"), "p99", sample),
        Metric(f"{arm}_users", COUNT, arm,
               f"distinct {served}, first seen in the window since the last percentage change",
               _field(arm, "users"), f"{arm} users"),
        Metric(f"{arm}_conversion_rate_pct", PERCENT, arm,
               f"share of {arm} users who converted (no data below the users minimum)",
               _conversion_rate(arm), f"{arm} conversion"),
    ]


CATALOGUE: tuple[Metric, ...] = (
    *_arm_metrics("v2", CALCS),
    Metric("v2_unhandled_exceptions", COUNT, "v2", "v2 calls that raised something other than Fallback",
           _field("v2", "unhandled"), "unhandled"),
    Metric("v2_timeouts_pct", PERCENT, "v2", "share of v2 calls slower than V2ROLLOUT_SLOW_CALL_MS",
           _field("v2", "slow_pct"), "slow calls"),
    Metric("v2_timeouts_per_min", COUNT, "v2", "v2 calls slower than V2ROLLOUT_SLOW_CALL_MS per minute (a rate)",
           _field("v2", "slow_per_min"), "slow calls/min"),
    Metric("v2_expected_calculations", COUNT, "v2",
           "v2 calculations the percentage predicts from all calls in the window", _expected_v2, "expected v2 calls"),
    Metric("v2_complaints", COUNT, "v2", 'complaints of v2 users (track_event("complaint"))',
           _events("v2", "complaint"), "v2 complaints"),
    *_arm_metrics("v1", None),
    Metric("v1_complaints", COUNT, "v1", 'complaints of v1 users (track_event("complaint"))',
           _events("v1", "complaint"), "v1 complaints"),
    Metric("v2_vs_v1_complaints_pct", PERCENT, "both",
           "v2 complaints per user as a percentage of v1's, with anytime-valid bounds (an interval; no data below "
           "the users minimum or without complaints in each arm)", _event_rate_vs_v1("complaint"), "complaints vs v1",
           interval=True),
    Metric("total_calculations", COUNT, "both", "calculations of both arms", _total_calculations, "calculations"),
    Metric("conversion_users_per_arm", COUNT, "both", "users in the smaller arm: the conversion sample",
           _users_per_arm, "users per arm"),
    Metric("rollout_users", COUNT, "both", "users in both arms: the sample-ratio sample", _rollout_users,
           "users"),
    Metric("v2_vs_v1_conversion_pct", PERCENT, "both",
           "v2 conversion as a percentage of v1's, with anytime-valid bounds (an interval)",
           _conversion_vs_v1, "conversion vs v1", USERS, interval=True),
    Metric("v2_minus_v1_error_rate_pct", PERCENT, "both",
           "v2 error rate minus v1's, in points, with anytime-valid bounds (an interval)",
           _error_difference, "error rate vs v1", CALCS, interval=True),
    Metric("v2_vs_v1_latency_pct", PERCENT, "both",
           "v2 geometric-mean time as a percentage of v1's, with anytime-valid bounds (an interval; stage only)",
           _latency_shift, "time vs v1", CALCS, interval=True),
    Metric("srm_p_value", COUNT, "both",
           "anytime-valid p-value of the users per arm against the percentage (small: assignment broken)",
           _srm_p_value, "SRM p", ALL_USERS),
    Metric("v2_vs_v1_conversion_observed_pct", PERCENT, "both", "v2 conversion as a percentage of v1's, observed",
           _conversion_observed, "conversion vs v1", USERS),
    Metric("shadow_runs", COUNT, "shadow", "shadow runs of v2 that finished or timed out", _shadow_runs,
           "shadow runs"),
    Metric("shadow_unhandled", COUNT, "shadow", "shadow runs where v2 raised something other than Fallback",
           lambda f: _num(f.shadow.get("by_agreement", {}).get("v2_error", 0)) if f.shadow else None,
           "shadow unhandled", RUNS),
    Metric("shadow_completion_pct", PERCENT, "shadow", "share of shadow runs that returned a value or fell back",
           _shadow_completion, "shadow completion", RUNS),
    Metric("shadow_fallback_rate_pct", PERCENT, "shadow", "share of shadow runs where v2 fell back",
           _shadow_class_pct("fallback"), "shadow fallback", RUNS),
    Metric("shadow_compared", COUNT, "shadow", "shadow runs whose value was compared with v1's", _shadow_numeric,
           "compared"),
    Metric("shadow_agreement_rate_pct", PERCENT, "shadow", "share of compared shadow runs EXACT or CLOSE to v1",
           lambda f: _num(f.shadow.get("agreement_rate_pct")), "agreement",
           Sample("shadow_compared", "calculations")),
    Metric("shadow_p95_ms", MS, "shadow", "95th percentile duration of v2 in the shadow",
           lambda f: _num(f.shadow.get("p95_ms")), "shadow p95", RUNS),
    Metric("shadow_offline_gap_pct", PERCENT, "shadow",
           "largest gap, in points, between shadow agreement/fallback and the offline validation",
           _offline_gap, "offline gap", RUNS),
    Metric("v2_p95_vs_previous_stage", COUNT, "v2",
           f"v2 p95 divided by the previous stage's (floored at {P95_FLOOR_MS:g} ms)", _p95_vs_previous,
           "p95 vs previous stage", CALCS),
    Metric("v2_avg_ms_vs_previous_stage", COUNT, "v2", "v2 mean time divided by the previous stage's",
           lambda f: _ratio(_num(f.arm("v2").get("avg_ms")), _previous("avg_ms")(f)), "mean time vs previous stage",
           CALCS),
    Metric("v2_fallback_rate_change_pct", PERCENT, "v2", "v2 fallback rate minus the previous stage's, in points",
           _fallback_change, "fallback change", CALCS),
    Metric("v2_fallback_vs_previous_stage_pct", PERCENT, "v2",
           "v2 fallback rate minus the previous stage's, in points, with anytime-valid bounds (an interval)",
           _fallback_vs_previous, "fallback change", CALCS, interval=True),
    Metric("db_connection_failures", COUNT, "rollout", "database connection failures",
           lambda f: _num(f.window.get("db_errors")), "db failures"),
    Metric("rollbacks_in_stage", COUNT, "rollout", "audited rollbacks since the stage began",
           lambda f: _num(f.rollbacks), "rollbacks"),
    Metric("critical_incidents_in_stage", COUNT, "rollout", "CRITICAL alerts fired since the stage began",
           lambda f: _num(f.critical_incidents), "critical incidents"),
    Metric("monitoring_ok", COUNT, "rollout", "1 when logs are written and metrics flush, else 0",
           lambda f: _flag(f.monitoring_ok), "monitoring"),
    Metric("v2_rollout_percentage", PERCENT, "rollout", "share of users served v2",
           lambda f: f.percentage, "percentage"),
)
BY_NAME: Mapping[str, Metric] = {m.name: m for m in CATALOGUE}
UNITS: Mapping[str, Unit] = {m.name: m.unit for m in CATALOGUE}
INTERVALS: frozenset[str] = frozenset(m.name for m in CATALOGUE if m.interval)


def values(facts: Facts, *, probes: Mapping[str, float | None] | None = None,
           checks: Mapping[str, bool | None] | None = None) -> dict[str, Value]:
    """The named values of one window: every catalogue metric, then probes and manual checks (``check_<key>``)."""
    out: dict[str, Value] = {m.name: m.compute(facts) for m in CATALOGUE}
    out.update(probes or {})
    out.update({CHECK_PREFIX + key: _flag(passed) for key, passed in (checks or {}).items()})
    return out
