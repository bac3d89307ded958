"""A simulated day of the example app, then the runbook's tools on it: the log's jq/grep recipes as the
README prints them, ``flask v2rollout compare`` from SQL, and ``inputs`` → ``replay`` before a resume."""
from __future__ import annotations

import importlib
import itertools
import json
import random
import re
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from example_app.db import connect
from example_app.nfl import TEAMS
from example_app.players import players_in_season
from flask_v2rollout.cli import cli
from flask_v2rollout.testing import Clock, shadow_sync
from helpers import join, require

ROOT = Path(__file__).resolve().parents[2]
DAY_CALLS = 1440  # one a minute
AFTER_ROLLBACK_CALLS = 60


@dataclass
class Day:
    app: Flask
    log: Path
    rolled_back_at: str
    clock: Clock


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def app(make_app) -> Flask:
    return make_app(V2ROLLOUT_LOG_FILE="logs/v2_calculations.jsonl", V2_FAULT_RATE=0.02,
                    V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 10, "v2_shadow_mode_enabled": True})


def _traffic(app: Flask, clock: Clock, rng: random.Random, players: list[str], calls: int, first: int) -> None:
    client = app.test_client()
    for n in range(first, first + calls):
        body = {"player": rng.choice(players), "opponent": rng.choice(TEAMS), "note": "not recorded"}
        response = client.post("/api/edges", json=body,
                               headers={"X-User-Id": f"user-{rng.randrange(500)}", "X-Request-Id": f"req-{n}"})
        assert response.status_code == 200, response.get_data(as_text=True)
        clock.advance(minutes=1)


@pytest.fixture
def day(app: Flask, v2rollout_clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Day:
    """24 h of traffic at 10 % with shadow on, an emergency rollback to 0 % (shadow stays on), one more hour.

    The injected faults hit every 50th v2 call of the process; the count starts afresh here, so which calls
    fail (served or shadow) does not depend on the tests that ran before in this process.
    """
    monkeypatch.setattr(importlib.import_module("example_app.rollout"), "_v2_calls", itertools.count())
    conn = connect(app.config["NFL_DATABASE"], read_only=True)
    try:
        players = players_in_season(conn, app.config["NFL_SEASON"])
    finally:
        conn.close()
    rng = random.Random(18)
    ext = app.extensions["v2rollout.binding"].rollout
    with shadow_sync(app):
        _traffic(app, v2rollout_clock, rng, players, DAY_CALLS, 0)
        with app.app_context():
            ext.rollback("qb_td", 0, actor="on-call", reason="rehearsal")
        rolled_back_at = _iso(v2rollout_clock())
        _traffic(app, v2rollout_clock, rng, players, AFTER_ROLLBACK_CALLS, DAY_CALLS)
    return Day(app, Path(app.instance_path) / "logs" / "v2_calculations.jsonl", rolled_back_at, v2rollout_clock)


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(log.parent.glob(log.name + "*"))
            for line in path.read_text().splitlines()]


def recipes() -> list[str]:
    text = (ROOT / "example_app" / "README.md").read_text()
    block = re.search(r"<!-- runbook-recipes -->\n```sh\n(.*?)```", text, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


@pytest.fixture
def server(app: Flask) -> Iterator[str]:
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    join(thread)
    srv.server_close()


def test_the_log_keeps_the_day_in_hourly_files_with_the_runbook_names(day: Day) -> None:
    rotated = sorted(p.name for p in day.log.parent.glob(day.log.name + ".*"))
    # 25 simulated hours: 24 rotated hourly files and the current one; 48 h retention keeps them all
    assert len(rotated) == 24 and day.log.exists()
    spans = [name.rsplit(".", 1)[1].split("-") for name in rotated]
    assert all(prev[1] == nxt[0] for prev, nxt in zip(spans, spans[1:], strict=False))  # no hour missing
    records = _records(day.log)
    calcs = [r for r in records if r["event"] == "calculation"]
    assert len(calcs) == DAY_CALLS + AFTER_ROLLBACK_CALLS
    assert all(r["rollout"] == "qb_td" and re.fullmatch(r"req-\d+", r["request_id"]) for r in records
               if r["event"] != "alert_fired")
    assert {"player_name", "edge"} <= calcs[0].keys() and "subject" not in calcs[0] and "value" not in calcs[0]
    shadow = [r for r in records if r["event"] == "shadow_comparison"]
    assert shadow and {r["calculator_version"] for r in shadow} == {"v2_shadow"}
    assert {"player_name", "edge", "v1_edge", "v2_edge", "difference", "agreement"} <= shadow[0].keys()


def test_the_runbook_recipes_run_as_printed(day: Day, server: str) -> None:
    require(shutil.which("jq") is not None, "jq is not installed (the runbook's recipes need it)")
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "L": str(day.log), "URL": server, "SINCE": day.rolled_back_at}
    outputs = []
    for line in recipes():
        done = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=60,
                              cwd=day.app.instance_path)
        # as an operator's shell runs them (no pipefail: `| head` may cut jq short); every recipe finds something
        assert done.returncode == 0 and done.stderr == "" and done.stdout.strip(), (line, done.stderr)
        outputs.append(done.stdout)
    records = _records(day.log)
    since = day.rolled_back_at
    v2_after, api, shadow_after, fallback_qbs, reasons, errors, outliers, one_request = outputs
    assert v2_after.strip() == "0"
    assert api.strip() == "v1"
    shown = [json.loads(line) for line in shadow_after.splitlines()]
    expected_shadow = [{k: r[k] for k in ("timestamp", "player_name", "v1_edge", "v2_edge", "agreement")}
                       for r in records if r.get("calculator_version") == "v2_shadow" and r["timestamp"] >= since]
    assert len(expected_shadow) > 3 and shown == expected_shadow[-3:]
    fallbacks = [r for r in records if r["event"] == "fallback"]
    counted = Counter(r["player_name"] for r in fallbacks)
    top = [ln.split(None, 1) for ln in fallback_qbs.splitlines()]
    assert top and all(counted[name] == int(n) for n, name in top)
    assert {name for _, name in top} <= set(counted) and int(top[0][0]) == max(counted.values())
    kinds = dict(reversed(ln.split()) for ln in reasons.splitlines())
    assert kinds == {k: str(v) for k, v in Counter(r["fallback_reason"].split(":")[0] for r in fallbacks).items()}
    assert "example_app.rollout.InjectedFault" in errors
    pairs = [json.loads(line) for line in outliers.splitlines()]
    expected_pairs = [r for r in records if r.get("calculator_version") == "v2_shadow"
                      and r["difference"] is not None and r["difference"] > 5]
    assert pairs == [{k: r[k] for k in ("player_name", "v1_edge", "v2_edge", "difference")}
                     for r in expected_pairs][:10]
    assert [json.loads(line)["event"] for line in one_request.splitlines()][0] == "calculation"


def _cli(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_compare_reads_the_day_from_sql_and_matches_the_log(day: Day, tmp_path: Path) -> None:
    out = tmp_path / "investigation.json"
    code, text = _cli(day.app, "compare", "--window", "24h", "--output", str(out))
    assert code == 0, text
    report = json.loads(out.read_text())
    assert set(report) == {"rollout", "window_s", "from", "to", "overall", "outlier_threshold", "outliers",
                           "subjects"}
    records = [r for r in _records(day.log) if r.get("calculator_version") == "v2_shadow"
               and r["timestamp"] >= _iso(report["from"])]
    assert report["overall"]["comparisons"] == len(records)
    by_player = Counter(r["player_name"] for r in records)
    assert {s["subject"]: s["comparisons"] for s in report["subjects"]} == dict(by_player)
    assert Counter(r["agreement"] for r in records) == report["overall"]["agreement"]
    assert len(report["outliers"]) == sum(1 for r in records if r["difference"] is not None and r["difference"] > 5)
    assert all(abs(o["difference"]) > 5 for o in report["outliers"])
    lines = text.splitlines()
    assert lines[0].startswith(f"qb_td: {len(records)} shadow comparisons from ")
    assert lines[1].startswith("  overall: v1 avg ") and "agreement " in lines[1]
    assert lines[2] == f"  outliers (|difference| > 5): {len(report['outliers'])}"
    assert lines[-1] == f"wrote {out}"
    print(text)


def test_replay_before_a_resume_shows_the_fix(day: Day, tmp_path: Path) -> None:
    recorded = tmp_path / "inputs.jsonl"
    code, text = _cli(day.app, "inputs", "--window", "24h", "--output", str(recorded))
    assert code == 0, text
    rows = [json.loads(line) for line in recorded.read_text().splitlines()]
    assert text.strip() == f"qb_td: wrote {len(rows)} recorded input(s) of the last 24h to {recorded}"
    assert len(rows) == 24 * 60  # one a minute: the window ends a minute after the last call
    assert all(set(r["inputs"]["args"][0]) == {"player", "opponent"} for r in rows)  # "note" redacted away
    broken_code, broken = _cli(day.app, "replay", "--from", str(recorded), "--json")
    broken_report = json.loads(broken)
    assert broken_report["inputs"] == len(rows) and broken_report["v2_errors"] > 0
    assert broken_code == 1 and broken_report["verdict"] == "NO-GO"
    day.app.config["V2_FAULT_RATE"] = 0.0  # the fix
    fixed_code, fixed = _cli(day.app, "replay", "--from", str(recorded))
    print(broken, fixed, sep="\n")
    assert fixed.splitlines()[0] == f"qb_td: replayed {len(rows)} recorded input(s) from {recorded}"
    assert "  v2 errors 0.00 % (0)" in fixed
    assert re.search(r"^  fallback \d+\.\d\d % \(\d+: ", fixed, re.M)
    assert fixed_code == (0 if fixed.splitlines()[-1] == "  GO" else 1)
