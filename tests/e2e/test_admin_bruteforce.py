"""Token guessing against gunicorn with two workers on PostgreSQL: the limit is one, whichever worker answers.

The window "passes" by ageing the recorded failures in SQL (the limit's clock is the rows' time), so
nothing waits for it.
"""
from __future__ import annotations

import http.client
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

TOKEN = "e2e-brute-force-token-0123456789"
PER_ADDRESS = 10
WINDOW_S = 600


def request(url: str, method: str, path: str, *, headers: dict[str, str] | None = None,
            body: str | None = None) -> tuple[int, dict[str, str], str]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()


def bearer(url: str, token: str) -> tuple[int, dict[str, str], str]:
    return request(url, "GET", "/v2rollout/api/rollouts", headers={"Authorization": f"Bearer {token}"})


def form_guess(url: str, guess: str) -> int:
    """One guess through the sign-in form, with its own session and CSRF token."""
    _, headers, page = request(url, "GET", "/v2rollout/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:500]
    cookie = headers["set-cookie"].split(";", 1)[0]
    status, _, _ = request(url, "POST", "/v2rollout/login", body=f"token={guess}&csrf_token={match.group(1)}",
                           headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    return status


def test_guesses_are_limited_across_workers(gunicorn_server, postgres_server, tmp_path: Path) -> None:
    uri = postgres_server.create_database("bruteforce")
    env = {
        "INSTANCE_DIR": str(tmp_path / "instance"),
        "FLASK_SECRET_KEY": "e2e-secret",
        "FLASK_V2ROLLOUT_DATABASE_URI": uri,
        "FLASK_V2ROLLOUT_ADMIN_TOKEN": TOKEN,
        "FLASK_V2ROLLOUT_AUTH_ADDRESS_FAILURES": str(PER_ADDRESS),
        "FLASK_V2ROLLOUT_AUTH_WINDOW_S": str(WINDOW_S),
        "FLASK_V2ROLLOUT_LOG_FILE": "null",
    }
    server = gunicorn_server("tests.e2e.admin_app:app", workers=2, preload=True, env=env)

    refused = [bearer(server.url, f"guess-{n:04d}") for n in range(PER_ADDRESS // 2)]
    refused_forms = [form_guess(server.url, f"guess-{n:04d}") for n in range(PER_ADDRESS - PER_ADDRESS // 2)]
    assert [s for s, _, _ in refused] == [401] * (PER_ADDRESS // 2)
    assert refused_forms == [401] * (PER_ADDRESS - PER_ADDRESS // 2)

    with ThreadPoolExecutor(8) as pool:
        after = list(pool.map(lambda n: bearer(server.url, f"guess-{n:04d}"), range(100, 160)))
    assert {s for s, _, _ in after} == {429}
    assert len({h["x-worker-pid"] for _, h, _ in after}) == 2, "both workers answered"
    assert all(0 < int(h["retry-after"]) <= WINDOW_S for _, h, _ in after)
    assert form_guess(server.url, "guess-9999") == 429
    assert bearer(server.url, TOKEN)[0] == 429, "while limited, even the right token is not compared"

    with psycopg.connect(uri.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute("SELECT event, failed, address FROM v2rollout_auth_events ORDER BY id").fetchall()
        assert rows == ([("bearer", 1, "127.0.0.1")] * (PER_ADDRESS // 2)
                        + [("sign_in", 1, "127.0.0.1")] * (PER_ADDRESS - PER_ADDRESS // 2))
        conn.execute("UPDATE v2rollout_auth_events SET at = at - %s", (WINDOW_S,))  # the window has passed

    with ThreadPoolExecutor(4) as pool:
        ok = list(pool.map(lambda _: bearer(server.url, TOKEN), range(20)))
    assert {s for s, _, _ in ok} == {200}
    assert len({h["x-worker-pid"] for _, h, _ in ok}) == 2
