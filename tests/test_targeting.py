"""Allow and deny lists: pinned users get their version whatever the percentage, counted apart from the arms."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import jsonify, request

from flask_v2rollout import V2Rollout
from flask_v2rollout.testing import Clock, shadow_sync, use_clock
from helpers import build_app

STAFF = ("staff-ann", "staff-bob")


def targeted_app(tmp_path: Path, **register: object):
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10, **register)  # type: ignore[arg-type]
    ext.user_loader(lambda: request.headers.get("X-User"))
    app, _ = build_app(tmp_path / "instance", ext)

    @app.post("/convert")
    def convert():
        ext.track_conversion("calc")
        return jsonify(ok=True)

    return app, ext


def served(app, uid: str) -> dict:
    response = app.test_client().get("/calc/1", headers={"X-User": uid})
    assert response.status_code == 200
    return response.get_json()


def test_allow_listed_users_get_v2_at_zero_percent_and_the_gate_arms_exclude_them(tmp_path: Path) -> None:
    app, ext = targeted_app(tmp_path, allow=["staff-ann"], allow_if=lambda uid: uid == "staff-bob",
                            defaults={"v2_shadow_mode_enabled": True})
    clock = Clock(start=1_900_000_000)
    with use_clock(app, clock), shadow_sync(app):
        client = app.test_client()
        for _ in range(5):
            for uid in STAFF:
                assert served(app, uid) == {"value": 10, "version": "v2", "assigned": "v2_allowed",
                                            "fallback_reason": None}
                client.post("/convert", headers={"X-User": uid})
        for i in range(40):
            assert served(app, f"user-{i}")["version"] == "v1"  # 0 %: everyone else on v1
        with app.app_context():
            ext.flush()
            window = ext.metrics("calc", "1h")
            gate = ext.gate("calc")
            status = ext.status("calc")
    assert window["arms"]["v2"]["calculations"] == 0 and window["arms"]["v2"]["users"] == 0
    assert window["arms"]["v1"]["calculations"] == 40 and window["arms"]["v1"]["users"] == 40
    assert window["arms"]["v1"]["conversions"] == 0  # the staff's conversions are not the control's
    assert gate["targeted"] == {"v2_allowed": {"calculations": 10, "users": 2}, "v1_denied": {"calculations": 0,
                                                                                          "users": 0}}
    assert status["gate"]["targeted"] == gate["targeted"]
    shadow_runs = next(c for c in gate["criteria"] if c["name"] == "completion")["sample"]
    assert shadow_runs == 40  # only the bucketed v1 users were shadowed


def test_deny_listed_users_stay_on_v1_at_full_rollout(tmp_path: Path) -> None:
    app, ext = targeted_app(tmp_path, deny=["key-account"], deny_if=lambda uid: uid.startswith("regulator-"),
                            allow_if=lambda uid: uid.startswith("regulator-"),  # deny wins over allow
                            defaults={"v2_rollout_percentage": 100})
    assert served(app, "key-account")["assigned"] == "v1_denied"
    assert served(app, "regulator-1") == {"value": 1, "version": "v1", "assigned": "v1_denied",
                                          "fallback_reason": None}
    assert served(app, "someone")["version"] == "v2"
    with app.app_context():
        ext.flush()
        arms = ext.metrics("calc", "1h")["arms"]
        assert (arms["v1"]["calculations"], arms["v2"]["calculations"]) == (0, 1)
        assert ext.gate("calc")["targeted"]["v1_denied"] == {"calculations": 2, "users": 2}


def test_a_failing_predicate_leaves_the_user_to_the_bucket(tmp_path: Path) -> None:
    def broken(uid: str) -> bool:
        raise LookupError("staff directory down")

    app, ext = targeted_app(tmp_path, allow_if=broken)
    assert served(app, "anyone") == {"value": 1, "version": "v1", "assigned": "v1", "fallback_reason": None}
    with app.app_context():
        ext.flush()
        assert ext.metrics("calc", "1h")["arms"]["v1"]["calculations"] == 1


@pytest.mark.parametrize("kwargs,message", [
    ({"allow": "staff-ann"}, "collection of user ids, not one string"),
    ({"allow": ["u1"], "deny": ["u1"]}, "both allowed and denied"),
    ({"deny_if": "staff"}, "deny_if must be a callable"),
])
def test_bad_lists_are_refused_and_register_nothing(kwargs: dict, message: str) -> None:
    ext = V2Rollout()
    with pytest.raises((TypeError, ValueError), match=message):
        ext.register("calc", v1=abs, v2=abs, **kwargs)
    assert ext.rollouts == {}
