"""The runbook's decisions as code: a simulated rollout under a controllable clock."""
from __future__ import annotations

import hashlib
import multiprocessing as mp
from pathlib import Path

import pytest

import procs
from flask_v2rollout import Fallback, GateError, V2Rollout
from flask_v2rollout.testing import Clock, shadow_sync, use_clock
from helpers import join, recv

STAGE_S = {"shadow": 120, "canary": 180, "staged": 240, "full": 300}
MANUAL = ("zero_complaints", "higher_quality", "team_ready", "team_confident", "satisfaction_kept", "docs_complete")


def converts(uid: str) -> bool:
    """Nine users in ten convert, in both arms alike."""
    return int(hashlib.md5(f"conv:{uid}".encode()).hexdigest(), 16) % 10 != 0


def healthy_v2(x: int) -> float:
    if x % 10 == 0:
        raise Fallback("insufficient_weeks")  # 10 % fallback
    return x + (5.0 if x % 4 == 0 else 0.5)  # ~75 % agreement (EXACT), the rest MODERATE


def error_prone_v2(x: int) -> float:
    if x % 25 < 3:
        raise KeyError("opponent")  # 12 % errors
    return x + 0.5


def simulation_app(make_app, v2, **config):
    ext = V2Rollout()
    # The runbook's unsalted md5: the rates these tests assert were measured on that cohort of user-0 … user-11999.
    ext.register("calc", v1=lambda x: float(x), v2=v2, salt="")
    app, _ = make_app(ext, V2ROLLOUT_STAGE_DURATIONS=STAGE_S, V2ROLLOUT_WATCH_INTERVAL_S=60,
                      V2ROLLOUT_GATE_MIN_USERS=100, V2ROLLOUT_EVALUATE_EVERY_S=10**9, **config)
    return app, ext


def traffic(app, ext, minute: int, calls: int) -> None:
    """One simulated minute: ``calls`` requests from distinct users; converting users convert."""
    with app.app_context():
        for i in range(calls):
            uid = f"user-{(minute * calls + i) % 12_000}"
            with app.test_request_context(headers={"X-User": uid}):
                app.preprocess_request()
                ext.calculate("calc", i)
                if converts(uid):
                    ext.track_conversion("calc")


@pytest.fixture
def user_from_header():
    def install(ext: V2Rollout) -> None:
        from flask import request

        ext.user_loader(lambda: request.headers.get("X-User"))
    return install


def test_autopilot_takes_a_healthy_v2_from_shadow_to_full(make_app, user_from_header) -> None:
    app, ext = simulation_app(make_app, healthy_v2, V2ROLLOUT_DEFAULTS={
        "v2_shadow_mode_enabled": True, "v2_autopilot_enabled": True})
    user_from_header(ext)
    clock = Clock(start=1_900_000_000)
    stages_seen = []
    with use_clock(app, clock), shadow_sync(app):
        with app.app_context():
            stage = ext.gate("calc")["stage"]
        for minute in range(40):
            with app.app_context():
                current = ext.gate("calc")["stage"]
                if not stages_seen or stages_seen[-1] != current:
                    stages_seen.append(current)
                    for check in MANUAL:  # the people's part of each gate, confirmed in each stage
                        ext.record_check("calc", check, True, actor="lead", note=f"{current} review")
                if current == "full":
                    break
            traffic(app, ext, minute, 1_500)
            with app.app_context():
                report = ext.evaluate()
                assert report["calc"]["auto_rollback"] is False
            clock.advance(minutes=1)
        with app.app_context():
            flags = ext.flags("calc", fresh=True)
            moves = [(r["old_value"], r["new_value"], r["actor"])
                     for r in reversed(ext.audit("calc")) if r["flag"] == "v2_rollout_percentage"]
            shadow_moves = [r for r in ext.audit("calc") if r["flag"] == "v2_shadow_mode_enabled"]
    assert stage == "shadow"
    assert stages_seen == ["shadow", "canary", "staged", "full"]
    assert moves == [(0.0, 10.0, "autopilot"), (10.0, 50.0, "autopilot"), (50.0, 100.0, "autopilot")]
    assert flags["v2_rollout_percentage"] == 100.0 and flags["v2_shadow_mode_enabled"] is False
    assert shadow_moves[0]["new_value"] is False and shadow_moves[0]["actor"] == "autopilot"
    assert minute >= sum(STAGE_S[s] for s in ("shadow", "canary", "staged")) / 60  # minimum durations held


def test_low_traffic_is_inconclusive_and_never_advances(make_app, user_from_header) -> None:
    app, ext = simulation_app(make_app, healthy_v2, V2ROLLOUT_DEFAULTS={
        "v2_shadow_mode_enabled": True, "v2_autopilot_enabled": True})
    user_from_header(ext)
    clock = Clock(start=1_900_000_000)
    with use_clock(app, clock), shadow_sync(app):
        for minute in range(10):
            traffic(app, ext, minute, 15)  # 150 calls in all: below the 200-call minimum
            with app.app_context():
                ext.evaluate()
                gate = ext.gate("calc")
                assert gate["decision"] == "INCONCLUSIVE"
            clock.advance(minutes=1)
        with app.app_context():
            assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 0.0
            assert any("not enough data" in r for r in gate["reasons"])
            with pytest.raises(GateError, match="INCONCLUSIVE"):
                ext.advance("calc", actor="ops")
            assert ext.audit("calc") == []


def test_error_spike_rolls_back_once_while_four_evaluators_race(make_app, user_from_header, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    # This process flushes by hand: its periodic flusher would evaluate too (a fifth racer, first after 5 s).
    app, ext = simulation_app(make_app, error_prone_v2, V2ROLLOUT_DATABASE_URI=uri, V2ROLLOUT_METRICS_FLUSH_S=3600)
    user_from_header(ext)
    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 50, actor="ops", reason="staged")
    traffic(app, ext, 0, 2_000)
    with app.app_context():
        assert ext.flush()
        assert ext.metrics("calc")["arms"]["v2"]["error_rate_pct"] == pytest.approx(12.0, abs=0.5)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    pipes, children = [], []
    for i in range(4):
        here, there = ctx.Pipe()
        child = ctx.Process(target=procs.racing_evaluator, args=(str(tmp_path / f"e{i}"), uri, barrier, there))
        child.start()
        pipes.append(here)
        children.append(child)
    reports = [recv(p) for p in pipes]
    for child in children:
        join(child)
    rolled_back = [r for r in reports if r and r["calc"]]
    assert len(rolled_back) == 1, reports
    with app.app_context():
        audit = [r for r in ext.audit("calc") if r["actor"] == "auto-rollback" and r["flag"] == "v2_rollout_percentage"]
        assert len(audit) == 1
        assert audit[0]["old_value"] == 50.0 and audit[0]["new_value"] == 0.0  # the previous percentage: 0
        assert audit[0]["reason"].startswith("v2_very_high_error_rate (SEV-1 CRITICAL): to the previous percentage")
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 0.0
        fired = [e for e in ext.alert_history("calc") if e["event"] == "fired"]
        assert sorted(e["rule"] for e in fired) == ["v2_error_rate_above_target", "v2_high_error_rate",
                                                     "v2_moderate_error_rate", "v2_very_high_error_rate"]
        # After the rollback the rules re-arm (whichever evaluation comes next — a racing child's or this
        # one): the firing ones resolve, once each, and nothing fires or rolls back again on those calls.
        again = ext.evaluate()
        assert again["calc"]["auto_rollback"] is False and again["calc"]["autopilot"] is None
        events = [(e["rule"], e["event"], (e["detail"] or {}).get("note")) for e in ext.alert_history("calc")]
        rearmed = sorted(rule for rule, event, note in events if event == "resolved")
        assert rearmed == ["v2_error_rate_above_target", "v2_high_error_rate", "v2_moderate_error_rate",
                           "v2_very_high_error_rate"], events
        assert {note for _, event, note in events if event == "resolved"} == {"re-armed: percentage 50 → 0"}
        assert len([e for e in events if e[1] == "fired"]) == 4
        assert ext.alerts("calc") == []
        assert ext.evaluate()["calc"] == {"transitions": [], "auto_rollback": False, "rollback": None,
                                          "autopilot": None}


@pytest.mark.parametrize("drop_v2", [False, True], ids=["correct-split", "v2-users-dropped"])
def test_a_canary_reduced_to_5_percent_checks_the_split_against_5_percent(
        make_app, user_from_header, drop_v2: bool) -> None:
    """10 % → 5 % inside the canary: the users seen at 10 % are no sample-ratio mismatch at 5 %
    (the check counts users first seen since the change); v2 users dropped after it still are."""
    from flask import jsonify

    app, ext = simulation_app(make_app, healthy_v2)
    user_from_header(ext)

    @app.get("/maybe-cached/<int:x>")
    def maybe_cached(x: int):
        if drop_v2 and ext.current_version("calc") == "v2" and x % 10:
            return jsonify(value=float(x))  # nine v2 users in ten answered by a cache, never counted
        return jsonify(value=ext.calculate("calc", x).value)

    client = app.test_client()
    clock = Clock(start=1_900_000_000)
    with use_clock(app, clock):
        with app.app_context():
            ext.set_flag("calc", "v2_rollout_percentage", 10, actor="ops", reason="canary")
        clock.advance(minutes=1)
        for i in range(3_000):
            assert client.get(f"/maybe-cached/{i}", headers={"X-User": f"user-{i}"}).status_code == 200
        with app.app_context():
            assert ext.flush()
            at_10 = ext.metrics("calc", "2m")["arms"]
        clock.advance(minutes=10)
        with app.app_context():
            ext.set_flag("calc", "v2_rollout_percentage", 5, actor="ops", reason="canary reduced")
        clock.advance(minutes=1)
        for i in range(3_000):  # the same users come back, and a thousand new ones
            assert client.get(f"/maybe-cached/{i}", headers={"X-User": f"user-{i}"}).status_code == 200
        for i in range(3_000, 4_000):
            assert client.get(f"/maybe-cached/{i}", headers={"X-User": f"user-{i}"}).status_code == 200
        with app.app_context():
            assert ext.flush()
            gate = ext.gate("calc")
            at_5 = ext.metrics("calc", "2m")["arms"]
    assert gate["stage"] == "canary"
    srm = next(c for c in gate["criteria"] if c["name"] == "srm")
    srm_reasons = [r for r in gate["reasons"] if "SRM p=" in r]
    if drop_v2:
        assert srm["verdict"] == "fail" and gate["decision"] == "NO-GO"
        assert any(r.startswith("blocker 'assignment is broken' fired (SRM p=") for r in srm_reasons), gate["reasons"]
    else:
        # the whole stage holds over 6 % v2 users: against 5 % that would read as a broken assignment
        stage_v2 = at_10["v2"]["users"] + at_5["v2"]["users"]
        assert stage_v2 / (stage_v2 + at_10["v1"]["users"] + at_5["v1"]["users"]) > 0.06
        assert 0.035 < at_5["v2"]["users"] / (at_5["v1"]["users"] + at_5["v2"]["users"]) < 0.065
        assert srm["verdict"] == "pass" and srm_reasons == [], gate["reasons"]


def test_a_cache_that_drops_v2_users_is_a_sample_ratio_mismatch(make_app, user_from_header) -> None:
    """A host caching layer answers v2-bucket users from cached v1 results without calling calculate():
    most of them never reach the v2 arm, and the gate must say the assignment is broken."""
    from flask import jsonify

    app, ext = simulation_app(make_app, healthy_v2)
    user_from_header(ext)
    cache: dict[int, float] = {}

    @app.get("/cached/<int:x>")
    def cached(x: int):
        if ext.current_version("calc") == "v2" and x in cache:
            return jsonify(value=cache[x])  # the bug: v2 users skip calculate() on a cache hit
        outcome = ext.calculate("calc", x)
        if outcome.version == "v1":
            cache[x] = outcome.value
        return jsonify(value=outcome.value)

    client = app.test_client()
    clock = Clock(start=1_900_000_000)
    with use_clock(app, clock):
        with app.app_context():
            ext.set_flag("calc", "v2_rollout_percentage", 10, actor="ops", reason="canary")
        clock.advance(minutes=1)  # the stage's window starts at the next whole minute
        for i in range(3_000):
            assert client.get(f"/cached/{i % 20}", headers={"X-User": f"user-{i}"}).status_code == 200
        with app.app_context():
            assert ext.flush()
            arms = ext.metrics("calc")["arms"]
            assert arms["v2"]["users"] < 0.02 * (arms["v1"]["users"] + arms["v2"]["users"])  # 10 % configured
            gate = ext.gate("calc")
    assert gate["decision"] == "NO-GO", gate["reasons"]
    srm = next(c for c in gate["criteria"] if c["name"] == "srm")
    assert srm["verdict"] == "fail"
    assert any(r.startswith("blocker 'assignment is broken' fired (SRM p=") for r in gate["reasons"]), gate["reasons"]
