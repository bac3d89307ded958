"""Decision simulator: false alarms, detection and time to GO of the runbook's gates, evaluated every minute.

Run: .venv/bin/python benchmarks/decisions.py [--trials 500] [--users-per-day 20000] [--workers 2]

Simulated users arrive at a steady rate (Poisson per minute), are assigned v2 with
the stage's percentage, convert with their arm's probability, and make one
calculation each that errs, falls back (v2) or not; latencies follow one
log-normal shape (median 40 ms), given to each arm as its expected histogram on
the recorder's bins (latency never decides these scenarios). Every simulated
minute the merged stage window and the 5-minute alert window are built as plain
counts — the shape ``MetricStore.window`` returns — and handed to the same pure
functions the evaluator runs: ``catalogue.values`` → ``evaluate_gate``,
``rollback_decision`` and the alert rules' ``evaluate``, with the packaged
runbook. Driving the whole app for 500 × 48 h × 60 evaluations would take hours;
``--e2e`` instead runs a shorter stage through a real app (real ``calculate()``,
SQL merge, ``rollout.gate()``) under the testing kit's clock and checks that the
gate it reports is the one these functions give on the same window.

A false alarm is any rollback the matrix asks for, a NO-GO, or a HIGH/CRITICAL
alert firing, at any minute of the stage. The fixed-horizon baseline printed
beside it applies the previous release's rules to the same counts at the same
minutes: Katz one-sided 95 % bounds for conversion (must "lower ≥ 95 %", matrix
rows on the upper bound), the point-estimate blocker "observed < 90 %", the
point-estimate alerts (conversion < 95 % of v1, error > 5 %).
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from flask_v2rollout.metrics.catalogue import BY_NAME, DEFAULT_MINIMUMS, Facts, Metric
from flask_v2rollout.metrics.recorder import GROWTH, MIN_MS, percentile
from flask_v2rollout.rules.alerts import RuleSet, RuleState, evaluate
from flask_v2rollout.rules.conditions import Condition, MinSample, Value
from flask_v2rollout.rules.gates import (
    CHECK_PREFIX,
    GO,
    HOUR,
    NO_GO,
    evaluate_gate,
    gate_for,
    matrix_for,
    rollback_decision,
    stage_named,
    with_durations,
)
from flask_v2rollout.rules.runbook import Runbook, load_runbook
from flask_v2rollout.stats import DEFAULT_ALPHA, DEFAULT_TUNING, proportion_ratio_test

MINUTE = 60.0
ALERT_MINUTES = 5


@dataclass(frozen=True)
class Arm:
    conversion: float
    error: float
    fallback: float = 0.0


@dataclass(frozen=True)
class Scenario:
    name: str
    v1: Arm
    v2: Arm


BASE = Arm(conversion=0.30, error=0.002)
HEALTHY_V2 = Arm(conversion=0.30, error=0.002, fallback=0.10)
SCENARIOS = {
    "A/A": Scenario("A/A (v2 = v1)", BASE, HEALTHY_V2),
    "A/B": Scenario("A/B (conversion −15 %, errors +3 points)", BASE,
                    Arm(conversion=0.30 * 0.85, error=0.032, fallback=0.10)),
}


def _latency_shape(step: int = 8) -> dict[int, float]:
    """A log-normal (median 40 ms, sigma 0.6) on every ``step``-th recorder bin, as shares summing to 1.

    Coarse on purpose: a dozen bins keep each look cheap, and latency decides nothing here.
    """
    nd = statistics.NormalDist(math.log(40.0), 0.6)
    shape = {}
    for i in range(int(math.log(2.0 / MIN_MS, GROWTH)), int(math.log(2000.0 / MIN_MS, GROWTH)), step):
        lo, hi = MIN_MS * GROWTH ** (i - step / 2), MIN_MS * GROWTH ** (i + step / 2)
        shape[i] = nd.cdf(math.log(hi)) - nd.cdf(math.log(lo))
    total = sum(shape.values())
    return {i: s / total for i, s in shape.items() if s > 1e-4}


SHAPE = _latency_shape()
_MILLION = {i: s * 1e6 for i, s in SHAPE.items()}  # percentile() ranks counts, not shares
P95, P99 = percentile(_MILLION, 0.95), percentile(_MILLION, 0.99)


@dataclass
class Counts:
    """One arm's counts over some minutes."""

    users: int = 0
    converted: int = 0
    calcs: int = 0
    errors: int = 0
    fallbacks: int = 0

    def add(self, other: Counts) -> None:
        for key in ("users", "converted", "calcs", "errors", "fallbacks"):
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def summary(self, minutes: float, bins: bool) -> dict[str, Any]:
        """The fields of ``summarize_arm`` the catalogue reads (latency bins in stage windows only)."""
        calcs = self.calcs

        def pct(x: int, n: int) -> float | None:
            return x / n * 100 if n else None
        return {
            "calculations": calcs, "per_min": calcs / minutes, "errors": self.errors,
            "error_rate_pct": pct(self.errors, calcs), "fallbacks": self.fallbacks,
            "fallback_rate_pct": pct(self.fallbacks, calcs), "unhandled": 0, "slow_pct": 0.0 if calcs else None,
            "avg_ms": 45.0 if calcs else None, "p95_ms": P95 if calcs else None, "p99_ms": P99 if calcs else None,
            "users": self.users, "converted_users": self.converted, "conversion_rate_pct": pct(self.converted,
                                                                                                self.users),
        } | ({"latency_bins": {i: s * calcs for i, s in SHAPE.items()}} if bins else {})


def _poisson(rng: random.Random, mean: float) -> int:
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _minute(rng: random.Random, scenario: Scenario, share: float, per_min: float) -> tuple[Counts, Counts]:
    v2, v1 = Counts(), Counts()
    for _ in range(_poisson(rng, per_min)):
        in_v2 = rng.random() < share
        arm, c = (scenario.v2, v2) if in_v2 else (scenario.v1, v1)
        c.users += 1
        c.calcs += 1
        c.converted += rng.random() < arm.conversion
        if rng.random() < arm.error:
            c.errors += 1
            c.fallbacks += in_v2  # v2's errors are served by v1: the recorder counts them as fallbacks too
        elif rng.random() < arm.fallback:
            c.fallbacks += 1
    return v2, v1


@dataclass
class Result:
    alarm_min: int | None = None
    alarm: str = ""
    go_at_end: bool = False
    old_alarm_min: int | None = None
    old_go_at_end: bool = False
    minutes: int = 0


@dataclass
class Setup:
    """The packaged runbook, and the catalogue metrics each stage's gate and matrix and the alert rules read."""

    runbook: Runbook
    alpha: float = DEFAULT_ALPHA
    tuning: float = DEFAULT_TUNING
    checks: dict[str, float | None] = field(default_factory=dict)
    stage_metrics: dict[str, tuple[Metric, ...]] = field(default_factory=dict)
    alert_metrics: tuple[Metric, ...] = ()
    #: the HIGH and CRITICAL alert rules: the only ones that count as alarms
    severe: RuleSet = field(default_factory=lambda: RuleSet(()))


def _read(conditions: Iterable[Condition], minimums: Iterable[MinSample]) -> tuple[Metric, ...]:
    names = {m for c in conditions for m in c.metrics} | {s.metric for s in minimums}
    return tuple(BY_NAME[n] for n in sorted(names) if n in BY_NAME)


def _values(facts: Facts, metrics: tuple[Metric, ...]) -> dict[str, Value]:
    """``catalogue.values`` restricted to the metrics read: the same computations, fewer of them."""
    return {m.name: m.compute(facts) for m in metrics}


def _window(v2: Counts, v1: Counts, minutes: float, bins: bool = False) -> dict[str, Any]:
    return {"arms": {"v2": v2.summary(minutes, bins), "v1": v1.summary(minutes, bins)}, "shadow": {},
            "db_errors": 0, "probes": {}}


def _previous_v2() -> Mapping[str, Any]:
    """The canary's v2 arm as the staged gate reads it (expected values of a healthy canary)."""
    calcs = 4_000
    return {"calculations": calcs, "fallbacks": int(calcs * HEALTHY_V2.fallback),
            "fallback_rate_pct": HEALTHY_V2.fallback * 100, "p95_ms": P95, "avg_ms": 45.0}


def run_stage(stage_name: str, scenario: Scenario, users_per_day: float, seed: int, setup: Setup,
              *, stop_at_alarm: bool = True) -> Result:
    """One simulated stage, evaluated every minute until its minimum duration (or the first alarm)."""
    rb = setup.runbook
    rng = random.Random(seed)
    stage = stage_named(stage_name, rb.stages)
    gate = gate_for(stage_name, rb.gates)
    # Only musts and blockers can say NO-GO: each look reads those; the whole gate is read at the end.
    voting = replace(gate, criteria=tuple(c for c in gate.criteria if c.kind != "should"), shoulds_required=0)
    matrix = matrix_for(stage, rb.matrices)
    share, per_min = stage.percentage / 100, users_per_day / 1440
    total_min = int(stage.min_duration_s // MINUTE)
    previous = _previous_v2() if stage_name != "canary" else None
    v2, v1 = Counts(), Counts()
    recent: deque[tuple[Counts, Counts]] = deque(maxlen=ALERT_MINUTES)
    states: dict[str, RuleState] = {}
    out = Result()
    for minute in range(1, total_min + 1):
        m2, m1 = _minute(rng, scenario, share, per_min)
        v2.add(m2)
        v1.add(m1)
        recent.append((m2, m1))
        a2, a1 = Counts(), Counts()
        for r2, r1 in recent:
            a2.add(r2)
            a1.add(r1)
        now = minute * MINUTE
        named = _values(Facts(_window(v2, v1, minute, bins=True), percentage=stage.percentage,
                              previous_v2=previous, rollbacks=0, critical_incidents=0, monitoring_ok=True,
                              minimums=DEFAULT_MINIMUMS, alpha=setup.alpha, tuning=setup.tuning),
                        setup.stage_metrics[stage_name]) | setup.checks
        decision = evaluate_gate(gate if minute == total_min else voting, named, now_in_stage_s=now,
                                 stages=rb.stages, explain=False)
        rollback = rollback_decision(matrix, named)
        alert_named = _values(Facts(_window(a2, a1, len(recent)), percentage=stage.percentage,
                                    minimums=DEFAULT_MINIMUMS, alpha=setup.alpha, tuning=setup.tuning),
                              setup.alert_metrics)
        fired = [t.rule.name for t in evaluate(setup.severe, alert_named, now, states) if t.kind == "fired"]
        if out.alarm_min is None:
            why = ("NO-GO: " + decision.reasons[0] if decision.decision == NO_GO else
                   f"rollback {rollback.severity}" if rollback.target_percentage is not None
                   and rollback.target_percentage < stage.percentage else
                   "alert " + fired[0] if fired else "")
            if why:
                out.alarm_min, out.alarm = minute, why
        if out.old_alarm_min is None and _old_alarm(stage_name, v2, v1, a2, a1):
            out.old_alarm_min = minute
        out.minutes = minute
        if stop_at_alarm and out.alarm_min is not None and out.old_alarm_min is not None:
            return out
        if minute == total_min:
            out.go_at_end = out.alarm_min is None and decision.decision == GO
            out.old_go_at_end = out.old_alarm_min is None and _old_go(stage_name, v2, v1)
    return out


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial draw: Poisson for rare outcomes, normal otherwise (n is thousands here)."""
    if n * min(p, 1 - p) < 30:
        return _poisson(rng, n * p) if p <= 0.5 else n - _poisson(rng, n * (1 - p))
    return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))


def go_at_end(stage_name: str, scenario: Scenario, users_per_day: float, seed: int, setup: Setup) -> bool:
    """One look at the end of the minimum duration: does the whole gate say GO? (The power table.)"""
    rb, rng = setup.runbook, random.Random(seed)
    stage = stage_named(stage_name, rb.stages)
    minutes = int(stage.min_duration_s // MINUTE)
    users = _poisson(rng, users_per_day / 1440 * minutes)
    v2 = Counts(users=_binomial(rng, users, stage.percentage / 100))
    v1 = Counts(users=users - v2.users)
    for c, arm in ((v2, scenario.v2), (v1, scenario.v1)):
        c.calcs, c.converted = c.users, _binomial(rng, c.users, arm.conversion)
        c.errors = _binomial(rng, c.calcs, arm.error)
        c.fallbacks = _binomial(rng, c.calcs - c.errors, arm.fallback) + (c.errors if c is v2 else 0)
    previous = _previous_v2() if stage_name != "canary" else None
    named = _values(Facts(_window(v2, v1, minutes, bins=True), percentage=stage.percentage, previous_v2=previous,
                          rollbacks=0, critical_incidents=0, monitoring_ok=True, minimums=DEFAULT_MINIMUMS,
                          alpha=setup.alpha, tuning=setup.tuning), setup.stage_metrics[stage_name]) | setup.checks
    decision = evaluate_gate(gate_for(stage_name, rb.gates), named, now_in_stage_s=stage.min_duration_s,
                             stages=rb.stages, explain=False)
    return decision.decision == GO


# --------------------------------------------------------------------------- the previous release's rules

_MIN_USERS, _MIN_CALCS, _ALERT_MIN_CALCS = DEFAULT_MINIMUMS["users"], DEFAULT_MINIMUMS["calculations"], 20
_ERROR_BAR = {"canary": (1.0, 2.0), "staged": (0.5, None)}


def _katz(v2: Counts, v1: Counts) -> tuple[float, float] | None:
    try:
        t = proportion_ratio_test(v2.converted, v2.users, v1.converted, v1.users)
    except ValueError:
        return None
    return None if t.lower is None or t.upper is None else (t.lower * 100, t.upper * 100)


def _old_alarm(stage: str, v2: Counts, v1: Counts, a2: Counts, a1: Counts) -> bool:
    """Fixed-horizon: Katz bounds and point estimates read at every look as if it were the only one."""
    must, blocker = _ERROR_BAR[stage]
    if v2.calcs >= _MIN_CALCS:
        rate = v2.errors / v2.calcs * 100
        if rate >= must or (blocker is not None and rate > blocker):
            return True
    if min(v2.users, v1.users) >= _MIN_USERS:
        bounds = _katz(v2, v1)
        observed = (v2.converted / v2.users) / (v1.converted / v1.users) * 100 if v1.converted else None
        if bounds is not None and bounds[1] < (95 if stage == "staged" else 90):  # matrix rows on the upper bound
            return True
        if bounds is not None and bounds[1] < 95:  # the must "lower ≥ 95 %" fails
            return True
        if stage == "canary" and observed is not None and observed < 90:  # blocker on the observed ratio
            return True
    if min(a2.users, a1.users) >= _MIN_USERS and a2.converted / a2.users < 0.95 * a1.converted / a1.users:
        return True  # the alert "v2 conversion < 95 % of v1's" on the 5-minute window
    return a2.calcs >= _ALERT_MIN_CALCS and a2.errors / a2.calcs > 0.05


def end_to_end(users_per_day: float, hours: float, seed: int, v2_arm: Arm) -> tuple[int, int, list[str],
                                                                                   dict[str, int]]:
    """A short canary through a real app, looked at every minute: its gate against the pure functions'.

    Users get the real bucketing (md5 of the id); each user's outcome is drawn once and handed to the
    calculation as its argument, so the app and the simulator count the same users, conversions,
    errors and fallbacks. Returns (looks, looks that agree, disagreements, the app's decisions counted).
    """
    import tempfile

    from flask import Flask

    from flask_v2rollout import Fallback, V2Rollout
    from flask_v2rollout.bucketing import in_rollout
    from flask_v2rollout.testing import Clock, use_clock

    def v2(kind: str) -> float:
        if kind == "error":
            raise KeyError("opponent")
        if kind == "fallback":
            raise Fallback("insufficient_weeks")
        return 1.0

    scenario = Scenario("e2e", Arm(conversion=0.30, error=0.0), v2_arm)  # v1 never errs: its errors would 500
    setup = _setup(DEFAULT_ALPHA, DEFAULT_TUNING)
    rb, rng = setup.runbook, random.Random(seed)
    stage = stage_named("canary", rb.stages)
    ext = V2Rollout()
    ext.register("calc", v1=lambda kind: 1.0, v2=v2, salt="")  # salt="": in_rollout(uid, pct) below is its bucketing
    with tempfile.TemporaryDirectory() as tmp:
        app = Flask("decisions", instance_path=tmp)
        app.config.update(SECRET_KEY="bench", V2ROLLOUT_STAGE_DURATIONS={"canary": hours * HOUR},
                          V2ROLLOUT_METRICS_FLUSH_S=10**9, V2ROLLOUT_EVALUATE_EVERY_S=10**9,
                          V2ROLLOUT_OTEL_ENABLED=False)
        ext.init_app(app)
        from flask import request

        ext.user_loader(lambda: request.headers.get("X-User"))
        clock = Clock(start=1_900_000_000 // 60 * 60)
        looks = agree = 0
        disagreements: list[str] = []
        decisions: dict[str, int] = {}
        v2_counts, v1_counts = Counts(), Counts()
        gate = gate_for("canary", rb.gates)
        with use_clock(app, clock):
            entered = clock()  # the stage begins at the change; its window at the next whole minute
            with app.app_context():
                ext.set_flag("calc", "v2_rollout_percentage", stage.percentage, actor="bench", reason="canary")
                for check in rb.manual_checks:
                    ext.record_check("calc", check, True, actor="bench")
            clock.advance(minutes=1)
            user = 0
            for minute in range(1, int(hours * 60) + 1):
                for _ in range(_poisson(rng, users_per_day / 1440)):
                    user += 1
                    uid = f"u{seed}-{user}"
                    in_v2 = in_rollout(uid, stage.percentage)
                    arm, c = (scenario.v2, v2_counts) if in_v2 else (scenario.v1, v1_counts)
                    converts = rng.random() < arm.conversion
                    kind = ("error" if rng.random() < arm.error else
                            "fallback" if in_v2 and rng.random() < arm.fallback else "ok")
                    c.users += 1
                    c.calcs += 1
                    c.converted += converts
                    c.errors += kind == "error"
                    c.fallbacks += kind != "ok"
                    with app.test_request_context(headers={"X-User": uid}):
                        app.preprocess_request()
                        ext.calculate("calc", kind)
                        if converts:
                            ext.track_conversion("calc")
                clock.advance(minutes=1)
                with app.app_context():
                    ext.flush()
                    report = ext.gate("calc")
                named = _values(Facts(_window(v2_counts, v1_counts, minute, bins=True), percentage=stage.percentage,
                                      rollbacks=0, critical_incidents=0, monitoring_ok=True,
                                      minimums=DEFAULT_MINIMUMS), setup.stage_metrics["canary"]) | setup.checks
                pure = evaluate_gate(gate, named, now_in_stage_s=clock() - entered, stages=with_durations(
                    rb.stages, {"canary": hours * HOUR}), explain=False)
                real = (report["decision"], {c["name"]: c["verdict"] for c in report["criteria"]})
                mine = (pure.decision, {r.criterion.name: r.verdict for r in pure.results})
                looks += 1
                decisions[real[0]] = decisions.get(real[0], 0) + 1
                if real == mine:
                    agree += 1
                elif len(disagreements) < 5:
                    diff = {k: (real[1][k], v) for k, v in mine[1].items() if real[1].get(k) != v}
                    disagreements.append(f"minute {minute}: app {real[0]}, simulator {mine[0]}; {diff}")
    return looks, agree, disagreements, decisions


def _old_go(stage: str, v2: Counts, v1: Counts) -> bool:
    bounds = _katz(v2, v1)
    return (bounds is not None and bounds[0] >= 95 and v2.calcs >= _MIN_CALCS
            and v2.errors / v2.calcs * 100 < _ERROR_BAR[stage][0])


# --------------------------------------------------------------------------- experiments


def _job(args: tuple[str, str, float, int, float, float]) -> Result:
    stage, scenario, users_per_day, seed, alpha, tuning = args
    return run_stage(stage, SCENARIOS[scenario], users_per_day, seed, _setup(alpha, tuning))


def _go_job(args: tuple[str, str, float, int, float, float]) -> bool:
    stage, scenario, users_per_day, seed, alpha, tuning = args
    return go_at_end(stage, SCENARIOS[scenario], users_per_day, seed, _setup(alpha, tuning))


_SETUPS: dict[tuple[float, float], Setup] = {}


def _setup(alpha: float, tuning: float) -> Setup:
    key = (alpha, tuning)
    if key not in _SETUPS:
        rb = load_runbook()
        stage_metrics = {}
        for stage in ("canary", "staged"):
            gate, matrix = gate_for(stage, rb.gates), matrix_for(stage, rb.matrices)
            conditions = [c for k in gate.criteria for c in (k.condition, k.fail_condition) if c is not None]
            conditions += [s.condition for row in matrix.rows for s in row.signals]
            minimums = [m for k in gate.criteria for m in k.min_samples]
            minimums += [m for row in matrix.rows for s in row.signals for m in s.min_samples]
            stage_metrics[stage] = _read(conditions, minimums)
        severe = RuleSet(tuple(r for r in rb.rules if r.severity in ("HIGH", "CRITICAL")))
        alert_metrics = _read([r.condition for r in severe], [m for r in severe for m in r.min_samples])
        checks: dict[str, float | None] = {CHECK_PREFIX + k: 1.0 for k in rb.manual_checks}
        _SETUPS[key] = Setup(rb, alpha, tuning, checks, stage_metrics, alert_metrics, severe)
    return _SETUPS[key]


def batch(pool: ProcessPoolExecutor, stage: str, scenario: str, users_per_day: float, trials: int, seed: int,
          alpha: float, tuning: float) -> list[Result]:
    jobs = [(stage, scenario, users_per_day, seed * 100_003 + i, alpha, tuning) for i in range(trials)]
    return list(pool.map(_job, jobs, chunksize=max(1, trials // 16)))


def _share(flags: Iterable[bool]) -> float:
    items = list(flags)
    return sum(items) / len(items) * 100 if items else math.nan


def _median_h(minutes: list[int]) -> str:
    return f"{statistics.median(minutes) / 60:.1f} h" if minutes else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500, help="simulated stages per A/A row")
    parser.add_argument("--ab-trials", type=int, default=200, help="simulated stages per A/B row")
    parser.add_argument("--power-trials", type=int, default=1000, help="simulated stages per power-table cell")
    parser.add_argument("--users-per-day", type=float, default=20_000)
    parser.add_argument("--power-levels", default="5000,10000,15000,20000,30000,40000,80000")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    parser.add_argument("--tuning", type=float, default=DEFAULT_TUNING)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--e2e", action="store_true", help="only the end-to-end agreement check")
    parser.add_argument("--e2e-hours", type=float, default=6.0)
    parser.add_argument("--e2e-users-per-day", type=float, default=200_000)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.e2e:
        print(f"end to end: a {args.e2e_hours:g} h canary at {args.e2e_users_per_day:g} users/day through a real "
              "app, rollout.gate() every minute, against the simulator's functions on the same users")
        for name, arm in (("equal v2", HEALTHY_V2), ("A/B v2", SCENARIOS["A/B"].v2)):
            looks, agree, disagreements, decisions = end_to_end(args.e2e_users_per_day, args.e2e_hours, args.seed,
                                                                arm)
            print(f"  {name}: {agree} of {looks} looks agree (decision and every verdict); the app said {decisions}")
            for line in disagreements:
                print("    " + line)
        print(f"({time.perf_counter() - started:.0f} s)")
        return
    print(f"users/day {args.users_per_day:g}, conversion {BASE.conversion:.0%}, errors {BASE.error:.1%}, "
          f"v2 fallback {HEALTHY_V2.fallback:.0%}; alpha {args.alpha:g}, tuning {args.tuning:g}; "
          "evaluated every simulated minute")
    with ProcessPoolExecutor(args.workers) as pool:
        print("\nstage    scenario  stages  false alarm (new)  false alarm (fixed-horizon)  GO at min. duration "
              "(new / fixed)")
        for stage in ("canary", "staged"):
            aa = batch(pool, stage, "A/A", args.users_per_day, args.trials, args.seed, args.alpha, args.tuning)
            print(f"{stage:8} A/A      {len(aa):6}  {_share(r.alarm_min is not None for r in aa):16.1f} %"
                  f"  {_share(r.old_alarm_min is not None for r in aa):26.1f} %"
                  f"  {_share(r.go_at_end for r in aa):6.1f} % / {_share(r.old_go_at_end for r in aa):.1f} %")
            kinds: dict[str, int] = {}
            for r in aa:
                if r.alarm:
                    kinds[r.alarm.split(" (")[0][:70]] = kinds.get(r.alarm.split(" (")[0][:70], 0) + 1
            for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:3]:
                print(f"           false alarms: {n} × {kind}")
        print("\nstage    scenario  stages  detected (new)  median time  detected (fixed)  median time")
        for stage in ("canary", "staged"):
            ab = batch(pool, stage, "A/B", args.users_per_day, args.ab_trials, args.seed + 1, args.alpha,
                       args.tuning)
            new = [r.alarm_min for r in ab if r.alarm_min is not None]
            old = [r.old_alarm_min for r in ab if r.old_alarm_min is not None]
            print(f"{stage:8} A/B      {len(ab):6}  {_share(r.alarm_min is not None for r in ab):12.1f} %"
                  f"  {_median_h(new):>11}  {_share(r.old_alarm_min is not None for r in ab):14.1f} %"
                  f"  {_median_h(old):>11}")
        levels = [float(x) for x in args.power_levels.split(",")]
        print("\npower: share of equal-v2 stages whose gate says GO at the end of the minimum duration "
              f"({args.power_trials} a cell, one look at the end)")
        print("users/day " + "".join(f"{lv:>10g}" for lv in levels))
        for stage in ("canary", "staged"):
            row = []
            for lv in levels:
                jobs = [(stage, "A/A", lv, (args.seed + 2) * 100_003 + i, args.alpha, args.tuning)
                        for i in range(args.power_trials)]
                row.append(_share(_go_job(job) for job in jobs))
            print(f"{stage:9} " + "".join(f"{x:9.1f}%" for x in row))
    print(f"\n({time.perf_counter() - started:.0f} s; minimum durations: canary 48 h, staged 72 h, "
          f"{HOUR / 60:.0f} evaluations an hour)")


if __name__ == "__main__":
    main()
