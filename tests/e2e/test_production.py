"""The example app under gunicorn (4 workers, --preload) on a throwaway PostgreSQL, under load.

Measures what an operator must trust before a rollout: how fast flag changes and an
emergency rollback reach every worker, that metrics count each request once, that a
database outage costs no request, and that a failing v2 never reaches a user.
Figures go to test-artifacts/production_figures.json.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from example_app.datagen import build_database
from helpers import join

from .support import REPO_ROOT, drive, merged_metrics

TOKEN = "e2e-admin-token-0123456789"
TTL_S = 1.0
HEALTHY_QBS = ["Patrick Mahomes", "Brock Purdy", "Lamar Jackson", "Joe Burrow", "Jalen Hurts"]  # v2 has their data
ARTIFACTS = REPO_ROOT / "test-artifacts"


def edges(users: range) -> list:
    return [("POST", "/api/edges", {"player": HEALTHY_QBS[i % 5], "opponent": "LAC"}, {"X-User-Id": f"user-{i}"})
            for i in users]


def md5_v2(uid: str, pct: float) -> bool:
    return int(hashlib.md5(uid.encode()).hexdigest(), 16) % 100 < pct


def worker_views(url: str, until: float, want: float, workers: int) -> dict[int, float]:
    """Poll /_worker until every worker reports ``want``; pid -> first time it did (monotonic)."""
    host, port = url.removeprefix("http://").split(":")
    first: dict[int, float] = {}

    def poll() -> None:
        while len(first) < workers and time.monotonic() < until:
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            conn.request("GET", "/_worker")
            body = json.loads(conn.getresponse().read())
            conn.close()
            if body["flags"]["v2_rollout_percentage"] == want:
                first.setdefault(body["pid"], time.monotonic())

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        join(t, until - time.monotonic() + 10)
    return first


def admin(url: str, method: str, path: str, body: dict) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, "/v2rollout/api" + path, body=json.dumps(body),
                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


@pytest.mark.timeout(300)  # about 20 s on an idle machine, 10 s of which is the outage
def test_example_app_in_production_conditions(gunicorn_server, postgres_server, tmp_path: Path) -> None:
    uri = postgres_server.create_database("production")
    nfl = tmp_path / "nfl_betting.db"
    build_database(str(nfl))
    env = {
        "INSTANCE_DIR": str(tmp_path / "instance"),
        "FLASK_SECRET_KEY": "e2e-secret",
        "FLASK_NFL_DATABASE": str(nfl),
        "FLASK_V2ROLLOUT_DATABASE_URI": uri,
        "FLASK_V2ROLLOUT_ADMIN_TOKEN": TOKEN,
        "FLASK_V2ROLLOUT_FLAG_TTL_S": str(TTL_S),
        "FLASK_V2ROLLOUT_METRICS_FLUSH_S": "1",
        "FLASK_V2ROLLOUT_DEFAULTS": json.dumps({"v2_rollout_percentage": 50, "v2_shadow_mode_enabled": False}),
        "FLASK_V2ROLLOUT_AUTO_ROLLBACK": "false",  # this run measures the failing v2 itself
        "FLASK_V2ROLLOUT_LOG_FILE": "null",
        "FLASK_V2_FAULT_RATE": "0.3",
    }
    server = gunicorn_server("tests.e2e.example_harness:app", workers=4, preload=True, env=env)
    figures: dict[str, object] = {}
    sent: list = []

    # (e) v2 fails on 30 % of its calls at 50 %: nobody sees an error, the fallback rate reads 30 %.
    results = drive(server.url, edges(range(0, 3000)), concurrency=8)
    sent += results
    assert all(status == 200 for status, _ in results), {s for s, _ in results}
    v2_assigned = [b for _, b in results if b["metadata"]["assigned_version"] == "v2"]
    assert {b["metadata"]["assigned_version"] for _, b in results} == {"v1", "v2"}
    assert all(md5_v2(f"user-{i}", 50) == (b["metadata"]["assigned_version"] == "v2")
               for i, (_, b) in enumerate(results))
    fell_back = sum(b["metadata"]["fallback_to_v1"] for b in v2_assigned) / len(v2_assigned)
    figures["e_fallback_rate_pct_in_responses"] = round(fell_back * 100, 2)
    assert abs(fell_back - 0.30) <= 0.01

    # (a) a flag change through the admin API reaches every worker within the TTL.
    status, _ = admin(server.url, "PATCH", "/rollouts/qb_td/flags",
                      {"flag": "v2_rollout_percentage", "value": 60, "reason": "e2e"})
    changed = time.monotonic()
    assert status == 200
    seen = worker_views(server.url, changed + 10, 60.0, 4)
    assert len(seen) == 4, seen
    lag = max(seen.values()) - changed
    figures["a_flag_change_to_last_worker_s"] = round(lag, 3)
    assert lag <= TTL_S + 0.5

    # (b) emergency rollback through the CLI: every worker serves v1.
    cli_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "flask", "--app", "tests.e2e.example_harness:app", "v2rollout",
                          "rollback", "--target", "0", "--reason", "e2e emergency"],
                         cwd=REPO_ROOT, env=cli_env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    returned = time.monotonic()
    seen = worker_views(server.url, returned + 10, 0.0, 4)
    assert len(seen) == 4, seen
    figures["b_cli_rollback_command_s"] = round(returned - started, 3)
    figures["b_cli_rollback_to_last_worker_s"] = round(max(seen.values()) - started, 3)
    after = drive(server.url, edges(range(3000, 3400)), concurrency=8)
    sent += after
    assert {b["calculator_version"] for _, b in after} == {"v1"}
    assert {b["metadata"]["assigned_version"] for _, b in after} == {"v1"}

    # (d) PostgreSQL down for 10 s under load: no request fails, flags stay last-known.
    status, _ = admin(server.url, "PATCH", "/rollouts/qb_td/flags",
                      {"flag": "v2_rollout_percentage", "value": 50, "reason": "e2e resume"})
    assert status == 200 and len(worker_views(server.url, time.monotonic() + 10, 50.0, 4)) == 4
    outage: list = []
    stop_load = threading.Event()

    def load() -> None:
        start = 3400
        while not stop_load.is_set():
            outage.extend(drive(server.url, edges(range(start, start + 80)), concurrency=8))
            start += 80

    loader = threading.Thread(target=load)
    loader.start()
    postgres_server.stop()
    down = time.monotonic()
    try:
        while time.monotonic() - down < 10:  # the outage itself: ten seconds of traffic without a database
            loader.join(0.5)
    finally:
        postgres_server.start()
        figures["d_outage_s"] = round(time.monotonic() - down, 2)
        stop_load.set()
        join(loader)
    sent += outage
    assert outage and all(status == 200 for status, _ in outage), {s for s, _ in outage}
    assert {b["metadata"]["assigned_version"] for _, b in outage} == {"v1", "v2"}  # last-known 50 %, not 0 %
    figures["d_requests_during_outage"] = len(outage)

    # (c) every request is counted exactly once in the merged metrics.
    assert server.stop() == 0  # workers flush what they still hold at exit
    metrics = merged_metrics(uri, "qb_td", tmp_path / "reader")
    by_arm = {"v1": 0, "v2": 0}
    for _, body in sent:
        by_arm[body["metadata"]["assigned_version"]] += 1
    figures["c_requests_sent"] = len(sent)
    figures["c_counted"] = {arm: metrics["arms"][arm]["calculations"] for arm in ("v1", "v2")}
    assert figures["c_counted"] == by_arm
    figures["e_fallback_rate_pct_in_metrics"] = round(metrics["arms"]["v2"]["fallback_rate_pct"], 2)
    assert abs(metrics["arms"]["v2"]["fallback_rate_pct"] - 30.0) <= 1.0
    assert metrics["db_errors"] >= 1
    figures["d_db_errors_counted"] = metrics["db_errors"]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "production_figures.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
