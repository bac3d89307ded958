"""Alerts evaluated on merged SQL metrics: state in SQL, signals, webhook, history, probes."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flask_v2rollout import V2Rollout
from flask_v2rollout.rules.alerts import AlertRuleError
from flask_v2rollout.testing import Clock, record_signals, use_clock

RULES = """
probes:
  - name: last_game_log_import_hours_ago
    unit: h
    description: hours since the last game-log import
rules:
  - name: slow_v2
    condition: v2_p95_ms > 5ms
    for: 2m
    severity: MEDIUM
    notify: [slack]
    description: v2 is slow
    action: check indexes
  - name: stale_game_log
    condition: last_game_log_import_hours_ago > 24 hours
    severity: LOW
    notify: [slack]
    description: the game log is stale
    action: run the importer
"""


class Receiver:
    """A loopback webhook endpoint collecting JSON bodies."""

    def __init__(self) -> None:
        received = self.received = []
        done = self.arrived = threading.Condition()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with done:
                    received.append(body)
                    done.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def test_pending_firing_resolved_with_signals_webhook_and_history(make_app, tmp_path: Path, receiver) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    slow = {"ms": 0.0}
    import time as _time

    def v2(x: int) -> int:
        if slow["ms"]:
            _time.sleep(slow["ms"] / 1000)
        return x

    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=v2)
    hours = {"value": 2.0}
    ext.probe("last_game_log_import_hours_ago")(lambda: hours["value"])
    app, _ = make_app(ext, V2ROLLOUT_RUNBOOK_FILE=str(rules), V2ROLLOUT_WEBHOOK_URL=receiver.url,
                      V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 100}, V2ROLLOUT_ALERT_WINDOW_S=60)
    clock = Clock(start=1_900_000_000)

    def minute(n: int = 20) -> dict:
        for i in range(n):
            ext.calculate("calc", i, user_id=f"u{i}")
        ext.flush()
        report = ext.evaluate()["calc"]
        clock.advance(minutes=1)
        return report

    with use_clock(app, clock), app.app_context(), record_signals(app) as signals:
        slow["ms"] = 10.0
        assert minute()["transitions"] == []  # pending: must hold 2 minutes
        assert [a["state"] for a in ext.alerts("calc")] == ["pending"]
        assert minute()["transitions"] == []
        fired = minute()["transitions"]
        assert [(t["rule"], t["kind"]) for t in fired] == [("slow_v2", "fired")]
        assert minute()["transitions"] == []  # deduplicated while firing
        slow["ms"] = 0.0
        hours["value"] = 30.0
        resolved = minute()["transitions"]
        assert sorted((t["rule"], t["kind"]) for t in resolved) == [
            ("slow_v2", "resolved"), ("stale_game_log", "fired")]
        history = ext.alert_history("calc")
    assert [(e["rule"], e["event"]) for e in reversed(history)] == [
        ("slow_v2", "fired"), ("slow_v2", "resolved"), ("stale_game_log", "fired")]
    assert [kw["rule"] for kw in signals.named("alert_fired")] == ["slow_v2", "stale_game_log"]
    assert signals.named("alert_resolved")[0]["severity"] == "MEDIUM"
    with receiver.arrived:
        assert receiver.arrived.wait_for(lambda: len(receiver.received) == 3, timeout=10), receiver.received
    assert [(b["event"], b["rule"]) for b in receiver.received] == [
        ("alert_fired", "slow_v2"), ("alert_resolved", "slow_v2"), ("alert_fired", "stale_game_log")]
    assert receiver.received[0]["rollout"] == "calc" and receiver.received[0]["values"]["v2_p95_ms"] > 5


def test_alert_log_lines_are_one_human_line_and_the_jsonl_log_keeps_the_record(make_app, tmp_path: Path,
                                                                             caplog) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    ext.probe("last_game_log_import_hours_ago")(lambda: 30.0)
    app, _ = make_app(ext, V2ROLLOUT_RUNBOOK_FILE=str(rules), V2ROLLOUT_LOG_FILE="calc.jsonl",
                      V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 100})
    caplog.set_level("INFO", logger="flask_v2rollout.alerts")
    with app.app_context():
        ext.calculate("calc", 1, user_id="u1")
        ext.flush()
        ext.evaluate()
        ext.set_flag("calc", "v2_rollout_percentage", 50, actor="ops")  # re-arms every rule
        ext.evaluate()
    lines = [r.getMessage() for r in caplog.records if r.name == "flask_v2rollout.alerts"]
    fired = ("v2rollout alert fired: calc stale_game_log (LOW) — the game log is stale — "
             "last_game_log_import_hours_ago=30 — action: run the importer")
    assert lines == [  # re-armed at 50 %, the stale probe fires it again in the same evaluation
        fired,
        "v2rollout alert resolved: calc stale_game_log (LOW) — the game log is stale — action: run the importer — "
        "re-armed: percentage 100 → 50",
        fired,
    ]
    records = [json.loads(line) for line in (Path(app.instance_path) / "calc.jsonl").read_text().splitlines()]
    alerts = [r for r in records if r["event"].startswith("alert_")]
    assert [(r["event"], r["rule"], r["note"]) for r in alerts] == [
        ("alert_fired", "stale_game_log", ""), ("alert_resolved", "stale_game_log", "re-armed: percentage 100 → 50"),
        ("alert_fired", "stale_game_log", "")]


def test_malformed_rules_fail_clearly_and_load_nothing(make_app, tmp_path: Path) -> None:
    """A broken runbook file stops init_app: no app runs on half the rules."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("v2_p95_ms > 5ms", "v2_p95_ms > __import__('os')"))
    ext = V2Rollout()
    ext.register("calc", v1=abs, v2=abs)
    with pytest.raises(AlertRuleError) as info:
        make_app(ext, V2ROLLOUT_RUNBOOK_FILE=str(rules))
    assert "slow_v2" in str(info.value) and "__import__" in str(info.value)
    assert str(rules) in str(info.value)
    app, _ = make_app(ext, instance="fixed")  # the same extension serves an app with a valid runbook
    with app.app_context():
        assert ext.alerts() == []
        check = next(r for r in ext.verify() if r["check"] == "alert_rules")
        assert check["status"] == "PASS" and "17 rules loaded" in check["detail"]


def test_unknown_metric_in_rules_is_a_load_error(make_app, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("last_game_log_import_hours_ago > 24", "last_import_hours > 24"))
    ext = V2Rollout()
    ext.register("calc", v1=abs, v2=abs)
    with pytest.raises(AlertRuleError, match="stale_game_log"):
        make_app(ext, V2ROLLOUT_RUNBOOK_FILE=str(rules))


def test_test_alert_reaches_the_webhook(make_app, receiver) -> None:
    from flask_v2rollout.cli import cli

    ext = V2Rollout()
    ext.register("calc", v1=abs, v2=abs)
    app, _ = make_app(ext, V2ROLLOUT_WEBHOOK_URL=receiver.url)
    result = app.test_cli_runner().invoke(cli, ["test-alert", "--actor", "ops"])
    assert result.exit_code == 0 and "delivered" in result.output
    with receiver.arrived:
        assert receiver.arrived.wait_for(lambda: receiver.received, timeout=10), "no test alert within 10 s"
    assert receiver.received[0]["event"] == "alert_test" and receiver.received[0]["actor"] == "ops"


def test_test_alert_fails_clearly_without_a_working_webhook(make_app) -> None:
    from flask_v2rollout.cli import cli
    from helpers import free_port_url

    ext = V2Rollout()
    ext.register("calc", v1=abs, v2=abs)
    app, _ = make_app(ext)
    result = app.test_cli_runner().invoke(cli, ["test-alert"])
    assert result.exit_code == 1 and "no alert webhook is configured" in result.output
    app2, _ = make_app(ext, instance="other", V2ROLLOUT_WEBHOOK_URL=free_port_url(), V2ROLLOUT_WEBHOOK_RETRIES=0)
    result = app2.test_cli_runner().invoke(cli, ["test-alert"])
    assert result.exit_code == 1 and "not delivered" in result.output
