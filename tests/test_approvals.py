"""Roles and four eyes: viewers read, a raise above the threshold waits for a *different* approver, a rollback
never waits and cancels what does. Time is a controllable clock."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient

from flask_v2rollout import V2Rollout
from flask_v2rollout.cli import PENDING_APPROVAL, cli
from flask_v2rollout.errors import ApprovalError, ApprovalRequired
from flask_v2rollout.testing import Clock, use_clock
from helpers import build_app

PCT = "v2_rollout_percentage"
API = "/v2rollout/api/rollouts/calc"
#: the host's SSO stand-in: X-User names the person, X-Role their role
PEOPLE = {"alice": "operator", "bob": "approver", "carol": "approver", "vic": "viewer", "mallory": "admin"}


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[tuple[Flask, V2Rollout, Clock]]:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)

    @ext.admin_required
    def who() -> Any:
        user = request.headers.get("X-User")
        return None if user not in PEOPLE else (user, PEOPLE[user])

    app, _ = build_app(tmp_path / "instance", ext, V2ROLLOUT_APPROVAL_ABOVE=25, V2ROLLOUT_APPROVAL_TTL_S=600)
    with use_clock(app, Clock(1_700_000_000.0)) as clock:
        yield app, ext, clock


def csrf(client: FlaskClient) -> str:
    """The CSRF token of this client's session (a write authorised by the callable must carry it)."""
    html = client.get("/v2rollout/rollouts/calc", headers={"X-User": "bob"}).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def call(client: FlaskClient, user: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return client.open(API + path, method=method, json=body if body is not None else {},
                       headers={"X-User": user, "X-CSRFToken": csrf(client)})


def form(client: FlaskClient, user: str, path: str, data: dict[str, str] | None = None) -> Any:
    return client.post("/v2rollout/rollouts/calc" + path, data={**(data or {}), "csrf_token": csrf(client)},
                       headers={"X-User": user})


def flags(app: Flask, ext: V2Rollout) -> dict[str, Any]:
    with app.app_context():
        return ext.flags("calc", fresh=True)


def raise_to(client: FlaskClient, user: str, value: float) -> Any:
    return call(client, user, "PATCH", "/flags", {"flag": PCT, "value": value, "reason": "go wide"})


def test_viewers_read_only(admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, ext, _ = admin
    client = app.test_client()
    assert call(client, "vic", "GET", "").status_code == 200
    before = flags(app, ext)
    for method, path, body in [("PATCH", "/flags", {"flag": PCT, "value": 10}), ("POST", "/rollback", {}),
                               ("POST", "/checks", {"check": "team_confident", "passed": True})]:
        response = call(client, "vic", method, path, body)
        assert response.status_code == 403 and response.json["error"]["code"] == "forbidden", path
    assert form(client, "vic", "/percentage", {"value": "10"}).status_code == 403
    assert flags(app, ext) == before
    assert client.get(API, headers={"X-User": "mallory"}).status_code == 403, "an unknown role is refused"


def test_a_raise_above_the_threshold_needs_a_different_approver(admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, ext, _ = admin
    client = app.test_client()
    assert raise_to(client, "alice", 20).status_code == 200, "below the threshold: applied at once"
    pending = raise_to(client, "bob", 50)
    assert pending.status_code == 202 and flags(app, ext)[PCT] == 20
    approval = pending.json["approval"]
    assert approval["status"] == "pending" and approval["requested_by"] == "bob"
    assert call(client, "bob", "POST", f"/approvals/{approval['id']}/approve").status_code == 403, "not one's own"
    assert call(client, "alice", "POST", f"/approvals/{approval['id']}/approve").status_code == 403, "operator"
    assert flags(app, ext)[PCT] == 20
    done = call(client, "carol", "POST", f"/approvals/{approval['id']}/approve")
    assert done.status_code == 200 and done.json["changes"] == [{"flag": PCT, "old": 20.0, "new": 50.0}]
    assert flags(app, ext)[PCT] == 50
    with app.app_context():
        row = ext.audit("calc", limit=1)[0]
        assert row["actor"] == "bob" and "approved by carol" in row["reason"] and "go wide" in row["reason"]
        assert ext.approvals("calc")[0]["status"] == "approved" and ext.approvals("calc")[0]["decided_by"] == "carol"
    again = call(client, "carol", "POST", f"/approvals/{approval['id']}/approve")
    assert again.status_code == 409 and flags(app, ext)[PCT] == 50


def test_an_emergency_rollback_never_waits_and_cancels_the_pending_raise(
        admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, ext, _ = admin
    client = app.test_client()
    raise_to(client, "alice", 20)
    approval = raise_to(client, "alice", 100).json["approval"]
    rolled = call(client, "alice", "POST", "/rollback", {"target": 0, "reason": "error spike"})
    assert rolled.status_code == 200 and flags(app, ext)[PCT] == 0
    assert call(client, "bob", "GET", "/approvals").json["approvals"][0]["status"] == "cancelled"
    late = call(client, "bob", "POST", f"/approvals/{approval['id']}/approve")
    assert late.status_code == 409 and flags(app, ext)[PCT] == 0


def test_turning_the_autopilot_on_waits_for_approval(admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, ext, _ = admin
    client = app.test_client()
    response = call(client, "alice", "PATCH", "/flags", {"flag": "v2_autopilot_enabled", "value": True})
    assert response.status_code == 202 and flags(app, ext)["v2_autopilot_enabled"] is False
    done = call(client, "bob", "POST", f"/approvals/{response.json['approval']['id']}/approve")
    assert done.status_code == 200 and flags(app, ext)["v2_autopilot_enabled"] is True
    off = call(client, "alice", "PATCH", "/flags", {"flag": "v2_autopilot_enabled", "value": False})
    assert off.status_code == 200, "turning it off never waits"


def test_an_approval_expires(admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, ext, clock = admin
    client = app.test_client()
    approval = raise_to(client, "alice", 60).json["approval"]
    assert approval["expires_in_s"] == 600
    clock.advance(600)
    response = call(client, "bob", "POST", f"/approvals/{approval['id']}/approve")
    assert response.status_code == 409 and "expired" in response.json["error"]["message"]
    assert flags(app, ext)[PCT] == 0
    assert raise_to(client, "alice", 60).status_code == 202, "a new request may be made"


def test_an_approval_never_lands_on_flags_that_moved(admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, ext, _ = admin
    client = app.test_client()
    approval = raise_to(client, "alice", 60).json["approval"]
    assert raise_to(client, "alice", 70).status_code == 409, "one pending change per rollout"
    assert call(client, "alice", "PATCH", "/flags", {"flag": "v2_shadow_mode_enabled", "value": True}).status_code \
        == 200
    response = call(client, "bob", "POST", f"/approvals/{approval['id']}/approve")
    assert response.status_code == 409 and "void" in response.json["error"]["message"]
    assert flags(app, ext)[PCT] == 0
    with app.app_context():
        assert ext.approvals("calc")[0]["status"] == "stale"


def test_python_api_and_cli_follow_the_same_rule(admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, ext, _ = admin
    with app.app_context():
        with pytest.raises(ApprovalRequired) as waiting:
            ext.set_flag("calc", PCT, 40, actor="alice")
        with pytest.raises(ApprovalError, match="another approver"):
            ext.approve("calc", int(waiting.value.approval["id"]), actor="alice")
        ext.rollback("calc", target=0, actor="alice")
    runner = app.test_cli_runner()
    result = runner.invoke(cli, ["set-flag", "--flag", PCT, "--value", "40", "--actor", "alice"])
    assert result.exit_code == PENDING_APPROVAL and "approve with: flask v2rollout approve" in result.output
    number = result.output.rsplit(" ", 1)[1].strip()
    assert runner.invoke(cli, ["approve", number, "--actor", "alice"]).exit_code == 1
    assert flags(app, ext)[PCT] == 0
    listed = runner.invoke(cli, ["approvals"])
    assert f"#{number}  pending" in listed.output
    approved = runner.invoke(cli, ["approve", number, "--actor", "bob"])
    assert approved.exit_code == 0 and "0.0 -> 40.0" in approved.output
    assert flags(app, ext)[PCT] == 40


def test_the_dashboard_shows_and_approves(admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, ext, _ = admin
    client = app.test_client()
    asked = form(client, "alice", "/percentage", {"value": "30"})
    assert asked.status_code == 303 and flags(app, ext)[PCT] == 0
    page = client.get("/v2rollout/rollouts/calc", headers={"X-User": "bob"}).get_data(as_text=True)
    assert "Waiting for approval" in page and "Approve #1" in page
    own = client.get("/v2rollout/rollouts/calc", headers={"X-User": "alice"}).get_data(as_text=True)
    assert "Approve #1" not in own
    done = form(client, "bob", "/approvals/1/approve")
    assert done.status_code == 303 and flags(app, ext)[PCT] == 30
