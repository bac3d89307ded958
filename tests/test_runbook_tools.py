"""The runbook's log and its SQL counterpart: field names per rollout, request ids, rotation kept by age,
the bounded record of shadow comparisons and inputs, and compare / inputs / replay."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from flask import jsonify

from flask_v2rollout import Fallback, V2Rollout
from flask_v2rollout.cli import cli
from flask_v2rollout.testing import Clock, shadow_sync, use_clock

START = 1_760_000_400.0  # 2025-10-09T09:00:00Z, on the hour


def scored(x: int, *, bump: float = 0.0) -> dict:
    return {"score": float(x) + bump, "metadata": {"source": "test"}}


def v2(x: int) -> dict:
    if x == 7:
        raise Fallback("insufficient_data: seven")
    if x == 8:
        raise ZeroDivisionError("bad row")
    return scored(x, bump=0.5 if x < 5 else 6.0)


def make_ext(**options) -> V2Rollout:
    ext = V2Rollout()
    ext.register("calc", v1=scored, v2=v2, subject=lambda x: f"item-{x}", extract="score",
                 metadata=lambda value: value["metadata"], **options)
    return ext


def records(path: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(path.parent.glob(path.name + "*")) for line in p.read_text().splitlines()]


@pytest.fixture
def shadow_app(make_app):
    def factory(ext: V2Rollout, **config):
        app, _ = make_app(ext, V2ROLLOUT_LOG_FILE="logs/calc.jsonl",
                          V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 0, "v2_shadow_mode_enabled": True}, **config)

        @app.post("/score/<int:x>")
        def score(x: int):
            return jsonify(version=ext.calculate("calc", x).version)
        return app
    return factory


def test_field_names_and_request_ids_in_every_record(shadow_app, tmp_path: Path) -> None:
    ext = make_ext(log_fields={"subject": "item", "value": "points"})
    app = shadow_app(ext)
    client = app.test_client()
    with shadow_sync(app):
        assert client.post("/score/2", headers={"X-User-Id": "u1", "X-Request-Id": "gw-17"}).status_code == 200
        assert client.post("/score/3", headers={"X-User-Id": "u2"}).status_code == 200
    log = records(tmp_path / "instance" / "logs" / "calc.jsonl")
    calc, shadow = [r for r in log if r["event"] == "calculation"], [r for r in log if r["event"] != "calculation"]
    assert [(r["item"], r["points"], r["request_id"]) for r in calc][0] == ("item-2", 2.0, "gw-17")
    assert "subject" not in calc[0] and "value" not in calc[0] and calc[0]["rollout"] == "calc"
    assert [r["event"] for r in shadow] == ["shadow_comparison", "shadow_comparison"]
    first = shadow[0]
    assert (first["calculator_version"], first["item"], first["points"], first["v1_points"], first["v2_points"]) == \
        ("v2_shadow", "item-2", 2.5, 2.0, 2.5)
    assert first["request_id"] == "gw-17"
    made_up = calc[1]["request_id"]
    assert len(made_up) == 32 and shadow[1]["request_id"] == made_up  # one id per request, shadow included


@pytest.mark.parametrize(("fields", "message"), [
    ({"user": "who"}, "may rename only"),
    ({"subject": "player name"}, "distinct identifiers"),
    ({"subject": "x", "value": "x"}, "distinct identifiers"),
])
def test_bad_log_fields_are_refused_and_nothing_is_registered(fields, message) -> None:
    ext = V2Rollout()
    with pytest.raises(ValueError, match=message):
        ext.register("calc", v1=scored, v2=v2, log_fields=fields)
    assert "calc" not in ext.rollouts


def test_the_log_rotates_by_the_clock_and_keeps_the_retention(shadow_app, tmp_path: Path) -> None:
    app = shadow_app(make_ext(), V2ROLLOUT_LOG_RETENTION_H=3)
    client = app.test_client()
    log = tmp_path / "instance" / "logs" / "calc.jsonl"
    with use_clock(app, Clock(START)) as clock, shadow_sync(app):  # every record is written on this clock
        for _ in range(12):  # six hours, a call every 30 minutes
            client.post("/score/1", headers={"X-User-Id": "u1"})
            clock.advance(minutes=30)
        rotated = sorted(p.name.removeprefix("calc.jsonl.") for p in log.parent.glob("calc.jsonl.*"))
        # a file ends at the write that rotates it, on the hour; at 14:00 those that ended before 11:00 went
        assert rotated == ["20251009T100000Z-20251009T110000Z", "20251009T110000Z-20251009T120000Z",
                           "20251009T120000Z-20251009T130000Z", "20251009T130000Z-20251009T140000Z"]
        stamps = sorted(r["timestamp"] for r in records(log) if r["event"] == "calculation")
    assert stamps[0] == "2025-10-09T10:00:00.000Z" and stamps[-1] == "2025-10-09T14:30:00.000Z"
    assert len(stamps) == 10  # at least the 3 h retention, plus the open file


def table_rows(tmp_path: Path, table: str) -> int:
    conn = sqlite3.connect(tmp_path / "instance" / "v2rollout.db")
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def test_the_sql_record_is_bounded_and_inputs_are_redacted(shadow_app, tmp_path: Path) -> None:
    ext = make_ext(record_inputs=True, redact_inputs=lambda inputs: {"args": [inputs["args"][0] % 100],
                                                                      "kwargs": {}})
    app = shadow_app(ext, V2ROLLOUT_JOURNAL_MAX_COMPARISONS=5, V2ROLLOUT_JOURNAL_MAX_INPUTS=3,
                     V2ROLLOUT_JOURNAL_RETENTION_H=1)
    client = app.test_client()
    with use_clock(app, Clock(START)) as clock, shadow_sync(app):
        for x in (1, 2, 3, 104, 5, 6, 9, 2):
            client.post(f"/score/{x}", headers={"X-User-Id": f"u{x}"})
            clock.advance(1)
        with app.app_context():
            report = ext.comparisons("calc", "1h")
            inputs = ext.recorded_inputs("calc", "1h")
        assert [s["subject"] for s in report["subjects"]] == ["item-104", "item-2", "item-5", "item-6", "item-9"]
        assert report["overall"]["comparisons"] == 5  # the newest five of eight
        assert table_rows(tmp_path, "v2rollout_shadow_comparisons") == 5
        assert table_rows(tmp_path, "v2rollout_recorded_inputs") == 3
        assert [json.loads(r["inputs"]) for r in inputs] == [{"args": [6], "kwargs": {}}, {"args": [9], "kwargs": {}},
                                                             {"args": [2], "kwargs": {}}]
        outliers = report["outliers"]
        assert [(o["subject"], o["difference"]) for o in outliers] == [
            ("item-104", 6.0), ("item-5", 6.0), ("item-6", 6.0), ("item-9", 6.0)]
        clock.advance(hours=2)
        client.post("/score/1", headers={"X-User-Id": "u1"})
        with app.app_context():
            assert ext.comparisons("calc", "7d")["overall"]["comparisons"] == 1  # older than 1 h: pruned
        assert table_rows(tmp_path, "v2rollout_shadow_comparisons") == 1


def test_compare_and_replay_from_the_cli(shadow_app, tmp_path: Path) -> None:
    ext = make_ext(record_inputs=True)
    app = shadow_app(ext)
    client = app.test_client()
    with shadow_sync(app):
        for x in range(10):
            client.post(f"/score/{x}", headers={"X-User-Id": f"u{x}"})
    runner = app.test_cli_runner()
    out = tmp_path / "investigation.json"
    done = runner.invoke(cli, ["compare", "--window", "1h", "--output", str(out)])
    assert done.exit_code == 0, done.output
    report = json.loads(out.read_text())
    assert report["overall"]["agreement"] == {"EXACT": 5, "MODERATE": 3, "fallback": 1, "v2_error": 1}
    assert report["overall"]["agreement_rate_pct"] == 62.5
    assert done.output.splitlines()[2] == "  outliers (|difference| > 5): 3"
    recorded = tmp_path / "inputs.jsonl"
    assert runner.invoke(cli, ["inputs", "--output", str(recorded)]).exit_code == 0
    done = runner.invoke(cli, ["replay", "--from", str(recorded), "--max-agreement", "100"])
    assert done.output.splitlines()[1:] == [
        "  agreement 62.50 % (EXACT 5, MODERATE 3, fallback 1, v2_error 1); |difference| avg 2.56",
        "  fallback 10.00 % (1: insufficient_data 1)",
        "  v2 errors 10.00 % (1: ZeroDivisionError 1)",
        "  NO-GO: v2 errors 10.00 % not below 1 %",
    ]
    assert done.exit_code == 1


@pytest.mark.parametrize(("content", "message"), [
    ("not json\n", "inputs.jsonl:1: not JSON"),
    ('{"rollout": "calc"}\n', "inputs.jsonl:1: a record needs 'inputs'"),
    ('{"rollout": "calc", "inputs": {"args": 3}}\n', "recorded inputs must be an object"),
])
def test_replay_refuses_a_bad_file_and_runs_nothing(shadow_app, tmp_path: Path, content: str, message: str) -> None:
    calls = []
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: calls.append(x) or x, v2=lambda x: calls.append(x) or x)
    app = shadow_app(ext)
    path = tmp_path / "inputs.jsonl"
    path.write_text('{"rollout": "calc", "inputs": {"args": [1]}}\n' + content if "args" in content else content)
    done = app.test_cli_runner().invoke(cli, ["replay", "--from", str(path)])
    assert done.exit_code == 1 and message in done.output and "nothing was replayed" in done.output
    assert calls == []  # every record is read before anything runs


def test_inputs_that_are_not_json_are_a_sink_error_and_the_call_is_served(shadow_app) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: 1.0, v2=lambda x: 2.0, record_inputs=True)
    app = shadow_app(ext)
    with app.test_request_context(headers={"X-User-Id": "u1"}):
        assert ext.calculate("calc", object()).value == 1.0
        assert ext.stats("calc")["v1"]["sink_error"] == {"inputs": 1.0}
        assert ext.recorded_inputs("calc") == []


def test_a_failing_store_drops_records_counted_and_serves_the_call(shadow_app, tmp_path: Path) -> None:
    ext = make_ext(record_inputs=True)
    app = shadow_app(ext, V2ROLLOUT_JOURNAL_FLUSH_S=3600)  # the writer waits: this test decides when rows go
    client = app.test_client()
    with shadow_sync(app):
        assert client.post("/score/1", headers={"X-User-Id": "u1"}).status_code == 200
        with app.app_context():
            assert ext.health()["journal"] == {"pending": 2, "dropped": 0, "last_error": None}
        (tmp_path / "instance" / "v2rollout.db").unlink()
        assert client.post("/score/2", headers={"X-User-Id": "u2"}).json == {"version": "v1"}
    with app.app_context():
        with pytest.raises(Exception, match="was deleted"):
            ext.comparisons("calc")
        health = ext.health()["journal"]
    assert health["pending"] == 0 and health["dropped"] == 4
    assert health["last_error"].startswith("StoreFileError: flag store ")
