"""The runbook's data-health metrics and pre-deployment checks, as plain functions.

Probes return a number (or ``None`` when there is nothing to measure yet);
checks return ``(ok, detail)``. Each opens its own short-lived read-only
connection so it can run from a CLI, a scheduler or the extension's evaluator
alike, and never creates an empty database where one is missing.
"""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime

from .calculators import EFFICIENCY_WEEKS, EFFICIENCY_WINDOW_SQL, MIN_RED_ZONE_ATTEMPTS, MIN_WEEKS
from .db import REQUIRED_INDEXES, connect


@contextlib.contextmanager
def _connection(path: str) -> Iterator[sqlite3.Connection]:
    conn = connect(path, read_only=True)
    try:
        yield conn
    finally:
        conn.close()


def qbs_with_v2_data_pct(path: str, season: int) -> float | None:
    """Share of the season's quarterbacks with enough weeks 3–7 data for v2 (alert < 70)."""
    first, last = EFFICIENCY_WEEKS
    with _connection(path) as conn:
        total, sufficient = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(weeks >= ? AND rz >= ?), 0) FROM ("
            "  SELECT COUNT(DISTINCT CASE WHEN week BETWEEN ? AND ? THEN week END) AS weeks,"
            "         COALESCE(SUM(CASE WHEN week BETWEEN ? AND ? THEN red_zone_passes END), 0) AS rz"
            "  FROM player_game_log WHERE season = ? GROUP BY player_name)",
            (MIN_WEEKS, MIN_RED_ZONE_ATTEMPTS, first, last, first, last, season),
        ).fetchone()
    return round(100.0 * sufficient / total, 2) if total else None


def qbs_falling_back_to_v1_pct(path: str, season: int) -> float | None:
    """Share of the quarterbacks v1 prices (passers in play_by_play) that v2 would hand back to v1 (alert > 25).

    A quarterback falls back without 2+ weeks and 5+ red-zone attempts in weeks 3–7 of
    the game log — absent from the game log altogether included.
    """
    first, last = EFFICIENCY_WEEKS
    with _connection(path) as conn:
        total, falling = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(NOT (COALESCE(g.weeks, 0) >= ? AND COALESCE(g.rz, 0) >= ?)), 0) FROM ("
            "  SELECT DISTINCT passer_player_name AS name FROM play_by_play"
            "  WHERE season = ? AND passer_player_name IS NOT NULL) AS p"
            " LEFT JOIN ("
            "  SELECT player_name, COUNT(DISTINCT week) AS weeks, COALESCE(SUM(red_zone_passes), 0) AS rz"
            "  FROM player_game_log WHERE season = ? AND week BETWEEN ? AND ? GROUP BY player_name) AS g"
            " ON g.player_name = p.name",
            (MIN_WEEKS, MIN_RED_ZONE_ATTEMPTS, season, season, first, last),
        ).fetchone()
    return round(100.0 * falling / total, 2) if total else None


def weeks_of_data_behind(path: str, season: int) -> int | None:
    """Weeks the game log lags the current week (the latest week in play_by_play); 0 when it is complete."""
    with _connection(path) as conn:
        current = conn.execute("SELECT MAX(week) FROM play_by_play WHERE season = ?", (season,)).fetchone()[0]
    if current is None:
        return None
    return max(0, int(current) - weeks_of_data_available(path, season))


def weeks_of_data_available(path: str, season: int) -> int:
    """Weeks of the season present in the game log (should equal the current week)."""
    with _connection(path) as conn:
        return int(conn.execute(
            "SELECT COUNT(DISTINCT week) FROM player_game_log WHERE season = ?", (season,)
        ).fetchone()[0])


def last_game_log_import_hours_ago(path: str, now: datetime | None = None) -> float | None:
    """Hours since the newest game-log import (alert > 24); ``None`` before the first."""
    with _connection(path) as conn:
        latest = conn.execute("SELECT MAX(imported_at) FROM game_log_imports").fetchone()[0]
    if latest is None:
        return None
    age = (now or datetime.now(UTC)) - datetime.fromisoformat(latest)
    return round(age.total_seconds() / 3600.0, 2)


def indexes_present(path: str) -> tuple[bool, str]:
    """The runbook's three game-log indexes exist."""
    with _connection(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    missing = [n for n in REQUIRED_INDEXES if n not in names]
    if missing:
        return False, "missing: " + ", ".join(missing)
    return True, "present: " + ", ".join(REQUIRED_INDEXES)


def integrity_check(path: str) -> tuple[bool, str]:
    """``PRAGMA integrity_check`` answers ``ok``."""
    with _connection(path) as conn:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    return rows == ["ok"], "; ".join(rows)


def v2_query_uses_composite_index(path: str) -> tuple[bool, str]:
    """v2's window query is planned through ``idx_game_log_composite`` (else: slow queries)."""
    with _connection(path) as conn:
        plan = [r[3] for r in conn.execute(
            "EXPLAIN QUERY PLAN " + EFFICIENCY_WINDOW_SQL, ("", 0, *EFFICIENCY_WEEKS)
        )]
    search = next((step for step in plan if step.startswith(("SEARCH", "SCAN"))), "no table access")
    return "idx_game_log_composite" in search, search
