"""The request path: lazy assignment, guarded sinks, settings read once."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify

from flask_v2rollout import V2Rollout
from flask_v2rollout.signals import calculation_completed, version_assigned


def host(tmp_path: Path, ext: V2Rollout, **config: Any) -> Flask:
    """A host app with a health check, a static file and a calculating view (anonymous users)."""
    static = tmp_path / "static"
    static.mkdir(exist_ok=True)
    (static / "app.css").write_text("body { color: black }")
    app = Flask("lazy_host", instance_path=str(tmp_path / "instance"), static_folder=str(static))
    # The first request may wait for the first flag read (see tests/helpers.build_app).
    app.config.update({"SECRET_KEY": "test-secret", "TESTING": True, "V2ROLLOUT_FLAG_READ_BUDGET_MS": 10_000,
                       "V2ROLLOUT_METRICS_FLUSH_S": 3600, **config})
    ext.init_app(app)

    @app.get("/healthz")
    def healthz() -> Any:
        return {"ok": True}

    @app.get("/calc/<int:x>")
    def calc(x: int) -> Any:
        outcome = ext.calculate("calc", x)
        return jsonify(value=outcome.value, version=outcome.version, assigned=outcome.assigned)

    @app.get("/version-twice")
    def version_twice() -> Any:
        return jsonify([ext.current_version("calc"), ext.current_version("calc")])

    return app


@pytest.fixture
def lazy(tmp_path: Path) -> tuple[Flask, V2Rollout]:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10, defaults={"v2_rollout_percentage": 50})
    return host(tmp_path, ext), ext


@pytest.mark.parametrize("path", ["/healthz", "/static/app.css", "/no-such-page"])
def test_requests_that_never_calculate_assign_nothing_and_set_no_cookie(lazy, path: str) -> None:
    app, _ = lazy
    assigned: list[dict[str, Any]] = []

    def on_assigned(sender: Flask, **kwargs: Any) -> None:
        assigned.append(kwargs)

    with version_assigned.connected_to(on_assigned, app):
        response = app.test_client().get(path)
    assert response.status_code in (200, 404)
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.headers.get("Vary", "")
    assert assigned == []


def test_first_calculation_assigns_once_and_keeps_the_user_sticky(lazy) -> None:
    app, _ = lazy
    client = app.test_client()
    assigned: list[dict[str, Any]] = []

    def on_assigned(sender: Flask, **kwargs: Any) -> None:
        assigned.append(kwargs)

    with version_assigned.connected_to(on_assigned, app):
        first = client.get("/version-twice")
        again = client.get("/version-twice")
    assert "Set-Cookie" in first.headers  # the anonymous id went into the session
    assert len(set(first.get_json())) == 1 and first.get_json() == again.get_json()
    assert len(assigned) == 2  # once per request, not per call
    assert assigned[0]["user_id"] == assigned[1]["user_id"]


def test_a_failing_metadata_callable_never_turns_a_served_result_into_an_error(tmp_path: Path) -> None:
    def metadata(value: Any) -> dict[str, Any]:
        if value >= 10:  # only v2's values
            raise ValueError("cannot describe this value")
        return {"value": value}

    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10, metadata=metadata,
                 defaults={"v2_rollout_percentage": 100})
    app = host(tmp_path, ext, V2ROLLOUT_LOG_FILE="calc.jsonl")
    response = app.test_client().get("/calc/3")
    assert response.status_code == 200
    assert response.get_json() == {"value": 30, "version": "v2", "assigned": "v2"}
    with app.app_context():
        ext.flush()
        arm = ext.metrics("calc")["arms"]["v2"]
        assert arm["calculations"] == 1 and arm["sink_errors"] == 1
        assert ext.stats("calc")["v2"]["sink_error"] == {"jsonl": 1.0}


def test_a_raising_signal_receiver_is_counted_and_the_caller_gets_its_outcome(tmp_path: Path) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10, subject=lambda x: 1 / 0)
    app = host(tmp_path, ext)

    def broken(sender: Flask, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    with calculation_completed.connected_to(broken, app):
        response = app.test_client().get("/calc/2")
    assert response.status_code == 200 and response.get_json()["value"] == 2
    with app.app_context():
        assert ext.stats("calc")["v1"]["sink_error"] == {"subject": 1.0, "signals": 1.0}
        assert ext.stats("calc")["v1"]["calculations"] == {"": 1.0}


@pytest.mark.parametrize(("key", "value"), [
    ("V2ROLLOUT_FLAG_TTL_S", "abc"),
    ("V2ROLLOUT_SHADOW_SAMPLE", 1.5),
    ("V2ROLLOUT_SHADOW_WORKERS", 0),
    ("V2ROLLOUT_AUTO_ROLLBACK", "yes"),
    ("V2ROLLOUT_DEFAULTS", {"v2_rollout_percentage": 101}),
    ("V2ROLLOUT_STAGE_DURATIONS", {"canary": "soon"}),
])
def test_a_bad_setting_fails_init_app_naming_its_key(tmp_path: Path, key: str, value: Any) -> None:
    app = Flask("bad", instance_path=str(tmp_path))
    app.config[key] = value
    with pytest.raises(RuntimeError, match=key):
        V2Rollout().init_app(app)
    assert "v2rollout" not in app.extensions


def test_numbers_from_the_environment_are_accepted(tmp_path: Path) -> None:
    app = Flask("env", instance_path=str(tmp_path))
    app.config.update(V2ROLLOUT_FLAG_TTL_S="2.5", V2ROLLOUT_SHADOW_WORKERS="3")
    V2Rollout().init_app(app)
    settings = app.extensions["v2rollout"].settings
    assert (settings.flag_ttl_s, settings.shadow_workers) == (2.5, 3)


def test_an_unknown_setting_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    app = Flask("typo", instance_path=str(tmp_path))
    app.config["V2ROLLOUT_FLAG_TTL"] = 2
    with pytest.raises(RuntimeError, match="V2ROLLOUT_FLAG_TTL is not a Flask-V2Rollout setting; did you mean "
                                           "V2ROLLOUT_FLAG_TTL_S"):
        V2Rollout().init_app(app)
