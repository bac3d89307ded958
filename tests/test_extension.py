"""The extension through its public surface: assignment, dispatch, identity, apps, log, signals."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from flask import Flask, jsonify

from flask_v2rollout import Fallback, UnknownRollout, V2Rollout, signals
from flask_v2rollout.bucketing import assign


def md5_v2(uid: str, pct: int) -> bool:
    return int(hashlib.md5(uid.encode()).hexdigest(), 16) % 100 < pct


class Boom(Exception):
    pass


def test_v2_failing_on_30_percent_falls_back_exactly(make_app) -> None:
    ext = V2Rollout()

    def v2(i: int) -> str:
        if i % 10 < 2:
            raise Boom("bad row")
        if i % 10 == 2:
            raise Fallback("insufficient weeks")
        return "v2"

    ext.register("calc", v1=lambda i: "v1", v2=v2)
    app, _ = make_app(ext)
    fallbacks: list[str] = []
    completed: list[str] = []
    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 100, actor="ops")
        with signals.fallback_used.connected_to(lambda s, **kw: fallbacks.append(kw["reason"]), app), \
                signals.calculation_completed.connected_to(
                    lambda s, **kw: completed.append(kw["outcome"].version), app):
            outcomes = [ext.calculate("calc", i, user_id=f"user-{i}") for i in range(10_000)]
    assert len(fallbacks) == 3_000
    assert fallbacks.count("exception:Boom") == 2_000 and fallbacks.count("insufficient weeks") == 1_000
    assert sum(o.version == "v2" for o in outcomes) == 7_000
    assert all(o.value == o.version for o in outcomes)
    assert all(o.assigned == "v2" for o in outcomes)
    errored = [o for o in outcomes if o.error_type]
    assert len(errored) == 2_000 and errored[0].error_type == "test_extension.Boom"
    assert len(completed) == 10_000


def test_fallback_off_propagates_v2_errors_and_v1_errors_always_propagate(make_app) -> None:
    ext = V2Rollout()

    def v1(x: int) -> int:
        if x < 0:
            raise ValueError("v1 rejects negatives")
        return x

    def v2(x: int) -> int:
        if x == 0:
            raise Fallback("thin data")
        raise Boom("v2 broke")

    ext.register("calc", v1=v1, v2=v2)
    app, _ = make_app(ext)
    with app.app_context():
        ext.set_flags("calc", {"v2_rollout_percentage": 100, "v2_fallback_enabled": False}, actor="ops")
        with pytest.raises(Boom):
            ext.calculate("calc", 1, user_id="u")
        with pytest.raises(Fallback):
            ext.calculate("calc", 0, user_id="u")
        ext.set_flag("calc", "v2_fallback_enabled", True, actor="ops")
        assert ext.calculate("calc", 1, user_id="u").fallback_reason == "exception:Boom"
        with pytest.raises(ValueError, match="negatives"):
            ext.calculate("calc", -1, user_id="u")  # v2 fails, then v1 fails: v1's error reaches the caller
        ext.set_flag("calc", "v2_rollout_percentage", 0, actor="ops")
        with pytest.raises(ValueError, match="negatives"):
            ext.calculate("calc", -1, user_id="u")


def test_request_assignment_follows_md5_rule_and_user_loader(make_app) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10, salt="")  # salt="": the runbook's bare md5
    app, _ = make_app(ext)

    @ext.user_loader
    def load_user():
        from flask import request
        return request.args.get("uid")

    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 10, actor="ops")
    client = app.test_client()
    served = {f"u{i}": client.get(f"/calc/1?uid=u{i}").get_json()["version"] for i in range(1_000)}
    v2_users = {u for u, v in served.items() if v == "v2"}
    assert v2_users == {u for u in served if md5_v2(u, 10)}
    assert 70 <= len(v2_users) <= 130


def test_current_version_and_version_assigned_signal(make_app, ext: V2Rollout) -> None:
    # make_app, not pytest-flask's app fixture: that one keeps a request context pushed.
    app, _ = make_app(ext)
    seen = []
    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 100, actor="ops")
    with signals.version_assigned.connected_to(lambda s, **kw: seen.append(kw), app):
        with app.test_request_context("/"):
            app.preprocess_request()
            assert ext.current_version("calc") == "v2"
    assert seen[0]["rollout"] == "calc" and seen[0]["version"] == "v2" and seen[0]["percentage"] == 100.0
    with app.app_context(), pytest.raises(RuntimeError, match="needs a request"):
        ext.current_version("calc")
    with app.app_context(), pytest.raises(RuntimeError, match="user_id"):
        ext.calculate("calc", 1)
    with app.app_context(), pytest.raises(UnknownRollout):
        ext.calculate("nope", 1, user_id="u")


def test_anonymous_users_are_sticky_through_the_signed_session(app, ext: V2Rollout) -> None:
    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 50, actor="ops")
    versions = []
    for _ in range(40):
        client = app.test_client()
        first = client.get("/calc/1").get_json()["version"]
        again = {client.get("/calc/1").get_json()["version"] for _ in range(5)}
        assert again == {first}
        versions.append(first)
    assert set(versions) == {"v1", "v2"}  # different visitors, different cohorts


def test_without_secret_key_anonymous_users_get_v1(make_app) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)
    app, _ = make_app(ext, SECRET_KEY=None)
    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 100, actor="ops")
    client = app.test_client()
    assert {client.get("/calc/1").get_json()["version"] for _ in range(5)} == {"v1"}


def test_rollouts_registered_without_a_salt_get_independent_cohorts(make_app) -> None:
    """The default salt is the rollout's name: at 50 % each, about half the users get the same version in both
    (independent halves), not all of them (the same md5 bucket for both)."""
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: "v1", v2=lambda x: "v2")
    ext.register("pricing", v1=lambda x: "v1", v2=lambda x: "v2")
    app, _ = make_app(ext)

    @ext.user_loader
    def load_user():
        from flask import request
        return request.args.get("uid")

    @app.get("/both")
    def both():
        return jsonify(calc=ext.calculate("calc", 1).value, pricing=ext.calculate("pricing", 1).value)

    with app.app_context():
        for name in ("calc", "pricing"):
            ext.set_flag(name, "v2_rollout_percentage", 50, actor="ops")
    client = app.test_client()
    served = [client.get(f"/both?uid=user-{i}").get_json() for i in range(2_000)]
    same = sum(s["calc"] == s["pricing"] for s in served) / len(served)
    assert 0.45 <= same <= 0.55, same
    for name in ("calc", "pricing"):
        assert 0.45 <= sum(s[name] == "v2" for s in served) / len(served) <= 0.55
        assert ext.rollouts[name].salt == name
    # salt is the bucketing key's prefix: the same users as bucketing.assign(uid, 50, salt=name)
    assert [s["calc"] for s in served[:200]] == [assign(f"user-{i}", 50, salt="calc") for i in range(200)]


def test_empty_salt_is_the_runbook_md5_and_a_bad_salt_is_refused() -> None:
    ext = V2Rollout()
    assert ext.register("calc", v1=abs, v2=abs, salt="").salt == ""
    with pytest.raises(TypeError, match="salt"):
        ext.register("other", v1=abs, v2=abs, salt=7)  # type: ignore[arg-type]
    assert "other" not in ext.rollouts


def test_flask_login_user_is_used(make_app) -> None:
    from flask_login import LoginManager, UserMixin, login_user

    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10, salt="")
    app, _ = make_app(ext)
    manager = LoginManager(app)

    class User(UserMixin):
        def __init__(self, uid: str) -> None:
            self.id = uid

    manager.user_loader(User)

    @app.post("/login/<uid>")
    def login(uid: str):
        login_user(User(uid))
        return "ok"

    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 50, actor="ops")
    for i in range(30):
        uid = f"member-{i}"
        client = app.test_client()
        client.post(f"/login/{uid}")
        expected = "v2" if md5_v2(uid, 50) else "v1"
        assert client.get("/calc/1").get_json()["version"] == expected


def test_failing_user_loader_serves_v1(app, ext: V2Rollout) -> None:
    @ext.user_loader
    def broken():
        raise LookupError("session backend down")

    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 100, actor="ops")
    response = app.test_client().get("/calc/1")
    assert response.status_code == 200 and response.get_json()["version"] == "v1"


def test_several_apps_keep_separate_state(tmp_path: Path) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)

    def factory(name: str) -> Flask:
        app = Flask(name, instance_path=str(tmp_path / name))
        app.secret_key = "k"
        ext.init_app(app)
        return app

    a, b = factory("a"), factory("b")
    with a.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 100, actor="ops")
    with a.app_context():
        assert ext.calculate("calc", 2, user_id="u").value == 20
    with b.app_context():
        assert ext.calculate("calc", 2, user_id="u").value == 2
        assert ext.audit() == []
    assert (tmp_path / "a" / "v2rollout.db").exists() and (tmp_path / "b" / "v2rollout.db").exists()
    with pytest.raises(RuntimeError, match="already initialised"):
        ext.init_app(a)


def test_rollout_registered_after_init_app(app, ext: V2Rollout) -> None:
    ext.register("late", v1=lambda: "one", v2=lambda: "two", defaults={"v2_rollout_percentage": 100})
    with app.app_context():
        assert ext.calculate("late", user_id="x").value == "two"


def test_uses_the_hosts_flask_sqlalchemy(tmp_path: Path) -> None:
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy import inspect

    app = Flask("host", instance_path=str(tmp_path))
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'host.db'}"
    db = SQLAlchemy(app)
    ext = V2Rollout(app, db=db)
    ext.register("calc", v1=abs, v2=abs)
    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 10, actor="ops")
        names = inspect(db.engine).get_table_names()
    assert {"v2rollout_flags", "v2rollout_audit"} <= set(names)
    assert not (tmp_path / "v2rollout.db").exists()


def test_outside_app_context_is_a_clear_error(ext: V2Rollout) -> None:
    with pytest.raises(RuntimeError, match="application context"):
        ext.calculate("calc", 1, user_id="u")


def test_jsonl_log_written_only_while_monitoring(make_app, tmp_path: Path) -> None:
    ext = V2Rollout()

    def v2(req: dict) -> dict:
        if req["player"] == "Rookie":
            raise Fallback("insufficient_weeks: 1 < 2")
        if req["player"] == "Broken":
            raise KeyError("opponent")
        return {"edges": [{"edge": 4.256, "metadata": {"data_source": "game_log"}}]}

    ext.register(
        "qb", v1=lambda req: {"edges": [{"edge": 1.0, "metadata": {"data_source": "pbp"}}]}, v2=v2,
        subject=lambda req: req["player"], extract="edges.0.edge",
        metadata=lambda value: value["edges"][0]["metadata"],
    )
    app, _ = make_app(ext, V2ROLLOUT_LOG_FILE="logs/v2_calculations.jsonl", V2ROLLOUT_SLOW_CALL_MS=0.0)
    path = tmp_path / "instance" / "logs" / "v2_calculations.jsonl"
    with app.app_context():
        ext.set_flag("qb", "v2_rollout_percentage", 100, actor="ops")
        for player in ("Patrick Mahomes", "Rookie", "Broken"):
            ext.calculate("qb", {"player": player}, user_id="user-7")
        ext.set_flag("qb", "v2_monitoring_enabled", False, actor="ops")
        ext.calculate("qb", {"player": "Not Logged"}, user_id="user-7")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    calc = [r for r in records if r["event"] == "calculation"]
    assert [r["subject"] for r in calc] == ["Patrick Mahomes", "Rookie", "Broken"]
    first = calc[0]
    assert first["calculator_version"] == "v2" and first["value"] == 4.26 and first["user_id"] == "user-7"
    assert first["metadata"] == {"data_source": "game_log", "fallback_to_v1": False, "fallback_reason": None}
    assert first["timestamp"].endswith("Z") and isinstance(first["elapsed_ms"], float)
    assert calc[1]["metadata"]["fallback_to_v1"] is True
    assert calc[1]["metadata"]["fallback_reason"] == "insufficient_weeks: 1 < 2"
    errors = [r for r in records if r["event"] == "error"]
    assert len(errors) == 1 and errors[0]["level"] == "ERROR" and errors[0]["error_type"] == "KeyError"
    assert errors[0]["subject"] == "Broken" and errors[0]["calculator_version"] == "v2"
    assert sum(r["event"] == "fallback" for r in records) == 2
    assert sum(r["event"] == "slow_calculation" and r["level"] == "WARNING" for r in records) == 3


def test_flag_changed_signal_carries_the_change(app, ext: V2Rollout) -> None:
    seen = []
    with app.app_context(), signals.flag_changed.connected_to(lambda s, **kw: seen.append((s, kw)), app):
        ext.set_flag("calc", "v2_rollout_percentage", 10, actor="ops", reason="canary")
    sender, kw = seen[0]
    assert sender is app
    assert kw == {"rollout": "calc", "flag": "v2_rollout_percentage", "old": 0.0, "new": 10.0,
                  "actor": "ops", "reason": "canary"}


def test_track_conversion_signals_user_and_version(app, ext: V2Rollout) -> None:
    seen = []

    @app.post("/convert")
    def convert():
        ext.track_conversion("calc")
        return jsonify(ok=True)

    with signals.conversion_tracked.connected_to(lambda s, **kw: seen.append(kw), app):
        app.test_client().post("/convert")
    assert seen[0]["rollout"] == "calc" and seen[0]["version"] == "v1" and seen[0]["user_id"].startswith("anon:")


def test_admin_requests_are_not_assigned(make_app) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)
    app, _ = make_app(ext, V2ROLLOUT_ADMIN_TOKEN="t0ken-of-sixteen-chars")
    seen = []
    with signals.version_assigned.connected_to(lambda s, **kw: seen.append(kw), app):
        response = app.test_client().get("/v2rollout/api/rollouts/calc/flags",
                                         headers={"Authorization": "Bearer t0ken-of-sixteen-chars"})
        assert response.status_code == 200 and "Set-Cookie" not in response.headers
        assert seen == []
        app.test_client().get("/calc/1")
    assert len(seen) == 1
