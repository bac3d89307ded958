"""Decision windows: the autopilot advances only in office hours (the runbook's 10:00 on working days);
rollbacks never wait; the gate report says when the next advance can happen."""
from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import request

from flask_v2rollout import Fallback, V2Rollout
from flask_v2rollout.rules.windows import parse_windows
from flask_v2rollout.testing import Clock, shadow_sync, use_clock
from helpers import build_app

WINDOWS = "Mon-Fri 09:00-17:00 Europe/London"


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def healthy_v2(x: int) -> float:
    if x % 10 == 0:
        raise Fallback("insufficient_data")  # 10 % fallback
    return x + (5.0 if x % 4 == 0 else 0.5)  # ~75 % agreement


def windowed_app(tmp_path: Path, v2=healthy_v2, **config):
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: float(x), v2=v2)
    ext.user_loader(lambda: request.headers.get("X-User"))
    app, _ = build_app(tmp_path / "instance", ext, V2ROLLOUT_DECISION_WINDOWS=WINDOWS,
                       V2ROLLOUT_STAGE_DURATIONS={"shadow": 3600}, V2ROLLOUT_GATE_MIN_CALCULATIONS=100,
                       V2ROLLOUT_EVALUATE_EVERY_S=10**9, **config)
    return app, ext


def traffic(app, calls: int, first: int = 0) -> None:
    client = app.test_client()
    for i in range(first, first + calls):
        assert client.get(f"/calc/{i}", headers={"X-User": f"user-{i}"}).status_code == 200


def test_go_at_six_on_friday_advances_on_monday_when_the_window_opens(tmp_path: Path) -> None:
    app, ext = windowed_app(tmp_path, V2ROLLOUT_DEFAULTS={"v2_shadow_mode_enabled": True,
                                                          "v2_autopilot_enabled": True})
    clock = Clock(start=at("2027-01-08T15:00:00+00:00"))  # Friday afternoon: shadow begins
    monday_nine = at("2027-01-11T09:00:00+00:00")
    with use_clock(app, clock), shadow_sync(app):
        traffic(app, 300)
        clock.advance(hours=3)  # Friday 18:00: the shadow gate says GO, the window has closed
        with app.app_context():
            report = ext.evaluate()["calc"]
            gate = ext.gate("calc")
            status = ext.status("calc")
            assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 0
        assert gate["decision"] == "GO", gate["reasons"]
        assert report["autopilot"]["kind"] == "hold"
        assert "outside the decision windows (Mon-Fri 09:00-17:00 Europe/London)" in report["autopilot"]["reason"]
        assert "next advance at 2027-01-11T09:00:00+00:00" in report["autopilot"]["reason"]
        assert gate["next_advance_at"] == monday_nine and gate["decision_window_open"] is False
        assert status["gate"]["next_advance_at"] == monday_nine

        clock.now = at("2027-01-09T12:00:00+00:00")  # Saturday noon: still holding
        with app.app_context():
            assert ext.evaluate()["calc"]["autopilot"]["kind"] == "hold"
        clock.now = monday_nine - 1
        with app.app_context():
            assert ext.evaluate()["calc"]["autopilot"]["kind"] == "hold"
            assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 0
        clock.now = monday_nine  # the window opens: the autopilot advances at once
        with app.app_context():
            report = ext.evaluate()["calc"]
            flags = ext.flags("calc", fresh=True)
            audit = [r for r in ext.audit("calc") if r["flag"] == "v2_rollout_percentage"]
            gate = ext.gate("calc")
    assert report["autopilot"]["kind"] == "advance"
    assert flags["v2_rollout_percentage"] == 10 and flags["v2_shadow_mode_enabled"] is False
    assert [(r["actor"], iso(r["at"])) for r in audit] == [("autopilot", "2027-01-11T09:00:00+00:00")]
    # canary's minimum 48 h and the 30 min watch: Wednesday 09:00, inside the window
    assert iso(gate["next_advance_at"]) == "2027-01-13T09:00:00+00:00"


def test_a_critical_on_saturday_rolls_back_at_once(tmp_path: Path) -> None:
    broken = {"db": False}

    def v2(x: int) -> float:
        if broken["db"] and x % 10 == 0:
            raise sqlite3.OperationalError("unable to open database file")
        return float(x)

    app, ext = windowed_app(tmp_path, v2=v2, V2ROLLOUT_DEFAULTS={"v2_autopilot_enabled": True})
    clock = Clock(start=at("2027-01-08T10:00:00+00:00"))
    with use_clock(app, clock):
        with app.app_context():
            ext.set_flag("calc", "v2_rollout_percentage", 10, actor="ops", reason="canary")
            clock.advance(days=1)  # Saturday 10:00
            ext.set_flag("calc", "v2_rollout_percentage", 50, actor="ops", reason="staged, by hand")
        clock.advance(hours=1)
        broken["db"] = True
        traffic(app, 200)
        with app.app_context():
            report = ext.evaluate()["calc"]
            flags = ext.flags("calc", fresh=True)
            rollback = next(r for r in ext.audit("calc") if r["flag"] == "v2_rollout_percentage")
    assert report["rollback"]["rule"] == "v2_database_connection_failure" and report["rollback"]["landed"]
    assert flags["v2_rollout_percentage"] == 0 and flags["v2_shadow_mode_enabled"] is True
    assert (rollback["actor"], iso(rollback["at"])) == ("auto-rollback", "2027-01-09T11:00:00+00:00")


def test_windows_follow_the_zones_daylight_saving_time() -> None:
    windows = parse_windows(WINDOWS)
    friday_evening_summer = at("2027-07-02T18:00:00+00:00")  # 19:00 in London
    assert iso(windows.next_open(friday_evening_summer)) == "2027-07-05T08:00:00+00:00"  # 09:00 BST
    assert windows.is_open(at("2027-07-05T08:30:00+00:00"))
    assert not windows.is_open(at("2027-07-05T16:30:00+00:00"))  # 17:30 BST
    assert windows.is_open(at("2027-01-11T16:59:59+00:00")) and not windows.is_open(at("2027-01-11T17:00:00+00:00"))
    several = parse_windows("Mon,Wed 10:00-12:00 UTC; Sat 00:00-24:00")
    assert iso(several.next_open(at("2027-01-11T12:00:00+00:00"))) == "2027-01-13T10:00:00+00:00"
    assert several.is_open(at("2027-01-09T23:59:00+00:00"))
    assert iso(several.next_open(at("2027-01-10T00:00:00+00:00"))) == "2027-01-11T10:00:00+00:00"


@pytest.mark.parametrize("text,message", [
    ("weekdays 09:00-17:00", "days are Mon … Sun"),
    ("Mon-Fri 17:00-09:00 UTC", "the end must be after the start"),
    ("Mon-Fri 09:00-17:00 Mars/Olympus", "unknown time zone"),
    ("Fri-Mon 09:00-17:00", "runs backwards"),
    ("Mon 9-17", "must look like"),
    ("Mon 09:00-25:00", "is not a time of day"),
])
def test_bad_windows_stop_init_app_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=abs, v2=abs)
    with pytest.raises(RuntimeError, match="V2ROLLOUT_DECISION_WINDOWS") as info:
        build_app(tmp_path / "instance", ext, V2ROLLOUT_DECISION_WINDOWS=text)
    assert message in str(info.value)


def test_without_windows_the_next_advance_is_the_stage_minimum(tmp_path: Path) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=abs, v2=abs)
    app, _ = build_app(tmp_path / "instance", ext)
    clock = Clock(start=at("2027-01-08T18:00:00+00:00"))
    with use_clock(app, clock), app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 10, actor="ops")
        gate = ext.gate("calc")
    assert gate["decision_window_open"] is True
    assert iso(gate["next_advance_at"]) == "2027-01-10T18:00:00+00:00"  # canary: 48 h after it began
