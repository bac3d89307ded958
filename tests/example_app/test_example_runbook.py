"""The example app's runbook overlay: its betting wording reaches alerts, gates and checks; its probes are rules."""
from __future__ import annotations

import sqlite3

from flask import Flask

from example_app.rollout import ROLLOUT, rollout

MAHOMES = {"player": "Patrick Mahomes", "opponent": "LAC"}


def test_overlay_wording_reaches_the_alerts_and_the_gate(make_app) -> None:
    app: Flask = make_app(V2_FAULT_RATE=0.2, V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 10,
                                                                 "v2_shadow_mode_enabled": False})
    client = app.test_client()
    with app.app_context():
        rollout.set_flag(ROLLOUT, "v2_rollout_percentage", 100, actor="test", reason="all on v2")
    for i in range(60):
        client.post("/api/edges", json=MAHOMES, headers={"X-User-Id": f"user-{i}"})
    with app.app_context():
        rollout.flush()
        report = rollout.evaluate()[ROLLOUT]
        fired = {t["rule"]: t for t in report["transitions"] if t["kind"] == "fired"}
        assert fired["v2_high_error_rate"]["action"].endswith("find failing QBs/matchups")
        history = {e["rule"] for e in rollout.alert_history(ROLLOUT)}
        assert "v2_very_high_error_rate" in history  # a packaged rule the overlay leaves as it is
        rollout.set_flag(ROLLOUT, "v2_rollout_percentage", 10, actor="test", reason="canary")
        gate = rollout.gate(ROLLOUT)
        assert gate["gate"] == "canary_to_staged"
        quality = next(c for c in gate["criteria"] if c["name"] == "quality")
        assert quality["description"] == "v2 edges perceived as higher quality"
        checks = {c["check"]: c["description"] for c in rollout.checks(ROLLOUT)}
        assert checks["higher_quality"] == "v2 edges perceived as higher quality"


def test_overlay_data_rules_read_the_apps_probes(app: Flask) -> None:
    with app.app_context():
        rules = app.extensions["v2rollout"].evaluator.rules
        assert rules["v2_data_freshness"].condition.text == "last_game_log_import_hours_ago > 24 hours"
        assert rules["v2_low_data_coverage"].condition.text == "qbs_with_v2_data_pct < 70%"
        assert rules["v2_conversion_rate_drop"].action == "compare edges; review V2_CONFIG; roll back if > 10 % drop"
        assert len(rules) == 19  # the packaged 17 and the two on its game log
        declared = app.extensions["v2rollout"].evaluator.runbook.probes
    assert set(rollout.registry.probes) <= set(declared)  # every probe the app registers is a metric its rules may read


def test_the_qb_data_rules_fire_from_the_apps_probes(make_app) -> None:
    """qbs_falling_back_to_v1_pct > 25 % (MEDIUM), a game log behind the current week (LOW): notified, no rollback."""
    app: Flask = make_app(V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 100, "v2_shadow_mode_enabled": False})
    conn = sqlite3.connect(app.config["NFL_DATABASE"])
    with conn:
        players = [r[0] for r in conn.execute(
            "SELECT DISTINCT player_name FROM player_game_log WHERE season = 2025 ORDER BY player_name")]
        conn.executemany("DELETE FROM player_game_log WHERE season = 2025 AND player_name = ? AND week BETWEEN 3 AND 7",
                         [(p,) for p in players[::3]])  # a third of the QBs lose their weeks 3–7
        conn.execute("DELETE FROM player_game_log WHERE season = 2025 AND week = 2")
    conn.close()
    client = app.test_client()
    for i in range(30):
        assert client.post("/api/edges", json=MAHOMES, headers={"X-User-Id": f"user-{i}"}).status_code == 200
    with app.app_context():
        rollout.flush()
        report = rollout.evaluate()[ROLLOUT]
        flags = rollout.flags(ROLLOUT, fresh=True)
    fired = {t["rule"]: t for t in report["transitions"] if t["kind"] == "fired"}
    falling = fired["v2_qbs_falling_back"]
    assert falling["values"]["qbs_falling_back_to_v1_pct"] > 25 and falling["sev"] == "SEV-3"
    behind = fired["v2_game_log_behind"]
    assert behind["values"] == {"weeks_of_data_behind": 1.0} and behind["sev"] == "SEV-4"
    assert behind["response"] == "log, next sprint"
    assert report["rollback"] is None and flags["v2_rollout_percentage"] == 100
