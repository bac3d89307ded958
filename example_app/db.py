"""The betting domain database: one SQLite file read with the stdlib ``sqlite3``.

It is separate from the extension's own store on purpose: the extension keeps
rollout state, this file keeps football data, exactly as in a real host app.
Each app context (a request, a shadow run) gets one connection, closed at
teardown; WAL mode lets an import run while requests keep reading.
"""
from __future__ import annotations

import os
import sqlite3
from urllib.request import pathname2url

from flask import Flask, current_app, g

SCHEMA = """
CREATE TABLE IF NOT EXISTS play_by_play (
    play_id            INTEGER PRIMARY KEY,
    game_id            TEXT    NOT NULL,
    season             INTEGER NOT NULL,
    week               INTEGER NOT NULL,
    posteam            TEXT    NOT NULL,
    defteam            TEXT    NOT NULL,
    passer_player_name TEXT    NOT NULL,
    play_type          TEXT    NOT NULL,
    yardline_100       INTEGER NOT NULL,
    complete_pass      INTEGER NOT NULL,
    yards_gained       INTEGER NOT NULL,
    interception       INTEGER NOT NULL,
    is_touchdown       INTEGER NOT NULL  -- the v1 bug: some touchdowns are recorded as 0
);
-- v1 reads a passer's and a defense's season from these (covering) indexes.
CREATE INDEX IF NOT EXISTS idx_pbp_passer ON play_by_play (passer_player_name, season, week, is_touchdown);
CREATE INDEX IF NOT EXISTS idx_pbp_defteam ON play_by_play (defteam, season, week, is_touchdown);
CREATE INDEX IF NOT EXISTS idx_pbp_season_game ON play_by_play (season, game_id, is_touchdown);
-- v2 counts a passer's red-zone attempts from this index alone.
CREATE INDEX IF NOT EXISTS idx_pbp_passer_red_zone
    ON play_by_play (passer_player_name, season, week, play_type, yardline_100);

CREATE TABLE IF NOT EXISTS player_game_log (
    id                  INTEGER PRIMARY KEY,
    player_name         TEXT    NOT NULL,
    team                TEXT    NOT NULL,
    opponent            TEXT    NOT NULL,
    season              INTEGER NOT NULL,
    week                INTEGER NOT NULL,
    pass_attempts       INTEGER NOT NULL,
    completions         INTEGER NOT NULL,
    passing_yards       INTEGER NOT NULL,
    passing_touchdowns  INTEGER NOT NULL,
    interceptions       INTEGER NOT NULL,
    red_zone_passes     INTEGER NOT NULL,
    red_zone_touchdowns INTEGER NOT NULL
);
-- The runbook's three indexes; the composite one also keeps one row per player-week.
CREATE INDEX IF NOT EXISTS idx_game_log_player_name ON player_game_log (player_name);
CREATE INDEX IF NOT EXISTS idx_game_log_season_week ON player_game_log (season, week);
CREATE UNIQUE INDEX IF NOT EXISTS idx_game_log_composite ON player_game_log (player_name, season, week);
-- v2's defense adjustment: touchdowns allowed per team-game, read from this index alone.
CREATE INDEX IF NOT EXISTS idx_game_log_season_opponent
    ON player_game_log (season, opponent, week, passing_touchdowns);

-- The bookmaker's current price of "over 0.5 passing touchdowns" per quarterback.
CREATE TABLE IF NOT EXISTS market_lines (
    season      INTEGER NOT NULL,
    player_name TEXT    NOT NULL,
    odds        INTEGER NOT NULL,  -- American odds, e.g. -250
    PRIMARY KEY (season, player_name)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS game_log_imports (
    id          INTEGER PRIMARY KEY,
    season      INTEGER NOT NULL,
    week        INTEGER NOT NULL,
    source      TEXT    NOT NULL,
    rows        INTEGER NOT NULL,
    imported_at TEXT    NOT NULL  -- UTC ISO 8601
);
"""

#: Indexes the runbook requires on the game log (checked by ``probes.indexes_present``).
REQUIRED_INDEXES: tuple[str, ...] = (
    "idx_game_log_player_name",
    "idx_game_log_season_week",
    "idx_game_log_composite",
)


def connect(path: str, *, read_only: bool = False) -> sqlite3.Connection:
    """Open the domain database; ``read_only`` also refuses to create a missing file."""
    if read_only:
        return sqlite3.connect(f"file:{pathname2url(os.path.abspath(path))}?mode=ro", uri=True, timeout=10.0)
    return sqlite3.connect(path, timeout=10.0)


def create_schema(conn: sqlite3.Connection) -> None:
    """Create tables and indexes (idempotent) and switch the file to WAL mode."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)


def database_path(app: Flask | None = None) -> str:
    """Path of the domain database configured for ``app`` (default: the current app)."""
    return str((app or current_app).config["NFL_DATABASE"])


def get_db() -> sqlite3.Connection:
    """This app context's read-only connection, opened on first use.

    Requests only read; writing is the importer's job, on its own connection.
    """
    if "nfl_db" not in g:
        g.nfl_db = connect(database_path(), read_only=True)
    conn: sqlite3.Connection = g.nfl_db
    return conn


def close_db(_exc: BaseException | None = None) -> None:
    conn = g.pop("nfl_db", None)
    if conn is not None:
        conn.close()


def init_app(app: Flask) -> None:
    """Close each app context's connection when the context ends."""
    os.makedirs(os.path.dirname(os.path.abspath(database_path(app))), exist_ok=True)
    app.teardown_appcontext(close_db)
