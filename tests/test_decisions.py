"""Decisions are compare-and-set on what they read; a rollback always wins; a broken v2 is caught again on resume."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from flask_v2rollout import ConflictError, GateError, V2Rollout
from flask_v2rollout.decisions import lease
from flask_v2rollout.decisions.evaluator import DUTY_LEASE_NAME
from flask_v2rollout.errors import StaleDecisionError
from flask_v2rollout.flags import PERCENTAGE
from flask_v2rollout.signals import alert_fired, flag_changed
from flask_v2rollout.testing import Clock, use_clock
from helpers import before_flag_update, build_app

WAIT_S = 20.0
TRUE, FALSE = "v2_rollout_percentage >= 0", "v2_rollout_percentage < 0"
CANARY_MUSTS_SHOULDS = ("error_rate", "conversion", "complaints", "fallback", "p95", "conversion_up", "quality",
                        "stable", "no_rollback")
CANARY_BLOCKERS = ("conversion_low", "error_high", "rollbacks", "srm")


def always_go_canary(tmp_path: Path) -> str:
    """A host runbook whose canary gate says GO at once (the race, not the gate, is under test)."""
    criteria = [{"name": n, "condition": TRUE, "description": n} for n in CANARY_MUSTS_SHOULDS]
    criteria += [{"name": n, "condition": FALSE, "description": n} for n in CANARY_BLOCKERS]
    path = tmp_path / "runbook.yaml"
    path.write_text(yaml.safe_dump({"gates": [{"name": "canary_to_staged", "criteria": criteria}]}))
    return str(path)


def canary_app(tmp_path: Path, v2: Callable[[int], Any] = lambda x: x, pct: float = 10,
               **config: Any) -> tuple[Flask, V2Rollout]:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=v2, defaults={"v2_rollout_percentage": pct})
    settings = {"V2ROLLOUT_RUNBOOK_FILE": always_go_canary(tmp_path), "V2ROLLOUT_STAGE_DURATIONS": {"canary": 0},
                "V2ROLLOUT_METRICS_FLUSH_S": 3600, **config}
    return build_app(tmp_path / "instance", ext, **settings)


def race_once(app: Flask, ext: V2Rollout, trial: int) -> str:
    """advance() and rollback(target=0) released together; returns what the advance saw."""
    with app.app_context():
        ext.set_flags("calc", {"v2_rollout_percentage": 10, "v2_shadow_mode_enabled": False}, actor="setup",
                      reason=f"trial {trial}")
    start = threading.Barrier(2, timeout=WAIT_S)
    results: dict[str, str] = {}

    def advance() -> None:
        with app.app_context():
            start.wait()
            try:
                ext.advance("calc", actor="ops")
                results["advance"] = "advanced"
            except StaleDecisionError:
                results["advance"] = "stale"
            except GateError:
                results["advance"] = "not GO"

    def rollback() -> None:
        with app.app_context():
            start.wait()
            ext.rollback("calc", target=0, actor="oncall", reason="emergency")
            results["rollback"] = "done"

    threads = [threading.Thread(target=advance), threading.Thread(target=rollback)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not any(t.is_alive() for t in threads) and results.get("rollback") == "done"
    with app.app_context():
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 0, (trial, results)
    return results["advance"]


def test_advance_racing_an_emergency_rollback_never_ends_above_zero(tmp_path: Path) -> None:
    app, ext = canary_app(tmp_path)
    outcomes: dict[str, int] = {}
    for trial in range(200):
        seen = race_once(app, ext, trial)
        outcomes[seen] = outcomes.get(seen, 0) + 1
    print(f"advance vs rollback, 200 trials: {outcomes}; 0 ended above 0 %")


def test_an_advance_whose_gate_went_stale_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    app, ext = canary_app(tmp_path, V2ROLLOUT_ADMIN_TOKEN="t" * 32)

    def rollback() -> None:
        with app.app_context():
            ext.rollback("calc", target=0, actor="oncall", reason="emergency")

    with app.app_context(), before_flag_update(app, rollback) as fired:
        with pytest.raises(StaleDecisionError, match="the rollout changed since the gate was read"):
            ext.advance("calc", actor="ops")
        assert fired and ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 0
        assert [(r["actor"], r["flag"]) for r in ext.audit("calc")] == [
            ("oncall", "v2_shadow_mode_enabled"), ("oncall", "v2_rollout_percentage")]  # back to shadow mode
    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 10, actor="setup")
    client = app.test_client()
    with app.app_context(), before_flag_update(app, rollback):
        response = client.post("/v2rollout/api/rollouts/calc/advance", json={},
                               headers={"Authorization": "Bearer " + "t" * 32})
    assert response.status_code == 409
    assert "the rollout changed since the gate was read" in response.get_json()["error"]["message"]


def test_a_rollback_that_meets_a_concurrent_write_lands_anyway(tmp_path: Path) -> None:
    app, ext = canary_app(tmp_path)

    def other_change() -> None:
        with app.app_context():
            ext.set_flag("calc", "v2_monitoring_enabled", False, actor="someone", reason="unrelated")

    with app.app_context(), before_flag_update(app, other_change) as fired:
        made = ext.rollback("calc", target=0, actor="oncall")
    assert fired and [(c.flag, c.new) for c in made] == [("v2_rollout_percentage", 0.0),
                                                          ("v2_shadow_mode_enabled", True)]
    with app.app_context():
        flags = ext.flags("calc", fresh=True)
        assert flags["v2_rollout_percentage"] == 0 and flags["v2_monitoring_enabled"] is False
        assert [r["actor"] for r in ext.audit("calc")] == ["oncall", "oncall", "someone"]


def test_a_rollback_never_raises_the_percentage(tmp_path: Path) -> None:
    app, ext = canary_app(tmp_path)

    def lower_further() -> None:
        with app.app_context():
            ext.set_flag("calc", "v2_rollout_percentage", 1, actor="someone")

    with app.app_context():
        with pytest.raises(Exception, match="above the current percentage"):
            ext.rollback("calc", target=50, actor="oncall")
        with before_flag_update(app, lower_further):
            assert ext.rollback("calc", target=5, actor="oncall") == []  # already below: nothing to do
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 1


def failing_v2(x: int) -> int:
    if x % 5 == 0:
        raise RuntimeError("v2 broke")  # 20 % errors
    return x


def test_an_auto_rollback_that_meets_a_concurrent_write_lands_in_the_same_evaluation(tmp_path: Path) -> None:
    app, ext = canary_app(tmp_path, v2=failing_v2, pct=50)
    with app.app_context():
        for i in range(400):
            ext.calculate("calc", i, user_id=f"u{i}")
        assert ext.flush()

        def operator_change() -> None:
            with app.app_context():
                ext.set_flag("calc", "v2_monitoring_enabled", False, actor="ops", reason="another flag")

        with before_flag_update(app, operator_change) as fired:
            report = ext.evaluate()
        assert fired and report is not None and report["calc"]["auto_rollback"] is True
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 0
        rollbacks = [r for r in ext.audit("calc") if r["actor"] == "auto-rollback" and r["flag"] == PERCENTAGE]
        assert len(rollbacks) == 1 and rollbacks[0]["old_value"] == 50
        assert ext.evaluate()["calc"]["auto_rollback"] is False  # audited once


def test_an_auto_rollback_the_store_refused_is_retried_at_the_next_evaluation(tmp_path: Path) -> None:
    app, ext = canary_app(tmp_path, v2=failing_v2, pct=50)
    engine = app.extensions["v2rollout"].engine()
    with app.app_context():
        for i in range(400):
            ext.calculate("calc", i, user_id=f"u{i}")
        assert ext.flush()
        refused: list[int] = []

        def refuse(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE V2ROLLOUT_FLAGS") and not refused:
                refused.append(1)
                raise OperationalError(statement, {}, Exception("disk I/O error"))

        event.listen(engine, "before_cursor_execute", refuse)
        try:
            first = ext.evaluate()
        finally:
            event.remove(engine, "before_cursor_execute", refuse)
        assert refused and first is not None and first["calc"]["auto_rollback"] is False
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 50
        assert {a["rule"] for a in ext.alerts("calc")} >= {"v2_very_high_error_rate"}
        second = ext.evaluate()  # still firing: the rollback is tried again and lands
        assert second is not None and second["calc"]["auto_rollback"] is True
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 0
        assert len([r for r in ext.audit("calc") if r["actor"] == "auto-rollback" and r["flag"] == PERCENTAGE]) == 1


def test_a_resumed_broken_v2_fires_and_rolls_back_again(tmp_path: Path) -> None:
    """Real time, background flusher and evaluator: rollback on CRITICAL, resume at 10 %, caught again."""
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=failing_v2, defaults={"v2_rollout_percentage": 50})
    app, _ = build_app(tmp_path / "instance", ext, V2ROLLOUT_METRICS_FLUSH_S=0.2, V2ROLLOUT_EVALUATE_EVERY_S=0.5)
    rolled_back = threading.Event()
    announced = threading.Semaphore(0)  # released once per CRITICAL fired, after it was stored
    stop = threading.Event()

    def on_change(sender: Flask, **kw: Any) -> None:
        if kw["actor"] == "auto-rollback" and kw["flag"] == "v2_rollout_percentage":
            rolled_back.set()

    def on_fired(sender: Flask, **kw: Any) -> None:
        if kw["rule"] == "v2_very_high_error_rate":
            announced.release()

    def traffic() -> None:
        with app.app_context():
            i = 0
            while not stop.is_set():
                ext.calculate("calc", i, user_id=f"user-{i % 997}")
                i += 1

    flag_changed.connect(on_change, app)
    alert_fired.connect(on_fired, app)
    worker = threading.Thread(target=traffic, daemon=True)
    try:
        worker.start()
        started = time.monotonic()
        assert rolled_back.wait(WAIT_S), "the first rollback did not land"
        first_s = time.monotonic() - started
        assert announced.acquire(timeout=WAIT_S), "the first CRITICAL was not announced"
        rolled_back.clear()
        with app.app_context():
            ext.set_flag("calc", "v2_rollout_percentage", 10, actor="ops", reason="resume after a 'fix'")
        resumed = time.monotonic()
        assert rolled_back.wait(WAIT_S), "the resumed broken v2 was not rolled back again"
        again_s = time.monotonic() - resumed
        assert announced.acquire(timeout=WAIT_S), "the second CRITICAL was not announced"
    finally:
        stop.set()
        worker.join(WAIT_S)
        flag_changed.disconnect(on_change, app)
        alert_fired.disconnect(on_fired, app)
    with app.app_context():
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 0
        rollbacks = [(r["old_value"], r["new_value"]) for r in ext.audit("calc")
                     if r["actor"] == "auto-rollback" and r["flag"] == PERCENTAGE]
        assert rollbacks == [(10.0, 0.0), (50.0, 0.0)]
    print(f"first rollback {first_s:.2f} s after traffic began; rolled back again {again_s:.2f} s after the resume "
          "(flush 0.2 s, evaluation every 0.5 s)")


def test_the_first_background_evaluation_waits_one_period(tmp_path: Path) -> None:
    app, ext = canary_app(tmp_path, v2=failing_v2, pct=50, V2ROLLOUT_EVALUATE_EVERY_S=3600)
    runtime = app.extensions["v2rollout"]
    with app.app_context():
        for i in range(400):
            ext.calculate("calc", i, user_id=f"u{i}")
        assert runtime.flusher.cycle()  # a background round: flush, then the evaluator if due
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 50  # not due yet
        assert ext.alerts("calc") == []


def test_conflict_error_is_still_the_family_of_a_stale_decision() -> None:
    assert issubclass(StaleDecisionError, ConflictError)


def test_the_periodic_evaluation_runs_only_in_the_holder_of_the_duty_lease(tmp_path: Path) -> None:
    """Another process holding the duty: this one spends nothing on it, until that lease lapses."""
    app, ext = canary_app(tmp_path, v2=failing_v2, pct=50, V2ROLLOUT_EVALUATE_EVERY_S=3600)
    runtime = app.extensions["v2rollout"]
    with app.app_context(), use_clock(app, Clock()) as clock:
        runtime.store.ensure_tables()
        assert lease.acquire(runtime.engine(), DUTY_LEASE_NAME, 7200, holder="elsewhere:1:duty", clock=clock)
        assert runtime.flusher.cycle()  # the period starts
        clock.advance(3600)
        for i in range(400):
            ext.calculate("calc", i, user_id=f"u{i}")
        assert runtime.flusher.cycle()  # due, but the duty is another process's
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 50
        assert ext.alerts("calc") == []
        clock.advance(3601)  # the other holder stopped renewing: its lease has lapsed
        for i in range(400):
            ext.calculate("calc", i, user_id=f"u{i}")
        assert runtime.flusher.cycle()
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 0  # this process took the duty
