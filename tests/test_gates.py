"""Gates decide GO only on enough healthy data; matrices and the autopilot follow the runbook's tables."""
from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_v2rollout.metrics.catalogue import Facts, values
from flask_v2rollout.rules.conditions import Interval, Value
from flask_v2rollout.rules.gates import (
    CONDITIONAL,
    DAY,
    GO,
    HOUR,
    INCONCLUSIVE,
    NO_GO,
    Decision,
    Gate,
    GateDecision,
    autopilot_step,
    evaluate_gate,
    gate_for,
    matrix_for,
    next_stage,
    previous_percentage,
    rollback_decision,
    stage_named,
    with_durations,
)
from flask_v2rollout.rules.runbook import load_runbook

RUNBOOK = load_runbook()
STAGES, GATES, MATRICES, MANUAL_CHECKS = RUNBOOK.stages, RUNBOOK.gates, RUNBOOK.matrices, RUNBOOK.manual_checks
LONG_ENOUGH = 15 * DAY
HISTOGRAMS = {"v2": {240: 300.0, 250: 200.0}, "v1": {238: 300.0, 249: 200.0}, "shadow": {100: 2_400.0}}


def arm(**over: Any) -> dict[str, Any]:
    base = {
        "calculations": 5_000, "per_min": 100.0, "error_rate_pct": 0.1, "fallback_rate_pct": 10.0, "p95_ms": 40.0,
        "p99_ms": 120.0, "avg_ms": 12.0, "users": 40_000, "converted_users": 4_400, "conversion_rate_pct": 11.0,
        "unhandled": 0, "slow_pct": 0.0, "errors": 5, "fallbacks": 500,
    }
    return base | over


def raw() -> dict[str, Any]:
    """The catalogue's input for a stage every gate should pass: enough data, good numbers."""
    return {
        "window": {
            "arms": {"v2": arm(), "v1": arm(converted_users=4_000, conversion_rate_pct=10.0, avg_ms=10.0,
                                            p95_ms=0.40)},
            # 2 400 shadow runs: 2 100 compared with v1's number, 300 fell back; agreement 80 %
            "shadow": {"v2": {"compared": 2_400, "timeouts": 0, "agreement_rate_pct": 80.0, "p95_ms": 0.54,
                              "by_agreement": {"EXACT": 1_500, "CLOSE": 180, "MODERATE": 420, "fallback": 300}}},
            "db_errors": 0, "probes": {},
        },
        "previous_v2": {"p95_ms": 38.0, "fallback_rate_pct": 11.0, "avg_ms": 12.0, "fallbacks": 550,
                        "calculations": 5_000},
        "offline": {"agreement_rate": 0.85, "fallback_rate": 0.125},
        "rollbacks": 0, "critical_incidents": 0, "monitoring_ok": True, "percentage": 50.0,  # equal arms: no SRM
    }


def healthy(**over: Any) -> dict[str, Value]:
    """Named values every gate should pass, every manual check confirmed.

    ``a__b__c=x`` (or a top-level key of :func:`raw`) changes the catalogue's input before the values are
    computed (``window__arms__v2__p95_ms``); a metric name (``v2_error_rate_pct``) replaces that value afterwards.
    """
    facts = raw()
    named_over = {}
    for path, value in over.items():
        if path in facts:
            facts[path] = value
            continue
        if "__" not in path:
            named_over[path] = value
            continue
        node = facts
        *parents, leaf = path.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    named = values(Facts(**facts), checks={key: True for key in MANUAL_CHECKS})
    named.update(named_over)
    return named


def users(v2: int, v2_converted: int, v1: int, v1_converted: int) -> dict[str, int]:
    """Overrides for both arms' users and converting users."""
    return {"window__arms__v2__users": v2, "window__arms__v2__converted_users": v2_converted,
            "window__arms__v1__users": v1, "window__arms__v1__converted_users": v1_converted}


def errors(v2_errors: int) -> dict[str, float]:
    """Overrides for v2's errors out of its 5 000 calculations (v1: 5 errors)."""
    return {"window__arms__v2__errors": v2_errors, "window__arms__v2__error_rate_pct": v2_errors / 50}


def decide(gate: Gate, named: dict[str, Value], elapsed: float = LONG_ENOUGH,
           histograms: Any = HISTOGRAMS) -> GateDecision:
    return evaluate_gate(gate, named, now_in_stage_s=elapsed, stages=STAGES, histograms=histograms)


def verdicts(decision: GateDecision) -> dict[str, str]:
    return {r.criterion.name: r.verdict for r in decision.results}


SHADOW, CANARY, STAGED, FULL = GATES


# --------------------------------------------------------------------------- stages


def test_stages_are_the_runbooks() -> None:
    assert [(s.name, s.percentage, s.shadow, s.min_duration_s) for s in STAGES] == [
        ("shadow", 0, True, 24 * HOUR), ("canary", 10, False, 48 * HOUR),
        ("staged", 50, False, 72 * HOUR), ("full", 100, False, 14 * DAY),
    ]
    assert next_stage(stage("canary"), STAGES) == stage("staged")
    assert next_stage(stage("full"), STAGES) is None
    assert [gate_for(s.name, GATES).name for s in STAGES] == ["shadow_to_canary", "canary_to_staged", "staged_to_full",
                                                       "full_review"]


def test_durations_override_down_to_seconds() -> None:
    stages = with_durations(STAGES, {"shadow": 2, "canary": 3.5})
    assert [s.min_duration_s for s in stages] == [2, 3.5, 72 * HOUR, 14 * DAY]
    assert decide(SHADOW, healthy(), elapsed=1).decision == INCONCLUSIVE
    assert evaluate_gate(SHADOW, healthy(), now_in_stage_s=2, stages=stages).decision == GO
    with pytest.raises(ValueError, match="unknown stage"):
        with_durations(STAGES, {"canery": 1})
    with pytest.raises(ValueError):
        with_durations(STAGES, {"full": -1})


@pytest.mark.parametrize("current,previous", [(100, 50), (75, 50), (50, 10), (25, 10), (10, 0), (5, 0), (0, 0)])
def test_gradual_rollback_path(current: float, previous: float) -> None:
    assert previous_percentage(current) == previous


# --------------------------------------------------------------------------- gates


@pytest.mark.parametrize("gate", GATES, ids=lambda g: g.name)
def test_healthy_numbers_go(gate: Gate) -> None:
    decision = decide(gate, healthy())
    assert decision.decision == GO, decision.reasons
    assert set(verdicts(decision).values()) == {"pass"}
    assert decision.shoulds_passed >= gate.shoulds_required


def test_runbook_gate_shape() -> None:
    def count(gate: Gate, kind: str) -> int:
        return sum(c.kind == kind for c in gate.criteria)

    assert [(count(g, "must"), count(g, "should"), g.shoulds_required, count(g, "blocker")) for g in GATES[:3]] == [
        (5, 4, 1, 4), (5, 4, 2, 4), (6, 4, 2, 5),
    ]
    manual = {m for g in GATES for c in g.criteria if c.manual for m in c.condition.metrics}
    assert manual == {f"check_{k}" for k in MANUAL_CHECKS}


def test_error_spike_is_no_go_even_early() -> None:
    decision = decide(CANARY, healthy(**errors(150)), elapsed=HOUR)  # 3 % against v1's 0.1 %
    assert decision.decision == NO_GO
    assert verdicts(decision)["error_rate"] == "fail" and verdicts(decision)["error_high"] == "fail"
    assert any("blocker 'Error rate > 2 %' fired" in r for r in decision.reasons)
    assert any("not enough time" in r for r in decision.reasons)  # everything that stands in the way is listed


def test_must_failing_alone_is_no_go() -> None:
    decision = decide(STAGED, healthy(**errors(35)))  # 0.7 %: < 1 % canary bar, > 0.5 % staged bar
    assert decision.decision == NO_GO
    assert verdicts(decision)["error_rate"] == "fail"


def test_low_traffic_is_inconclusive() -> None:
    decision = decide(CANARY, healthy(v2_calculations=150, window__arms__v2__users=40, window__arms__v1__users=60))
    assert decision.decision == INCONCLUSIVE
    assert verdicts(decision)["error_rate"] == verdicts(decision)["conversion"] == "insufficient"
    assert any("sample 150 < 200" in r for r in decision.reasons)


def test_missing_metric_is_no_data_not_zero() -> None:
    named = healthy()
    del named["v2_error_rate_pct"]
    assert decide(CANARY, named).decision == INCONCLUSIVE
    assert decide(SHADOW, {}).decision == INCONCLUSIVE


def test_duration_not_elapsed_is_inconclusive() -> None:
    decision = decide(CANARY, healthy(), elapsed=47 * HOUR)
    assert decision.decision == INCONCLUSIVE
    assert decision.reasons == ("not enough time: 47.0 h of 48.0 h in canary",)


def test_manual_must_pending_is_conditional() -> None:
    decision = decide(STAGED, healthy(check_team_ready=None))
    assert decision.decision == CONDITIONAL
    assert verdicts(decision)["team_ready"] == "pending"
    assert any("pending manual check" in r for r in decision.reasons)


def test_manual_refused_is_no_go_and_confidence_is_a_blocker() -> None:
    assert decide(STAGED, healthy(check_team_ready=0)).decision == NO_GO
    decision = decide(STAGED, healthy(check_team_confident=0))
    assert decision.decision == NO_GO
    assert verdicts(decision)["not_confident"] == "fail"
    assert decide(STAGED, healthy(check_team_confident=None)).decision == CONDITIONAL


def test_too_few_shoulds_is_conditional() -> None:
    named = healthy(v2_p99_ms=1500.0, rollbacks_in_stage=1, check_higher_quality=None,
                    window__arms__v2__converted_users=4_000)  # conversion equal: "≥ 100 %" cannot be shown
    decision = decide(CANARY, named)
    assert decision.decision == CONDITIONAL
    assert decision.shoulds_passed == 0
    assert decision.reasons == ("should: 0 of 2 required pass",)


def test_conversion_passes_on_the_threshold_fails_on_evidence() -> None:
    clear_pass = decide(CANARY, healthy())
    result = next(r for r in clear_pass.results if r.criterion.name == "conversion")
    assert result.interval is not None and result.interval.lower > 90  # percent of v1
    assert "bounds [" in result.detail

    # The rehearsal: an equal v2 in a normal canary (4 000 v2 users, 36 000 v1 users, 30 % converting).
    # The old rule (lower bound ≥ 95 %) could not pass it; now the observed 100 % meets the threshold and
    # the interval clears the 90 % blocker level.
    equal = decide(CANARY, healthy(percentage=10.0, **users(4_000, 1_200, 36_000, 10_800)))
    assert verdicts(equal)["conversion"] == "pass" and verdicts(equal)["conversion_low"] == "pass"

    # observed 98 % on 2 000 users an arm: the interval reaches below 90 % — not yet, and how long it takes
    straddles = decide(CANARY, healthy(**users(2_000, 196, 2_000, 200)), elapsed=10 * HOUR)
    assert verdicts(straddles)["conversion"] == "insufficient"
    assert straddles.decision == INCONCLUSIVE
    reason = next(r for r in straddles.reasons if "Conversion ≥ 95 %" in r)
    assert "more observations" in reason and "h more at the current traffic" in reason

    # observed 85 %: the whole interval is below 95 % (a failed must), not yet wholly below 90 %
    clearly_low = decide(CANARY, healthy(window__arms__v2__converted_users=3_400))
    assert verdicts(clearly_low)["conversion"] == "fail" and verdicts(clearly_low)["conversion_low"] == "insufficient"
    assert clearly_low.decision == NO_GO

    # 150 users an arm observed at 67 %: noise, not evidence (the old point-estimate blocker fired here)
    assert verdicts(decide(CANARY, healthy(**users(150, 10, 150, 15))))["conversion_low"] == "insufficient"
    blocker = decide(CANARY, healthy(**users(20_000, 1_400, 20_000, 2_000)))  # 70 %: wholly below 90 %
    assert verdicts(blocker)["conversion_low"] == "fail"
    assert blocker.decision == NO_GO


def test_error_guardrails_fail_only_on_evidence_of_harm() -> None:
    # v2 at 1.2 % but v1 errs just as much: over the threshold, yet no evidence v2 causes it
    shared = healthy(**errors(60), window__arms__v1__errors=60)
    assert verdicts(decide(CANARY, shared))["error_rate"] == "insufficient"
    assert verdicts(decide(CANARY, healthy(**errors(60))))["error_rate"] == "fail"  # v1 at 0.1 %
    assert verdicts(decide(CANARY, healthy(**errors(40))))["error_rate"] == "pass"  # 0.8 % < 1 %


def test_srm_makes_the_gate_no_go() -> None:
    # 10 % configured, 4 000 v2 users against 36 000 v1: fine; 1 000 v2 users: assignment is broken
    fine = decide(CANARY, healthy(percentage=10.0, **users(4_000, 1_200, 36_000, 10_800)))
    assert verdicts(fine)["srm"] == "pass"
    broken = decide(CANARY, healthy(percentage=10.0, **users(1_000, 300, 36_000, 10_800)))
    assert verdicts(broken)["srm"] == "fail" and broken.decision == NO_GO
    assert any(r.startswith("blocker 'assignment is broken' fired (SRM p=") for r in broken.reasons)
    assert verdicts(decide(STAGED, healthy(percentage=50.0, **users(1_000, 300, 36_000, 10_800))))["srm"] == "fail"


def test_conversion_below_min_users_or_invalid_is_insufficient() -> None:
    decision = decide(CANARY, healthy(window__arms__v2__users=99))
    assert verdicts(decision)["conversion"] == verdicts(decision)["conversion_low"] == "insufficient"
    decision = decide(CANARY, healthy(window__arms__v2__converted_users=50_000))  # more converters than users
    assert verdicts(decision)["conversion"] == "insufficient"
    assert decision.decision == INCONCLUSIVE


def test_shadow_gate_blockers_and_agreement_band() -> None:
    assert decide(SHADOW, healthy(shadow_agreement_rate_pct=88.0)).decision == NO_GO  # must 60–85 fails
    decision = decide(SHADOW, healthy(shadow_agreement_rate_pct=45.0))
    assert verdicts(decision)["agreement_out"] == "fail"
    assert verdicts(decide(SHADOW, healthy(shadow_agreement_rate_pct=90.0)))["agreement_out"] == "pass"
    assert verdicts(decide(SHADOW, healthy(shadow_fallback_rate_pct=31.0)))["fallback_high"] == "fail"
    assert decide(SHADOW, healthy(shadow_unhandled=1)).decision == NO_GO
    assert decide(SHADOW, healthy(critical_incidents_in_stage=1)).decision == NO_GO


def test_shadow_shoulds() -> None:
    changes = {"window__shadow__v2__p95_ms": 0.9, "window__db_errors": 2, "monitoring_ok": None,
               "offline__agreement_rate": 0.95}
    v = verdicts(decide(SHADOW, healthy(**changes)))
    assert (v["time_vs_v1"], v["db_errors"], v["monitoring"], v["offline_match"]) == (
        "fail", "fail", "insufficient", "fail")
    assert decide(SHADOW, healthy(**changes)).decision == CONDITIONAL


def test_staged_blockers_against_the_previous_stage() -> None:
    worse = decide(STAGED, healthy(window__arms__v2__p95_ms=160.0))  # canary's 38 ms, floored to 100 → 1.6×
    assert verdicts(worse)["perf_worse"] == "fail" and worse.decision == NO_GO
    assert verdicts(decide(STAGED, healthy(window__arms__v2__p95_ms=140.0)))["perf_worse"] == "pass"
    # 11 % → 19 % on 5 000 calculations each: the whole interval is above 5 points
    regression = decide(STAGED, healthy(window__arms__v2__fallback_rate_pct=19.0, window__arms__v2__fallbacks=950))
    assert verdicts(regression)["data_quality"] == "fail"
    # 11 % → 17 %: 6 points observed, but the interval reaches below 5: not yet evidence, not a pass either
    unsure = decide(STAGED, healthy(window__arms__v2__fallback_rate_pct=17.0, window__arms__v2__fallbacks=850))
    assert verdicts(unsure)["data_quality"] == "insufficient" and unsure.decision == INCONCLUSIVE
    assert decide(STAGED, healthy(previous_v2=None)).decision == INCONCLUSIVE


def test_latency_rank_test_is_informational() -> None:
    decision = decide(CANARY, healthy())
    assert decision.latency_test is not None and decision.latency_test.effect > 0.5
    assert decision.decision == GO  # informational: slower, yet it does not vote
    assert decide(CANARY, healthy(), histograms={"v2": HISTOGRAMS["v2"]}).latency_test is None


def test_smaller_samples_for_demos() -> None:
    small = load_runbook(minimums={"calculations": 20, "users": 10}).gates[1]
    named = healthy(v2_calculations=25)
    assert decide(small, named).decision == GO
    assert decide(CANARY, named).decision == INCONCLUSIVE


# A property: below the minimum sample, no gate ever says GO, whatever the numbers.
rate = st.floats(0, 1)
latency = st.floats(0, 3000)


@st.composite
def low_traffic_views(draw: st.DrawFn) -> tuple[Gate, dict[str, Value]]:
    gate = draw(st.sampled_from(GATES))
    v2_users = draw(st.integers(0, 100_000))
    over: dict[str, Any] = {
        "window__arms__v2__error_rate_pct": draw(rate) * 100, "window__arms__v2__fallback_rate_pct": draw(rate) * 100,
        "window__arms__v2__p95_ms": draw(latency), "window__arms__v2__users": v2_users,
        "window__arms__v2__converted_users": draw(st.integers(0, v2_users)),
        "window__shadow__v2__agreement_rate_pct": draw(rate) * 100, "window__shadow__v2__p95_ms": draw(latency),
    }
    over |= {f"check_{k}": draw(st.sampled_from([1.0, 0.0, None])) for k in MANUAL_CHECKS}
    low = draw(st.integers(0, 199))
    over |= {"v2_calculations": low, "shadow_runs": low}
    return gate, healthy(**over)


@settings(max_examples=200, deadline=None)
@given(low_traffic_views(), st.floats(0, 30 * DAY))
def test_below_minimum_calculations_never_go(case: tuple[Gate, dict[str, Value]], elapsed: float) -> None:
    gate, named = case
    decision = decide(gate, copy.deepcopy(named), elapsed=elapsed)
    assert decision.decision != GO
    assert any(r.verdict == "insufficient" for r in decision.results if r.criterion.kind == "must")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(GATES), st.floats(0, 1), st.floats(0, 3000))
def test_go_implies_every_must_passes(gate: Gate, error_rate: float, p95: float) -> None:
    decision = decide(gate, healthy(window__arms__v2__error_rate_pct=error_rate * 100, window__arms__v2__p95_ms=p95))
    if decision.decision == GO:
        assert all(r.verdict == "pass" for r in decision.results if r.criterion.kind in ("must", "blocker"))


# --------------------------------------------------------------------------- rollback matrices

ENOUGH = {"v2_calculations": 5_000.0, "conversion_users_per_arm": 40_000.0}


def matrix(stage: str, error: float | None = None, p95: float | None = None,
           conversion: float | Interval | None = None) -> Decision:
    """The stage's matrix on error rate (%), p95 (ms) and conversion vs v1 (%), with enough data."""
    named = ENOUGH | {"v2_error_rate_pct": error, "v2_p95_ms": p95, "v2_vs_v1_conversion_pct": conversion}
    return rollback_decision(matrix_for(stage, MATRICES), named)


CANARY_CASES = [
    # error rate %, p95, conversion % of v1 → severity, target
    (5.01, None, None, "CRITICAL", 0), (5, None, None, "MEDIUM", 5), (2.01, None, None, "MEDIUM", 5),
    (2, None, None, "LOW", None), (None, 1000.1, None, "CRITICAL", 0), (None, 1000, None, "MEDIUM", 5),
    (None, 500, None, "LOW", None), (None, 500.1, None, "MEDIUM", 5), (None, None, 79.99, "CRITICAL", 0),
    (None, None, 80, "MEDIUM", 5), (None, None, 89.99, "MEDIUM", 5), (None, None, 90, "LOW", None),
    (0.1, 100, 102, "LOW", None), (None, None, None, "LOW", None),
]


@pytest.mark.parametrize("error,p95,conversion,severity,target", CANARY_CASES)
def test_canary_matrix_boundaries(error: float | None, p95: float | None, conversion: float | None,
                                  severity: str, target: float | None) -> None:
    d = matrix("canary", error, p95, conversion)
    assert (d.severity, d.target_percentage) == (severity, target)
    assert d.action == {"CRITICAL": "emergency rollback to 0 %", "MEDIUM": "investigate, reduce to 5 %",
                        "LOW": "monitor, proceed"}[severity]


GENERAL_CASES = [
    (10.01, None, None, "CRITICAL"), (10, None, None, "HIGH"), (5.01, None, None, "HIGH"),
    (5, None, None, "MEDIUM"), (2.01, None, None, "MEDIUM"), (2, None, None, "LOW"),
    (None, 2000.1, None, "CRITICAL"), (None, 2000, None, "HIGH"), (None, 1000, None, "MEDIUM"),
    (None, 500, None, "LOW"), (None, None, 79.99, "CRITICAL"), (None, None, 80, "HIGH"),
    (None, None, 90, "MEDIUM"), (None, None, 94.99, "MEDIUM"), (None, None, 95, "LOW"),
    (None, None, 130, "LOW"),
]


@pytest.mark.parametrize("error,p95,conversion,severity", GENERAL_CASES)
def test_staged_and_general_matrix_boundaries(error: float | None, p95: float | None, conversion: float | None,
                                              severity: str) -> None:
    staged = matrix("staged", error, p95, conversion)
    general = matrix("full", error, p95, conversion)
    assert staged.severity == general.severity == severity
    expected = {"CRITICAL": (0, 0), "HIGH": (10, 10), "MEDIUM": (25, 50), "LOW": (None, None)}[severity]
    assert (staged.target_percentage, general.target_percentage) == expected


def test_worst_signal_decides_and_is_named() -> None:
    d = matrix("staged", 1, 2500, 93)
    assert d.severity == "CRITICAL" and d.immediate
    assert d.signals == ("p95 2500 ms > 2000 ms",)
    d = matrix("staged", 6, 1200, 99)
    assert d.severity == "HIGH" and len(d.signals) == 2 and not d.immediate


RANK = {"LOW": 0, "MEDIUM": 1, "HIGH": 2, "CRITICAL": 3}


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["canary", "staged", "full"]), st.floats(0, 20), st.floats(0, 3000), st.floats(50, 120),
       st.floats(0, 5), st.floats(0, 500), st.floats(0, 20))
def test_matrix_is_monotone(stage: str, error: float, p95: float, conversion: float,
                            more_error: float, more_p95: float, less_conversion: float) -> None:
    base = matrix(stage, error, p95, conversion)
    worse = matrix(stage, error + more_error, p95 + more_p95, conversion - less_conversion)
    assert RANK[worse.severity] >= RANK[base.severity]


def test_matrix_signals_respect_minimum_samples() -> None:
    named = healthy()
    assert named["v2_error_rate_pct"] == 0.1 and named["v2_p95_ms"] == 40.0
    conversion = named["v2_vs_v1_conversion_pct"]
    # the upper confidence bound of the observed 110 %
    assert isinstance(conversion, Interval) and conversion.upper > 110
    # below the minimum samples nothing acts, however bad the numbers look
    small = healthy(v2_calculations=10, conversion_users_per_arm=10, v2_error_rate_pct=50.0, v2_p95_ms=5_000.0,
                    v2_vs_v1_conversion_pct=10.0)
    assert rollback_decision(matrix_for("canary", MATRICES), small) == Decision("LOW", "monitor, proceed", None)


def test_matrix_conversion_acts_only_beyond_noise() -> None:
    # 100 users an arm, v2 converting 8 % against v1's 10 %: observed ratio 0.8, but noise explains it.
    noisy = healthy(**users(100, 8, 100, 10))
    interval = noisy["v2_vs_v1_conversion_pct"]
    assert isinstance(interval, Interval) and interval.upper > 90
    assert rollback_decision(matrix_for("canary", MATRICES), noisy).severity != "CRITICAL"
    # 20 000 users an arm at the same rates: the drop is real.
    real = healthy(**users(20_000, 1_600, 20_000, 2_000))
    interval = real["v2_vs_v1_conversion_pct"]
    assert isinstance(interval, Interval) and interval.upper < 90
    assert rollback_decision(matrix_for("staged", MATRICES), real).severity in ("HIGH", "CRITICAL")


# --------------------------------------------------------------------------- autopilot

GO_CANARY = decide(CANARY, healthy())
LOW = matrix("canary", 0.1, 40, 100)


def stage(name: str) -> Any:
    return stage_named(name, STAGES)


def step(*args: Any, **kwargs: Any) -> Any:
    return autopilot_step(*args, stages=STAGES, **kwargs)


def test_autopilot_advances_on_go() -> None:
    action = step(stage("canary"), GO_CANARY, LOW, True)
    assert (action.kind, action.target_percentage, action.stage) == ("advance", 50, stage("staged"))
    shadow_go = decide(SHADOW, healthy())
    action = step(stage("shadow"), shadow_go, matrix("shadow"), True)
    assert action.kind == "advance" and action.stage is not None and not action.stage.shadow
    assert step(stage("canary"), GO_CANARY, LOW, False).kind == "hold"


def test_autopilot_holds_unless_go() -> None:
    waiting = decide(CANARY, healthy(), elapsed=HOUR)
    action = step(stage("canary"), waiting, LOW, True)
    assert action.kind == "hold" and "INCONCLUSIVE" in action.reason and "not enough time" in action.reason
    full_go = decide(FULL, healthy())
    assert step(stage("full"), full_go, LOW, True).kind == "hold"


def test_autopilot_emergency_rollback_is_immediate() -> None:
    critical = matrix("staged", 12)
    action = step(stage("staged"), GO_CANARY, critical, False)
    assert (action.kind, action.target_percentage, action.immediate) == ("rollback", 0, True)


def test_autopilot_gradual_rollback_steps_and_waits() -> None:
    high = matrix("full", 7)
    full = stage("full")
    assert step(full, GO_CANARY, high, True).target_percentage == 50  # 100 → 50, not straight to 10
    assert step(full, GO_CANARY, high, True, current_percentage=50).target_percentage == 10
    assert step(full, GO_CANARY, high, True, current_percentage=10).kind == "hold"  # at target: hold
    assert step(full, GO_CANARY, high, False).kind == "hold"  # watch interval not over
    medium = matrix("staged", 3)
    assert step(stage("staged"), GO_CANARY, medium, True).target_percentage == 25
    canary_medium = matrix("canary", 3)
    assert step(stage("canary"), GO_CANARY, canary_medium, True).target_percentage == 5
