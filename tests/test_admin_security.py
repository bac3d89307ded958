"""The admin surface is closed by default, refuses what it should, and never answers 500.

Hypothesis throws odd input at it; whatever comes in, the answer is a 4xx (or a
legitimate success) and a refused request leaves the audit log untouched.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flask_v2rollout import FLAG_NAMES, V2Rollout
from helpers import build_app

TOKEN = "s3cret-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
API = "/v2rollout/api"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

READS = ["/rollouts", "/rollouts/calc", "/rollouts/calc/flags", "/rollouts/calc/metrics", "/rollouts/calc/gate",
         "/rollouts/calc/checks", "/alerts", "/audit"]
WRITES = [("PATCH", "/rollouts/calc/flags", {"flag": "v2_rollout_percentage", "value": 10}),
          ("POST", "/rollouts/calc/rollback", {"target": 0}),
          ("POST", "/rollouts/calc/advance", {}),
          ("POST", "/rollouts/calc/checks", {"check": "team_ready", "passed": True})]
PAGES = ["/", "/rollouts/calc", "/rollouts/calc/live", "/rollouts/calc/audit", "/rollouts/calc/rollback", "/login"]
FORMS = ["/rollouts/calc/percentage", "/rollouts/calc/toggle", "/rollouts/calc/rollback",
         "/rollouts/calc/advance", "/rollouts/calc/checks", "/login", "/logout"]
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"}


def make(tmp_path: Path, **config: Any) -> tuple[Flask, V2Rollout]:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)
    app, _ = build_app(tmp_path / "instance", ext, **config)

    @app.post("/host-form")
    def host_form() -> str:
        return f"host got {request.form.get('x')}"

    return app, ext


@pytest.fixture
def admin(tmp_path: Path) -> tuple[Flask, V2Rollout]:
    return make(tmp_path, V2ROLLOUT_ADMIN_TOKEN=TOKEN)


@pytest.fixture
def client(admin: tuple[Flask, V2Rollout]) -> FlaskClient:
    return admin[0].test_client()


def state(app: Flask, ext: V2Rollout) -> tuple[int, dict[str, Any]]:
    """What a refused request must not change: the audit length and the flags."""
    with app.app_context():
        return len(ext.audit(limit=10_000)), ext.flags("calc", fresh=True)


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client: FlaskClient, token: str = TOKEN) -> Any:
    csrf = csrf_from(client.get("/v2rollout/login").get_data(as_text=True))
    return client.post("/v2rollout/login", data={"token": token, "csrf_token": csrf, "next": "/v2rollout/"})


@pytest.fixture
def operator(client: FlaskClient) -> tuple[FlaskClient, str]:
    """A signed-in dashboard client and its session's CSRF token."""
    sign_in(client)
    return client, csrf_from(client.get("/v2rollout/rollouts/calc/audit").get_data(as_text=True))


# -- closed by default ---------------------------------------------------------------------


def test_unconfigured_admin_answers_404_everywhere(tmp_path: Path) -> None:
    app, ext = make(tmp_path)
    client = app.test_client()
    before = state(app, ext)
    for path in READS:
        assert client.get(API + path, headers=AUTH).status_code == 404, path
    for method, path, body in WRITES:
        assert client.open(API + path, method=method, json=body, headers=AUTH).status_code == 404, path
    for path in PAGES + ["/v2rollout-assets/admin.css"]:
        assert client.get("/v2rollout" + path).status_code == 404, path
    for path in FORMS:
        assert client.post("/v2rollout" + path, data={"value": "50"}).status_code == 404, path
    assert state(app, ext) == before


def test_url_prefix_is_configurable(tmp_path: Path) -> None:
    app, _ = make(tmp_path, V2ROLLOUT_ADMIN_TOKEN=TOKEN, V2ROLLOUT_URL_PREFIX="/ops/rollouts")
    client = app.test_client()
    assert client.get("/ops/rollouts/api/rollouts", headers=AUTH).status_code == 200
    assert client.get(f"{API}/rollouts", headers=AUTH).status_code == 404


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN},
    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}, {"Authorization": "Bearer ünïcödé"},
])
def test_api_refuses_without_the_token(admin: tuple[Flask, V2Rollout], client: FlaskClient,
                                       headers: dict[str, str]) -> None:
    before = state(*admin)
    for path in READS:
        response = client.get(API + path, headers=headers)
        assert response.status_code == 401, path
        assert response.json["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for method, path, body in WRITES:
        assert client.open(API + path, method=method, json=body, headers=headers).status_code == 401
    assert state(*admin) == before


def test_a_signed_in_cookie_never_authorises_json(admin: tuple[Flask, V2Rollout], client: FlaskClient) -> None:
    assert sign_in(client).status_code == 303
    assert client.get("/v2rollout/").status_code == 200
    before = state(*admin)
    csrf = csrf_from(client.get("/v2rollout/rollouts/calc").get_data(as_text=True))
    for method, path, body in WRITES:
        response = client.open(API + path, method=method, json=body, headers={"X-CSRFToken": csrf})
        assert response.status_code == 401, path
    assert client.get(f"{API}/rollouts").status_code == 401
    assert state(*admin) == before


def test_dashboard_sign_in_and_out(client: FlaskClient) -> None:
    page = client.get("/v2rollout/rollouts/calc")
    assert page.status_code == 302 and "/v2rollout/login" in page.headers["Location"]
    wrong = sign_in(client, "not-the-token")
    assert wrong.status_code == 401 and "not valid" in wrong.get_data(as_text=True)
    assert client.get("/v2rollout/").status_code == 302
    assert sign_in(client).headers["Location"] == "/v2rollout/"
    assert client.get("/v2rollout/").status_code == 200
    csrf = csrf_from(client.get("/v2rollout/").get_data(as_text=True))
    assert client.post("/v2rollout/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/v2rollout/").status_code == 302


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/v2rollout/", "/elsewhere",
                                    "/v2rollout\\@evil.example"])
def test_sign_in_never_redirects_off_the_dashboard(client: FlaskClient, target: str) -> None:
    csrf = csrf_from(client.get("/v2rollout/login").get_data(as_text=True))
    response = client.post("/v2rollout/login", data={"token": TOKEN, "csrf_token": csrf, "next": target})
    assert response.headers["Location"] == "/v2rollout/"


def test_rotating_the_token_signs_everyone_out(tmp_path: Path, client: FlaskClient) -> None:
    sign_in(client)
    assert client.get("/v2rollout/").status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    # Rotation is a restart with the new token (settings are read once per app): the old sign-in is void.
    rotated, _ = make(tmp_path / "rotated", V2ROLLOUT_ADMIN_TOKEN="a-new-token-entirely")
    after = rotated.test_client()
    after.set_cookie("session", cookie.value)
    assert after.get("/v2rollout/").status_code == 302


# -- CSRF ------------------------------------------------------------------------------------


@pytest.mark.parametrize("csrf", [None, "", "forged", "IjEyMyI.ZZZ.bad"])
def test_forms_need_a_valid_csrf_token(admin: tuple[Flask, V2Rollout], client: FlaskClient,
                                       csrf: str | None) -> None:
    sign_in(client)
    before = state(*admin)
    fields = {"value": "50", "flag": "v2_shadow_mode_enabled", "target": "0", "confirm": "yes",
              "check": "team_ready", "passed": "yes", "token": TOKEN}
    if csrf is not None:
        fields["csrf_token"] = csrf
    for path in FORMS:
        response = client.post("/v2rollout" + path, data=fields)
        assert response.status_code == 400, path
        assert "expired" in response.get_data(as_text=True)
    assert state(*admin) == before
    assert client.get("/v2rollout/").status_code == 200  # still signed in: logout was refused too


def test_unauthenticated_form_posts_are_refused(admin: tuple[Flask, V2Rollout], client: FlaskClient) -> None:
    csrf = csrf_from(client.get("/v2rollout/login").get_data(as_text=True))
    before = state(*admin)
    for path in FORMS[:-2]:
        response = client.post("/v2rollout" + path, data={"csrf_token": csrf, "value": "50", "confirm": "yes"})
        assert response.status_code == 401, path
    assert state(*admin) == before


def test_csrf_stays_off_for_the_host_views(client: FlaskClient) -> None:
    response = client.post("/host-form", data={"x": "1"})
    assert response.status_code == 200 and response.get_data(as_text=True) == "host got 1"
    assert "Content-Security-Policy" not in response.headers


# -- headers ----------------------------------------------------------------------------------


def test_security_headers_on_every_admin_answer(client: FlaskClient) -> None:
    responses = [client.get(f"{API}/rollouts", headers=AUTH), client.get(f"{API}/rollouts"),
                 client.get(f"{API}/rollouts/nope", headers=AUTH), client.get("/v2rollout/login"),
                 client.get("/v2rollout/v2rollout-assets/admin.css")]
    sign_in(client)
    responses += [client.get("/v2rollout/"), client.get("/v2rollout/rollouts/calc"),
                  client.get("/v2rollout/rollouts/nope")]
    for response in responses:
        for name, value in HEADERS.items():
            assert response.headers[name] == value, (response.request.path, name)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp


def test_pages_have_no_inline_script_or_style(client: FlaskClient) -> None:
    sign_in(client)
    for path in ("/", "/rollouts/calc", "/rollouts/calc/rollback", "/rollouts/calc/audit", "/login"):
        html = client.get("/v2rollout" + path).get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert " style=" not in html and "<style" not in html and " on" + "click=" not in html, path


# -- fuzzing ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
flag_names = st.sampled_from(FLAG_NAMES) | st.text(max_size=30)
bodies = st.one_of(
    st.fixed_dictionaries({"flag": flag_names, "value": json_values}, optional={"reason": json_values,
                                                                               "version": json_values}),
    st.fixed_dictionaries({"flags": st.dictionaries(flag_names, json_values, max_size=4) | json_values},
                          optional={"reason": json_values, "version": json_values}),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    json_values,
)
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b'{"flag": "v2_rollout_percentage", "value": NaN}', b'{"target": Infinity}',
                     b'{"target": -Infinity}', b"[" * 5000 + b"]" * 5000, b'{"a": ' * 3000 + b"1" + b"}" * 3000,
                     b'{"flag": "v2_rollout_percentage", "value": 1' + b"0" * 5000 + b"}",
                     b'{"flag": "v2_rollout_percentage", "value": 1e999}', b'{"reason": "\\ud800"}',
                     b'{"flag": "v2_rollout_percentage", "value": 10, "reason": "a\\u0000b"}', b"\xff\xfe{}"]),
)
content_types = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "application/json; charset=latin-1", ""])
names = st.sampled_from(["calc"]) | st.text(min_size=1, max_size=20)


def assert_refused_or_valid(response: Any, before: Any, after: Any) -> None:
    assert response.status_code < 500
    if response.status_code >= 400:
        assert after == before, "a refused request changed the state"
        assert set(response.json["error"]) == {"code", "message", "field"}


@FUZZ
@given(body=bodies, version_header=st.none() | st.text(max_size=25))
def test_fuzzed_flag_patches(admin: tuple[Flask, V2Rollout], client: FlaskClient, body: Any,
                             version_header: str | None) -> None:
    headers = dict(AUTH)
    if version_header is not None and version_header.isprintable() and version_header.isascii():
        headers["If-Match"] = version_header
    before = state(*admin)
    response = client.patch(f"{API}/rollouts/calc/flags", json=body, headers=headers)
    assert_refused_or_valid(response, before, state(*admin))


@FUZZ
@given(data=raw_bodies, content_type=content_types,
       endpoint=st.sampled_from([(m, p) for m, p, _ in WRITES]))
def test_fuzzed_raw_bodies(admin: tuple[Flask, V2Rollout], client: FlaskClient, data: bytes, content_type: str,
                           endpoint: tuple[str, str]) -> None:
    before = state(*admin)
    method, path = endpoint
    response = client.open(API + path, method=method, data=data, headers={**AUTH, "Content-Type": content_type})
    assert_refused_or_valid(response, before, state(*admin))


@FUZZ
@given(target=json_values, reason=json_values, check=json_values, passed=json_values, note=json_values)
def test_fuzzed_rollback_and_checks(admin: tuple[Flask, V2Rollout], client: FlaskClient, target: Any, reason: Any,
                                    check: Any, passed: Any, note: Any) -> None:
    before = state(*admin)
    response = client.post(f"{API}/rollouts/calc/rollback", json={"target": target, "reason": reason}, headers=AUTH)
    assert_refused_or_valid(response, before, state(*admin))
    response = client.post(f"{API}/rollouts/calc/checks", json={"check": check, "passed": passed, "note": note},
                           headers=AUTH)
    assert response.status_code < 500


@FUZZ
@given(name=names, window=st.text(max_size=12), page=st.text(max_size=12), per_page=st.text(max_size=12),
       rollout=st.text(max_size=12))
@example(name="/\n", window="", page="", per_page="", rollout="")  # found by the fuzzer: "//" in the path
def test_fuzzed_reads(client: FlaskClient, name: str, window: str, page: str, per_page: str, rollout: str) -> None:
    quoted = quote(name, safe="")
    for url, query in ((f"/rollouts/{quoted}/metrics", {"window": window}),
                       ("/audit", {"page": page, "per_page": per_page, "rollout": rollout}),
                       (f"/rollouts/{quoted}/gate", {}), ("/alerts", {"rollout": rollout})):
        response = client.get(API + url, query_string=query, headers=AUTH)
        if response.status_code == 308:  # an encoded "/" made "//": Werkzeug's canonical-URL redirect, in the API
            assert urlsplit(response.location).path.startswith(API + "/"), (url, response.location)
            continue
        assert response.status_code in (200, 400, 404), (url, query)


@FUZZ
@given(path=st.sampled_from(FORMS[:-2]), fields=st.dictionaries(
    st.sampled_from(["value", "reason", "version", "flag", "target", "confirm", "check", "passed", "note"]),
    st.text(max_size=40) | st.sampled_from(["NaN", "inf", "1e999", "-0", "100.001", "50", "yes", "true",
                                             "9" * 30, "v2_shadow_mode_enabled"]),
))
def test_fuzzed_forms(admin: tuple[Flask, V2Rollout], operator: tuple[FlaskClient, str], path: str,
                      fields: dict[str, str]) -> None:
    client, fields["csrf_token"] = operator
    before = state(*admin)
    response = client.post("/v2rollout" + path, data=fields)
    assert response.status_code in (303, 400, 409), (path, fields, response.status_code)
    if response.status_code != 303:
        assert state(*admin) == before


def test_huge_and_non_finite_numbers_are_400(client: FlaskClient) -> None:
    for value in (math.inf, -math.inf, 10**400, 1e308, -1e-320, 100.001):
        body = {"flag": "v2_rollout_percentage", "value": value}
        response = client.patch(f"{API}/rollouts/calc/flags", data=json.dumps(body),
                                headers={**AUTH, "Content-Type": "application/json"})
        assert response.status_code == 400, value
    response = client.patch(f"{API}/rollouts/calc/flags", json={"flag": "v2_rollout_percentage", "value": 1,
                                                                "version": 2**70}, headers=AUTH)
    assert response.status_code == 400 and response.json["error"]["field"] == "version"
