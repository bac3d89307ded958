"""The runbook's data and database items of the pre-deployment checklist, and the upkeep they ask for.

Checks return ``(ok, detail)`` and open their own read-only connection (like
``probes``); :func:`create_indexes` and :func:`maintain` write, on a connection of
their own, and are what ``flask nfl create-indexes`` / ``flask nfl maintain`` run.
"""
from __future__ import annotations

import math
import os
import sqlite3
import stat
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from .db import REQUIRED_INDEXES, connect, create_schema
from .probes import last_game_log_import_hours_ago

#: "last import < 24 h"
MAX_IMPORT_AGE_H = 24.0
#: "data-quality validator passing ≥ 17 of 18 weeks": the same share for a season of any length
WEEKS_PASSING_SHARE = 17 / 18
#: "file mode 644"
DATABASE_MODE = 0o644
#: the regular season's weeks, for ``--week current``
REGULAR_SEASON_WEEKS = 18

MAINTENANCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS maintenance_runs (
    id        INTEGER PRIMARY KEY,
    operation TEXT    NOT NULL,   -- 'VACUUM; ANALYZE'
    ran_at    TEXT    NOT NULL,   -- UTC ISO 8601
    seconds   REAL    NOT NULL
);
"""


def _read(path: str) -> sqlite3.Connection:
    return connect(path, read_only=True)


def import_fresh(path: str) -> tuple[bool, str]:
    """The newest game-log import is less than 24 hours old."""
    hours = last_game_log_import_hours_ago(path)
    if hours is None:
        return False, "no game-log import recorded"
    return hours < MAX_IMPORT_AGE_H, f"last import {hours:.2f} h ago (must be < {MAX_IMPORT_AGE_H:g} h)"


def qbs_per_week(path: str, season: int, bounds: Sequence[int]) -> tuple[bool, str]:
    """Every week of the season lists between ``bounds`` quarterbacks (the runbook: 50–70)."""
    low, high = bounds
    conn = _read(path)
    try:
        counts = conn.execute(
            "SELECT week, COUNT(DISTINCT player_name) FROM player_game_log WHERE season = ? GROUP BY week"
            " ORDER BY week", (season,)).fetchall()
    finally:
        conn.close()
    if not counts:
        return False, f"no game-log weeks for {season}"
    outside = [f"week {w}: {n}" for w, n in counts if not low <= n <= high]
    spread = f"{min(n for _, n in counts)}–{max(n for _, n in counts)} QBs a week over {len(counts)} week(s)"
    if outside:
        return False, f"{spread}; outside {low}–{high}: " + ", ".join(outside)
    return True, f"{spread} (expected {low}–{high})"


#: per-row rules of the data-quality validator: a row breaking any makes its week fail
ROW_RULES = (
    ("completions > pass_attempts", "completions > pass_attempts"),
    ("red_zone_passes > pass_attempts", "red_zone_passes > pass_attempts"),
    ("red_zone_touchdowns > red_zone_passes", "red_zone_touchdowns > red_zone_passes"),
    ("red_zone_touchdowns > passing_touchdowns", "red_zone_touchdowns > passing_touchdowns"),
    ("passing_touchdowns > completions", "passing_touchdowns > completions"),
)


def failing_weeks(conn: sqlite3.Connection, season: int) -> dict[int, list[str]]:
    """Weeks of ``season`` the data-quality validator fails, with why.

    A week fails when a row breaks a box-score rule, or when the game log and
    ``play_by_play`` disagree on a quarterback's pass or red-zone attempts (the two
    sources v2 reads must describe the same games).
    """
    failing: dict[int, list[str]] = {}
    for condition, label in ROW_RULES:
        for week, n in conn.execute(
                f"SELECT week, COUNT(*) FROM player_game_log WHERE season = ? AND {condition} GROUP BY week",
                (season,)):
            failing.setdefault(week, []).append(f"{n} row(s) with {label}")
    for week, n in conn.execute(
            "SELECT g.week, COUNT(*) FROM player_game_log g LEFT JOIN ("
            "  SELECT week, passer_player_name AS player, COUNT(*) AS attempts,"
            "         SUM(yardline_100 <= 20) AS red_zone FROM play_by_play"
            "  WHERE season = ?1 AND play_type = 'pass' GROUP BY week, passer_player_name) p"
            " ON p.week = g.week AND p.player = g.player_name"
            " WHERE g.season = ?1 AND (p.attempts IS NULL OR p.attempts != g.pass_attempts"
            "                          OR p.red_zone != g.red_zone_passes)"
            " GROUP BY g.week", (season,)):
        failing.setdefault(week, []).append(f"{n} QB(s) whose game log and play-by-play disagree")
    return failing


def weeks_pass_validator(path: str) -> tuple[bool, str]:
    """In every season, at least 17 of 18 weeks (the same share of a shorter season) pass the validator."""
    conn = _read(path)
    try:
        seasons = conn.execute(
            "SELECT season, COUNT(DISTINCT week) FROM player_game_log GROUP BY season ORDER BY season").fetchall()
        failing = {season: failing_weeks(conn, season) for season, _ in seasons}
    finally:
        conn.close()
    if not seasons:
        return False, "the game log is empty"
    ok, parts = True, []
    for season, weeks in seasons:
        need = math.ceil(weeks * WEEKS_PASSING_SHARE - 1e-9)
        passing = weeks - len(failing[season])
        ok = ok and passing >= need
        why = "; ".join(f"week {w}: {', '.join(r)}" for w, r in sorted(failing[season].items()))
        parts.append(f"{season}: {passing} of {weeks} weeks pass (need {need})" + (f" [{why}]" if why else ""))
    return ok, "; ".join(parts)


def maintenance_done(path: str) -> tuple[bool, str]:
    """``VACUUM; ANALYZE`` ran (``flask nfl maintain``) after the newest game-log import."""
    conn = _read(path)
    try:
        try:
            ran_at = conn.execute("SELECT MAX(ran_at) FROM maintenance_runs").fetchone()[0]
        except sqlite3.OperationalError:
            ran_at = None
        imported_at = conn.execute("SELECT MAX(imported_at) FROM game_log_imports").fetchone()[0]
    finally:
        conn.close()
    if ran_at is None:
        return False, "VACUUM/ANALYZE never recorded: run `flask nfl maintain`"
    if imported_at is not None and datetime.fromisoformat(ran_at) < datetime.fromisoformat(imported_at):
        return False, f"last VACUUM/ANALYZE {ran_at} is older than the last import {imported_at}"
    return True, f"last VACUUM/ANALYZE {ran_at}"


def file_mode(path: str) -> tuple[bool, str]:
    """The database file is mode 644 (owner writes, everyone reads, nobody executes)."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    return mode == DATABASE_MODE, f"{path} is mode {mode:o} (expected {DATABASE_MODE:o})"


def create_indexes(path: str) -> list[str]:
    """Recreate whatever index of the schema is missing; returns the runbook's three, now present."""
    conn = connect(path)
    try:
        create_schema(conn)  # every statement is IF NOT EXISTS: only what is missing is built
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()
    return [n for n in REQUIRED_INDEXES if n in names]


def maintain(path: str, now: datetime | None = None) -> tuple[str, float]:
    """``VACUUM; ANALYZE;`` and a row in ``maintenance_runs``; returns (when, seconds)."""
    conn = connect(path)
    conn.isolation_level = None  # VACUUM cannot run inside a transaction
    try:
        start = time.perf_counter()
        conn.execute("VACUUM")
        conn.execute("ANALYZE")
        seconds = round(time.perf_counter() - start, 3)
        ran_at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
        conn.executescript(MAINTENANCE_SCHEMA)
        conn.execute("INSERT INTO maintenance_runs (operation, ran_at, seconds) VALUES ('VACUUM; ANALYZE', ?, ?)",
                     (ran_at, seconds))
    finally:
        conn.close()
    return ran_at, seconds


def current_week(season_start: date, today: date) -> int:
    """The regular-season week ``today`` falls in (weeks start on ``season_start``'s weekday)."""
    week = (today - season_start).days // 7 + 1
    if not 1 <= week <= REGULAR_SEASON_WEEKS:
        last = season_start + timedelta(days=7 * REGULAR_SEASON_WEEKS - 1)
        raise ValueError(f"{today} is outside the regular season ({season_start} to {last}); give --week N")
    return week
