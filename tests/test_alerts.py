"""Alert rules: the runbook's set loads, fires and resolves; bad files fail whole and clearly."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_v2rollout.rules.alerts import RuleSet, RuleState, evaluate, parse_rules, rearm
from flask_v2rollout.rules.conditions import AlertRuleError, Interval, parse_condition
from flask_v2rollout.rules.runbook import load_runbook

PACKAGED = load_runbook()
#: every name the packaged runbook's conditions may read, with its unit
DEFAULT_METRICS = PACKAGED.metrics


def default_rules() -> RuleSet:
    return PACKAGED.rules


RUNBOOK = {  # name: (severity, notify, action) — the runbook's table, verbatim, then its metrics table's alerts
    "v2_database_connection_failure": ("CRITICAL", ("pagerduty", "slack"),
                                       "emergency rollback to v1 (0 %, shadow on); check database, pool, logs"),
    "v2_very_high_error_rate": (
        "CRITICAL", ("pagerduty", "slack"),
        "roll back to the previous percentage; review errors, recent changes, data"),
    "v2_high_error_rate": ("HIGH", ("slack", "email"),
                           "gradual rollback (halve the percentage); find the failing inputs"),
    "v2_performance_degradation_critical": ("HIGH", ("slack",),
                                            "check indexes, load; VACUUM/ANALYZE; consider rollback"),
    "v2_conversion_rate_drop": ("HIGH", ("slack", "email"),
                                "compare v1 and v2 results; review v2's tuning; roll back if > 10 % drop"),
    "v2_slow_queries": ("MEDIUM", ("slack",), "check indexes, plans, load; consider caching"),
    "v2_high_fallback_rate": ("MEDIUM", ("slack",),
                              "check the data source's completeness and freshness; refresh it"),
    "v2_moderate_error_rate": ("MEDIUM", ("slack",), "watch, ticket, fix in 1–2 days"),
    "v2_data_freshness": ("LOW", ("slack",), "refresh the data source; check its schedule and errors"),
    "v2_low_data_coverage": ("LOW", ("slack",), "check for missing data; may be normal early on"),
    "v2_error_rate_above_target": ("LOW", ("slack",), "investigate the errors by type and input"),
    "v2_calculations_stopped": ("HIGH", ("slack",),
                                "check assignment, the flags and the user loader; v2 may not be reached at all"),
    "v2_unhandled_exceptions": ("CRITICAL", ("pagerduty", "slack"),
                                "emergency rollback (0 %, shadow on); check v2_fallback_enabled and the errors"),
    "v2_p99_slow": ("MEDIUM", ("slack",), "find the slow inputs; check indexes and load"),
    "v2_sustained_slow": ("MEDIUM", ("slack",), "check indexes, plans, load; consider caching"),
    "v2_timeouts": ("MEDIUM", ("slack",), "find the slow inputs; check indexes and load"),
    "v2_complaints_rising": ("MEDIUM", ("slack",),
                             "read the complaints; compare v1 and v2 results for the subjects named"),
}
#: the rules that must hold a while before they fire
HELD = {"v2_sustained_slow": 300.0}

QUIET = {
    "v2_error_rate_pct": 0.4, "v2_fallback_rate_pct": 12.5, "v2_p95_ms": 40.0, "v2_p99_ms": 90.0, "v2_avg_ms": 12.0,
    "v2_conversion_rate_pct": 10.0, "v1_conversion_rate_pct": 10.0, "db_connection_failures": 0,
    "v2_unhandled_exceptions": 0, "data_source_age_hours": 6.0, "v2_data_coverage_pct": 88.0,
    "v2_calculations_per_min": 120.0, "v1_calculations_per_min": 1_080.0, "v2_timeouts_pct": 0.1,
    "shadow_agreement_rate_pct": 78.0, "v2_rollout_percentage": 10.0, "v2_calculations": 600.0,
    "conversion_users_per_arm": 500.0, "v2_vs_v1_conversion_pct": Interval(96.0, 104.0, 100.0),
    "v2_minus_v1_error_rate_pct": Interval(-0.5, 0.5, 0.0), "v2_expected_calculations": 600.0,
    "v2_vs_v1_complaints_pct": Interval(90.0, 110.0, 101.0),
}
# For each rule: a window that crosses it, and every rule that window fires (overlapping thresholds).
CROSSINGS = {
    "v2_database_connection_failure": ({"db_connection_failures": 1}, set()),
    "v2_very_high_error_rate": ({"v2_error_rate_pct": 10.5}, {"v2_moderate_error_rate", "v2_error_rate_above_target"}),
    "v2_high_error_rate": ({"v2_error_rate_pct": 5.01, "v2_minus_v1_error_rate_pct": Interval(2.0, 8.0, 5.0)},
                           {"v2_moderate_error_rate", "v2_error_rate_above_target"}),
    "v2_performance_degradation_critical": ({"v2_p95_ms": 1200.0}, {"v2_slow_queries"}),
    "v2_error_rate_above_target": ({"v2_error_rate_pct": 1.5}, set()),
    "v2_calculations_stopped": ({"v2_calculations_per_min": 0.0}, set()),
    "v2_unhandled_exceptions": ({"v2_unhandled_exceptions": 1}, set()),
    "v2_p99_slow": ({"v2_p99_ms": 1001.0}, set()),
    "v2_timeouts": ({"v2_timeouts_pct": 5.5}, set()),
    "v2_complaints_rising": ({"v2_vs_v1_complaints_pct": Interval(125.0, 200.0, 150.0)}, set()),
    "v2_conversion_rate_drop": ({"v2_vs_v1_conversion_pct": Interval(85.0, 93.0, 89.0)}, set()),
    "v2_slow_queries": ({"v2_p95_ms": 501.0}, set()),
    "v2_high_fallback_rate": ({"v2_fallback_rate_pct": 26.0}, set()),
    "v2_moderate_error_rate": ({"v2_error_rate_pct": 2.5}, {"v2_error_rate_above_target"}),
    "v2_data_freshness": ({"data_source_age_hours": 25.0}, set()),
    "v2_low_data_coverage": ({"v2_data_coverage_pct": 65.0}, set()),
}


def rule_yaml(condition: str = "v2_p95_ms > 500ms", name: str = "r", **fields: object) -> dict[str, object]:
    rule: dict[str, object] = {"name": name, "condition": condition, "severity": "LOW", "notify": ["slack"],
                               "description": "d", "action": "a"}
    rule.update(fields)
    return rule


def dump(*rules: object) -> str:
    return yaml.safe_dump({"rules": list(rules)}, allow_unicode=True)


def one_rule(condition: str, known: object = DEFAULT_METRICS) -> RuleSet:
    return parse_rules(dump(rule_yaml(condition)), known)


# --------------------------------------------------------------------------- the default set


def test_default_rules_are_the_runbooks_ten_and_its_metrics_tables() -> None:
    rules = default_rules()
    assert [r.name for r in rules] == list(RUNBOOK)
    assert {r.name: (r.severity, r.notify, r.action) for r in rules} == RUNBOOK
    assert rules.metrics <= set(DEFAULT_METRICS)
    assert all(r.description and r.for_s == HELD.get(r.name, 0) and r.keep_firing_s == 0 for r in rules)
    actions = {r.name: (r.rollback.describe() if r.rollback else None, r.enter_shadow) for r in rules
               if r.rollback or r.enter_shadow is not None}
    assert actions == {"v2_database_connection_failure": ("to 0 %", True),
                       "v2_very_high_error_rate": ("to the previous percentage", None),
                       "v2_high_error_rate": ("halve the percentage", None),
                       "v2_unhandled_exceptions": ("to 0 %", None)}


def test_default_rules_quiet_on_a_healthy_window() -> None:
    states: dict[str, RuleState] = {}
    assert evaluate(default_rules(), QUIET, 0.0, states) == []
    assert {s.status for s in states.values()} == {"inactive"}


@pytest.mark.parametrize("name", list(CROSSINGS))
def test_each_default_rule_fires_then_resolves(name: str) -> None:
    rules, states = default_rules(), {}
    crossing, also = CROSSINGS[name]
    window = QUIET | crossing
    fired = evaluate(rules, window, 60.0, states)
    assert {t.rule.name for t in fired} == {name} | also
    ours = next(t for t in fired if t.rule.name == name)
    assert ours.kind == "fired" and ours.at == 60.0
    assert {k: ours.values[k] for k in crossing} == crossing
    assert evaluate(rules, window, 120.0, states) == []  # still firing: not again
    resolved = evaluate(rules, QUIET, 180.0, states)
    assert {t.rule.name for t in resolved} == {name} | also and {t.kind for t in resolved} == {"resolved"}
    assert states[name] == RuleState("resolved", 180.0, 60.0, 180.0, False, 180.0)


@pytest.mark.parametrize("value,fires", [(10.0, False), (10.01, True)])
def test_threshold_is_strict_like_the_runbook(value: float, fires: bool) -> None:
    states: dict[str, RuleState] = {}
    fired = evaluate(default_rules(), QUIET | {"v2_error_rate_pct": value}, 0.0, states)
    assert ("v2_very_high_error_rate" in {t.rule.name for t in fired}) is fires


def test_missing_probe_is_no_data_not_firing() -> None:
    rules, states = default_rules(), {}
    window = QUIET | {"data_source_age_hours": None}
    del window["v2_data_coverage_pct"]
    assert evaluate(rules, window, 0.0, states) == []
    assert states["v2_data_freshness"].no_data and states["v2_low_data_coverage"].no_data
    assert states["v2_data_freshness"].status == "inactive"


# --------------------------------------------------------------------------- state machine


def test_for_duration_goes_pending_then_firing() -> None:
    rules = one_rule("v2_p95_ms > 500ms for 5m")
    states: dict[str, RuleState] = {}
    slow, fast = {"v2_p95_ms": 800.0}, {"v2_p95_ms": 100.0}
    assert evaluate(rules, slow, 1000.0, states) == [] and states["r"].status == "pending"
    assert evaluate(rules, slow, 1299.0, states) == []
    assert [t.kind for t in evaluate(rules, slow, 1300.0, states)] == ["fired"]
    assert states["r"].fired_at == 1300.0
    assert evaluate(rules, slow, 1360.0, states) == []
    assert [t.kind for t in evaluate(rules, fast, 1400.0, states)] == ["resolved"]
    # a broken streak starts over
    evaluate(rules, slow, 2000.0, states)
    evaluate(rules, fast, 2100.0, states)
    assert states["r"].status == "inactive"
    evaluate(rules, slow, 2200.0, states)
    assert evaluate(rules, slow, 2450.0, states) == []
    assert [t.kind for t in evaluate(rules, slow, 2500.0, states)] == ["fired"]


def test_for_key_is_the_inline_for() -> None:
    keyed = parse_rules(dump(rule_yaml("v2_p95_ms > 500ms", **{"for": "5m"})), DEFAULT_METRICS)
    inline = one_rule("v2_p95_ms > 500ms for 5m")
    assert keyed["r"].for_s == inline["r"].for_s == 300
    states: dict[str, RuleState] = {}
    assert evaluate(keyed, {"v2_p95_ms": 800.0}, 1000.0, states) == [] and states["r"].status == "pending"
    assert [t.kind for t in evaluate(keyed, {"v2_p95_ms": 800.0}, 1300.0, states)] == ["fired"]
    with pytest.raises(AlertRuleError, match="give the duration once"):
        parse_rules(dump(rule_yaml("v2_p95_ms > 500ms for 5m", **{"for": "5m"})), DEFAULT_METRICS)
    with pytest.raises(AlertRuleError, match="for: expected a duration"):
        parse_rules(dump(rule_yaml(**{"for": "5%"})), DEFAULT_METRICS)


def test_keep_firing_for_holds_a_firing_rule_until_clear_that_long() -> None:
    rules = parse_rules(dump(rule_yaml("v2_p95_ms > 500ms", keep_firing_for="10m")), DEFAULT_METRICS)
    assert rules["r"].keep_firing_s == 600
    states: dict[str, RuleState] = {}
    slow, fast = {"v2_p95_ms": 800.0}, {"v2_p95_ms": 100.0}
    assert [t.kind for t in evaluate(rules, slow, 0.0, states)] == ["fired"]  # no for: fires at once
    assert evaluate(rules, fast, 60.0, states) == [] and states["r"].status == "firing"
    assert states["r"].cleared_at == 60.0
    assert evaluate(rules, slow, 120.0, states) == [] and states["r"].cleared_at is None  # flapping: still one alert
    assert evaluate(rules, fast, 180.0, states) == []
    assert evaluate(rules, {}, 500.0, states) == [] and states["r"].status == "firing"  # no data counts as clear
    assert evaluate(rules, fast, 779.0, states) == []
    resolved = evaluate(rules, fast, 780.0, states)  # 10 minutes since 180
    assert [t.kind for t in resolved] == ["resolved"]
    assert states["r"] == RuleState("resolved", 780.0, 0.0, 780.0, False, 780.0, None)
    assert [t.kind for t in evaluate(rules, slow, 840.0, states)] == ["fired"]


def test_no_data_breaks_pending_and_resolves_a_firing_rule_as_no_data() -> None:
    rules = one_rule("v2_p95_ms > 500ms for 1m")
    states: dict[str, RuleState] = {}
    evaluate(rules, {"v2_p95_ms": 900.0}, 0.0, states)
    evaluate(rules, {"v2_p95_ms": None}, 30.0, states)
    assert states["r"].status == "inactive" and states["r"].no_data
    evaluate(rules, {"v2_p95_ms": 900.0}, 40.0, states)
    assert [t.kind for t in evaluate(rules, {"v2_p95_ms": 900.0}, 100.0, states)] == ["fired"]
    resolved = evaluate(rules, {}, 160.0, states)  # never "firing" on nothing
    assert [(t.kind, t.note) for t in resolved] == [("resolved", "no data")]
    assert states["r"].status == "resolved" and states["r"].no_data


def test_keep_firing_for_holds_a_firing_rule_through_a_gap_in_the_data() -> None:
    rules = parse_rules(dump(rule_yaml("v2_p95_ms > 500ms") | {"keep_firing_for": "2m"}), DEFAULT_METRICS)
    states: dict[str, RuleState] = {}
    assert [t.kind for t in evaluate(rules, {"v2_p95_ms": 900.0}, 0.0, states)] == ["fired"]
    assert evaluate(rules, {}, 60.0, states) == [] and states["r"].status == "firing"
    assert evaluate(rules, {"v2_p95_ms": 900.0}, 90.0, states) == []  # back: the hold starts over
    assert evaluate(rules, {}, 150.0, states) == []
    assert [(t.kind, t.note) for t in evaluate(rules, {}, 270.0, states)] == [("resolved", "no data")]


def test_a_rule_is_not_judged_below_its_minimum_sample() -> None:
    rules = default_rules()
    states: dict[str, RuleState] = {}
    few = QUIET | {"v2_error_rate_pct": 50.0, "v2_calculations": 4.0}  # 2 errors in 4 calls
    assert evaluate(rules, few, 0.0, states) == []
    assert states["v2_very_high_error_rate"].no_data
    enough = few | {"v2_calculations": 20.0}
    assert "v2_very_high_error_rate" in {t.rule.name for t in evaluate(rules, enough, 30.0, states)}
    own = parse_rules(dump(rule_yaml("v2_error_rate_pct > 10%") | {"min_sample": 2}), DEFAULT_METRICS)
    assert own["r"].min_sample == 2


def test_a_percentage_change_rearms_every_rule() -> None:
    rules, states = default_rules(), {}
    rearm(rules, states, 50.0, 0.0)
    assert {t.rule.name for t in evaluate(rules, QUIET | {"db_connection_failures": 3}, 0.0, states)} == {
        "v2_database_connection_failure"}
    assert rearm(rules, states, 50.0, 30.0) == []  # same percentage: nothing changes
    rearmed = rearm(rules, states, 0.0, 60.0)
    assert [(t.rule.name, t.kind, t.note) for t in rearmed] == [
        ("v2_database_connection_failure", "resolved", "re-armed: percentage 50 → 0")]
    assert {s.status for s in states.values()} == {"inactive"}
    assert {s.armed_percentage for s in states.values()} == {0.0}


def test_state_round_trips_as_a_plain_row() -> None:
    rules, states = default_rules(), {}
    evaluate(rules, QUIET | {"db_connection_failures": 2}, 5.0, states)
    row = dataclasses.asdict(states["v2_database_connection_failure"])
    assert row["status"] == "firing"
    assert RuleState(**row) == states["v2_database_connection_failure"]


# --------------------------------------------------------------------------- grammar


@pytest.mark.parametrize("condition,metrics,expected", [
    ("v2_p95_ms > 1s", {"v2_p95_ms": 1000.0}, False),
    ("v2_p95_ms > 1s", {"v2_p95_ms": 1000.5}, True),
    ("data_source_age_hours > 90m", {"data_source_age_hours": 1.6}, True),
    ("data_source_age_hours >= 1440 m", {"data_source_age_hours": 24}, True),
    ("v2_conversion_rate_pct < v1_conversion_rate_pct * 0.95",
     {"v2_conversion_rate_pct": 9.49, "v1_conversion_rate_pct": 10.0}, True),
    ("v2_conversion_rate_pct < v1_conversion_rate_pct * 0.95",
     {"v2_conversion_rate_pct": 9.5, "v1_conversion_rate_pct": 10.0}, False),
    ("v2_error_rate_pct > 1% and v2_rollout_percentage > 0", {"v2_error_rate_pct": 2, "v2_rollout_percentage": 10},
     True),
    ("v2_calculations_per_min == 0 and v2_rollout_percentage > 0",
     {"v2_calculations_per_min": 0, "v2_rollout_percentage": 10}, True),
    ("not (v2_p95_ms < 500ms or v2_p99_ms < 1000ms)", {"v2_p95_ms": 600, "v2_p99_ms": 1200}, True),
    ("2 + 3 * v2_avg_ms - -1 > 36", {"v2_avg_ms": 11.0}, False),  # precedence: 2 + 33 + 1 = 36
    ("(2 + 3) * v2_avg_ms > 36", {"v2_avg_ms": 11.0}, True),
    ("v2_calculations_per_min / v1_calculations_per_min < 0.05",
     {"v2_calculations_per_min": 1, "v1_calculations_per_min": 0}, None),  # division by zero: unknown
    ("v2_p95_ms > 500 or v2_p99_ms > 1000", {"v2_p99_ms": 1500}, True),  # Kleene: unknown or true
    ("v2_p95_ms > 500 and v2_p99_ms > 1000", {"v2_p99_ms": 1500}, None),
    ("v2_p95_ms > 500 and v2_p99_ms > 1000", {"v2_p99_ms": 10}, False),
    ("not v2_p95_ms > 500", {}, None),
    ("v2_timeouts_pct != 0.5%", {"v2_timeouts_pct": float("nan")}, None),
    ("v2_rollout_percentage > 0 and shadow_agreement_rate_pct < 60", {"v2_rollout_percentage": 0.0,
                                                                      "shadow_agreement_rate_pct": 50}, False),
])
def test_condition_semantics(condition: str, metrics: dict[str, float], expected: bool | None) -> None:
    assert parse_condition(condition, DEFAULT_METRICS).evaluate(metrics) is expected


@pytest.mark.parametrize("condition,message,column", [
    ("v2_p95 > 500", "unknown metric 'v2_p95'", 0),
    ("__import__('os').system('true')", "quoted text is not allowed", 11),
    ("__import__(os)", "function calls are not allowed", 10),
    ("v2_p95_ms.__class__ > 1", "unexpected character '.'", 9),
    ("v2_p95_ms > 10%", "'>' compares ms (time) with % (percent)", 10),
    ("db_connection_failures > 1s", "compares a count with s (time)", 23),
    ("v2_p95_ms > v2_error_rate_pct", "compares ms (time) with % (percent)", 10),
    ("v2_p95_ms * v2_p99_ms > 5", "cannot multiply ms (time) by ms (time)", 10),
    ("v2_p95_ms", "condition must be a comparison", 0),
    ("v2_p95_ms > 5 > 3", "comparisons cannot be chained", 14),
    ("v2_p95_ms > 5 and", "found end of condition", 17),
    ("(v2_p95_ms > 5", "expected ')'", 14),
    ("v2_p95_ms > 5 for 5", "'for' needs a time unit", 18),
    ("v2_p95_ms > 5 for 5%", "'for' needs a time unit", 18),
    ("v2_p95_ms > 5 for 5m and v2_p99_ms > 1", "unexpected 'and'", 21),
    ("v2_p95_ms > 5 parsecs", "unknown unit 'parsecs'", 14),
    ("v2_p95_ms + (v2_p99_ms > 3) > 1", "'+' needs numbers, not a comparison", 13),
    ("v2_p95_ms > 1 and 5", "'and' needs comparisons on both sides", 18),
    ("v2_p95_ms > 1; v2_p99_ms > 1", "unexpected character ';'", 13),
])
def test_condition_errors_point_at_the_text(condition: str, message: str, column: int) -> None:
    with pytest.raises(AlertRuleError) as info:
        parse_rules(dump(rule_yaml(condition, name="bad_rule")), DEFAULT_METRICS)
    (problem,) = info.value.problems
    assert problem.rule == "bad_rule" and message in problem.message
    assert (problem.text, problem.column) == (condition, column)
    text = str(info.value)
    assert "rule 'bad_rule'" in text and condition in text
    assert text.endswith("\n    " + " " * column + "^")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abv2_p95ms <>=!()+-*/%.0123456789'\"[]{};:", max_size=40))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        condition = parse_condition(text, DEFAULT_METRICS)
    except AlertRuleError as exc:
        assert exc.problems and exc.problems[0].text == text
    else:
        assert condition.evaluate(QUIET) in (True, False, None)


# --------------------------------------------------------------------------- loading


def test_every_problem_is_reported_and_nothing_is_half_loaded() -> None:
    good = [rule_yaml(name=f"ok_{i}") for i in range(8)]
    bad = [
        rule_yaml(name="dup"), rule_yaml(name="dup"),
        rule_yaml(name="loud", severity="URGENT"),
        rule_yaml("v2_nonsense > 1", name="unknown_metric"),
        {"name": "half", "condition": "v2_p95_ms > 1"},
        rule_yaml(name="typo", notfy=["slack"]),
        rule_yaml(name="lonely", notify="slack"),
        "just a string",
    ]
    with pytest.raises(AlertRuleError) as info:
        parse_rules(dump(*good, *bad), DEFAULT_METRICS, source="ops.yaml")
    found = {(p.rule, p.message.split(" ")[0]) for p in info.value.problems}
    assert found == {
        ("dup", "duplicate"), ("loud", "severity"), ("unknown_metric", "unknown"), ("half", "missing"),
        ("typo", "unknown"), ("lonely", "notify"), ("#16", "a"),
    }
    message = str(info.value)
    assert message.startswith("ops.yaml: 7 problem(s)")
    assert "'URGENT'" in message and "v2_nonsense > 1" in message and "['severity', 'notify', 'description'" in message


@pytest.mark.parametrize("text,message", [
    ("rules: [\n  {name: x, condition: 'a > 1'\n", "not valid YAML"),
    ("rule:\n  - name: x\n", "expected a top-level 'rules:' list"),
    ("- name: x\n", "expected a top-level 'rules:' list"),
    ("rules: []\nextras: 1\n", "unknown top-level key(s) ['extras']"),
])
def test_malformed_files(text: str, message: str) -> None:
    with pytest.raises(AlertRuleError, match=None) as info:
        parse_rules(text, DEFAULT_METRICS)
    assert message in str(info.value)


@pytest.mark.parametrize("field,value,message", [
    ("name", "has space", "name must be"),
    ("name", True, "name must be"),
    ("condition", 42, "condition must be non-empty text"),
    ("action", "  ", "action must be non-empty text"),
    ("severity", "low", "severity must be one of CRITICAL, HIGH, MEDIUM, LOW"),
    ("notify", [], "notify must be a non-empty list"),
    ("notify", ["slack", "pager duty"], "notify must be a non-empty list"),
])
def test_field_validation(field: str, value: object, message: str) -> None:
    with pytest.raises(AlertRuleError) as info:
        parse_rules(dump(rule_yaml(**{field: value})), DEFAULT_METRICS)
    assert message in str(info.value) and repr(value) in str(info.value)


def test_known_metrics_come_from_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(dump(rule_yaml("queue_depth > 100 for 30s"),
                         rule_yaml("qb_coverage_pct < 50%", name="coverage")), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    rules = parse_rules(text, {"queue_depth", "qb_coverage_pct"}, source=str(path))
    assert [r.name for r in rules] == ["r", "coverage"] and rules["r"].for_s == 30
    assert rules.source == str(path)
    with pytest.raises(AlertRuleError, match="unknown metric 'queue_depth'"):
        parse_rules(text, DEFAULT_METRICS, source=str(path))
    with pytest.raises(KeyError):
        rules["nope"]


def test_multiline_condition_is_normalised_for_the_pointer() -> None:
    text = "rules:\n  - name: wrapped\n    condition: >-\n      v2_p95_ms > 500ms\n      and bogus > 1\n" \
           "    severity: LOW\n    notify: [slack]\n    description: d\n    action: a\n"
    with pytest.raises(AlertRuleError) as info:
        parse_rules(text, DEFAULT_METRICS)
    (problem,) = info.value.problems
    assert (problem.text, problem.column) == ("v2_p95_ms > 500ms and bogus > 1", 22)
