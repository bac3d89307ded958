"""The admin JSON API and the dashboard's forms: every endpoint answers, every write is audited with its actor."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_v2rollout import V2Rollout
from helpers import build_app

TOKEN = "s3cret-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
API = "/v2rollout/api"

#: A gate that can say GO within a test: no minimum time in shadow, tiny samples.
FAST_GATES = {"V2ROLLOUT_STAGE_DURATIONS": {"shadow": 0}, "V2ROLLOUT_GATE_MIN_CALCULATIONS": 10,
              "V2ROLLOUT_GATE_MIN_USERS": 5}


def make(tmp_path: Path, **config: Any) -> tuple[Flask, V2Rollout]:
    ext = V2Rollout()
    # v2 agrees (EXACT) with v1 on 3 calls in 4: a 75 % agreement, inside the runbook's 60–85 %
    ext.register("calc", v1=lambda x: x, v2=lambda x: x + (0 if x % 4 else 5))
    return build_app(tmp_path / "instance", ext, **{"V2ROLLOUT_ADMIN_TOKEN": TOKEN, **config})


@pytest.fixture
def admin(tmp_path: Path) -> tuple[Flask, V2Rollout]:
    return make(tmp_path)


@pytest.fixture
def client(admin: tuple[Flask, V2Rollout]) -> FlaskClient:
    return admin[0].test_client()


def audit_rows(app: Flask, ext: V2Rollout) -> list[dict[str, Any]]:
    with app.app_context():
        return ext.audit(limit=1000)


def patch(client: FlaskClient, body: Any, headers: dict[str, str] | None = None, name: str = "calc") -> Any:
    return client.patch(f"{API}/rollouts/{name}/flags", json=body, headers={**AUTH, **(headers or {})})


# -- reads ------------------------------------------------------------------------------


def test_list_and_one_rollout(client: FlaskClient) -> None:
    listed = client.get(f"{API}/rollouts", headers=AUTH)
    assert listed.status_code == 200
    [row] = listed.json["rollouts"]
    assert row["rollout"] == "calc" and row["stage"] == "shadow"
    assert row["flags"]["v2_rollout_percentage"] == 0.0
    assert row["gate"]["decision"] in ("GO", "NO-GO", "CONDITIONAL", "INCONCLUSIVE")
    one = client.get(f"{API}/rollouts/calc", headers=AUTH)
    assert one.status_code == 200 and one.json["flag_version"] == row["flag_version"]


def test_unknown_rollout_is_404_in_the_error_format(client: FlaskClient) -> None:
    for url in ("/rollouts/nope", "/rollouts/nope/flags", "/rollouts/nope/gate", "/rollouts/nope/metrics",
                "/rollouts/nope/checks", "/audit?rollout=nope", "/alerts?rollout=nope"):
        response = client.get(API + url, headers=AUTH)
        assert response.status_code == 404, url
        assert response.json["error"]["code"] == "unknown_rollout"
        assert set(response.json["error"]) == {"code", "message", "field"}


def test_flags_carry_their_version_as_etag(client: FlaskClient) -> None:
    response = client.get(f"{API}/rollouts/calc/flags", headers=AUTH)
    assert response.status_code == 200
    assert set(response.json["flags"]) >= {"v2_rollout_percentage", "v2_shadow_mode_enabled"}
    assert response.headers["ETag"] == f'"{response.json["flag_version"]}"'


def test_metrics_gate_alerts(client: FlaskClient) -> None:
    metrics = client.get(f"{API}/rollouts/calc/metrics?window=1h", headers=AUTH)
    assert metrics.status_code == 200 and metrics.json["window_s"] == 3600
    assert set(metrics.json["arms"]) == {"v1", "v2"}
    assert client.get(f"{API}/rollouts/calc/metrics", headers=AUTH).json["window_s"] == 300
    bad = client.get(f"{API}/rollouts/calc/metrics?window=5 fortnights", headers=AUTH)
    assert bad.status_code == 400 and bad.json["error"]["field"] == "window"
    gate = client.get(f"{API}/rollouts/calc/gate", headers=AUTH).json
    assert gate["from_stage"] == "shadow" and gate["to_stage"] == "canary"
    assert {"name", "kind", "value", "threshold", "verdict"} <= set(gate["criteria"][0])
    assert client.get(f"{API}/alerts", headers=AUTH).json == {"alerts": []}
    assert client.get(f"{API}/alerts?rollout=calc", headers=AUTH).json == {"alerts": []}


def test_audit_pages_newest_first(client: FlaskClient) -> None:
    for pct in (1, 2, 3, 4, 5):
        assert patch(client, {"flag": "v2_rollout_percentage", "value": pct}).status_code == 200
    first = client.get(f"{API}/audit?rollout=calc&per_page=2", headers=AUTH).json
    assert [r["new_value"] for r in first["items"]] == [5.0, 4.0] and first["has_more"]
    last = client.get(f"{API}/audit?rollout=calc&per_page=2&page=3", headers=AUTH).json
    assert [r["new_value"] for r in last["items"]] == [1.0] and not last["has_more"]
    assert len(client.get(f"{API}/audit", headers=AUTH).json["items"]) == 5
    for query in ("page=0", "page=-1", "page=x", "per_page=0", "per_page=201", "page=99999999999"):
        response = client.get(f"{API}/audit?{query}", headers=AUTH)
        assert response.status_code == 400, query
        assert response.json["error"]["field"] in ("page", "per_page")


# -- writes -------------------------------------------------------------------------------


def test_patch_one_flag_is_audited_with_the_token_actor(admin: tuple[Flask, V2Rollout], client: FlaskClient) -> None:
    response = patch(client, {"flag": "v2_rollout_percentage", "value": 10, "reason": "canary"})
    assert response.status_code == 200
    assert response.json["flags"]["v2_rollout_percentage"] == 10.0
    assert response.json["changes"] == [{"flag": "v2_rollout_percentage", "old": 0.0, "new": 10.0}]
    [row] = audit_rows(*admin)
    assert (row["actor"], row["reason"], row["new_value"]) == ("token", "canary", 10.0)


def test_token_actor_is_configurable(tmp_path: Path) -> None:
    app, ext = make(tmp_path, V2ROLLOUT_ADMIN_TOKEN_ACTOR="deploy-bot")
    assert patch(app.test_client(), {"flag": "v2_shadow_mode_enabled", "value": True}).status_code == 200
    assert [r["actor"] for r in audit_rows(app, ext)] == ["deploy-bot"]


def test_patch_several_flags_is_all_or_nothing(admin: tuple[Flask, V2Rollout], client: FlaskClient) -> None:
    bad = patch(client, {"flags": {"v2_rollout_percentage": 50, "v2_fallback_enabled": "no"}})
    assert bad.status_code == 400 and bad.json["error"]["field"] == "v2_fallback_enabled"
    assert audit_rows(*admin) == []
    good = patch(client, {"flags": {"v2_rollout_percentage": 50, "v2_shadow_mode_enabled": True}, "reason": "x"})
    assert good.status_code == 200 and len(good.json["changes"]) == 2
    assert len(audit_rows(*admin)) == 2


def test_stale_version_is_a_409_and_changes_nothing(admin: tuple[Flask, V2Rollout], client: FlaskClient) -> None:
    seen = client.get(f"{API}/rollouts/calc/flags", headers=AUTH).json["flag_version"]
    first = patch(client, {"flag": "v2_rollout_percentage", "value": 10, "version": seen})
    assert first.status_code == 200 and first.json["flag_version"] > seen
    stale = patch(client, {"flag": "v2_rollout_percentage", "value": 50, "version": seen})
    assert stale.status_code == 409 and stale.json["error"]["code"] == "conflict"
    by_header = patch(client, {"flag": "v2_rollout_percentage", "value": 50}, {"If-Match": f'"{seen}"'})
    assert by_header.status_code == 409
    assert client.get(f"{API}/rollouts/calc/flags", headers=AUTH).json["flags"]["v2_rollout_percentage"] == 10.0
    current = first.json["flag_version"]
    fresh = patch(client, {"flag": "v2_rollout_percentage", "value": 50}, {"If-Match": f'"{current}"'})
    assert fresh.status_code == 200
    disagree = patch(client, {"flag": "v2_rollout_percentage", "value": 5, "version": 1}, {"If-Match": '"2"'})
    assert disagree.status_code == 400
    assert len(audit_rows(*admin)) == 2


def test_rollback(admin: tuple[Flask, V2Rollout], client: FlaskClient) -> None:
    patch(client, {"flag": "v2_rollout_percentage", "value": 50})
    partial = client.post(f"{API}/rollouts/calc/rollback", json={"target": 10, "reason": "gradual"}, headers=AUTH)
    assert partial.status_code == 200 and partial.json["flags"]["v2_rollout_percentage"] == 10.0
    upward = client.post(f"{API}/rollouts/calc/rollback", json={"target": 50}, headers=AUTH)
    assert upward.status_code == 400 and upward.json["error"]["field"] == "target"
    emergency = client.post(f"{API}/rollouts/calc/rollback", json={"reason": "error spike"}, headers=AUTH)
    assert emergency.status_code == 200 and emergency.json["flags"]["v2_rollout_percentage"] == 0.0
    assert client.post(f"{API}/rollouts/calc/rollback", headers=AUTH).status_code == 200  # empty body: target 0
    assert audit_rows(*admin)[0]["reason"] == "error spike"


def test_advance_needs_go(tmp_path: Path) -> None:
    app, ext = make(tmp_path, **FAST_GATES)
    client = app.test_client()
    refused = client.post(f"{API}/rollouts/calc/advance", headers=AUTH)
    assert refused.status_code == 409 and refused.json["error"]["code"] == "gate_error"
    assert audit_rows(app, ext) == []
    with app.app_context():
        ext.set_flag("calc", "v2_shadow_mode_enabled", True, actor="ops")
        for i in range(40):
            ext.calculate("calc", i, user_id=f"user-{i}")
        ext.drain(5)
        ext.flush()
    assert client.get(f"{API}/rollouts/calc/gate", headers=AUTH).json["decision"] == "GO"
    advanced = client.post(f"{API}/rollouts/calc/advance", json={"reason": "shadow healthy"}, headers=AUTH)
    assert advanced.status_code == 200
    assert advanced.json["flags"]["v2_rollout_percentage"] == 10.0
    assert advanced.json["flags"]["v2_shadow_mode_enabled"] is False
    assert {r["actor"] for r in audit_rows(app, ext)[:2]} == {"token"}


def test_manual_checks(admin: tuple[Flask, V2Rollout], client: FlaskClient) -> None:
    checks = client.get(f"{API}/rollouts/calc/checks", headers=AUTH).json["checks"]
    team_ready = next(c for c in checks if c["check"] == "team_ready")
    assert team_ready == {"check": "team_ready", "description": 'Team says "ready for production"', "passed": None,
                          "actor": None, "note": None, "at": None, "in_gate": False}  # a staged-gate check
    recorded = client.post(f"{API}/rollouts/calc/checks", json={"check": "team_ready", "passed": True,
                                                                  "note": "standup 9:30"}, headers=AUTH)
    assert recorded.status_code == 200
    team_ready = next(c for c in recorded.json["checks"] if c["check"] == "team_ready")
    assert team_ready["passed"] is True and team_ready["actor"] == "token" and team_ready["note"] == "standup 9:30"
    for body, field in (({"check": "nope", "passed": True}, "check"), ({"check": "team_ready"}, "passed"),
                        ({"check": "team_ready", "passed": "yes"}, "passed"), ({"passed": True}, "check")):
        response = client.post(f"{API}/rollouts/calc/checks", json=body, headers=AUTH)
        assert response.status_code == 400 and response.json["error"]["field"] == field, body


def test_unknown_paths_and_methods_answer_in_the_error_format(client: FlaskClient) -> None:
    missing = client.get(f"{API}/nothing/here", headers=AUTH)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    wrong = client.delete(f"{API}/rollouts/calc/flags", headers=AUTH)
    assert wrong.status_code == 405 and wrong.json["error"]["code"] == "method_not_allowed"
    assert set(wrong.headers["Allow"].split(", ")) == {"GET", "PATCH"}


# -- the host's own authorisation -----------------------------------------------------------


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def test_a_session_admin_takes_the_csrf_token_from_the_hosts_own_view(tmp_path: Path) -> None:
    """docs/admin.md: a Flask-Login-style admin's front-end gets the token with generate_csrf() in a host view."""
    from flask_wtf.csrf import generate_csrf

    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    app, _ = build_app(tmp_path / "instance", ext)
    ext.admin_required(lambda: "ops@example.com")
    app.add_url_rule("/ops/csrf-token", "ops_csrf", lambda: {"csrf_token": generate_csrf()})
    client, other = app.test_client(), app.test_client()
    token = client.get("/ops/csrf-token").json["csrf_token"]
    body = {"flag": "v2_shadow_mode_enabled", "value": True}
    other.get("/ops/csrf-token")
    assert other.patch(f"{API}/rollouts/calc/flags", json=body, headers={"X-CSRFToken": token}).status_code == 403
    done = client.patch(f"{API}/rollouts/calc/flags", json=body, headers={"X-CSRFToken": token})
    assert done.status_code == 200 and done.json["flags"]["v2_shadow_mode_enabled"] is True


def test_admin_required_actor_is_audited_and_its_writes_need_csrf(tmp_path: Path) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    app, _ = build_app(tmp_path / "instance", ext)
    ext.admin_required(lambda: "alice@example.com")
    client = app.test_client()
    assert client.get(f"{API}/rollouts/calc/flags").status_code == 200  # reads: the callable suffices
    body = {"flag": "v2_rollout_percentage", "value": 10}
    no_csrf = client.patch(f"{API}/rollouts/calc/flags", json=body)
    assert no_csrf.status_code == 403 and no_csrf.json["error"]["code"] == "csrf"
    token = csrf_from(client.get("/v2rollout/rollouts/calc").get_data(as_text=True))
    done = client.patch(f"{API}/rollouts/calc/flags", json=body, headers={"X-CSRFToken": token})
    assert done.status_code == 200
    assert [r["actor"] for r in audit_rows(app, ext)] == ["alice@example.com"]


def test_admin_required_returning_none_refuses(tmp_path: Path) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    app, _ = build_app(tmp_path / "instance", ext)
    ext.admin_required(lambda: None)
    client = app.test_client()
    assert client.get(f"{API}/rollouts").status_code == 401
    assert client.get("/v2rollout/").status_code == 401


# -- the dashboard's forms ------------------------------------------------------------------


@pytest.fixture
def operator(client: FlaskClient) -> tuple[FlaskClient, str]:
    """A client signed in to the dashboard, and its CSRF token."""
    csrf = csrf_from(client.get("/v2rollout/login").get_data(as_text=True))
    assert client.post("/v2rollout/login", data={"token": TOKEN, "csrf_token": csrf}).status_code == 303
    return client, csrf


def test_dashboard_pages_render(operator: tuple[FlaskClient, str]) -> None:
    client, _ = operator
    overview = client.get("/v2rollout/").get_data(as_text=True)
    assert "calc" in overview and "Shadow" in overview
    for path in ("/rollouts/calc", "/rollouts/calc?range=24h", "/rollouts/calc/live", "/rollouts/calc/audit?page=2",
                 "/rollouts/calc/rollback?target=0"):
        assert client.get("/v2rollout" + path).status_code == 200, path
    page = client.get("/v2rollout/rollouts/calc").get_data(as_text=True)
    assert page.count('<svg class="chart"') == 5 and "Gate Shadow → Canary" in page
    assert client.get("/v2rollout/rollouts/calc?range=1y").status_code == 400
    assert client.get("/v2rollout/rollouts/nope").status_code == 404
    assert client.get("/v2rollout/rollouts/calc/rollback?target=abc").status_code == 400


def test_forms_change_flags_with_prg_and_audit(admin: tuple[Flask, V2Rollout],
                                               operator: tuple[FlaskClient, str]) -> None:
    client, csrf = operator
    with admin[0].app_context():
        version = admin[1].flag_version("calc")
    moved = client.post("/v2rollout/rollouts/calc/percentage",
                        data={"csrf_token": csrf, "value": "12.5", "reason": "canary", "version": str(version)})
    assert moved.status_code == 303 and moved.headers["Location"] == "/v2rollout/rollouts/calc"
    assert "0 % → 12.5 %" in client.get(moved.headers["Location"]).get_data(as_text=True)
    stale = client.post("/v2rollout/rollouts/calc/percentage",
                        data={"csrf_token": csrf, "value": "50", "version": str(version)})
    assert stale.status_code == 409 and "Not changed." in stale.get_data(as_text=True)
    toggled = client.post("/v2rollout/rollouts/calc/toggle",
                          data={"csrf_token": csrf, "flag": "v2_shadow_mode_enabled", "value": "true"})
    assert toggled.status_code == 303
    bad = client.post("/v2rollout/rollouts/calc/toggle",
                      data={"csrf_token": csrf, "flag": "v2_rollout_percentage", "value": "true"})
    assert bad.status_code == 400
    rows = audit_rows(*admin)
    assert [(r["flag"], r["new_value"], r["actor"]) for r in rows] == [
        ("v2_shadow_mode_enabled", True, "token"), ("v2_rollout_percentage", 12.5, "token")]


def test_rollback_form_needs_its_confirmation(admin: tuple[Flask, V2Rollout],
                                              operator: tuple[FlaskClient, str]) -> None:
    client, csrf = operator
    with admin[0].app_context():
        admin[1].set_flag("calc", "v2_rollout_percentage", 50, actor="ops")
    unconfirmed = client.post("/v2rollout/rollouts/calc/rollback", data={"csrf_token": csrf, "target": "0"})
    assert unconfirmed.status_code == 400 and "Confirm rollback of calc" in unconfirmed.get_data(as_text=True)
    upward = client.post("/v2rollout/rollouts/calc/rollback",
                         data={"csrf_token": csrf, "target": "60", "confirm": "yes"})
    assert upward.status_code == 400 and "above the current percentage" in upward.get_data(as_text=True)
    assert len(audit_rows(*admin)) == 1
    done = client.post("/v2rollout/rollouts/calc/rollback",
                       data={"csrf_token": csrf, "target": "0", "confirm": "yes", "reason": "error spike"})
    assert done.status_code == 303
    shadow, percentage = audit_rows(*admin)[:2]  # back to shadow mode, in the same change
    assert percentage["new_value"] == 0.0 and percentage["reason"] == "error spike"
    assert shadow["flag"] == "v2_shadow_mode_enabled" and shadow["new_value"] is True


def test_advance_and_check_forms(admin: tuple[Flask, V2Rollout], operator: tuple[FlaskClient, str]) -> None:
    client, csrf = operator
    refused = client.post("/v2rollout/rollouts/calc/advance", data={"csrf_token": csrf})
    assert refused.status_code == 409 and "Not changed." in refused.get_data(as_text=True)
    recorded = client.post("/v2rollout/rollouts/calc/checks",
                           data={"csrf_token": csrf, "check": "team_ready", "passed": "yes", "note": "ok"})
    assert recorded.status_code == 303
    with admin[0].app_context():
        assert {c["check"]: c["passed"] for c in admin[1].checks("calc")}["team_ready"] is True
    unknown = client.post("/v2rollout/rollouts/calc/checks", data={"csrf_token": csrf, "check": "x", "passed": "no"})
    assert unknown.status_code == 400
