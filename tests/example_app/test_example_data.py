"""The generated data: deterministic, realistic in shape, calibrated for the runbook's figures."""
from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from flask import Flask

from example_app import probes
from example_app.calculators import QBTDCalculatorV2
from example_app.datagen import build_database
from example_app.nfl import TEAMS
from example_app.players import players_in_season
from example_app.validate import decide, run_validation
from flask_v2rollout import Fallback

AppFactory = Callable[..., Flask]


def fingerprint(path: Path) -> str:
    conn = sqlite3.connect(path)
    digest = hashlib.sha256()
    for table in ("play_by_play", "player_game_log", "market_lines"):
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3"):
            digest.update(repr(row).encode())
    conn.close()
    return digest.hexdigest()


def test_generation_is_deterministic(generated_db: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.db"
    build_database(str(again))
    assert fingerprint(again) == fingerprint(generated_db)


def test_cli_init_db_builds_once_and_rebuilds_with_force(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app(NFL_DATABASE=str(tmp_path / "fresh" / "nfl.db"))
    runner = app.test_cli_runner()
    first = runner.invoke(args=["init-db"])
    assert first.exit_code == 0 and "built" in first.output
    second = runner.invoke(args=["init-db"])
    assert second.exit_code == 0 and "already exists" in second.output
    forced = runner.invoke(args=["init-db", "--force"])
    assert forced.exit_code == 0 and "built" in forced.output


def test_season_shape(generated_conn: sqlite3.Connection) -> None:
    weeks = dict(generated_conn.execute(
        "SELECT season, COUNT(DISTINCT week) FROM player_game_log GROUP BY season"
    ).fetchall())
    assert weeks == {2024: 18, 2025: 7}
    # Every team plays 17 games in a full season (one bye).
    per_team = generated_conn.execute(
        "SELECT COUNT(DISTINCT week) FROM player_game_log WHERE season = 2024 GROUP BY team"
    ).fetchall()
    assert len(per_team) == len(TEAMS) and {n for (n,) in per_team} == {17}
    quarterbacks = generated_conn.execute("SELECT COUNT(DISTINCT player_name) FROM player_game_log").fetchone()[0]
    assert 50 <= quarterbacks <= 70
    assert {"Patrick Mahomes", "Josh Allen"} <= set(players_in_season(generated_conn, 2025))
    tds_per_team_game = generated_conn.execute(
        "SELECT 1.0 * SUM(passing_touchdowns) / COUNT(DISTINCT team || week) FROM player_game_log WHERE season = 2024"
    ).fetchone()[0]
    assert 1.0 < tds_per_team_game < 1.8


def test_game_log_is_the_box_score_of_the_plays(generated_conn: sqlite3.Connection) -> None:
    mismatches = generated_conn.execute(
        "SELECT COUNT(*) FROM player_game_log g JOIN ("
        "  SELECT passer_player_name AS player, season, week, COUNT(*) AS attempts,"
        "         SUM(yardline_100 <= 20) AS rz, SUM(yards_gained >= yardline_100) AS tds"
        "  FROM play_by_play GROUP BY 1, 2, 3) p"
        " ON p.player = g.player_name AND p.season = g.season AND p.week = g.week"
        " WHERE p.attempts != g.pass_attempts OR p.rz != g.red_zone_passes OR p.tds != g.passing_touchdowns"
    ).fetchone()[0]
    assert mismatches == 0


def test_v1_bug_is_reproduced(generated_conn: sqlite3.Connection) -> None:
    lost, true_tds = generated_conn.execute(
        "SELECT SUM(is_touchdown = 0 AND yards_gained >= yardline_100), SUM(yards_gained >= yardline_100)"
        " FROM play_by_play"
    ).fetchone()
    assert 0 < lost < 0.05 * true_tds


def test_2025_fallback_rate_over_quarterbacks_is_plausible(
    generated_db: Path, generated_conn: sqlite3.Connection
) -> None:
    calculator = QBTDCalculatorV2(generated_conn, 2025)
    players = players_in_season(generated_conn, 2025)
    reasons = []
    for player in players:
        try:
            calculator.calculate_edge({"player": player, "opponent": "KC"})
        except Fallback as fb:
            reasons.append(fb.reason.split(":")[0])
    fallback_pct = 100.0 * len(reasons) / len(players)
    assert 10.0 <= fallback_pct <= 20.0
    assert set(reasons) == {"insufficient_weeks", "insufficient_red_zone_attempts"}
    assert probes.qbs_with_v2_data_pct(str(generated_db), 2025) == round(100.0 - fallback_pct, 2)


def test_2024_validation_lands_near_the_runbook(generated_conn: sqlite3.Connection) -> None:
    report = run_validation(generated_conn, 2024)
    assert 80.0 <= report.agreement_pct <= 92.0
    assert report.fallback_pct < 20.0
    assert report.errors == 0
    # Like the runbook's 90 %: above the 60–85 % target, inside the 50–90 % blocker band.
    assert decide(report)[0] == "CONDITIONAL"


def test_probes_on_the_generated_data(generated_db: Path, generated_at: datetime) -> None:
    path = str(generated_db)
    assert probes.weeks_of_data_available(path, 2025) == 7
    assert probes.last_game_log_import_hours_ago(path, now=generated_at + timedelta(hours=5)) == 5.0
    assert probes.indexes_present(path) == (
        True, "present: idx_game_log_player_name, idx_game_log_season_week, idx_game_log_composite"
    )
    assert probes.integrity_check(path) == (True, "ok")


def test_probes_on_an_empty_database(hand_db: sqlite3.Connection, tmp_path: Path) -> None:
    path = str(tmp_path / "hand.db")
    assert probes.qbs_with_v2_data_pct(path, 2025) is None
    assert probes.weeks_of_data_available(path, 2025) == 0
    assert probes.qbs_falling_back_to_v1_pct(path, 2025) is None and probes.weeks_of_data_behind(path, 2025) is None
    assert probes.last_game_log_import_hours_ago(path) is None


def test_missing_index_is_reported(generated_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    copy.write_bytes(generated_db.read_bytes())
    conn = sqlite3.connect(copy)
    conn.execute("DROP INDEX idx_game_log_season_week")
    conn.commit()
    conn.close()
    assert probes.indexes_present(str(copy)) == (False, "missing: idx_game_log_season_week")


def test_qbs_falling_back_and_weeks_behind_on_the_generated_data(generated_db: Path) -> None:
    path = str(generated_db)
    falling = probes.qbs_falling_back_to_v1_pct(path, 2025)
    assert falling is not None and 10.0 <= falling <= 20.0  # every 2025 passer is in the game log here
    assert falling == round(100.0 - (probes.qbs_with_v2_data_pct(path, 2025) or 0), 2)
    assert probes.weeks_of_data_behind(path, 2025) == 0  # weeks_of_data_available (7) = the current week
