"""Weekly game-log import: all rows or none, clear errors, one spelling per player."""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask

from example_app.db import connect
from example_app.importer import COLUMNS, GameLogImportError, import_game_log
from example_app.nfl import normalize_player_name
from example_app.probes import last_game_log_import_hours_ago

AppFactory = Callable[..., Flask]
HEADER = ",".join(COLUMNS)
NOW = datetime(2025, 10, 28, 9, 0, tzinfo=UTC)


def write_csv(tmp_path: Path, *rows: str, header: str = HEADER) -> str:
    path = tmp_path / "week.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return str(path)


def week_rows(conn: sqlite3.Connection, week: int = 8) -> list[tuple]:
    return conn.execute(
        "SELECT player_name, team, opponent, passing_touchdowns, red_zone_passes FROM player_game_log"
        " WHERE season = 2025 AND week = ? ORDER BY player_name",
        (week,),
    ).fetchall()


@pytest.fixture
def db(app: Flask) -> Iterator[sqlite3.Connection]:
    conn = connect(app.config["NFL_DATABASE"])
    yield conn
    conn.close()


def test_good_file_imports_every_row_and_records_the_time(db: sqlite3.Connection, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "Patrick Mahomes,KC,LV,36,25,301,3,0,7,2",
        "Josh Allen,BUF,MIA,31,20,254,2,1,5,1",
    )
    result = import_game_log(db, path, 2025, 8, now=NOW)
    assert (result.rows, result.replaced, result.imported_at) == (2, 0, "2025-10-28T09:00:00+00:00")
    assert week_rows(db) == [("Josh Allen", "BUF", "MIA", 2, 5), ("Patrick Mahomes", "KC", "LV", 3, 7)]
    assert db.execute(
        "SELECT season, week, rows, imported_at FROM game_log_imports ORDER BY id DESC LIMIT 1"
    ).fetchone() == (2025, 8, 2, "2025-10-28T09:00:00+00:00")


def test_import_time_feeds_the_freshness_probe(app: Flask, db: sqlite3.Connection, tmp_path: Path) -> None:
    import_game_log(db, write_csv(tmp_path, "Josh Allen,BUF,MIA,31,20,254,2,1,5,1"), 2025, 8, now=NOW)
    hours = last_game_log_import_hours_ago(app.config["NFL_DATABASE"], now=NOW + timedelta(hours=30))
    assert hours == 30.0


def test_importing_a_week_again_replaces_it(db: sqlite3.Connection, tmp_path: Path) -> None:
    import_game_log(db, write_csv(tmp_path, "Josh Allen,BUF,MIA,31,20,254,2,1,5,1",
                                  "Patrick Mahomes,KC,LV,36,25,301,3,0,7,2"), 2025, 8)
    result = import_game_log(db, write_csv(tmp_path, "Josh Allen,BUF,MIA,31,20,254,4,1,6,3"), 2025, 8)
    assert (result.rows, result.replaced) == (1, 2)
    assert week_rows(db) == [("Josh Allen", "BUF", "MIA", 4, 6)]


@pytest.mark.parametrize(
    ("bad_row", "field", "message"),
    [
        ("Josh Allen,BUF,MIA,31,20,254,two,1,5,1", "passing_touchdowns", "whole number"),
        ("Josh Allen,BUF,MIA,31,20,254,-2,1,5,1", "passing_touchdowns", "whole number"),
        ("Josh Allen,BUF,MIA,31,20,254,2.5,1,5,1", "passing_touchdowns", "whole number"),
        ("Josh Allen,BUF,MIA,31,20,254,,1,5,1", "passing_touchdowns", "whole number"),
        ("Josh Allen,BUF,XXX,31,20,254,2,1,5,1", "opponent", "unknown team"),
        ("Josh Allen,BUF,BUF,31,20,254,2,1,5,1", "opponent", "cannot play itself"),
        (",BUF,MIA,31,20,254,2,1,5,1", "player_name", "must not be empty"),
        ("Josh Allen,BUF,MIA,31,32,254,2,1,5,1", "completions", "more than pass_attempts"),
        ("Josh Allen,BUF,MIA,31,20,254,2,1,5,6", "red_zone_touchdowns", "more than red_zone_passes"),
        ("Josh Allen,BUF,MIA,31,20,254,2,1,5,3", "red_zone_touchdowns", "more than passing_touchdowns"),
        ("Patrick Mahomes,KC,LV,36,25,301,3,0,7,2", "player_name", "already in row 1"),
        ("Josh Allen,BUF,MIA,31,20,254,2,1,5,1,extra", None, "more values than header"),
    ],
)
def test_one_bad_row_imports_nothing_and_names_row_and_field(
    db: sqlite3.Connection, tmp_path: Path, bad_row: str, field: str | None, message: str
) -> None:
    path = write_csv(
        tmp_path,
        "Patrick Mahomes,KC,LV,36,25,301,3,0,7,2",
        bad_row,
        "Joe Burrow,CIN,PIT,40,28,330,3,1,8,2",
    )
    imports_before = db.execute("SELECT COUNT(*) FROM game_log_imports").fetchone()
    with pytest.raises(GameLogImportError) as info:
        import_game_log(db, path, 2025, 8)
    assert (info.value.row, info.value.field) == (2, field)
    assert str(info.value).startswith("row 2 (line 3)")
    assert message in str(info.value)
    assert week_rows(db) == []
    assert db.execute("SELECT COUNT(*) FROM game_log_imports").fetchone() == imports_before


def test_a_bad_row_does_not_touch_an_already_imported_week(db: sqlite3.Connection, tmp_path: Path) -> None:
    before = week_rows(db, week=7)
    path = write_csv(tmp_path, "Josh Allen,BUF,MIA,31,20,254,2,1,5,1", "Joe Burrow,CIN,PIT,40,28,330,x,1,8,2")
    with pytest.raises(GameLogImportError):
        import_game_log(db, path, 2025, 7)
    assert week_rows(db, week=7) == before != []


def test_missing_column_is_named(db: sqlite3.Connection, tmp_path: Path) -> None:
    header = HEADER.replace(",red_zone_touchdowns", "")
    path = write_csv(tmp_path, "Josh Allen,BUF,MIA,31,20,254,2,1,5", header=header)
    with pytest.raises(GameLogImportError, match="header lacks column"):
        import_game_log(db, path, 2025, 8)


def test_binary_file_is_rejected(db: sqlite3.Connection, tmp_path: Path) -> None:
    path = tmp_path / "week.csv"
    path.write_bytes(HEADER.encode() + b"\n\xff\xfe\x00garbage\n")
    with pytest.raises(GameLogImportError, match="not a readable UTF-8 CSV file"):
        import_game_log(db, str(path), 2025, 8)


def test_file_without_rows_is_rejected(db: sqlite3.Connection, tmp_path: Path) -> None:
    with pytest.raises(GameLogImportError, match="no data rows"):
        import_game_log(db, write_csv(tmp_path), 2025, 8)


def test_names_are_stored_in_one_spelling(db: sqlite3.Connection, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "  PATRICK   MAHOMES ,kc,lv,36,25,301,3,0,7,2",
        "\"michael penix, jr\",ATL,TB,33,21,240,1,0,4,1",
        "tommy devito,NYG,DAL,28,17,190,1,1,3,0",
    )
    import_game_log(db, path, 2025, 8)
    names = [r[0] for r in week_rows(db)]
    # "Tommy DeVito" keeps the spelling already in the data, whatever the file's case.
    assert names == ["Michael Penix Jr.", "Patrick Mahomes", "Tommy DeVito"]


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("  patrick   mahomes ", "Patrick Mahomes"),
        ("PATRICK MAHOMES", "Patrick Mahomes"),
        ("Michael Penix Jr", "Michael Penix Jr."),
        ("MICHAEL PENIX, JR.", "Michael Penix Jr."),
        ("michael penix jr.", "Michael Penix Jr."),
        ("robert griffin iii", "Robert Griffin III"),
        ("c.j. stroud", "C.J. Stroud"),
        ("aidan o'connell", "Aidan O'Connell"),
        ("dorian thompson-robinson", "Dorian Thompson-Robinson"),
        ("Tommy DeVito", "Tommy DeVito"),
        ("\tJosh\u00a0Allen\n", "Josh Allen"),
    ],
)
def test_normalize_player_name(raw: str, canonical: str) -> None:
    assert normalize_player_name(raw) == canonical


def test_cli_import_reports_success(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    path = write_csv(tmp_path, "Josh Allen,BUF,MIA,31,20,254,2,1,5,1")
    result = app.test_cli_runner().invoke(args=["import-game-log", "--season", "2025", "--week", "8", "--csv", path])
    assert result.exit_code == 0, result.output
    assert "imported 1 rows for 2025 week 8" in result.output


def test_cli_import_names_the_bad_row(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    path = write_csv(tmp_path, "Josh Allen,BUF,MIA,31,20,254,2,1,5,1", "Joe Burrow,CIN,PIT,40,28,330,3,1,8,9")
    result = app.test_cli_runner().invoke(args=["import-game-log", "--season", "2025", "--week", "8", "--csv", path])
    assert result.exit_code == 1
    assert "row 2 (line 3), field 'red_zone_touchdowns'" in result.output
    assert "nothing was imported" in result.output
