"""Flag validation is strict, all-or-nothing and audited."""
from __future__ import annotations

import math

import pytest

from flask_v2rollout import FlagError, UnknownRollout, V2Rollout
from flask_v2rollout.flags import parse_flag_text, validate_flag

BAD_BOOLEANS = ["yes", 2, None, 1, 0, "true", 1.0, [], {}]
BAD_PERCENTAGES = [100.001, -1, -0.01, 100.01, math.nan, math.inf, -math.inf, "10%", "10", None, True, 10.005, [10]]


@pytest.mark.parametrize("value", BAD_BOOLEANS)
@pytest.mark.parametrize("flag", ["v2_shadow_mode_enabled", "v2_monitoring_enabled", "v2_fallback_enabled",
                                  "v2_autopilot_enabled"])
def test_booleans_are_strict(flag: str, value: object) -> None:
    with pytest.raises(FlagError, match=flag):
        validate_flag(flag, value)


@pytest.mark.parametrize("value", BAD_PERCENTAGES)
def test_percentage_is_strict(value: object) -> None:
    with pytest.raises(FlagError, match="v2_rollout_percentage"):
        validate_flag("v2_rollout_percentage", value)


@pytest.mark.parametrize("value,expected",
                         [(0, 0.0), (10, 10.0), (10.5, 10.5), (0.01, 0.01), (99.99, 99.99), (100, 100.0)])
def test_percentage_accepts_two_decimals(value: float, expected: float) -> None:
    assert validate_flag("v2_rollout_percentage", value) == expected


def test_operator_text_parsing() -> None:
    assert parse_flag_text("v2_rollout_percentage", "12.5") == 12.5
    assert parse_flag_text("v2_shadow_mode_enabled", "TRUE") is True
    for flag, text in [("v2_rollout_percentage", "10%"), ("v2_rollout_percentage", "NaN"),
                       ("v2_shadow_mode_enabled", "yes"), ("v2_fallback_enabled", "1")]:
        with pytest.raises(FlagError):
            parse_flag_text(flag, text)
    with pytest.raises(FlagError, match="unknown flag"):
        parse_flag_text("v2_percent", "10")


def test_bad_writes_change_nothing(app, ext: V2Rollout) -> None:
    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 10, actor="ops")
        before_flags = ext.flags("calc", fresh=True)
        before_audit = ext.audit("calc", limit=1000)
        attempts = [
            lambda: ext.set_flag("calc", "v2_percent", 10, actor="ops"),
            lambda: ext.set_flag("calc", "v2_rollout_percentage", "10%", actor="ops"),
            lambda: ext.set_flag("calc", "v2_shadow_mode_enabled", "yes", actor="ops"),
            lambda: ext.set_flags("calc", {"v2_rollout_percentage": 50, "v2_fallback_enabled": None}, actor="ops"),
            lambda: ext.set_flags("calc", {}, actor="ops"),
            lambda: ext.set_flag("calc", "v2_rollout_percentage", 20, actor=""),
            lambda: ext.rollback("calc", target=50, actor="ops"),
        ]
        for attempt in attempts:
            with pytest.raises(FlagError):
                attempt()
        with pytest.raises(UnknownRollout, match="known: calc"):
            ext.set_flag("nope", "v2_rollout_percentage", 10, actor="ops")
        assert ext.flags("calc", fresh=True) == before_flags
        assert ext.audit("calc", limit=1000) == before_audit


def test_every_change_is_audited_with_actor_and_reason(app, ext: V2Rollout) -> None:
    with app.app_context():
        ext.set_flags("calc", {"v2_rollout_percentage": 10, "v2_shadow_mode_enabled": True},
                      actor="alice", reason="canary")
        ext.set_flag("calc", "v2_rollout_percentage", 10, actor="bob")  # no change, no row
        ext.rollback("calc", target=0, actor="carol", reason="error spike")
        rows = ext.audit("calc")
    assert [(r["flag"], r["old_value"], r["new_value"], r["actor"], r["reason"]) for r in rows] == [
        ("v2_rollout_percentage", 10.0, 0.0, "carol", "error spike"),
        ("v2_shadow_mode_enabled", False, True, "alice", "canary"),
        ("v2_rollout_percentage", 0.0, 10.0, "alice", "canary"),
    ]
    assert all(r["created_at"].endswith("+00:00") for r in rows)


def test_stale_version_is_a_conflict(app, ext: V2Rollout) -> None:
    from flask_v2rollout import ConflictError

    with app.app_context():
        seen = ext.flag_version("calc")
        ext.set_flag("calc", "v2_rollout_percentage", 10, actor="a", expected_version=seen)
        with pytest.raises(ConflictError):
            ext.set_flag("calc", "v2_rollout_percentage", 50, actor="b", expected_version=seen)
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 10.0


def test_defaults_from_config_and_rollout(make_app) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=abs, v2=abs)
    ext.register("other", v1=abs, v2=abs, defaults={"v2_rollout_percentage": 5})
    app, _ = make_app(ext, V2ROLLOUT_DEFAULTS={"v2_shadow_mode_enabled": True})
    with app.app_context():
        assert ext.flags("calc") == {"v2_rollout_percentage": 0.0, "v2_shadow_mode_enabled": True,
                                     "v2_monitoring_enabled": True, "v2_fallback_enabled": True,
                                     "v2_autopilot_enabled": False}
        assert ext.flags("other")["v2_rollout_percentage"] == 5.0


def test_invalid_defaults_fail_at_setup(make_app) -> None:
    with pytest.raises(RuntimeError, match="V2ROLLOUT_DEFAULTS"):
        make_app(V2Rollout(), V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 150})
    with pytest.raises(ValueError, match="defaults of rollout"):
        V2Rollout().register("x", v1=abs, v2=abs, defaults={"v2_shadow_mode_enabled": "yes"})


def test_threads_first_using_a_fresh_store_all_find_its_tables(tmp_path) -> None:
    """The first requests of a new app race to create the tables: none sees an error, nothing is counted as one."""
    import threading

    from tests.helpers import build_app

    app, ext = build_app(tmp_path)
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)
    barrier = threading.Barrier(8, timeout=30)
    errors: list[BaseException] = []

    def first_use(i: int) -> None:
        try:
            with app.app_context():
                barrier.wait()
                if i == 1:  # one writer: concurrent writers would (rightly) conflict
                    ext.set_flag("calc", "v2_rollout_percentage", 50, actor="t1")
                else:
                    ext.flags("calc")
                ext.calculate("calc", i, user_id=f"u{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    with app.app_context():
        assert ext.flush()
        health = ext.health()
        assert ext.metrics("calc", "5m")["db_errors"] == 0
        assert ext.audit_count("calc") == 1
    assert health["flag_store"]["failures"] == 0 and health["metrics"]["flush_failures"] == 0, health
