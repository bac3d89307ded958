"""The runbook's data and database checklist items in `flask v2rollout verify`, and the upkeep commands:
`flask nfl create-indexes`, `flask nfl maintain`, `import-game-log --week current`."""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask

from example_app import quality
from example_app.importer import COLUMNS
from example_app.probes import indexes_present
from flask_v2rollout.cli import cli

AppFactory = Callable[..., Flask]


def verify(app: Flask) -> dict[str, tuple[str, str]]:
    done = app.test_cli_runner().invoke(cli, ["verify", "--json"])
    return {r["check"]: (r["status"], r["detail"]) for r in json.loads(done.output)}


def nfl(app: Flask, *args: str) -> tuple[int, str]:
    done = app.test_cli_runner().invoke(args=["nfl", *args])
    return done.exit_code, done.output


def test_verify_reports_each_runbook_data_item_on_the_generated_data(app: Flask) -> None:
    with app.test_request_context():  # the store exists once the app has served
        app.extensions["v2rollout.binding"].rollout.flags("qb_td")
    checks = verify(app)
    assert checks["game_log_import_fresh"][0] == "FAIL"  # generated 2025-10-21: long ago
    assert checks["game_log_import_fresh"][1].endswith("h ago (must be < 24 h)")
    assert checks["qbs_per_week"] == (
        "FAIL", "28–34 QBs a week over 7 week(s); outside 50–70: week 1: 33, week 2: 33, week 3: 34, week 4: 34,"
                " week 5: 28, week 6: 28, week 7: 29")
    assert checks["weeks_pass_data_quality"] == (
        "PASS", "2024: 18 of 18 weeks pass (need 17); 2025: 7 of 7 weeks pass (need 7)")
    assert checks["vacuum_analyze_done"] == ("FAIL", "VACUUM/ANALYZE never recorded: run `flask nfl maintain`")
    mode = os.stat(app.config["NFL_DATABASE"]).st_mode & 0o777
    assert checks["database_file_mode_644"][0] == ("PASS" if mode == 0o644 else "FAIL")


def test_the_league_s_own_range_passes(make_app: AppFactory) -> None:
    app = make_app(NFL_QBS_PER_WEEK=(25, 40))
    assert quality.qbs_per_week(app.config["NFL_DATABASE"], 2025, (25, 40)) == (
        True, "28–34 QBs a week over 7 week(s) (expected 25–40)")


def test_the_validator_allows_one_bad_week_in_eighteen_not_two(app: Flask) -> None:
    path = app.config["NFL_DATABASE"]
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE player_game_log SET red_zone_passes = red_zone_passes + 1"
                     " WHERE id = (SELECT MIN(id) FROM player_game_log WHERE season = 2024 AND week = 3)")
    ok, detail = quality.weeks_pass_validator(path)
    assert ok and detail.startswith("2024: 17 of 18 weeks pass (need 17) [week 3: 1 QB(s) whose game log and"
                                    " play-by-play disagree]")
    with conn:
        conn.execute("UPDATE player_game_log SET completions = pass_attempts + 1"
                     " WHERE id = (SELECT MIN(id) FROM player_game_log WHERE season = 2024 AND week = 9)")
    conn.close()
    ok, detail = quality.weeks_pass_validator(path)
    assert not ok and "2024: 16 of 18 weeks pass (need 17)" in detail
    assert "week 9: 1 row(s) with completions > pass_attempts" in detail


def test_maintain_records_vacuum_and_analyze_until_the_next_import(app: Flask, tmp_path: Path) -> None:
    path = app.config["NFL_DATABASE"]
    code, out = nfl(app, "maintain")
    assert code == 0 and out.startswith(f"{path}: VACUUM; ANALYZE; done at ")
    ok, detail = quality.maintenance_done(path)
    assert ok and detail.startswith("last VACUUM/ANALYZE 20")
    csv = tmp_path / "week.csv"
    csv.write_text(",".join(COLUMNS) + "\nJosh Allen,BUF,MIA,31,20,254,2,1,5,1\n", encoding="utf-8")
    later = (datetime.now(UTC) + timedelta(seconds=2)).isoformat(timespec="seconds")
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO game_log_imports (season, week, source, rows, imported_at)"
                     " VALUES (2025, 8, 'week.csv', 1, ?)", (later,))
    conn.close()
    ok, detail = quality.maintenance_done(path)
    assert not ok and "is older than the last import" in detail


def test_file_mode_other_than_644_fails(app: Flask) -> None:
    path = app.config["NFL_DATABASE"]
    os.chmod(path, 0o666)
    assert quality.file_mode(path) == (False, f"{path} is mode 666 (expected 644)")
    os.chmod(path, 0o644)
    assert quality.file_mode(path)[0] is True


def test_create_indexes_rebuilds_a_dropped_index(app: Flask) -> None:
    path = app.config["NFL_DATABASE"]
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX idx_game_log_composite")
    conn.close()
    assert indexes_present(path)[0] is False
    code, out = nfl(app, "create-indexes")
    assert code == 0
    assert out.strip() == (f"{path}: indexes present: idx_game_log_player_name, idx_game_log_season_week,"
                           " idx_game_log_composite")
    assert indexes_present(path)[0] is True


def test_import_week_current_counts_from_the_season_start(make_app: AppFactory, tmp_path: Path) -> None:
    start = datetime.now(UTC).date() - timedelta(days=15)  # today is in week 3
    app = make_app(NFL_SEASON_START=start.isoformat())
    csv = tmp_path / "week.csv"
    csv.write_text(",".join(COLUMNS) + "\nJosh Allen,BUF,MIA,31,20,254,2,1,5,1\n", encoding="utf-8")
    done = app.test_cli_runner().invoke(args=["import-game-log", "--week", "current", "--csv", str(csv)])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("imported 1 rows for 2025 week 3 (replaced ")


@pytest.mark.parametrize(("week", "message"), [("twelve", "or 'current'"), ("0", "from 1 to 22")])
def test_import_week_must_be_a_number_or_current(app: Flask, tmp_path: Path, week: str, message: str) -> None:
    csv = tmp_path / "week.csv"
    csv.write_text(",".join(COLUMNS) + "\n", encoding="utf-8")
    done = app.test_cli_runner().invoke(args=["import-game-log", "--week", week, "--csv", str(csv)])
    assert done.exit_code == 2 and message in done.output


def test_week_current_outside_the_season_is_refused() -> None:
    with pytest.raises(ValueError, match=r"outside the regular season \(2025-09-04 to 2026-01-07\); give --week N"):
        quality.current_week(date(2025, 9, 4), date(2026, 2, 1))
    assert quality.current_week(date(2025, 9, 4), date(2025, 9, 10)) == 1
    assert quality.current_week(date(2025, 9, 4), date(2026, 1, 7)) == 18
