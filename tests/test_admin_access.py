"""Brute-force limits, server-side sessions, the sign-in redirect and the token's strength.

Time is a controllable clock (``use_clock``): windows and lifetimes pass when the test says so.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_v2rollout import V2Rollout
from flask_v2rollout.testing import Clock, use_clock
from helpers import build_app

TOKEN = "s3cret-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer not-the-token-at-all"}
API = "/v2rollout/api/rollouts"
LIMITS = {"V2ROLLOUT_AUTH_WINDOW_S": 60, "V2ROLLOUT_AUTH_ADDRESS_FAILURES": 3, "V2ROLLOUT_AUTH_GLOBAL_FAILURES": 5}


def make(tmp_path: Path, **config: Any) -> tuple[Flask, V2Rollout]:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)
    app, _ = build_app(tmp_path / "instance", ext, **{"V2ROLLOUT_ADMIN_TOKEN": TOKEN, **config})
    return app, ext


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[tuple[Flask, V2Rollout, Clock]]:
    app, ext = make(tmp_path, **LIMITS, V2ROLLOUT_ADMIN_SESSION_IDLE_S=600, V2ROLLOUT_ADMIN_SESSION_LIFETIME_S=3600)
    with use_clock(app, Clock(1_700_000_000.0)) as clock:
        yield app, ext, clock


def client_from(app: Flask, address: str = "127.0.0.1") -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client: FlaskClient, token: str = TOKEN, next_: str = "/v2rollout/") -> Any:
    csrf = csrf_from(client.get("/v2rollout/login").get_data(as_text=True))
    return client.post("/v2rollout/login", data={"token": token, "csrf_token": csrf, "next": next_})


def state(app: Flask, ext: V2Rollout) -> tuple[int, dict[str, Any]]:
    with app.app_context():
        return len(ext.audit(limit=10_000)), ext.flags("calc", fresh=True)


def access_events(app: Flask) -> list[dict[str, Any]]:
    with app.app_context():
        return app.extensions["v2rollout"].access.events(limit=1000)  # type: ignore[no-any-return]


# -- brute force -------------------------------------------------------------------------------


def test_bearer_guesses_are_limited_per_address_with_retry_after(admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, _, clock = admin
    attacker, operator = client_from(app, "203.0.113.9"), client_from(app, "198.51.100.7")
    assert [attacker.get(API, headers=WRONG).status_code for _ in range(3)] == [401, 401, 401]
    clock.advance(10)
    limited = attacker.get(API, headers=WRONG)
    assert limited.status_code == 429 and (limited.json or {})["error"]["code"] == "too_many_attempts"
    assert limited.headers["Retry-After"] == "50"
    assert attacker.get(API, headers=AUTH).status_code == 429, "while limited, nothing is compared"
    assert operator.get(API, headers=AUTH).status_code == 200, "another address is not limited"
    clock.advance(50)
    assert attacker.get(API, headers=AUTH).status_code == 200, "the window passed"
    events = access_events(app)
    assert [(e["event"], e["failed"], e["address"]) for e in events] == [("bearer", True, "203.0.113.9")] * 3


def test_successes_do_not_count_and_the_global_limit_covers_every_address(
        admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, _, clock = admin
    good = client_from(app, "198.51.100.7")
    for _ in range(20):
        assert good.get(API, headers=AUTH).status_code == 200
    for n in range(5):
        assert client_from(app, f"203.0.113.{n}").get(API, headers=WRONG).status_code == 401
    limited = client_from(app, "203.0.113.200").get(API, headers=WRONG)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) == 60
    assert good.get(API, headers=AUTH).status_code == 429
    clock.advance(60)
    assert good.get(API, headers=AUTH).status_code == 200


def test_sign_in_guesses_are_limited_and_audited(admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, _, clock = admin
    client = client_from(app, "203.0.113.9")
    assert [sign_in(client, f"guess-{n:04d}").status_code for n in range(3)] == [401, 401, 401]
    limited = sign_in(client)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "60"
    assert "try again in 60 s" in limited.get_data(as_text=True)
    clock.advance(61)
    assert sign_in(client).status_code == 303
    assert client.get("/v2rollout/").status_code == 200
    page = client.get("/v2rollout/rollouts/calc/audit").get_data(as_text=True)
    assert "Sign-ins and refused credentials" in page and page.count("203.0.113.9") == 4
    events = access_events(app)
    assert [(e["event"], e["failed"]) for e in events] == [("sign_in", False)] + [("sign_in", True)] * 3
    assert events[0]["actor"] == "token" and events[0]["at"] == clock.now


# -- sessions ------------------------------------------------------------------------------------


def test_a_cookie_copied_before_sign_out_is_worthless_after(admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, ext, _ = admin
    client = client_from(app)
    assert sign_in(client).status_code == 303
    csrf = csrf_from(client.get("/v2rollout/rollouts/calc").get_data(as_text=True))
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert client.post("/v2rollout/logout", data={"csrf_token": csrf}).status_code == 303
    thief = client_from(app, "203.0.113.9")
    thief.set_cookie("session", cookie.value)
    before = state(app, ext)
    page = thief.get("/v2rollout/rollouts/calc")
    assert page.status_code == 302 and urlsplit(page.headers["Location"]).path == "/v2rollout/login"
    moved = thief.post("/v2rollout/rollouts/calc/percentage", data={"csrf_token": csrf, "value": "50"})
    assert moved.status_code == 401
    assert state(app, ext) == before
    assert [e["event"] for e in access_events(app)][:2] == ["sign_out", "sign_in"]


def test_sessions_expire_when_idle_and_after_their_lifetime(admin: tuple[Flask, V2Rollout, Clock]) -> None:
    app, _, clock = admin
    idle = client_from(app)
    sign_in(idle)
    clock.advance(599)
    assert idle.get("/v2rollout/").status_code == 200, "used within the idle time"
    clock.advance(599)
    assert idle.get("/v2rollout/").status_code == 200, "each use restarts the idle clock"
    clock.advance(600)
    assert idle.get("/v2rollout/").status_code == 302, "idle too long"
    busy = client_from(app)
    sign_in(busy)
    for _ in range(6):
        clock.advance(590)
        assert busy.get("/v2rollout/").status_code == 200
    clock.advance(590)
    assert busy.get("/v2rollout/").status_code == 302, "past the absolute lifetime however busy"


def test_a_session_of_a_rotated_token_is_revoked(tmp_path: Path) -> None:
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    before, _ = make(tmp_path / "a", V2ROLLOUT_DATABASE_URI=shared)
    client = client_from(before)
    sign_in(client)
    cookie = client.get_cookie("session")
    assert cookie is not None
    same, _ = make(tmp_path / "b", V2ROLLOUT_DATABASE_URI=shared)
    other_worker = client_from(same)
    other_worker.set_cookie("session", cookie.value)
    assert other_worker.get("/v2rollout/").status_code == 200, "the session is shared through SQL"
    rotated, _ = make(tmp_path / "c", V2ROLLOUT_DATABASE_URI=shared, V2ROLLOUT_ADMIN_TOKEN="a-new-token-entirely-0123")
    after = client_from(rotated)
    after.set_cookie("session", cookie.value)
    assert after.get("/v2rollout/").status_code == 302
    assert other_worker.get("/v2rollout/").status_code == 302, "revoked in SQL, not only refused"


# -- the token -----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["1234", "short-token", " " * 20, "fifteen-chars!!"])
def test_short_tokens_are_refused_at_init_app(tmp_path: Path, token: str) -> None:
    with pytest.raises(RuntimeError, match="V2ROLLOUT_ADMIN_TOKEN must be at least 16 characters"):
        make(tmp_path, V2ROLLOUT_ADMIN_TOKEN=token)


def test_a_token_with_a_trailing_newline_is_stripped_and_reported(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "flask_v2rollout"):
        app, ext = make(tmp_path, V2ROLLOUT_ADMIN_TOKEN=TOKEN + "\n")
    assert "V2ROLLOUT_ADMIN_TOKEN has surrounding whitespace" in caplog.text and TOKEN not in caplog.text
    client = client_from(app)
    assert client.get(API, headers=AUTH).status_code == 200
    assert sign_in(client).status_code == 303
    with app.app_context():
        check = next(r for r in ext.verify() if r["check"] == "admin_token")
    assert check["status"] == "FAIL" and "whitespace" in check["detail"]


@pytest.mark.parametrize("token, status", [("1234567890123456", "FAIL"), ("abababababababababab", "FAIL"),
                                           (TOKEN, "PASS")])
def test_verify_reports_weak_tokens(tmp_path: Path, token: str, status: str) -> None:
    app, ext = make(tmp_path, V2ROLLOUT_ADMIN_TOKEN=token)
    with app.app_context():
        check = next(r for r in ext.verify() if r["check"] == "admin_token")
    assert check["status"] == status, check
    assert token not in check["detail"]


# -- the sign-in redirect ----------------------------------------------------------------------------

NEXT_CASES = [
    "", "/", "//evil.example/", "///evil.example", "/\t/evil.example/", "/%09/evil.example/", "\t//evil.example",
    "/\n/evil.example", "/\r\nSet-Cookie: x=1", "\x00", "/\x7f/evil", "/\\evil.example", "\\\\evil.example",
    "https://evil.example/", "javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,x", "//evil.example@x",
    "/v2rollout/../evil", "/v2rollout/./x", "/v2rollout//evil.example", "/v2rollout\\@evil.example",
    "/v2rolloutx", "/elsewhere", "http:/evil.example", "/v2rollout/\u2028", "/v2rollout/\u202e", "/v2rollout/é",
    "/v2rollout/ x", "/v2rollout/#frag", "/" + "a" * 5000, "?next=//evil", "%2F%2Fevil.example", "/%2F/evil",
    "https:evil.example", "\u3000//evil.example", "/\u00a0/evil",
]
PREFIXES = ["/v2rollout", "", "/ops/rollouts"]


def _assert_stays_inside(response: Any, prefix: str) -> None:
    assert response.status_code in (200, 302, 303, 401), response.status_code
    location = response.headers.get("Location")
    if location is None:
        return
    parts = urlsplit(location)
    assert not parts.scheme and not parts.netloc, location
    assert location.isascii() and location.isprintable() and "\\" not in location, location
    assert location.startswith(prefix + "/") and not location.startswith("//"), location
    assert "/../" not in location and "//" not in parts.path, location


@pytest.fixture(params=PREFIXES)
def prefixed(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Flask, str]:
    prefix: str = request.param
    app, _ = make(tmp_path, V2ROLLOUT_URL_PREFIX=prefix)
    return app, prefix


@pytest.mark.parametrize("target", NEXT_CASES)
def test_next_never_leaves_the_admin(prefixed: tuple[Flask, str], target: str) -> None:
    app, prefix = prefixed
    target = target.replace("/v2rollout", prefix)
    client = client_from(app)
    _assert_stays_inside(client.get(f"{prefix}/login", query_string={"next": target}), prefix)
    csrf = csrf_from(client.get(f"{prefix}/login").get_data(as_text=True))
    signed = client.post(f"{prefix}/login", data={"token": TOKEN, "csrf_token": csrf, "next": target})
    assert signed.status_code == 303
    _assert_stays_inside(signed, prefix)
    _assert_stays_inside(client.get(f"{prefix}/login", query_string={"next": target}), prefix)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.text(max_size=40) | st.sampled_from(NEXT_CASES).flatmap(
    lambda case: st.text(max_size=6).map(lambda tail: case + tail)))
def test_next_fuzz(prefixed: tuple[Flask, str], target: str) -> None:
    app, prefix = prefixed
    client = client_from(app)
    _assert_stays_inside(client.get(f"{prefix}/login?next=" + quote(target, safe="")), prefix)
    _assert_stays_inside(client.get(f"{prefix}/login?next=" + quote(target, safe="/:?&=%")), prefix)


def test_an_inside_next_is_kept(tmp_path: Path) -> None:
    app, _ = make(tmp_path)
    client = client_from(app)
    page = client.get("/v2rollout/rollouts/calc?range=6h")
    assert page.status_code == 302
    assert sign_in(client, next_="/v2rollout/rollouts/calc?range=6h").headers["Location"] == \
        "/v2rollout/rollouts/calc?range=6h"


def test_admin_assets_never_collide_with_the_host_static(tmp_path: Path) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "admin.css").write_text("host css")
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    app = Flask("host", instance_path=str(tmp_path / "instance"), static_folder=str(static))
    app.config.update(SECRET_KEY="k", V2ROLLOUT_ADMIN_TOKEN=TOKEN, V2ROLLOUT_URL_PREFIX="")
    ext.init_app(app)
    client = client_from(app)
    assert client.get("/static/admin.css").get_data(as_text=True) == "host css"
    ours = client.get("/v2rollout-assets/admin.css")
    assert ours.status_code == 200 and "host css" not in ours.get_data(as_text=True)
    page = client.get("/login").get_data(as_text=True)
    assert 'href="/v2rollout-assets/admin.css' in page


# -- numbers as sent ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, status, stored", [
    (b"1e-400", 400, None), (b"12.5000000000000001", 400, None), (b"-0", 200, 0.0), (b"-0.0", 200, 0.0),
    (b"12.50", 200, 12.5),
])
def test_json_percentages_are_judged_as_typed(tmp_path: Path, raw: bytes, status: int, stored: float | None) -> None:
    app, ext = make(tmp_path)
    body = b'{"flag": "v2_rollout_percentage", "value": ' + raw + b', "reason": "x"}'
    response = client_from(app).patch(f"{API}/calc/flags", data=body,
                                      headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == status, response.json
    with app.app_context():
        value = ext.flags("calc", fresh=True)["v2_rollout_percentage"]
    assert value == (stored if stored is not None else 0.0) and str(value) != "-0.0"
