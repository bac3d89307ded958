"""Finding players by name, so every table and request uses one spelling per player."""
from __future__ import annotations

import sqlite3


def find_player(conn: sqlite3.Connection, name: str, season: int) -> str | None:
    """The stored spelling of ``name`` (already normalized) if he played in ``season``.

    The exact match uses ``idx_game_log_composite``; only a miss pays for the
    case-insensitive scan that turns ``"Tommy Devito"`` into ``"Tommy DeVito"``.
    """
    for collate in ("", " COLLATE NOCASE"):
        row = conn.execute(
            f"SELECT player_name FROM player_game_log WHERE player_name = ?{collate} AND season = ? LIMIT 1",
            (name, season),
        ).fetchone()
        if row is not None:
            return str(row[0])
    return None


def players_in_season(conn: sqlite3.Connection, season: int) -> list[str]:
    """Every quarterback with a game-log row in ``season``, sorted."""
    return [r[0] for r in conn.execute(
        "SELECT DISTINCT player_name FROM player_game_log WHERE season = ? ORDER BY player_name",
        (season,),
    )]


def canonical_spellings(conn: sqlite3.Connection) -> dict[str, str]:
    """Case-folded name → stored spelling, over both data sources."""
    rows = conn.execute(
        "SELECT player_name FROM player_game_log"
        " UNION SELECT passer_player_name FROM play_by_play"
    )
    return {name.casefold(): name for (name,) in rows}
