"""Gates decide GO only on enough healthy data; matrices and the autopilot follow the runbook's tables."""
from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_v2rollout.rules.gates import (
    CONDITIONAL,
    DAY,
    GATES,
    GO,
    HOUR,
    INCONCLUSIVE,
    MANUAL_CHECKS,
    NO_GO,
    STAGES,
    Gate,
    GateDecision,
    autopilot_step,
    build_gates,
    build_stages,
    evaluate_gate,
    gate_for,
    matrix_signals,
    next_stage,
    previous_percentage,
    rollback_decision,
    stage_named,
)

LONG_ENOUGH = 15 * DAY


def arm(**over: Any) -> dict[str, Any]:
    base = {
        "calculations": 5_000, "error_rate": 0.001, "fallback_rate": 0.10, "p95_ms": 40.0, "p99_ms": 120.0,
        "avg_ms": 12.0, "users": 40_000, "conversions": 4_400, "latency_bins": {"240": 300.0, "250": 200.0},
    }
    return base | over


def healthy(**over: Any) -> dict[str, Any]:
    """A view every gate should pass: enough data, good numbers, every manual check confirmed."""
    view: dict[str, Any] = {
        "v2": arm(),
        "v1": arm(conversions=4_000, avg_ms=10.0, latency_bins={"238": 300.0, "249": 200.0}),
        "shadow": {
            "runs": 2_400, "unhandled": 0, "completion_rate": 1.0, "fallback_rate": 0.125, "compared": 2_100,
            "agreement_rate": 0.80, "v2_p95_ms": 0.54, "v1_p95_ms": 0.40, "v2_latency_bins": {"100": 2_400.0},
        },
        "offline": {"agreement_rate": 0.85, "fallback_rate": 0.125},
        "previous_stage": {"v2_p95_ms": 38.0, "v2_fallback_rate": 0.11, "v2_avg_ms": 12.0},
        "db_errors": 0, "rollbacks_in_stage": 0, "critical_incidents_in_stage": 0, "monitoring_ok": True,
        "manual": {key: True for key in MANUAL_CHECKS},
    }
    for path, value in over.items():
        node = view
        *parents, leaf = path.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return view


def decide(gate: Gate, view: dict[str, Any], elapsed: float = LONG_ENOUGH) -> GateDecision:
    return evaluate_gate(gate, view, now_in_stage_s=elapsed)


def verdicts(decision: GateDecision) -> dict[str, str]:
    return {r.criterion.name: r.verdict for r in decision.results}


SHADOW, CANARY, STAGED, FULL = GATES


# --------------------------------------------------------------------------- stages


def test_stages_are_the_runbooks() -> None:
    assert [(s.name, s.percentage, s.shadow, s.min_duration_s) for s in STAGES] == [
        ("shadow", 0, True, 24 * HOUR), ("canary", 10, False, 48 * HOUR),
        ("staged", 50, False, 72 * HOUR), ("full", 100, False, 14 * DAY),
    ]
    assert next_stage(stage_named("canary")) == stage_named("staged")
    assert next_stage(stage_named("full")) is None
    assert [gate_for(s.name).name for s in STAGES] == ["shadow_to_canary", "canary_to_staged", "staged_to_full",
                                                       "full_review"]


def test_durations_override_down_to_seconds() -> None:
    stages = build_stages({"shadow": 2, "canary": 3.5})
    assert [s.min_duration_s for s in stages] == [2, 3.5, 72 * HOUR, 14 * DAY]
    assert decide(SHADOW, healthy(), elapsed=1).decision == INCONCLUSIVE
    assert evaluate_gate(SHADOW, healthy(), now_in_stage_s=2, stages=stages).decision == GO
    with pytest.raises(ValueError, match="unknown stage"):
        build_stages({"canery": 1})
    with pytest.raises(ValueError):
        build_stages({"full": -1})


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
        (5, 4, 1, 4), (5, 4, 2, 3), (6, 4, 2, 4),
    ]
    manual = {c.metric for g in GATES for c in g.criteria if c.manual}
    assert manual == {f"manual.{k}" for k in MANUAL_CHECKS}


def test_error_spike_is_no_go_even_early() -> None:
    decision = decide(CANARY, healthy(v2__error_rate=0.03), elapsed=HOUR)
    assert decision.decision == NO_GO
    assert verdicts(decision)["error_rate"] == "fail" and verdicts(decision)["error_high"] == "fail"
    assert any("blocker 'Error rate > 2 %' fired" in r for r in decision.reasons)
    assert any("not enough time" in r for r in decision.reasons)  # everything that stands in the way is listed


def test_must_failing_alone_is_no_go() -> None:
    decision = decide(STAGED, healthy(v2__error_rate=0.007))  # < 1 % canary bar, > 0.5 % staged bar
    assert decision.decision == NO_GO
    assert verdicts(decision)["error_rate"] == "fail"


def test_low_traffic_is_inconclusive() -> None:
    decision = decide(CANARY, healthy(v2__calculations=150, v2__users=40, v1__users=60))
    assert decision.decision == INCONCLUSIVE
    assert verdicts(decision)["error_rate"] == verdicts(decision)["conversion"] == "insufficient"
    assert any("sample 150 < 200" in r for r in decision.reasons)


def test_missing_metric_is_no_data_not_zero() -> None:
    view = healthy()
    del view["v2"]["error_rate"]
    assert decide(CANARY, view).decision == INCONCLUSIVE
    assert decide(SHADOW, {}).decision == INCONCLUSIVE


def test_duration_not_elapsed_is_inconclusive() -> None:
    decision = decide(CANARY, healthy(), elapsed=47 * HOUR)
    assert decision.decision == INCONCLUSIVE
    assert decision.reasons == ("not enough time: 47.0 h of 48.0 h in canary",)


def test_manual_must_pending_is_conditional() -> None:
    decision = decide(STAGED, healthy(manual__team_ready=None))
    assert decision.decision == CONDITIONAL
    assert verdicts(decision)["team_ready"] == "pending"
    assert any("pending manual check" in r for r in decision.reasons)


def test_manual_refused_is_no_go_and_confidence_is_a_blocker() -> None:
    assert decide(STAGED, healthy(manual__team_ready=False)).decision == NO_GO
    decision = decide(STAGED, healthy(manual__team_confident=False))
    assert decision.decision == NO_GO
    assert verdicts(decision)["not_confident"] == "fail"
    assert decide(STAGED, healthy(manual__team_confident=None)).decision == CONDITIONAL


def test_too_few_shoulds_is_conditional() -> None:
    view = healthy(v2__p99_ms=1500.0, rollbacks_in_stage=1, manual__higher_quality=None,
                   v2__conversions=4_000)  # conversion equal: "≥ 100 %" cannot be shown
    decision = decide(CANARY, view)
    assert decision.decision == CONDITIONAL
    assert decision.shoulds_passed == 0
    assert decision.reasons == ("should: 0 of 2 required pass",)


def test_conversion_uses_the_ratio_test() -> None:
    clear_pass = decide(CANARY, healthy())
    result = next(r for r in clear_pass.results if r.criterion.name == "conversion")
    assert result.test is not None and result.test.lower is not None and result.test.lower >= 0.95
    assert "95% bounds" in result.detail

    straddles = healthy(v2__users=2_000, v1__users=2_000, v2__conversions=196, v1__conversions=200)
    decision = decide(CANARY, straddles)  # ratio 0.98, lower bound well below 0.95
    assert verdicts(decision)["conversion"] == "insufficient"
    assert decision.decision == INCONCLUSIVE

    clearly_low = healthy(v2__conversions=3_640)  # ratio 0.91: upper bound 0.943 < 0.95, not below 0.90
    decision = decide(CANARY, clearly_low)
    assert verdicts(decision)["conversion"] == "fail" and verdicts(decision)["conversion_low"] == "pass"
    assert decision.decision == NO_GO

    blocker = decide(CANARY, healthy(v2__users=150, v1__users=150, v2__conversions=10, v1__conversions=15))
    assert verdicts(blocker)["conversion_low"] == "fail"  # observed 0.67 < 0.90
    assert blocker.decision == NO_GO


def test_conversion_below_min_users_or_invalid_is_insufficient() -> None:
    decision = decide(CANARY, healthy(v2__users=99))
    assert verdicts(decision)["conversion"] == verdicts(decision)["conversion_low"] == "insufficient"
    decision = decide(CANARY, healthy(v2__conversions=50_000))  # more converters than users
    assert verdicts(decision)["conversion"] == "insufficient"
    assert decision.decision == INCONCLUSIVE


def test_shadow_gate_blockers_and_agreement_band() -> None:
    assert decide(SHADOW, healthy(shadow__agreement_rate=0.88)).decision == NO_GO  # must 60–85 fails
    decision = decide(SHADOW, healthy(shadow__agreement_rate=0.45))
    assert verdicts(decision)["agreement_out"] == "fail"
    assert verdicts(decide(SHADOW, healthy(shadow__agreement_rate=0.90)))["agreement_out"] == "pass"
    assert verdicts(decide(SHADOW, healthy(shadow__fallback_rate=0.31)))["fallback_high"] == "fail"
    assert decide(SHADOW, healthy(shadow__unhandled=1)).decision == NO_GO
    assert decide(SHADOW, healthy(critical_incidents_in_stage=1)).decision == NO_GO


def test_shadow_shoulds() -> None:
    v = verdicts(decide(SHADOW, healthy(shadow__v2_p95_ms=0.9, db_errors=2, monitoring_ok=None,
                                        offline__agreement_rate=0.95)))
    assert (v["time_vs_v1"], v["db_errors"], v["monitoring"], v["offline_match"]) == (
        "fail", "fail", "insufficient", "fail")
    assert decide(SHADOW, healthy(shadow__v2_p95_ms=0.9, db_errors=2, monitoring_ok=None,
                                  offline__agreement_rate=0.95)).decision == CONDITIONAL


def test_staged_blockers_against_the_previous_stage() -> None:
    worse = decide(STAGED, healthy(v2__p95_ms=160.0))  # canary's 38 ms, floored to 100 → 1.6×
    assert verdicts(worse)["perf_worse"] == "fail" and worse.decision == NO_GO
    assert verdicts(decide(STAGED, healthy(v2__p95_ms=140.0)))["perf_worse"] == "pass"
    regression = decide(STAGED, healthy(v2__fallback_rate=0.17))  # 11 % → 17 %
    assert verdicts(regression)["data_quality"] == "fail"
    view = healthy()
    del view["previous_stage"]
    assert decide(STAGED, view).decision == INCONCLUSIVE


def test_latency_rank_test_is_informational() -> None:
    decision = decide(CANARY, healthy())
    assert decision.latency_test is not None and decision.latency_test.effect > 0.5
    assert decision.decision == GO  # informational: slower, yet it does not vote
    view = healthy()
    del view["v1"]["latency_bins"]
    assert decide(CANARY, view).latency_test is None


def test_smaller_samples_for_demos() -> None:
    small = build_gates(min_calculations=20, min_users=10)[1]
    view = healthy(v2__calculations=25)
    assert decide(small, view).decision == GO
    assert decide(CANARY, view).decision == INCONCLUSIVE


# A property: below the minimum sample, no gate ever says GO, whatever the numbers.
rate = st.floats(0, 1)
latency = st.floats(0, 3000)


@st.composite
def low_traffic_views(draw: st.DrawFn) -> tuple[Gate, dict[str, Any]]:
    gate = draw(st.sampled_from(GATES))
    view = healthy()
    for key in ("error_rate", "fallback_rate"):
        view["v2"][key] = draw(rate)
    view["v2"]["p95_ms"] = draw(latency)
    view["v2"]["users"] = draw(st.integers(0, 100_000))
    view["v2"]["conversions"] = draw(st.integers(0, view["v2"]["users"]))
    view["shadow"]["agreement_rate"] = draw(rate)
    view["shadow"]["v2_p95_ms"] = draw(latency)
    view["manual"] = {k: draw(st.sampled_from([True, False, None])) for k in MANUAL_CHECKS}
    low = draw(st.integers(0, 199))
    view["v2"]["calculations"] = low
    view["shadow"]["runs"] = low
    return gate, view


@settings(max_examples=200, deadline=None)
@given(low_traffic_views(), st.floats(0, 30 * DAY))
def test_below_minimum_calculations_never_go(case: tuple[Gate, dict[str, Any]], elapsed: float) -> None:
    gate, view = case
    decision = decide(gate, copy.deepcopy(view), elapsed=elapsed)
    assert decision.decision != GO
    assert any(r.verdict == "insufficient" for r in decision.results if r.criterion.kind == "must")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(GATES), st.floats(0, 1), st.floats(0, 3000))
def test_go_implies_every_must_passes(gate: Gate, error_rate: float, p95: float) -> None:
    decision = decide(gate, healthy(v2__error_rate=error_rate, v2__p95_ms=p95))
    if decision.decision == GO:
        assert all(r.verdict == "pass" for r in decision.results if r.criterion.kind in ("must", "blocker"))


# --------------------------------------------------------------------------- rollback matrices

CANARY_CASES = [
    # error rate, p95, conversion ratio → severity, target
    (0.0501, None, None, "CRITICAL", 0), (0.05, None, None, "MEDIUM", 5), (0.0201, None, None, "MEDIUM", 5),
    (0.02, None, None, "LOW", None), (None, 1000.1, None, "CRITICAL", 0), (None, 1000, None, "MEDIUM", 5),
    (None, 500, None, "LOW", None), (None, 500.1, None, "MEDIUM", 5), (None, None, 0.7999, "CRITICAL", 0),
    (None, None, 0.80, "MEDIUM", 5), (None, None, 0.8999, "MEDIUM", 5), (None, None, 0.90, "LOW", None),
    (0.001, 100, 1.02, "LOW", None), (None, None, None, "LOW", None),
]


@pytest.mark.parametrize("error,p95,conversion,severity,target", CANARY_CASES)
def test_canary_matrix_boundaries(error: float | None, p95: float | None, conversion: float | None,
                                  severity: str, target: float | None) -> None:
    d = rollback_decision("canary", error_rate=error, p95_ms=p95, conversion_ratio=conversion)
    assert (d.severity, d.target_percentage) == (severity, target)
    assert d.action == {"CRITICAL": "emergency rollback to 0 %", "MEDIUM": "investigate, reduce to 5 %",
                        "LOW": "monitor, proceed"}[severity]


GENERAL_CASES = [
    (0.1001, None, None, "CRITICAL"), (0.10, None, None, "HIGH"), (0.0501, None, None, "HIGH"),
    (0.05, None, None, "MEDIUM"), (0.0201, None, None, "MEDIUM"), (0.02, None, None, "LOW"),
    (None, 2000.1, None, "CRITICAL"), (None, 2000, None, "HIGH"), (None, 1000, None, "MEDIUM"),
    (None, 500, None, "LOW"), (None, None, 0.7999, "CRITICAL"), (None, None, 0.80, "HIGH"),
    (None, None, 0.90, "MEDIUM"), (None, None, 0.9499, "MEDIUM"), (None, None, 0.95, "LOW"),
    (None, None, 1.3, "LOW"),
]


@pytest.mark.parametrize("error,p95,conversion,severity", GENERAL_CASES)
def test_staged_and_general_matrix_boundaries(error: float | None, p95: float | None, conversion: float | None,
                                              severity: str) -> None:
    staged = rollback_decision(stage_named("staged"), error_rate=error, p95_ms=p95, conversion_ratio=conversion)
    general = rollback_decision("full", error_rate=error, p95_ms=p95, conversion_ratio=conversion)
    assert staged.severity == general.severity == severity
    expected = {"CRITICAL": (0, 0), "HIGH": (10, 10), "MEDIUM": (25, 50), "LOW": (None, None)}[severity]
    assert (staged.target_percentage, general.target_percentage) == expected


def test_worst_signal_decides_and_is_named() -> None:
    d = rollback_decision("staged", error_rate=0.01, p95_ms=2500, conversion_ratio=0.93)
    assert d.severity == "CRITICAL" and d.immediate
    assert d.signals == ("p95 2500 ms > 2000 ms",)
    d = rollback_decision("staged", error_rate=0.06, p95_ms=1200, conversion_ratio=0.99)
    assert d.severity == "HIGH" and len(d.signals) == 2 and not d.immediate


RANK = {"LOW": 0, "MEDIUM": 1, "HIGH": 2, "CRITICAL": 3}


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["canary", "staged", "full"]), st.floats(0, 0.2), st.floats(0, 3000), st.floats(0.5, 1.2),
       st.floats(0, 0.05), st.floats(0, 500), st.floats(0, 0.2))
def test_matrix_is_monotone(stage: str, error: float, p95: float, conversion: float,
                            more_error: float, more_p95: float, less_conversion: float) -> None:
    base = rollback_decision(stage, error_rate=error, p95_ms=p95, conversion_ratio=conversion)
    worse = rollback_decision(stage, error_rate=error + more_error, p95_ms=p95 + more_p95,
                              conversion_ratio=conversion - less_conversion)
    assert RANK[worse.severity] >= RANK[base.severity]


def test_matrix_signals_respect_minimum_samples() -> None:
    signals = matrix_signals(healthy())
    assert signals["error_rate"] == 0.001 and signals["p95_ms"] == 40.0
    assert signals["conversion_ratio"] > 1.1  # the upper confidence bound of the observed 1.1


def test_matrix_conversion_acts_only_beyond_noise() -> None:
    # 100 users an arm, v2 converting 8 % against v1's 10 %: observed ratio 0.8, but noise explains it.
    noisy = matrix_signals(healthy(v2__users=100, v2__conversions=8, v1__users=100, v1__conversions=10))
    assert noisy["conversion_ratio"] > 0.9
    assert rollback_decision("canary", **noisy).severity != "CRITICAL"
    # 20 000 users an arm at the same rates: the drop is real.
    real = matrix_signals(healthy(v2__users=20_000, v2__conversions=1_600, v1__users=20_000, v1__conversions=2_000))
    assert real["conversion_ratio"] < 0.9
    assert rollback_decision("staged", **real).severity in ("HIGH", "CRITICAL")
    assert matrix_signals(healthy(v2__calculations=10, v1__users=10)) == {
        "error_rate": None, "p95_ms": None, "conversion_ratio": None}


# --------------------------------------------------------------------------- autopilot

GO_CANARY = decide(CANARY, healthy())
LOW = rollback_decision("canary", error_rate=0.001, p95_ms=40, conversion_ratio=1.0)


def test_autopilot_advances_on_go() -> None:
    action = autopilot_step(stage_named("canary"), GO_CANARY, LOW, True)
    assert (action.kind, action.target_percentage, action.stage) == ("advance", 50, stage_named("staged"))
    shadow_go = decide(SHADOW, healthy())
    action = autopilot_step(stage_named("shadow"), shadow_go, rollback_decision("shadow", error_rate=None,
                            p95_ms=None, conversion_ratio=None), True)
    assert action.kind == "advance" and action.stage is not None and not action.stage.shadow
    assert autopilot_step(stage_named("canary"), GO_CANARY, LOW, False).kind == "hold"


def test_autopilot_holds_unless_go() -> None:
    waiting = decide(CANARY, healthy(), elapsed=HOUR)
    action = autopilot_step(stage_named("canary"), waiting, LOW, True)
    assert action.kind == "hold" and "INCONCLUSIVE" in action.reason and "not enough time" in action.reason
    full_go = decide(FULL, healthy())
    assert autopilot_step(stage_named("full"), full_go, LOW, True).kind == "hold"


def test_autopilot_emergency_rollback_is_immediate() -> None:
    critical = rollback_decision("staged", error_rate=0.12, p95_ms=None, conversion_ratio=None)
    action = autopilot_step(stage_named("staged"), GO_CANARY, critical, False)
    assert (action.kind, action.target_percentage, action.immediate) == ("rollback", 0, True)


def test_autopilot_gradual_rollback_steps_and_waits() -> None:
    high = rollback_decision("full", error_rate=0.07, p95_ms=None, conversion_ratio=None)
    full = stage_named("full")
    assert autopilot_step(full, GO_CANARY, high, True).target_percentage == 50  # 100 → 50, not straight to 10
    assert autopilot_step(full, GO_CANARY, high, True, current_percentage=50).target_percentage == 10
    assert autopilot_step(full, GO_CANARY, high, True, current_percentage=10).kind == "hold"  # at target: hold
    assert autopilot_step(full, GO_CANARY, high, False).kind == "hold"  # watch interval not over
    medium = rollback_decision("staged", error_rate=0.03, p95_ms=None, conversion_ratio=None)
    assert autopilot_step(stage_named("staged"), GO_CANARY, medium, True).target_percentage == 25
    canary_medium = rollback_decision("canary", error_rate=0.03, p95_ms=None, conversion_ratio=None)
    assert autopilot_step(stage_named("canary"), GO_CANARY, canary_medium, True).target_percentage == 5
