"""Every packaged alert rule fired from real traffic through a real Flask app, with the runbook's action applied.

The runbook's actions: the database rule rolls back to v1 (0 %, shadow on), the CRITICAL error rule to the
previous percentage, the HIGH error rule halves the percentage; the other rules notify and change nothing.
Every alert carries its severity's SEV label and response target.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, request

from flask_v2rollout import Fallback, V2Rollout
from flask_v2rollout.bucketing import assign
from flask_v2rollout.rules.runbook import load_runbook
from flask_v2rollout.testing import Clock, force_version, record_signals, use_clock
from helpers import before_flag_update, build_app

START = 1_900_000_000.0
PACKAGED = load_runbook()
SEV = {"CRITICAL": "SEV-1", "HIGH": "SEV-2", "MEDIUM": "SEV-3", "LOW": "SEV-4"}


@dataclass
class Behaviour:
    """What v2 does with call number ``x``: raise, fall back, or take its time."""

    error_every: int = 0
    db_error_every: int = 0
    fallback_every: int = 0
    slow_s: dict[int, float] = field(default_factory=dict)

    def __call__(self, x: int) -> float:
        if x in self.slow_s:
            time.sleep(self.slow_s[x])  # a slow v2: the latency the rules read is real time
        if self.db_error_every and x % self.db_error_every == 0:
            raise sqlite3.OperationalError("database is locked")
        if self.error_every and x % self.error_every == 0:
            raise KeyError("opponent")
        if self.fallback_every and x % self.fallback_every == 0:
            raise Fallback("insufficient_data")
        return float(x)


@dataclass
class Host:
    app: Flask
    ext: V2Rollout
    clock: Clock
    v2: Behaviour
    probes: dict[str, float | None]

    def traffic(self, calls: int, *, first: int = 0, users: Callable[[int], str] = lambda i: f"user-{i}",
                convert: Callable[[str], bool] | None = None, complain: Callable[[str], bool] | None = None) -> None:
        client = self.app.test_client()
        for i in range(first, first + calls):
            uid = users(i)
            response = client.get(f"/calc/{i}", headers={"X-User": uid})
            assert response.status_code in (200, 500)
            if convert is not None and convert(uid):
                assert client.post("/convert", headers={"X-User": uid}).status_code == 204
            if complain is not None and complain(uid):
                assert client.post("/complain", headers={"X-User": uid}).status_code == 204

    def evaluate(self) -> dict[str, Any]:
        with self.app.app_context():
            self.ext.flush()
            report = self.ext.evaluate()
        assert report is not None
        return dict(report["calc"])

    def flags(self) -> dict[str, Any]:
        with self.app.app_context():
            return self.ext.flags("calc", fresh=True)

    def raise_to(self, *steps: float) -> None:
        """The audited way up (the previous percentage is read from the audit)."""
        with self.app.app_context():
            for pct in steps:
                self.ext.set_flag("calc", "v2_rollout_percentage", pct, actor="ops", reason="stage")
                self.clock.advance(minutes=1)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Callable[..., Host]]:
    clocks: list[Any] = []

    def make(**config: Any) -> Host:
        v2 = Behaviour()
        probes: dict[str, float | None] = {"data_source_age_hours": 2.0, "v2_data_coverage_pct": 90.0}
        ext = V2Rollout()
        ext.register("calc", v1=lambda x: float(x), v2=v2)
        ext.user_loader(lambda: request.headers.get("X-User"))
        for name in probes:
            ext.probe(name)(lambda name=name: probes[name])
        app, _ = build_app(tmp_path / f"instance{len(clocks)}", ext, PROPAGATE_EXCEPTIONS=False,
                           V2ROLLOUT_EVALUATE_EVERY_S=10**9, **config)

        @app.post("/convert")
        def convert():
            ext.track_conversion("calc")
            return "", 204

        @app.post("/complain")
        def complain():
            ext.track_event("calc", "complaint")
            return jsonify(), 204

        clock = Clock(start=START)
        context = use_clock(app, clock)
        context.__enter__()
        clocks.append(context)
        return Host(app, ext, clock, v2, probes)

    yield make
    for context in clocks:
        context.__exit__(None, None, None)


def fired(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["rule"]: t for t in report["transitions"] if t["kind"] == "fired"}


def assert_labelled(transition: dict[str, Any]) -> None:
    """The runbook's incident class travels with every alert."""
    incident = PACKAGED.severities[transition["severity"]]
    assert transition["sev"] == SEV[transition["severity"]] == incident.label
    assert transition["response"] == incident.response and transition["response"]


def assert_nothing_changed(h: Host, report: dict[str, Any], pct: float) -> None:
    assert report["rollback"] is None and report["auto_rollback"] is False
    flags = h.flags()
    assert flags["v2_rollout_percentage"] == pct and flags["v2_shadow_mode_enabled"] is False


# --------------------------------------------------------------------------- the runbook's ten


def test_v2_database_connection_failure_rolls_back_to_v1_and_shadow(host) -> None:
    h = host()
    h.raise_to(10, 50)
    h.v2.db_error_every = 50  # a few calls meet a locked database
    h.traffic(100)
    with h.app.app_context():
        version = h.ext.flag_version("calc")
    with record_signals(h.app) as signals:
        report = h.evaluate()
    alert = fired(report)["v2_database_connection_failure"]
    sent = next(kw for kw in signals.named("alert_fired") if kw["rule"] == "v2_database_connection_failure")
    assert sent["sev"] == "SEV-1" and sent["applied"] == report["rollback"]
    assert_labelled(alert)
    assert alert["sev"] == "SEV-1" and alert["rollback"] == "to 0 %"
    assert report["rollback"] == {"rule": "v2_database_connection_failure", "from": 50.0, "to": 0.0,
                                  "flag_version": version, "enter_shadow": True, "landed": True}
    flags = h.flags()
    assert flags["v2_rollout_percentage"] == 0 and flags["v2_shadow_mode_enabled"] is True
    with h.app.app_context():
        audit = h.ext.audit("calc")[:2]
    assert {(r["flag"], r["new_value"], r["actor"]) for r in audit} == {
        ("v2_rollout_percentage", 0.0, "auto-rollback"), ("v2_shadow_mode_enabled", True, "auto-rollback")}
    assert audit[0]["reason"].startswith("v2_database_connection_failure (SEV-1 CRITICAL): to 0 %, 50 → 0 %")


def test_v2_very_high_error_rate_rolls_back_to_the_previous_percentage(host) -> None:
    h = host()
    h.raise_to(10, 50)
    h.v2.error_every = 5  # 20 % of v2 calls raise
    h.traffic(200)
    report = h.evaluate()
    alerts = fired(report)
    assert "v2_very_high_error_rate" in alerts
    assert_labelled(alerts["v2_very_high_error_rate"])
    assert report["rollback"]["rule"] == "v2_very_high_error_rate" and report["rollback"]["to"] == 10.0
    assert alerts["v2_very_high_error_rate"]["applied"]["to"] == 10.0
    flags = h.flags()
    assert flags["v2_rollout_percentage"] == 10 and flags["v2_shadow_mode_enabled"] is False


def test_v2_high_error_rate_halves_the_percentage(host) -> None:
    h = host()
    h.raise_to(100)  # previous: 0, so halving (50) is what the HIGH rule asks for
    h.v2.error_every = 14  # 7 % of v2 calls raise
    h.traffic(200)
    report = h.evaluate()
    alerts = fired(report)
    assert "v2_high_error_rate" in alerts and "v2_very_high_error_rate" not in alerts
    assert_labelled(alerts["v2_high_error_rate"])
    assert alerts["v2_high_error_rate"]["sev"] == "SEV-2" and alerts["v2_high_error_rate"]["applied"]["to"] == 50.0
    assert report["rollback"]["rule"] == "v2_high_error_rate"
    flags = h.flags()
    assert flags["v2_rollout_percentage"] == 50 and flags["v2_shadow_mode_enabled"] is False


def test_v2_performance_degradation_critical_notifies_and_changes_nothing(host) -> None:
    h = host()
    h.raise_to(100)
    h.v2.slow_s = {3: 1.05, 7: 1.05}  # 2 of 20 calls over a second: p95 > 1000 ms
    h.traffic(20)
    report = h.evaluate()
    alert = fired(report)["v2_performance_degradation_critical"]
    assert alert["values"]["v2_p95_ms"] > 1000 and alert["sev"] == "SEV-2"
    assert_labelled(alert)
    assert_nothing_changed(h, report, 100)


def test_v2_conversion_rate_drop_notifies_and_changes_nothing(host) -> None:
    h = host(V2ROLLOUT_GATE_MIN_USERS=50)
    h.raise_to(50)
    salt = h.ext.rollouts["calc"].salt
    buckets = {f"user-{i}": assign(f"user-{i}", 50, salt) for i in range(400)}  # the version each user gets

    def converts(uid: str) -> bool:  # v1 users convert 9 in 10, v2 users 2 in 10
        n = int(uid.split("-")[1])
        return n % 10 != 0 if buckets[uid] == "v1" else n % 10 < 2

    h.traffic(400, convert=converts)
    report = h.evaluate()
    alert = fired(report)["v2_conversion_rate_drop"]
    assert alert["values"]["v2_vs_v1_conversion_pct"] < 95 and alert["sev"] == "SEV-2"
    assert_labelled(alert)
    assert_nothing_changed(h, report, 50)


def test_v2_slow_queries_notifies_and_changes_nothing(host) -> None:
    h = host()
    h.raise_to(100)
    h.v2.slow_s = {2: 0.55, 9: 0.55}  # p95 > 500 ms
    h.traffic(20)
    report = h.evaluate()
    alert = fired(report)["v2_slow_queries"]
    assert 500 < alert["values"]["v2_p95_ms"] < 1000 and alert["sev"] == "SEV-3"
    assert "v2_performance_degradation_critical" not in fired(report)
    assert_labelled(alert)
    assert_nothing_changed(h, report, 100)


def test_v2_high_fallback_rate_notifies_and_changes_nothing(host) -> None:
    h = host()
    h.raise_to(100)
    h.v2.fallback_every = 3  # a third of v2 calls hand back to v1
    h.traffic(60)
    report = h.evaluate()
    alert = fired(report)["v2_high_fallback_rate"]
    assert alert["values"]["v2_fallback_rate_pct"] > 25 and alert["sev"] == "SEV-3"
    assert_labelled(alert)
    assert_nothing_changed(h, report, 100)


def test_v2_moderate_error_rate_notifies_and_changes_nothing(host) -> None:
    h = host()
    h.raise_to(100)
    h.v2.error_every = 33  # 3 %
    h.traffic(200)
    report = h.evaluate()
    alerts = fired(report)
    assert {"v2_moderate_error_rate", "v2_error_rate_above_target"} <= set(alerts)
    assert "v2_high_error_rate" not in alerts
    assert_labelled(alerts["v2_moderate_error_rate"])
    assert_nothing_changed(h, report, 100)


def test_v2_data_freshness_reads_the_hosts_probe(host) -> None:
    h = host()
    h.raise_to(100)
    h.probes["data_source_age_hours"] = 30.0
    h.traffic(20)
    report = h.evaluate()
    alert = fired(report)["v2_data_freshness"]
    assert alert["values"] == {"data_source_age_hours": 30.0} and alert["sev"] == "SEV-4"
    assert_labelled(alert)
    assert_nothing_changed(h, report, 100)


def test_v2_low_data_coverage_reads_the_hosts_probe(host) -> None:
    h = host()
    h.raise_to(100)
    h.probes["v2_data_coverage_pct"] = 60.0
    h.traffic(20)
    report = h.evaluate()
    alert = fired(report)["v2_low_data_coverage"]
    assert alert["values"] == {"v2_data_coverage_pct": 60.0} and alert["sev"] == "SEV-4"
    assert_labelled(alert)
    assert_nothing_changed(h, report, 100)


# --------------------------------------------------------------------------- the metrics table's alerts


def test_v2_error_rate_above_target_is_a_ticket(host) -> None:
    h = host()
    h.raise_to(100)
    h.v2.error_every = 67  # 1.5 %
    h.traffic(200)
    report = h.evaluate()
    alerts = fired(report)
    assert "v2_error_rate_above_target" in alerts and "v2_moderate_error_rate" not in alerts
    assert alerts["v2_error_rate_above_target"]["sev"] == "SEV-4"
    assert_labelled(alerts["v2_error_rate_above_target"])
    assert_nothing_changed(h, report, 100)


def test_v2_calculations_stopped_during_an_active_rollout(host) -> None:
    h = host()
    h.raise_to(50)
    with force_version(h.app, "calc", "v1"):  # a host bug: v2 is never reached although the flags say 50 %
        h.traffic(60)
    report = h.evaluate()
    alert = fired(report)["v2_calculations_stopped"]
    assert alert["values"]["v2_calculations_per_min"] == 0 and alert["values"]["v2_expected_calculations"] >= 20
    assert alert["sev"] == "SEV-2"
    assert_labelled(alert)
    assert_nothing_changed(h, report, 50)
    h.clock.advance(minutes=10)
    h.traffic(60)  # v2 reached again
    assert "v2_calculations_stopped" not in fired(h.evaluate())


def test_v2_unhandled_exceptions_roll_back_to_zero_and_shadow(host) -> None:
    h = host()
    h.raise_to(10, 50)
    with h.app.app_context():
        h.ext.set_flag("calc", "v2_fallback_enabled", False, actor="ops")
    h.v2.error_every = 40  # with no fallback, v2's errors reach the users: 500s
    h.traffic(80)
    report = h.evaluate()
    alert = fired(report)["v2_unhandled_exceptions"]
    assert alert["values"]["v2_unhandled_exceptions"] >= 1 and alert["sev"] == "SEV-1"
    assert_labelled(alert)
    assert report["rollback"]["rule"] == "v2_unhandled_exceptions" and report["rollback"]["to"] == 0.0
    flags = h.flags()
    assert flags["v2_rollout_percentage"] == 0 and flags["v2_shadow_mode_enabled"] is True


def test_v2_p99_slow_notifies_and_changes_nothing(host) -> None:
    h = host()
    h.raise_to(100)
    h.v2.slow_s = {5: 1.05}  # 1 call in 20: the p99
    h.traffic(20)
    report = h.evaluate()
    alerts = fired(report)
    assert "v2_p99_slow" in alerts and "v2_performance_degradation_critical" not in alerts
    assert alerts["v2_p99_slow"]["values"]["v2_p99_ms"] > 1000 and alerts["v2_p99_slow"]["sev"] == "SEV-3"
    assert_labelled(alerts["v2_p99_slow"])
    assert_nothing_changed(h, report, 100)


def test_v2_sustained_slow_needs_five_minutes(host) -> None:
    h = host(V2ROLLOUT_ALERT_MIN_CALCULATIONS=1)
    h.raise_to(100)
    h.v2.slow_s = {0: 0.51, 1: 0.51, 2: 0.51}
    h.traffic(1, first=0)
    assert "v2_sustained_slow" not in fired(h.evaluate())  # pending
    h.clock.advance(seconds=150)
    h.traffic(1, first=1)
    assert "v2_sustained_slow" not in fired(h.evaluate())
    h.clock.advance(seconds=150)
    h.traffic(1, first=2)
    report = h.evaluate()
    alert = fired(report)["v2_sustained_slow"]
    assert alert["values"]["v2_avg_ms"] > 500 and alert["sev"] == "SEV-3"
    assert_labelled(alert)
    assert_nothing_changed(h, report, 100)


def test_v2_timeouts_over_five_percent_of_calls(host) -> None:
    h = host(V2ROLLOUT_SLOW_CALL_MS=20)  # a "timeout" is a call slower than V2ROLLOUT_SLOW_CALL_MS
    h.raise_to(100)
    h.v2.slow_s = {4: 0.03, 11: 0.03}  # 10 % of calls
    h.traffic(20)
    report = h.evaluate()
    alert = fired(report)["v2_timeouts"]
    assert alert["values"]["v2_timeouts_pct"] == 10.0 and alert["sev"] == "SEV-3"
    assert_labelled(alert)
    assert_nothing_changed(h, report, 100)
    with h.app.app_context():
        assert h.ext.metrics("calc")["arms"]["v2"]["slow_per_min"] == pytest.approx(2 / 5)  # a rate, per minute


def test_v2_complaints_rising_over_the_v1_baseline(host) -> None:
    h = host(V2ROLLOUT_GATE_MIN_USERS=30)
    h.raise_to(50)
    salt = h.ext.rollouts["calc"].salt
    buckets = {f"user-{i}": assign(f"user-{i}", 50, salt) for i in range(600)}  # the version each user gets

    def complains(uid: str) -> bool:  # v1 users: 1 in 10; v2 users: 4 in 10 — evidence, not noise, at ~300 a side
        n = int(uid.split("-")[1])
        return n % 10 < (4 if buckets[uid] == "v2" else 1)

    h.traffic(600, complain=complains)
    report = h.evaluate()
    alert = fired(report)["v2_complaints_rising"]
    assert alert["values"]["v2_vs_v1_complaints_pct"] > 300 and alert["sev"] == "SEV-3"
    assert_labelled(alert)
    assert_nothing_changed(h, report, 50)
    with h.app.app_context():
        arms = h.ext.metrics("calc")["arms"]
    assert arms["v2"]["events"]["complaint"] == sum(complains(u) for u, arm in buckets.items() if arm == "v2")
    assert arms["v1"]["events"]["complaint"] == sum(complains(u) for u, arm in buckets.items() if arm == "v1")


def test_complaints_at_the_baseline_do_not_fire(host) -> None:
    h = host(V2ROLLOUT_GATE_MIN_USERS=30)
    h.raise_to(50)
    h.traffic(600, complain=lambda uid: int(uid.split("-")[1]) % 10 == 0)
    report = h.evaluate()
    assert "v2_complaints_rising" not in fired(report)
    with h.app.app_context():
        assert h.ext.metrics("calc")["arms"]["v2"]["events"]["complaint"] > 0


def test_every_packaged_rule_has_a_test_here() -> None:
    tested = {name for name in globals() if name.startswith("test_v2_")}
    for rule in PACKAGED.rules:
        assert any(t.startswith(f"test_{rule.name}_") for t in tested), rule.name


# --------------------------------------------------------------------------- the actions themselves


def test_a_rollback_action_carries_the_version_read_and_wins_over_a_concurrent_raise(host) -> None:
    h = host()
    h.raise_to(10, 50)
    h.v2.error_every = 5
    h.traffic(200)
    with h.app.app_context():
        version = h.ext.flag_version("calc")

    def operator_raises() -> None:  # between the evaluator's read and its write
        with h.app.app_context():
            h.ext.set_flag("calc", "v2_rollout_percentage", 100, actor="someone")

    with before_flag_update(h.app, operator_raises) as raced:
        report = h.evaluate()
    assert raced and report["rollback"]["flag_version"] == version and report["rollback"]["landed"] is True
    assert h.flags()["v2_rollout_percentage"] == 10  # the rollback decided at 50 % landed over the raise


def test_rollback_to_zero_can_leave_shadow_off(host) -> None:
    h = host(V2ROLLOUT_ROLLBACK_ENTERS_SHADOW=False)
    h.raise_to(50)
    with h.app.app_context():
        h.ext.rollback("calc", 0, actor="oncall")
        assert h.ext.flags("calc", fresh=True)["v2_shadow_mode_enabled"] is False
        h.ext.set_flag("calc", "v2_rollout_percentage", 50, actor="ops")
        h.ext.rollback("calc", 0, actor="oncall", enter_shadow=True)
        assert h.ext.flags("calc", fresh=True)["v2_shadow_mode_enabled"] is True


def test_rule_actions_are_validated_whole(tmp_path: Path) -> None:
    from flask_v2rollout.rules.conditions import AlertRuleError

    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {name: r, condition: v2_p95_ms > 1s, severity: LOW, notify: [slack], description: d,"
                   " action: a, rollback: third, enter_shadow: maybe}\n")
    with pytest.raises(AlertRuleError) as info:
        load_runbook(bad)
    text = str(info.value)
    assert "rollback must be a percentage 0–100, {to: N}, previous, halve or none" in text
    assert "enter_shadow must be true or false" in text
    good = tmp_path / "good.yaml"
    good.write_text("rules:\n  - {name: r, condition: v2_p95_ms > 1s, severity: HIGH, notify: [slack], description: d,"
                    " action: a, rollback: {to: 5}}\n  - name: v2_very_high_error_rate\n"
                    "    condition: v2_error_rate_pct > 10%\n    severity: CRITICAL\n    notify: [slack]\n"
                    "    description: d\n    action: a\n    rollback: none\n"
                    "severities:\n  LOW: {label: P4}\n")
    book = load_runbook(good)
    assert book.rules["r"].rollback is not None and book.rules["r"].rollback.target(50, 10) == 5
    assert book.rules["v2_very_high_error_rate"].rollback is None
    assert book.severities["LOW"].label == "P4" and book.severities["LOW"].response == "log, next sprint"


def test_the_daily_figures_cover_24_hours(host) -> None:
    h = host()
    h.raise_to(50)
    h.v2.fallback_every = 4
    h.traffic(40)
    h.clock.advance(hours=20)
    h.traffic(60, first=40)
    with h.app.app_context():
        h.ext.flush()
        daily = h.ext.status("calc")["daily"]
    assert daily["total_calculations_24h"] == 100
    assert set(daily["fallback_reasons_breakdown_24h"]) == {"insufficient_data"}
    assert daily["availability_pct_24h"] == 100.0


@pytest.mark.parametrize("current,previous,kind,target", [
    (50.0, 10.0, "halve", 25.0), (33.33, 10.0, "halve", 16.66), (0.01, 0.0, "halve", 0.0),
    (50.0, 10.0, "previous", 10.0), (10.0, 0.0, "previous", 0.0), (5.0, 10.0, "previous", 5.0),
])
def test_rollback_targets(current: float, previous: float, kind: str, target: float) -> None:
    from flask_v2rollout.rules.actions import RollbackAction

    assert RollbackAction(kind).target(current, previous) == target  # type: ignore[arg-type]


def test_the_previous_percentage_is_the_start_of_the_last_raise_below_now() -> None:
    from flask_v2rollout.rules.actions import percentage_before

    newest_first = [(50.0, 25.0), (10.0, 50.0), (0.0, 10.0)]  # 0 → 10 → 50, reduced to 25
    assert percentage_before(newest_first, 25.0) == 10.0
    assert percentage_before([(None, 100.0)], 100.0) == 0.0 and percentage_before([], 40.0) == 0.0
